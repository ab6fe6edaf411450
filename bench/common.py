"""What every benchmark shares: its config, the pipelines and adapters it runs on, interleaved timing, tables, JSON.

Timing rule: two things that are compared are timed in the same loop, round by round (A, B, A, B, ...), and the
reported figure is the median of the per-round ratios. A neighbour's job that slows the machine for a few seconds
slows A and B alike, so the ratio stays true even when the absolute times do not.
"""

import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BUNDLED_PIPELINE = ROOT / "assets" / "hub" / "adapter-studio" / "tiny-shapes"
# The attention projections: what diffusers' LoRA training scripts target, and most SD LoRAs on the Hub.
ATTN_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass
class BenchConfig:
    quick: bool = False  # tiny N, one repeat, tiny pipeline only: what tests/test_bench.py runs so scripts don't rot
    pipelines: tuple[str, ...] = ("auto", "medium")  # auto: the bundled pipeline when present, else the tiny one
    repeats: int = 5  # rounds of each interleaved measurement
    threads: int = 1  # torch threads; one is steadier than two on a 2-core machine shared with other jobs
    out: Path = RESULTS  # one JSON file per benchmark
    work: Path = RESULTS / "_work"  # pipelines and adapter repos built from configs, reused between runs
    warmup: int = 1  # untimed rounds before the timed ones
    tiny: bool = False  # bench gpu: every family's tiny pipeline on the CPU instead of real sizes on CUDA

    def __post_init__(self):
        if self.quick:
            self.pipelines, self.repeats, self.warmup = ("tiny",), 1, 0

    def pick(self, full, quick):
        """`quick` in quick mode, else `full` (for N lists, step counts and the like)."""
        return quick if self.quick else full


# --- pipelines -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineSpec:
    """A pipeline to benchmark, and how one generation with it is run."""

    name: str  # tiny, medium or bundled
    folder: Path  # a diffusers folder (model_index.json + safetensors)
    steps: int
    size: int  # width = height, pixels
    guidance: float
    rank: int  # rank of the synthetic adapters made for it
    note: str = ""  # what it is, for the docs
    targets: tuple[str, ...] = ATTN_TARGETS

    def describe(self) -> dict:
        return {**asdict(self), "folder": str(self.folder)}


def resolve_pipeline(name: str, cfg: BenchConfig) -> PipelineSpec:
    """The spec of a named pipeline, built from configs into cfg.work the first time."""
    if name == "auto":
        name = "bundled" if (BUNDLED_PIPELINE / "model_index.json").exists() else "tiny"
    if name == "bundled":
        defaults = _card_defaults(BUNDLED_PIPELINE)
        return PipelineSpec("bundled", BUNDLED_PIPELINE, int(defaults.get("steps", 20)),
                            int(defaults.get("width", 32)), float(defaults.get("guidance_scale", 5.0)), 8,
                            "assets/hub/adapter-studio/tiny-shapes, its card's default settings")  # fmt: skip
    folder = cfg.work / name
    if name == "tiny":
        if not (folder / "model_index.json").exists():
            from tiny_models.image import build_tiny_pipeline

            with quiet():
                build_tiny_pipeline(folder)
        note = "tiny_models/image.py: UNet (4, 8) channels, 4 steps at 32x32"
        return PipelineSpec("tiny", folder, 4, 32, 5.0, 4, note)
    if name == "medium":
        if not (folder / "model_index.json").exists():
            with quiet():
                build_medium_pipeline(folder)
        return PipelineSpec("medium", folder, 4, 256, 7.0, 8, MEDIUM_NOTE)
    raise ValueError(f"unknown pipeline {name!r}; known: auto, tiny, medium, bundled")


MEDIUM_NOTE = (
    "SD 1.5's UNet layout (4 levels, 2 layers per block, 16 transformer blocks, 128 attention projections) at 1/5 "
    "of its width (64, 128, 256, 256), 32x32 latents (256x256 pixels), 4 steps; CLIP text encoder 256 wide x 4 "
    "layers; random weights"
)


