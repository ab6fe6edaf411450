"""Turns on the shared pipeline (issue 24, item 3): what step-level turn taking gives a visitor, and what it costs.

- **wait**: a 4-step request arrives while a 40-step one runs (after its 2nd step). Step-level turns: the studio
  as it is, the two alternate step by step. Whole-request turns: the same studio with its family's per-call state
  undeclared (families.Family.call_state = None), so the long request keeps the lock to its last step. Figures:
  the short request's time from its arrival to its image, in units of its time alone, and the long one's total.
- **switch**: two visitors with different mixes alternating step by step pay a mix switch at every step: the
  studio's switch between two recent fused mixes (a copy of the adapted layers' weights, and per layer the slots'
  bookkeeping), timed against one denoising step. It splits into the bytes at this machine's copy rate, measured
  in the same round, and the rest, per adapted layer (Python work that does not shrink on a GPU).
- **real sizes**: what a switch copies for SDXL and FLUX.1 (the adapted layers' base weights, every attention
  projection, built on the meta device from the published configs), the LoRA bytes at rank 16 and 32, and the
  switch time (bytes at a copy rate + layers x a per-layer cost) on this machine (both measured) and on an
  assumed GPU, against a step's FLOPs at an assumed GPU throughput.
"""

import dataclasses
import threading
import time

from bench.common import (
    ATTN_TARGETS,
    BenchConfig,
    Goal,
    adapter_repos,
    image_request,
    median,
    ms,
    quiet,
    resolve_pipeline,
    studio_env,
    studio_for,
    table,
    target_linears,
    write_result,
)

LONG, SHORT = 40, 4  # steps: the long request, and the short one sent while it runs
ARRIVES_AFTER = 2  # the short request arrives once the long one has done this many steps
# The anchors: what the decision is about (docs/DEVELOPMENT.md#turns).
ANCHORS = [
    [
        "whole-request turns, short behind long",
        "waits the long one's remaining steps: ~ (40 - 2) / 4 + 1 = 10.5x its time alone",
        "arithmetic",
    ],
    [
        "step-level turns, short behind long",
        "~2x its time alone (its 4 steps alternate with 4 of the long one's), plus a mix switch per step",
        "arithmetic",
    ],
    [
        "STUDIO_MAX_IMAGE_COST",
        "2 default images on CPU, 4 on GPU: the most one request may hold the pipeline under whole-request turns",
        "peft_core/settings.py",
    ],
    ["H100 SXM", "3.35 TB/s HBM3, 989 TFLOP/s dense fp16/bf16 (peak)", "NVIDIA H100 datasheet"],
]
# GPU assumptions for the real-size estimate (no GPU was measured here): a device copy moves each byte twice (read,
# write) at ~80 % of the H100's peak bandwidth; a denoising step runs at 40 % of its peak FLOPs, which is fast (an
# optimistic GPU makes the switch a larger share of a step, so the estimate errs against step-level turns).
GPU_COPY_BYTES_PER_S = 3.35e12 * 0.8 / 2
GPU_FLOPS_PER_S = 989e12 * 0.4
# The host's work per adapted layer in a switch on a GPU: one or two copy kernels launched (~5 us each) and the
# slots' Python for the layer (3 us per layer on the bundled pipeline, whose copies fit in the CPU's cache; the
# figure measured on the medium pipeline also holds its copies' cache misses, which a GPU does not pay on the host).
GPU_PER_LAYER_S = 15e-6
RANKS = (16, 32)
# The attention projections a LoRA on "every attention layer" adapts: diffusers' Attention's four, and FLUX's joint
# attention's text-side four (diffusers' FLUX LoRA training script targets these eight).
FLUX_TARGETS = ATTN_TARGETS + ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


