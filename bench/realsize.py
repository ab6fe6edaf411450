"""Real-size memory on the CPU: an SDXL-architecture pipeline at full size and two real-size LoRAs, through the
studio and through bare diffusers, each in its own process (issue 30, item 4).

The pipeline is bench/gpu_models.py's SDXL (SDXL base 1.0's published configs: the 2.6B UNet, CLIP-L and OpenCLIP
bigG, its VAE and scheduler) with random weights, in bfloat16, saved once under cfg.work; its images are noise. The
LoRAs have rank 32 on every attention projection and feed-forward layer of the UNet (to_q, to_k, to_v, to_out.0,
ff.net.0.proj, ff.net.2: 700 layers), random weights, in bfloat16. A builder process makes them; then one fresh
process per case, one at a time, so each peak RSS (the kernel's VmHWM) is that case's own:

- diffusers: `from_pretrained`, `load_lora_weights` twice, `set_adapters`, `fuse_lora`, one image, `unfuse_lora`;
- studio: `load_pipeline`, `load_adapter` twice, the mix applied (fused, slots.py / fusion.py), one image, the
  base applied (unfused);
- studio with STUDIO_FUSE_MAX_MB=8192: the same, with room to fuse this mix (the default 4096 has not: CASES).

Each child watches the machine's available memory and stops itself below MIN_AVAILABLE_GB (the CPU is shared).
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import ROOT, BenchConfig, Goal, environ, ms, quiet, studio_env, table, target_linears, write_result

RANK = 32
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
MIX = {"a": 0.8, "b": 0.6}
# The adapted layers' base weights are 4.07 GiB here, past the CPU's default STUDIO_FUSE_MAX_MB (4096 MiB with the
# biases): by default the studio runs this mix unfused; with room for the exact unfuse's copy, it fuses.
CASES = {
    "diffusers": {},
    "studio": {},
    "studio, STUDIO_FUSE_MAX_MB=8192": {"STUDIO_FUSE_MAX_MB": "8192"},
}
GOAL_RATIO = 1.2  # studio peak RSS ÷ bare diffusers'
MIN_AVAILABLE_GB = 4.0  # a child exits at once when the machine has less than this available
NEEDED_GB = 12.0  # what a real-size case may take: not started with less available (plus the margin above)


def _available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _memory() -> dict:
    """This process's RSS now and its peak so far (VmHWM), in GiB."""
    return {"rss_gb": _status_kb("VmRSS") / 2**20, "peak_gb": _status_kb("VmHWM") / 2**20}


def _watchdog() -> None:
    def watch():
        while True:
            if _available_gb() < MIN_AVAILABLE_GB:
                print(json.dumps({"error": f"aborted: available memory under {MIN_AVAILABLE_GB} GiB"}), flush=True)
                os._exit(3)
            time.sleep(0.25)

    threading.Thread(target=watch, daemon=True).start()


def _paths(cfg: BenchConfig) -> tuple[Path, dict[str, Path]]:
    root = cfg.work / "realsize" / ("tiny" if cfg.quick else "sdxl")
    return root / "pipeline", {name: root / f"lora-{name}" for name in MIX}


def build(cfg: BenchConfig) -> None:
    """The pipeline folder and the two LoRA repos, once (reused by later runs)."""
    import torch

    from bench.common import write_repo

    folder, repos = _paths(cfg)
    if not (folder / "model_index.json").exists():
        with quiet():
            if cfg.quick:
                from tiny_models.families import build_tiny_family

                build_tiny_family("sdxl", folder)
            else:
                from bench.gpu_models import build_real

                # made in bfloat16 from the start: float32 first would need twice the memory for a moment
                default = torch.get_default_dtype()
                torch.set_default_dtype(torch.bfloat16)
                try:
                    build_real("sdxl", folder, "cpu", torch.bfloat16)
                finally:
                    torch.set_default_dtype(default)
    if all((repo / "pytorch_lora_weights.safetensors").exists() for repo in repos.values()):
        return
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=torch.bfloat16)
    rank = 4 if cfg.quick else RANK
    layers = target_linears(unet, TARGETS)
    for i, repo in enumerate(repos.values()):
        g = torch.Generator().manual_seed(100 + i)
        state = {}
        for module, m in layers.items():
            a = torch.randn(rank, m.in_features, generator=g) / m.in_features**0.5
            b = torch.randn(m.out_features, rank, generator=g) * (0.3 / rank**0.5)
            state[f"unet.{module}.lora_A.weight"] = a.to(torch.bfloat16)
            state[f"unet.{module}.lora_B.weight"] = b.to(torch.bfloat16)
        write_repo(repo, state)
    print(json.dumps({"layers": len(layers), "rank": rank}), flush=True)