def build_medium_pipeline(folder: Path):
    """An SD 1.5-shaped pipeline at 1/5 width, random weights (seed 0), saved to `folder`.

    Full SD 1.5 width takes ~36 s per UNet step on this machine; at 1/5 width one 4-step generation takes a few
    seconds, while the adapter count per layer, the layer count and the module tree (what grows with resident
    adapters) stay those of SD 1.5.
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from tiny_models.image import write_clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(64, 128, 256, 256),
        layers_per_block=2,
        sample_size=32,
        cross_attention_dim=256,
        attention_head_dim=8,  # SD 1.5's config: read by diffusers as 8 heads
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64, 64, 64],  # 4 levels: the 8x scale of SD's VAE, kept small (LoRA never touches it)
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=32,
    )
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder / "_tokenizer_src"), model_max_length=77)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=256,
            intermediate_size=1024,
            num_attention_heads=4,
            num_hidden_layers=4,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            projection_dim=256,
        )
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)  # fmt: skip
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)  # fmt: skip
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe


def _card_defaults(folder: Path) -> dict:
    try:
        from huggingface_hub import ModelCard

        data = ModelCard.load(folder / "README.md", ignore_metadata_errors=True).data
        return (data.to_dict() if data else {}).get("studio_defaults") or {}
    except Exception:
        return {}


def load_pipe(spec: PipelineSpec):
    """A fresh pipeline from the spec's folder, float32 on CPU as the studio loads it, progress bars off."""
    import torch
    from diffusers import DiffusionPipeline

    with quiet():
        pipe = DiffusionPipeline.from_pretrained(spec.folder, use_safetensors=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, spec: PipelineSpec, seed: int = 0):
    """One generation with the spec's settings; returns the PIL image."""
    import torch

    with torch.inference_mode():
        out = pipe("a red circle", num_inference_steps=spec.steps, guidance_scale=spec.guidance, width=spec.size,
                   height=spec.size, generator=torch.Generator("cpu").manual_seed(seed))  # fmt: skip
    return out.images[0]


def image_request(spec: PipelineSpec, mix: dict, use_adapters: bool = True):
    """The ImageStudio request equal to `generate(pipe, spec)` with `mix` applied."""
    from peft_core.image.studio import ImageRequest

    return ImageRequest("a red circle", dict(mix), use_adapters, 0, spec.steps, spec.guidance, spec.size, spec.size)


def studio_for(spec: PipelineSpec, cfg: BenchConfig):
    """An ImageStudio holding the spec's pipeline and no adapters (local folders under cfg.work are allowed)."""
    from peft_core.image.studio import ImageStudio

    studio = ImageStudio(device="cpu")
    with quiet():
        studio.load_base("adapter-studio/tiny-shapes" if spec.name == "bundled" else str(spec.folder))
    return studio


@contextlib.contextmanager
def studio_env(cfg: BenchConfig):
    """The admin settings a benchmark needs: local folders under cfg.work, no cap on resident adapters."""
    with environ(STUDIO_LOCAL_DIRS=str(cfg.work.resolve()), STUDIO_MAX_RESIDENT_ADAPTERS="100000",
                 HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1"):  # fmt: skip
        yield


@contextlib.contextmanager
def environ(**values):
    """The block with these environment variables set; peft_core's settings (read once) are read again on the way
    in and on the way out."""
    from peft_core import settings

    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    settings.reload()
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        settings.reload()


@contextlib.contextmanager
def quiet():
    """The libraries' load-time chatter and progress bars off (the app does the same)."""
    import warnings

    from peft_core.runtime import quiet_libraries

    with quiet_libraries(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --- adapters --------------------------------------------------------------------------------------------------


def target_linears(model, targets=ATTN_TARGETS) -> dict:
    """{module name: nn.Linear} for the layers a LoRA with `targets` adapts (peft's suffix rule)."""
    import torch

    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)
    }


def make_lora(pipe, spec: PipelineSpec, seed: int, rank: int | None = None) -> dict:
    """A diffusers-format LoRA state dict (`unet.<module>.lora_A.weight`) for `pipe` with random weights that
    change the output: A ~ N(0, 1/d_in), B ~ N(0, 0.3^2/r). Deterministic in `seed`."""
    import torch

    rank = rank or spec.rank
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, m in target_linears(pipe.unet, spec.targets).items():
        sd[f"unet.{name}.lora_A.weight"] = torch.randn(rank, m.in_features, generator=g) / m.in_features**0.5
        sd[f"unet.{name}.lora_B.weight"] = torch.randn(m.out_features, rank, generator=g) * (0.3 / rank**0.5)
    return sd