def run(cfg: BenchConfig) -> dict:
    table("Anchors", ["what", "figure", "source"], ANCHORS)
    results, goals = {}, []
    copy_rate = measure_copy_rate(cfg)
    for name in cfg.pipelines:
        spec = resolve_pipeline(name, cfg)
        print(f"\n## {spec.name}: {spec.note}", flush=True)
        with studio_env(cfg), quiet():
            studio = studio_for(spec, cfg)
            for i, repo in enumerate(adapter_repos(studio.pipe, spec, cfg, 2)):
                studio.load_adapter(str(repo), adapter_name=f"v{i}")
            entry = measure_pipeline(studio, spec, cfg)
        results[spec.name] = entry
        goals.append(Goal("a 4-step request behind a 40-step one waits < 3x its time alone (step-level turns)",
                          f"{entry['wait_turns_x']:.2f}x (whole-request: {entry['wait_whole_x']:.2f}x)",
                          entry["wait_turns_x"] < 3, spec.name))  # fmt: skip
        goals.append(Goal("a mix switch per step costs < 10 % of a step", f"{entry['switch_per_step'] * 100:.1f} %",
                          entry["switch_per_step"] < 0.10, spec.name))  # fmt: skip
    copy_rate = max([copy_rate] + [e["copy_rate_bytes_per_s"] for e in results.values()])
    per_layer = max(e["switch_per_layer_s"] for e in results.values())  # the larger: the estimate errs high
    rate = f"{copy_rate / 1e9:.1f} GB/s copied"
    table("This machine, for the real-size estimate", ["what", "figure"],
          [["torch copy_ of 256 MiB, the best of the rounds", rate],
           ["a switch's work per adapted layer, beyond the bytes", f"{per_layer * 1e6:.0f} µs"]])  # fmt: skip
    real = real_size_estimates(copy_rate, per_layer, cfg)
    write_result(cfg, "turns", {"pipelines": results, "real_size": real, "copy_rate_bytes_per_s": copy_rate,
                                "gpu_assumptions": {"copy_bytes_per_s": GPU_COPY_BYTES_PER_S,
                                                    "flops_per_s": GPU_FLOPS_PER_S}, "goals": goals})  # fmt: skip
    return {"goals": goals}


def measure_copy_rate(cfg: BenchConfig) -> float:
    """Bytes copied per second by a torch tensor copy on this machine (the median of 5; quick: a small tensor)."""
    import torch

    n = cfg.pick(64 * 2**20, 2**20)  # float32 elements: 256 MiB, or 4 MiB in quick mode
    src, dst = torch.randn(n), torch.empty(n)
    dst.copy_(src)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return n * 4 / median(times)


