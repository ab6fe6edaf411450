"""Every pipeline family on the studio against bare diffusers, in the same run (issue 16, item 4).

`python -m bench gpu` on CUDA: random-weight, real-size SDXL and FLUX.1 architectures (bench/gpu_models.py), two
rank-16 LoRAs on the attention projections, each family in its studio dtype (families.py). `--tiny` (and
`--quick`) runs the tiny pipeline of every family (tiny_models/families.py) on the CPU instead: the per-family
table of docs/BENCHMARKS.md, and what tests/test_bench.py runs so this script does not rot.

Per family, studio and bare diffusers timed in the same rounds (bench/common.py's rule):
- load: `ImageStudio.load_adapter` against `pipe.load_lora_weights` of the same file (each followed by an untimed
  delete);
- switch: one change of the active 2-LoRA mix (studio: its slots, fused; bare: `set_adapters`);
- generation with the 2-LoRA mix ÷ the base: the studio's is fused (slots.py), bare diffusers' unfused;
- peak memory: CUDA's peak allocated bytes over the family's run (on a CPU: not measured).
"""

from bench.common import (
    BenchConfig,
    environ,
    interleave,
    median,
    ms,
    quiet,
    ratio,
    studio_env,
    summary,
    table,
    timed,
    write_repo,
    write_result,
)

REAL_FAMILIES = ("sdxl", "flux")
RANK = 16
MIX_A, MIX_B = {"a": 1.0, "b": 0.5}, {"a": 0.5, "b": 1.0}


def _settings(tiny: bool) -> dict:
    """Steps and size per run: the tiny pipelines' 4 steps at 32 px, or 8 steps at the families' native 1024 px."""
    return {"steps": 4, "size": 32} if tiny else {"steps": 8, "size": 1024}


def run(cfg: BenchConfig) -> dict:
    import torch

    tiny = cfg.tiny or cfg.quick
    if tiny:
        from tiny_models.families import FAMILIES

        # quick (tests/test_bench.py): one UNet family and one transformer family keep the script from rotting
        device, names = "cpu", ("sdxl", "flux") if cfg.quick else FAMILIES
    elif torch.cuda.is_available():
        device, names = "cuda", REAL_FAMILIES
    else:
        print("no CUDA device: `python -m bench gpu --tiny` runs every family's tiny pipeline on the CPU instead")
        return {}
    results = {name: _family(cfg, name, device, tiny) for name in names}
    rows = [[name, r["dtype"], ms(r["base_s"]), f"{r['studio_mix_over_base']:.2f}", f"{r['bare_mix_over_base']:.2f}",
             ms(r["studio_switch_s"]), ms(r["bare_switch_s"]), ms(r["studio_load_s"]), ms(r["bare_load_s"]),
             r["peak_gb"]] for name, r in results.items()]  # fmt: skip
    s = _settings(tiny)
    table(
        f"Every family, {'tiny pipelines on the CPU' if tiny else 'real-size random weights on ' + device}: "
        f"{s['steps']} steps at {s['size']} px, two rank-{RANK} LoRAs",
        ["family", "dtype", "base image", "studio mix ÷ base (fused)", "bare mix ÷ base", "studio switch",
         "bare switch", "studio load", "bare load", "peak GB"],
        rows,
    )  # fmt: skip
    device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    write_result(cfg, "gpu", {"device": device_name, "tiny": tiny, "families": results})
    return {}


