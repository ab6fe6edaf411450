"""Generation time with adapters against the base, beside the FLOP ratio (issue 6, item 2).

Pipelines from the same folder, timed in the same rounds: the base; one adapter unfused; three unfused;
one fused (`fuse_lora`, peft's layers stay and skip the LoRA branch); one fused then `unload_lora_weights` (the
plain base layers holding the fused weights); and the studio as the app runs it, with one and three adapters
(fused by itself, peft_core/image/slots.py) and with fusion turned off (STUDIO_FUSE=0). FLOPs are counted by running
one generation of each under torch.utils.flop_counter.FlopCounterMode, so the FLOP ratio covers the whole
generation (text encoder, every UNet step, VAE), the same span the timer sees; the studio's are its bare twins'.
"""

import dataclasses

from bench.common import (
    BenchConfig,
    Goal,
    environ,
    generate,
    image_request,
    interleave,
    load_pipe,
    make_lora,
    median,
    ms,
    quiet,
    resolve_pipeline,
    studio_env,
    studio_for,
    summary,
    table,
    target_linears,
    timed,
    write_repo,
    write_result,
)

FUSED_TOLERANCE = 0.03  # fused ÷ base = 1.00 ± this
OVERHEAD_SLACK = 0.05  # unfused overhead may pass the FLOP overhead by this much


def _flops(pipe, spec) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        generate(pipe, spec)
    return counter.get_total_flops()