def measure_pipeline(studio, spec, cfg: BenchConfig) -> dict:
    long_steps, short_steps = cfg.pick((LONG, SHORT), (8, 2))
    family = studio.family
    whole = dataclasses.replace(family, call_state=None)
    rounds = []
    for _ in range(cfg.warmup + cfg.repeats):
        row = {"short_alone_s": _timed(lambda: studio.generate(_request(spec, "v1", short_steps)))}
        for mode, fam in (("turns", family), ("whole", whole)):
            studio.family = fam
            row[mode] = _short_behind_long(studio, spec, long_steps, short_steps)
        studio.family = family
        row["switch_s"], row["switch_fastest_s"] = _switch(studio, spec)
        row["copy_rate"] = measure_copy_rate(cfg)  # beside the switch: the machine's load of the moment
        rounds.append(row)
    rounds = rounds[cfg.warmup :]
    short_alone = median(r["short_alone_s"] for r in rounds)
    # one denoising step: what the long request's steps beyond the short one's cost, uncontended
    step = median((r["whole"]["long_s"] - r["short_alone_s"]) / (long_steps - short_steps) for r in rounds)
    switch = median(r["switch_s"] for r in rounds)
    switch_bytes = sum(p.numel() * p.element_size() for p in studio.slots.fusion._originals)
    layers = len(studio.slots._lora_layers())
    # The split, from the least disturbed figures (a busy machine inflates both): the fastest switch, the best rate.
    best_rate = max(r["copy_rate"] for r in rounds)
    copied = switch_bytes / best_rate
    per_layer = max(0.0, min(r["switch_fastest_s"] for r in rounds) - copied) / layers
    entry = {
        "spec": spec.describe(),
        "short_alone_s": short_alone,
        "step_s": step,
        "wait_turns_x": median(r["turns"]["short_s"] / r["short_alone_s"] for r in rounds),
        "wait_whole_x": median(r["whole"]["short_s"] / r["short_alone_s"] for r in rounds),
        "long_turns_x": median(r["turns"]["long_s"] / r["whole"]["long_s"] for r in rounds),
        "handovers": median(r["turns"]["handovers"] for r in rounds),
        "switch_s": switch,
        "switch_per_step": switch / step,
        "switch_bytes": switch_bytes,
        "adapted_layers": layers,
        "switch_copy_s": copied,
        "switch_per_layer_s": per_layer,
        "copy_rate_bytes_per_s": best_rate,
        "rounds": rounds,
    }
    table(f"{spec.name}: a {short_steps}-step request arriving after step {ARRIVES_AFTER} of a {long_steps}-step one",
          ["turns", "short request, arrival to image", "x its time alone", "long request"],
          [["step-level", ms(median(r["turns"]["short_s"] for r in rounds)), f"{entry['wait_turns_x']:.2f}x",
            f"{ms(median(r['turns']['long_s'] for r in rounds))} ({entry['long_turns_x']:.2f}x whole-request's)"],
           ["whole-request", ms(median(r["whole"]["short_s"] for r in rounds)), f"{entry['wait_whole_x']:.2f}x",
            ms(median(r["whole"]["long_s"] for r in rounds))]])  # fmt: skip
    table(f"{spec.name}: the mix switch two alternating visitors pay per step",
          ["what", "figure"],
          [["one denoising step", ms(step)],
           ["a switch between two recent fused mixes", f"{ms(switch)} = {switch / step * 100:.1f} % of a step"],
           ["bytes it copies (the adapted layers' weights)", f"{switch_bytes / 2**20:,.1f} MiB, {layers} layers"],
           ["the fastest switch: the copy, at this machine's best copy rate", ms(copied)],
           ["the fastest switch: the rest, per adapted layer", f"{per_layer * 1e6:.0f} µs"]])  # fmt: skip
    return entry


