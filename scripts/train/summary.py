"""The summary of a run: load what was written, as the app will, and measure it (and draw the sample grid)."""

import copy
import time
from pathlib import Path

import demo_shapes as ds
import numpy as np
import torch

from train import IMAGE_STYLES, LM_REPO, LM_STYLES, ORG, PIPELINE_REPO
from train.common import DEFAULT_GUIDANCE, DEFAULT_STEPS, Config, log
from train.jobs import run_jobs
from train.text import greedy

_PIPELINES = {}  # a job's process keeps the pipeline it loaded for the next job on the same folder


def load_pipeline(out: Path):
    """The saved pipeline with every style LoRA loaded, exactly as an offline app would load them."""
    from diffusers import DiffusionPipeline

    if out not in _PIPELINES:
        pipe = DiffusionPipeline.from_pretrained(out / PIPELINE_REPO, torch_dtype=torch.float32, use_safetensors=True)
        pipe.set_progress_bar_config(disable=True)
        for style in IMAGE_STYLES:
            pipe.load_lora_weights(out / ORG / f"shapes-{style}", adapter_name=style)
        _PIPELINES[out] = pipe
    return _PIPELINES[out]


def mix_images(out: Path, mix: dict | None, prompts: list[str], steps: int) -> list[np.ndarray]:
    """One picture per prompt (seed = its index) with the mix's adapter weights; None: disable_lora(). A job."""
    pipe = load_pipeline(out)
    if mix is None:
        pipe.disable_lora()
    else:
        pipe.enable_lora()
        # only the adapters of the mix are active (inactive ones cost nothing); {}: all four at weight 0
        names = list(mix) or list(IMAGE_STYLES)
        pipe.set_adapters(names, adapter_weights=[mix.get(n, 0.0) for n in names])
    return generate_batch(pipe, prompts, list(range(len(prompts))), steps)


def generate(pipe, prompt: str, seed: int = 0, steps: int = DEFAULT_STEPS) -> np.ndarray:
    return generate_batch(pipe, [prompt], [seed], steps)[0]


def generate_batch(pipe, prompts: list[str], seeds: list[int], steps: int = DEFAULT_STEPS) -> list[np.ndarray]:
    """One picture per (prompt, seed), in one call: the same noise per picture as one call each, so the same
    pictures to ~1e-5 (batched kernels round differently), in about half the time on a CPU (a model this small is
    mostly overhead)."""
    images = pipe(list(prompts), num_inference_steps=steps, guidance_scale=DEFAULT_GUIDANCE,
                  generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="np").images  # fmt: skip
    return [image.astype(np.float64) for image in images]


def image_summary(out: Path, cfg: Config, grid_path: Path | None, workers: int) -> None:
    prompts = ds.captions()[:: max(1, len(ds.captions()) // cfg.eval_prompts)][: cfg.eval_prompts]
    # the mixes: base (all weights 0), each style alone, two 50/50 blends and the "night + outline" preset
    mixes = {"base": {}} | {s: {s: 1.0} for s in IMAGE_STYLES}
    mixes |= {"night+stripes": {"night": 0.5, "stripes": 0.5}, "outline+pastel": {"outline": 0.5, "pastel": 0.5},
              "night+outline": {"night": 0.6, "outline": 0.6}}  # the last: a preset's mix (peft_core/presets.py)
    jobs = [(mix_images, out, mix, prompts, cfg.eval_steps) for mix in [*mixes.values(), None]]
    *pictures, disabled = run_jobs(jobs, workers)
    images = dict(zip(mixes, pictures, strict=True))
    same = all(np.array_equal(a, b) for a, b in zip(disabled, images["base"], strict=True))

    # the time one picture takes here, on --threads threads with nothing else running, as the app runs it
    pipe = load_pipeline(out)
    pipe.disable_lora()
    generate(pipe, prompts[0], 0, cfg.eval_steps)
    t0 = time.time()
    for i, p in enumerate(prompts):
        generate(pipe, p, i, cfg.eval_steps)
    base_time = (time.time() - t0) / len(prompts)
    log(f"\ngeneration: {cfg.eval_steps} steps, guidance {DEFAULT_GUIDANCE}, {ds.SIZE}x{ds.SIZE}: "
        f"{base_time:.3f} s/image, LoRAs disabled, {torch.get_num_threads()} threads; "
        f"weight 0 == disable_lora(): {same}")  # fmt: skip
    pairs = zip(images["base"], prompts, strict=False)
    right_colour = np.mean([ds.colour_share(img, p.split()[1]) for img, p in pairs])
    log(f"base: share of shape pixels in the prompt's colour {right_colour:.3f}")
    for shape in ds.SHAPES:
        ratios = [ds.fill_ratio(img) for img, p in zip(images["base"], prompts, strict=False) if p.endswith(shape)]
        log(f"base: fill ratio {shape:8s} {np.mean(ratios) if ratios else float('nan'):.3f}")
    # "kept": IoU of the filled shape with the base picture of the same prompt and seed (a style keeps the shape)
    log(f"{'mix':16s}" + "".join(f"{m:>12s}" for m in ds.MEASURES) + f"{'kept':>12s}{'kept min':>12s}")
    for name, imgs in images.items():
        values = [np.mean([ds.MEASURES[m](img) for img in imgs]) for m in ds.MEASURES]
        kept = [ds.mask_iou(img, base) for img, base in zip(imgs, images["base"], strict=True)]
        values += [np.mean(kept), np.min(kept)]
        log(f"{name:16s}" + "".join(f"{v:12.3f}" for v in values))
    if grid_path is not None:
        save_grid(images, prompts, grid_path)


def save_grid(images: dict, prompts: list[str], path: Path, rows: int = 4, zoom: int = 4) -> None:
    """Rows: prompts; columns: base, each style, the blends. Nearest-neighbour zoom keeps pixels sharp."""
    from PIL import Image

    picks = np.linspace(0, len(prompts) - 1, min(rows, len(prompts))).round().astype(int)
    pad = 2
    grid = np.ones((len(picks) * (ds.SIZE + pad) + pad, len(images) * (ds.SIZE + pad) + pad, 3))
    for r, i in enumerate(picks):
        for c, imgs in enumerate(images.values()):
            y, x = pad + r * (ds.SIZE + pad), pad + c * (ds.SIZE + pad)
            grid[y : y + ds.SIZE, x : x + ds.SIZE] = imgs[i]
    picture = Image.fromarray((grid * 255).round().astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.resize((picture.width * zoom, picture.height * zoom), Image.NEAREST).save(path)
    log(f"grid: {path}  columns: {', '.join(images)}; rows: {', '.join(prompts[i] for i in picks)}")


def text_summary(out: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out / LM_REPO)
    base = AutoModelForCausalLM.from_pretrained(out / LM_REPO)
    for prompt in ("the red circle", "the blue square"):
        log(f"lm base     {greedy(base, tokenizer, prompt)!r}")
        for style in LM_STYLES:
            model = PeftModel.from_pretrained(copy.deepcopy(base), out / ORG / f"lm-{style}")
            log(f"lm {style:8s} {greedy(model, tokenizer, prompt)!r}")