def child(cfg: BenchConfig, case: str) -> dict:
    """One case in this (fresh) process: the times of each phase and the memory after it."""
    import torch

    folder, repos = _paths(cfg)
    size, steps = (32, 2) if cfg.quick else (256, 2)
    phases: dict[str, dict] = {"start": {**_memory(), "s": 0.0}}

    def phase(name: str, fn) -> None:
        start = time.perf_counter()
        with quiet():
            fn()
        phases[name] = {"s": time.perf_counter() - start, **_memory()}

    if case == "diffusers":
        from diffusers import DiffusionPipeline

        pipe = None

        def load():
            nonlocal pipe
            pipe = DiffusionPipeline.from_pretrained(folder, dtype=torch.bfloat16, use_safetensors=True)
            pipe.set_progress_bar_config(disable=True)

        def generate():
            with torch.inference_mode():
                pipe("a red circle", num_inference_steps=steps, guidance_scale=5.0, width=size, height=size,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip

        phase("load pipeline", load)
        phase("load adapters", lambda: [pipe.load_lora_weights(str(repos[n] / "pytorch_lora_weights.safetensors"),
                                                                adapter_name=n) for n in MIX])  # fmt: skip
        phase("fuse", lambda: (pipe.set_adapters(list(MIX), adapter_weights=list(MIX.values())),
                               pipe.fuse_lora(adapter_names=list(MIX))))  # fmt: skip
        phase("generate", generate)
        phase("unfuse", pipe.unfuse_lora)
        fused = True
    else:
        from peft_core.image.studio import ImageRequest, ImageStudio

        studio = ImageStudio(device="cpu")

        def request(mix):
            return ImageRequest("a red circle", dict(mix), bool(mix), 0, steps, 5.0, size, size)

        def apply(mix):
            with studio._lock:  # what a generation does first: apply its mix
                studio._apply_mix(request(mix))

        phase("load pipeline", lambda: studio.load_base(str(folder)))
        phase("load adapters", lambda: [studio.load_adapter(str(repos[n]), adapter_name=n) for n in MIX])
        phase("fuse", lambda: apply(MIX))
        fused = studio.slots.fused
        phase("generate", lambda: studio.generate(request(MIX)))  # the mix is applied already: no second fuse
        phase("unfuse", lambda: apply({}))
    return {"case": case, "fused": fused, "size": size, "steps": steps, "phases": phases,
            "peak_gb": _memory()["peak_gb"]}  # fmt: skip


def _subprocess(cfg: BenchConfig, *args: str, env: dict | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.realsize", *args, str(cfg.work), "1" if cfg.quick else "0", str(cfg.threads)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"bench.realsize {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise RuntimeError(f"bench.realsize {' '.join(args)}: {result['error']}")
    return result


def _check_memory(cfg: BenchConfig, what: str) -> None:
    needed = MIN_AVAILABLE_GB + (0 if cfg.quick else NEEDED_GB)
    available = _available_gb()
    print(f"{what}: {available:.1f} GiB available", flush=True)
    if available < needed:
        raise RuntimeError(f"{what} not started: {available:.1f} GiB available, under {needed:.0f} GiB")


def run(cfg: BenchConfig) -> dict:
    if not cfg.quick:
        _check_memory(cfg, "build")
        _subprocess(cfg, "build")
    else:
        build(cfg)
    results = {}
    for case, env in CASES.items():
        if cfg.quick:  # in this process: keeps the quick mode cheap; its memory figures then mean little
            with studio_env(cfg), environ(STUDIO_DTYPE="bfloat16", **env):
                results[case] = child(cfg, case)
            continue
        _check_memory(cfg, case)
        with studio_env(cfg), environ(STUDIO_DTYPE="bfloat16", **env):
            results[case] = _subprocess(cfg, "child", case)
        print(f"{case}: peak RSS {results[case]['peak_gb']:.2f} GiB", flush=True)
    rows = []
    for case, r in results.items():
        p = r["phases"]
        rows.append([case, "yes" if r["fused"] else "no", f"{r['peak_gb']:.2f}", f"{p['load pipeline']['rss_gb']:.2f}",
                     f"{p['load adapters']['rss_gb']:.2f}", f"{p['fuse']['rss_gb']:.2f}",
                     ms(p["load pipeline"]["s"]), ms(p["load adapters"]["s"]), ms(p["fuse"]["s"]),
                     ms(p["unfuse"]["s"]), ms(p["generate"]["s"])])  # fmt: skip
    first = next(iter(results.values()))
    text = table(
        f"SDXL architecture at full size, random weights, bfloat16 on the CPU; two LoRAs of rank {RANK} on every "
        f"attention and feed-forward layer of the UNet; one image of {first['size']}x{first['size']}, "
        f"{first['steps']} steps; each case in its own process" if not cfg.quick else "realsize (quick: tiny SDXL)",
        ["case", "fused", "peak RSS GiB", "RSS after pipeline", "after adapters", "after fuse", "load pipeline",
         "load 2 adapters", "fuse", "unfuse", "one image"], rows,
    )  # fmt: skip
    goals = [Goal(f"studio peak RSS ≤ {GOAL_RATIO} × bare diffusers' ({case})", pipeline="sdxl real size",
                  measured=f"{r['peak_gb'] / results['diffusers']['peak_gb']:.2f}×",
                  passed=r["peak_gb"] / results["diffusers"]["peak_gb"] <= GOAL_RATIO)
             for case, r in results.items() if case != "diffusers"]  # fmt: skip
    write_result(cfg, "realsize", {"results": results, "table": text, "goals": goals})
    return {"goals": goals}


if __name__ == "__main__":
    # python -m bench.realsize build <work> <quick> <threads> | child <case> <work> <quick> <threads>
    import torch

    *command, work, quick, threads = sys.argv[1:]
    torch.set_num_threads(int(threads))
    config = BenchConfig(work=Path(work), quick=quick == "1")
    config.work = Path(work)
    _watchdog()
    if command[0] == "build":
        build(config)
        print(json.dumps({"built": str(_paths(config)[0])}))
    else:
        print(json.dumps(child(config, command[1])))