def _request(spec, adapter: str, steps: int):
    return dataclasses.replace(image_request(spec, {adapter: 1.0}), steps=steps)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _short_behind_long(studio, spec, long_steps: int, short_steps: int) -> dict:
    """The long request (mix v0) in one thread; the short one (mix v1) sent once it has done ARRIVES_AFTER steps."""
    done, arrived, out = [], threading.Event(), {}

    def progress(step, total):
        done.append(step)
        if step == ARRIVES_AFTER:
            arrived.set()

    def long():
        out["long_s"] = _timed(lambda: studio.generate(_request(spec, "v0", long_steps), progress))

    def short():
        arrived.wait()
        out["short_s"] = _timed(lambda: studio.generate(_request(spec, "v1", short_steps)))
        out["long_steps_meanwhile"] = len(done) - ARRIVES_AFTER

    threads = [threading.Thread(target=long), threading.Thread(target=short)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["handovers"] = out["long_steps_meanwhile"]  # one hand-over per long step taken while the short one ran
    return out


def _switch(studio, spec) -> tuple[float, float]:
    """The median and the fastest of 20 of the studio's switches between the two visitors' mixes, both fused and
    kept (as when they alternate). The fastest is the one least slowed by other jobs on the machine."""
    a, b = _request(spec, "v0", 1), _request(spec, "v1", 1)
    times = []
    with studio._lock:
        studio._apply_mix(a)
        studio._apply_mix(b)
        for i in range(20):
            times.append(_timed(lambda i=i: studio._apply_mix(a if i % 2 == 0 else b)))
    return median(times), min(times)


def real_size_estimates(copy_rate: float, per_layer: float, cfg: BenchConfig) -> dict:
    """Per real-size family: the bytes a switch copies (float16/bfloat16), the LoRA bytes per rank, the switch time
    (here: the bytes at this machine's copy rate plus `per_layer` seconds per adapted layer, as measured; on the
    GPU: the assumed copy rate and per-layer cost), and a step's FLOPs at 1024x1024 (meta tensors, nothing run)."""
    import torch
    from diffusers import FluxTransformer2DModel, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from bench.gpu_models import SDXL_UNET

    out, rows = {}, []
    for name, build, targets, step_input in (
        ("SDXL", lambda: UNet2DConditionModel(**SDXL_UNET), ATTN_TARGETS, _sdxl_step),
        ("FLUX.1", lambda: FluxTransformer2DModel(guidance_embeds=True), FLUX_TARGETS, _flux_step),
    ):
        with torch.device("meta"):
            model = build().to(torch.bfloat16)
        layers = list(target_linears(model, targets).values())
        base = sum(p.numel() * 2 for m in layers for p in m.parameters())  # weight and bias, 2 bytes each
        lora = {r: sum(r * (m.in_features + m.out_features) * 2 for m in layers) for r in RANKS}
        flops = None
        if not cfg.quick:  # the FLOP count walks the whole model: seconds, and nothing the quick run must check
            with torch.device("meta"), FlopCounterMode(display=False) as counter:
                step_input(model)
            flops = counter.get_total_flops()
        gpu_step = flops / GPU_FLOPS_PER_S if flops else None
        here = base / copy_rate + len(layers) * per_layer
        gpu = base / GPU_COPY_BYTES_PER_S + len(layers) * GPU_PER_LAYER_S
        out[name] = {"layers": len(layers), "switch_bytes": base, "lora_bytes": lora, "step_flops": flops,
                     "switch_here_s": here, "switch_gpu_s": gpu, "gpu_step_s": gpu_step}  # fmt: skip
        rows.append([name, len(layers), f"{base / 2**30:.2f} GiB",
                     " / ".join(f"{lora[r] / 2**20:.0f} MiB" for r in RANKS), ms(here), ms(gpu),
                     ms(gpu_step) if gpu_step else "-",
                     f"{gpu / gpu_step * 100:.1f} %" if gpu_step else "-"])  # fmt: skip
        del model
    table("Real sizes: what a mix switch copies (every attention projection adapted, 2-byte weights)",
          ["family", "adapted layers", "switch copies", "LoRA rank 16 / 32", "switch, this machine",
           "switch, GPU (1.34 TB/s, 15 µs per layer)", "step at 1024x1024, GPU (40 % of 989 TFLOP/s)",
           "switch / step"], rows)  # fmt: skip
    return out


def _sdxl_step(unet):
    """One SDXL UNet step at 1024x1024 with classifier-free guidance (batch 2), on meta tensors."""
    import torch

    dtype = torch.bfloat16
    added = {"text_embeds": torch.randn(2, 1280, dtype=dtype), "time_ids": torch.randn(2, 6, dtype=dtype)}
    unet(torch.randn(2, 4, 128, 128, dtype=dtype), torch.tensor([500, 500]), torch.randn(2, 77, 2048, dtype=dtype),
         added_cond_kwargs=added)  # fmt: skip


def _flux_step(transformer):
    """One FLUX.1-dev transformer step at 1024x1024 (4,096 image tokens, 512 text tokens, no CFG), on meta tensors."""
    import torch

    dtype = torch.bfloat16
    transformer(hidden_states=torch.randn(1, 4096, 64, dtype=dtype),
                encoder_hidden_states=torch.randn(1, 512, 4096, dtype=dtype),
                pooled_projections=torch.randn(1, 768, dtype=dtype), timestep=torch.tensor([1.0], dtype=dtype),
                img_ids=torch.zeros(4096, 3, dtype=dtype), txt_ids=torch.zeros(512, 3, dtype=dtype),
                guidance=torch.tensor([3.5], dtype=dtype))  # fmt: skip