def _family(cfg: BenchConfig, name: str, device: str, tiny: bool) -> dict:
    import torch
    from diffusers import DiffusionPipeline

    from peft_core.image import families
    from peft_core.image.studio import ImageRequest, ImageStudio
    from tiny_models.families import build_tiny_family, family_lora_state_dict

    family = families.FAMILIES[name]
    dtype = families.dtype_name(family, device, {})
    folder = cfg.work / "gpu" / f"{name}-{'tiny' if tiny else 'real'}"
    print(f"\n## {name} ({'tiny' if tiny else 'real size'}, {dtype} on {device})", flush=True)
    with quiet():
        if not (folder / "model_index.json").exists():
            if tiny:
                build_tiny_family(name, folder)
            else:
                from bench.gpu_models import build_real

                build_real(name, folder, device, families.torch_dtype(dtype))
        bare = DiffusionPipeline.from_pretrained(folder, dtype=families.torch_dtype(dtype), use_safetensors=True)
        bare.to(device)
    bare.set_progress_bar_config(disable=True)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    repos = {}
    for i, adapter in enumerate(("a", "b")):
        state = family_lora_state_dict(bare, name, seed=10 + i, rank=RANK)
        repos[adapter] = write_repo(cfg.work / "gpu" / "loras" / f"{name}-{'tiny' if tiny else 'real'}-{adapter}",
                                    {k: v.float().cpu() for k, v in state.items()})  # fmt: skip
    s = _settings(tiny)
    with studio_env(cfg), environ(STUDIO_MAX_IMAGE_COST="1000"), quiet():
        studio = ImageStudio(device=device)
        studio.load_base(str(folder))

        def request(mix, use_adapters=True):
            return ImageRequest("a red circle", dict(mix), use_adapters, 0, s["steps"], 3.5, s["size"], s["size"])

        def bare_image(mix):
            if mix:
                bare.set_adapters(list(mix), adapter_weights=list(mix.values()))
                bare.enable_lora()
            else:
                bare.disable_lora()
            with torch.inference_mode():
                bare(**families.call_arguments(bare, family, request(mix)), generator=torch.Generator().manual_seed(0))

        def ours_load():
            studio.load_adapter(str(repos["a"]), adapter_name="x")
            studio.delete_adapter("x")

        def bare_load():
            bare.load_lora_weights(str(repos["a"]), adapter_name="x")
            bare.delete_adapters("x")

        load = interleave({"studio": timed(ours_load), "bare": timed(bare_load)}, cfg.repeats, cfg.warmup)
        for adapter, repo in repos.items():
            studio.load_adapter(str(repo), adapter_name=adapter)
            bare.load_lora_weights(str(repo / "pytorch_lora_weights.safetensors"), adapter_name=adapter)

        def ours_switch():
            with studio._lock:  # what a generation does first: apply its mix (A -> B -> A)
                studio._apply_mix(request(MIX_B))
                studio._apply_mix(request(MIX_A))

        def bare_switch():
            bare.set_adapters(list(MIX_B), adapter_weights=list(MIX_B.values()))
            bare.set_adapters(list(MIX_A), adapter_weights=list(MIX_A.values()))

        switch = interleave({"studio": timed(ours_switch), "bare": timed(bare_switch)}, cfg.repeats, cfg.warmup)
        gen = interleave(
            {
                "studio_base": timed(lambda: studio.generate(request(MIX_A, use_adapters=False))),
                "studio_mix": timed(lambda: studio.generate(request(MIX_A))),
                "bare_base": timed(lambda: bare_image({})),
                "bare_mix": timed(lambda: bare_image(MIX_A)),
            },
            cfg.repeats,
            cfg.warmup,
        )
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if device == "cuda" else "n/a"
    return {
        "dtype": dtype,
        "steps": s["steps"],
        "size": s["size"],
        "base_s": median(gen["studio_base"]),
        "studio_mix_over_base": ratio(gen, "studio_mix", "studio_base"),
        "bare_mix_over_base": ratio(gen, "bare_mix", "bare_base"),
        "studio_switch_s": median(switch["studio"]) / 2,
        "bare_switch_s": median(switch["bare"]) / 2,
        "studio_load_s": median(load["studio"]),
        "bare_load_s": median(load["bare"]),
        "peak_gb": peak,
        "times": {"load": summary(load), "switch": summary(switch), "generation": summary(gen)},
    }