def run_pipeline(cfg: BenchConfig, name: str) -> dict:
    spec = resolve_pipeline(name, cfg)
    print(f"\n## generation on {spec.name}: {spec.note}", flush=True)
    pipes = {key: load_pipe(spec) for key in ("base", "unfused_1", "unfused_3", "fused_1", "fused_1_unloaded")}
    loras = [make_lora(pipes["base"], spec, seed=2000 + i) for i in range(3)]
    with quiet():
        for key, count in (("unfused_1", 1), ("unfused_3", 3), ("fused_1", 1), ("fused_1_unloaded", 1)):
            pipe = pipes[key]
            for i in range(count):
                pipe.load_lora_weights(dict(loras[i]), adapter_name=f"a{i}")
            pipe.set_adapters([f"a{i}" for i in range(count)], adapter_weights=[0.8] * count)
        for key in ("fused_1", "fused_1_unloaded"):
            pipes[key].fuse_lora(adapter_names=["a0"], lora_scale=0.8)
        pipes["fused_1_unloaded"].unload_lora_weights()
        flops = {key: _flops(pipe, spec) for key, pipe in pipes.items()}
        cases = {key: timed(lambda p=pipe: generate(p, spec)) for key, pipe in pipes.items()}
        repos = [write_repo(cfg.work / "adapters" / f"{spec.name}-gen-{i}", lora) for i, lora in enumerate(loras)]
        studios = {}
        for key, fuse, count in (("ours_1", "1", 1), ("ours_3", "1", 3), ("ours_1_unfused", "0", 1),
                                 ("ours_3_unfused", "0", 3)):  # fmt: skip
            with studio_env(cfg), environ(STUDIO_FUSE=fuse):
                studios[key] = studio = studio_for(spec, cfg)
                for i in range(count):
                    studio.load_adapter(str(repos[i]), adapter_name=f"a{i}")
            request = image_request(spec, {f"a{i}": 0.8 for i in range(count)})
            cases[key] = timed(lambda s=studio, r=request: s.generate(r))
            flops[key] = flops["unfused_1" if count == 1 else "unfused_3"]
            if fuse == "1":
                # The same studio with its adapters off (the disable toggle): the same modules and memory, so
                # fused ÷ this has no pipeline-to-pipeline difference in it (allocation, layout), only fusion.
                base = dataclasses.replace(request, use_adapters=False)
                cases[f"{key}_base"] = timed(lambda s=studio, r=base: s.generate(r))
                flops[f"{key}_base"] = flops["base"]
        times = interleave(cases, cfg.repeats, cfg.warmup)
    layers = target_linears(pipes["base"].unet, spec.targets)
    per_layer = [spec.rank * (m.in_features + m.out_features) / (m.in_features * m.out_features)
                 for m in layers.values()]  # fmt: skip
    rows, ratios = [], {}
    for key in times:
        t = median([x / b for x, b in zip(times[key], times["base"], strict=True)])
        f = flops[key] / flops["base"]
        ratios[key] = {"time_÷_base": t, "flops_÷_base": f, "median_s": median(times[key]), "flops": flops[key]}
        rows.append([key.replace("_", " "), ms(median(times[key])), f"{t:.3f}", f"{f:.4f}",
                     f"{(t - 1) * 100:+.1f} %", f"{(f - 1) * 100:+.2f} %"])  # fmt: skip
    text = table(
        f"Generation on {spec.name} ({spec.steps} steps, {spec.size}x{spec.size}, rank {spec.rank} on "
        f"{len(layers)} attention projections; per-layer r(d_in+d_out)/(d_in·d_out) = {min(per_layer):.4f} to "
        f"{max(per_layer):.4f}, sum {sum(per_layer):.3f})",
        ["pipeline", "time", "time ÷ base", "FLOPs ÷ base", "time overhead", "FLOP overhead"], rows,
    )  # fmt: skip
    goals = [
        Goal("fused ÷ base = 1.00 ± 0.03 (fuse_lora)", pipeline=spec.name,
             measured=f"{ratios['fused_1']['time_÷_base']:.3f}",
             passed=abs(ratios["fused_1"]["time_÷_base"] - 1) <= FUSED_TOLERANCE),
        Goal("fused ÷ base = 1.00 ± 0.03 (fuse_lora + unload_lora_weights)", pipeline=spec.name,
             measured=f"{ratios['fused_1_unloaded']['time_÷_base']:.3f}",
             passed=abs(ratios["fused_1_unloaded"]["time_÷_base"] - 1) <= FUSED_TOLERANCE),
        Goal("the studio fuses by itself: ours ÷ base = 1.00 ± 0.03 (one adapter, the app's default)",
             pipeline=spec.name, measured=f"{ratios['ours_1']['time_÷_base']:.3f}",
             passed=abs(ratios["ours_1"]["time_÷_base"] - 1) <= FUSED_TOLERANCE),
        Goal("the studio fuses by itself: ours ÷ base = 1.00 ± 0.03 (three adapters, the app's default)",
             pipeline=spec.name, measured=f"{ratios['ours_3']['time_÷_base']:.3f}",
             passed=abs(ratios["ours_3"]["time_÷_base"] - 1) <= FUSED_TOLERANCE),
    ]  # fmt: skip
    for n in (1, 3):
        own = median([x / b for x, b in zip(times[f"ours_{n}"], times[f"ours_{n}_base"], strict=True)])
        ratios[f"ours_{n}"]["time_÷_own_base"] = own
        goals.append(Goal(f"fused ÷ base = 1.00 ± 0.03 (ours, {n} adapter{'s' * (n > 1)}, ÷ the same studio "
                          "with adapters off)", pipeline=spec.name, measured=f"{own:.3f}",
                          passed=abs(own - 1) <= FUSED_TOLERANCE))  # fmt: skip
    for key in ("unfused_1", "unfused_3", "ours_1_unfused", "ours_3_unfused"):
        over_t, over_f = ratios[key]["time_÷_base"] - 1, ratios[key]["flops_÷_base"] - 1
        goals.append(Goal(f"unfused overhead ≤ FLOP overhead + 5 % ({key.replace('_', ' ')})", pipeline=spec.name,
                          measured=f"{over_t * 100:+.1f} % vs FLOPs {over_f * 100:+.2f} %",
                          passed=over_t <= over_f + OVERHEAD_SLACK))  # fmt: skip
    return {"pipeline": spec.describe(), "ratios": ratios, "times": summary(times), "per_layer_flop_ratio":
            {"min": min(per_layer), "max": max(per_layer), "sum": sum(per_layer), "layers": len(per_layer)},
            "table": text, "goals": goals}  # fmt: skip


def run(cfg: BenchConfig) -> dict:
    results = {name: run_pipeline(cfg, name) for name in cfg.pipelines}
    goals = [g for r in results.values() for g in r["goals"]]
    write_result(cfg, "generation", {"pipelines": results, "goals": goals})
    return {"goals": goals}