def param_bytes(state_dict: dict) -> int:
    return sum(t.numel() * t.element_size() for t in state_dict.values())


WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def write_repo(folder: Path, state_dict: dict) -> Path:
    """A Hub-style adapter repo (model card + one safetensors file) that ImageStudio can load by local path."""
    from safetensors.torch import save_file

    if not (folder / WEIGHT_NAME).exists():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "README.md").write_text("---\nlicense: mit\n---\n# A benchmark LoRA\nRandom weights.\n")
        save_file({k: v.contiguous() for k, v in state_dict.items()}, folder / WEIGHT_NAME)
    return folder


def adapter_repos(pipe, spec: PipelineSpec, cfg: BenchConfig, n: int, rank: int | None = None) -> list[Path]:
    """`n` adapter repos for the spec's pipeline under cfg.work (made once, reused between runs)."""
    rank = rank or spec.rank
    root = cfg.work / "adapters" / f"{spec.name}-r{rank}"
    return [write_repo(root / f"a{i}", make_lora(pipe, spec, seed=1000 + i, rank=rank)) for i in range(n)]


# --- timing ----------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """A case for `interleave`: run `fn` and return its wall time in seconds."""

    def case() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return case


def interleave(cases: dict[str, Callable[[], float]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run every case once per round, `repeats` rounds after `warmup` untimed ones; each case returns the seconds
    that count (so untimed set-up and clean-up can live inside it)."""
    for _ in range(warmup):
        for case in cases.values():
            case()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, case in cases.items():
            # As timeit does: a full collection lands inside whichever case allocates when it is due, and costs
            # more the more objects are alive; collect between cases instead.
            gc.collect()
            gc.disable()
            try:
                times[name].append(case())
            finally:
                gc.enable()
    return times


def median(values) -> float:
    return float(statistics.median(values))


def ratio(times: dict, a: str, b: str) -> float:
    """Median over rounds of times[a] / times[b]: the figure that survives a noisy machine."""
    return median([x / y for x, y in zip(times[a], times[b], strict=True)])


def summary(times: dict) -> dict:
    """Median seconds and the rounds, per case, for the JSON."""
    return {name: {"median_s": median(ts), "rounds_s": [round(t, 6) for t in ts]} for name, ts in times.items()}


# --- output ----------------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.2f} s"


def table(title: str, headers: list[str], rows: list[list]) -> str:
    """Print a Markdown table (pasted as is into docs/BENCHMARKS.md) and return it."""
    lines = [f"\n### {title}\n", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


@dataclass
class Goal:
    """One goal of the issue, measured."""

    goal: str
    measured: str
    passed: bool
    pipeline: str = ""
    detail: dict = field(default_factory=dict)


def goals_table(goals: list[Goal]) -> str:
    rows = [[g.goal, g.pipeline, g.measured, "**pass**" if g.passed else "**FAIL**"] for g in goals]
    return table("Goals", ["goal", "pipeline", "measured", "result"], rows)


def environment(cfg: BenchConfig) -> dict:
    import diffusers
    import peft
    import torch
    import transformers

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "peft": peft.__version__,
        "transformers": transformers.__version__,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "quick": cfg.quick,
        "repeats": cfg.repeats,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_result(cfg: BenchConfig, name: str, data: dict) -> Path:
    """bench/results/<name>.json (or cfg.out), with the machine and library versions.

    Results per pipeline are merged into the file's earlier ones, so `--pipelines medium` after `--pipelines tiny`
    keeps both (each pipeline's entry carries the environment it was measured in).
    """
    cfg.out.mkdir(parents=True, exist_ok=True)
    path = cfg.out / f"{name}.json"
    env = environment(cfg)
    data = {"benchmark": name, "environment": env, **data}
    data["goals"] = [asdict(g) if isinstance(g, Goal) else g for g in data.get("goals", [])]
    if "pipelines" in data:
        for entry in data["pipelines"].values():
            entry["environment"] = env
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("environment", {}).get("quick") == cfg.quick and "pipelines" in old:
                new_names = {g["pipeline"] for g in data["goals"]}
                data["pipelines"] = {**old["pipelines"], **data["pipelines"]}
                data["goals"] = [g for g in old.get("goals", []) if g["pipeline"] not in new_names] + data["goals"]
    path.write_text(json.dumps(data, indent=2, default=str))
    print(f"\nwrote {path}", flush=True)
    return path
