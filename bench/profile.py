"""Why generation, switch and load grow with the number of resident adapters: a diagnosis with the bare libraries.

Two pipelines side by side: `lo` holds the two active adapters only, `hi` holds N (the two plus N-2 idle ones).
For each operation, cProfile runs on both and the functions whose own time grew the most are listed with their
call counts; then the suspects are timed alone, interleaved, lo against hi:

- the UNet forward alone (is the per-step LoRA compute itself flat?),
- `pipe._execution_device` and `unet.device` (diffusers walks every module looking for an offloading hook),
- `pipe.enable_lora()`, `pipe.set_adapters(...)` and peft's per-layer `set_adapter` (walk all modules; toggle
  requires_grad on every adapter's parameters in every layer),
- `unet.state_dict()` (built twice per load: `_create_lora_config` and `set_peft_model_state_dict`).
"""

import cProfile
import pstats

from bench.common import (
    BenchConfig,
    generate,
    interleave,
    load_pipe,
    make_lora,
    median,
    ms,
    quiet,
    resolve_pipeline,
    table,
    timed,
    write_result,
)

TOP = 12


def _profile(fn, rounds: int = 1) -> dict:
    """{(file, line, function): (calls, own seconds, cumulative seconds)} for `rounds` calls of fn."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(rounds):
        fn()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    return {key: (nc, tt / rounds, ct / rounds) for key, (cc, nc, tt, ct, callers) in stats.items()}


def _short(key) -> str:
    file, line, func = key
    for marker in ("site-packages/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{file}:{line}({func})" if line else func


def _growth(lo: dict, hi: dict, rounds: int) -> list[list]:
    """The functions whose own time grew the most from lo to hi, with their calls per operation."""
    rows = []
    for key in set(lo) | set(hi):
        nc_lo, tt_lo, _ = lo.get(key, (0, 0.0, 0.0))
        nc_hi, tt_hi, ct_hi = hi.get(key, (0, 0.0, 0.0))
        rows.append((tt_hi - tt_lo, key, nc_lo // rounds, nc_hi // rounds, tt_lo, tt_hi, ct_hi))
    rows.sort(reverse=True, key=lambda r: r[0])
    return [[f"`{_short(k)}`", f"{a:,} → {b:,}", ms(t_lo), ms(t_hi), ms(c_hi)]
            for _, k, a, b, t_lo, t_hi, c_hi in rows[:TOP]]  # fmt: skip


def _growth_cumulative(lo: dict, hi: dict, rounds: int) -> list[list]:
    """The peft / diffusers functions whose cumulative time grew the most: where in the libraries the time goes."""
    rows = []
    for key in set(hi):
        if not any(lib in key[0] for lib in ("/peft/", "/diffusers/")):
            continue
        nc_lo, _, ct_lo = lo.get(key, (0, 0.0, 0.0))
        nc_hi, _, ct_hi = hi[key]
        rows.append((ct_hi - ct_lo, key, nc_lo // rounds, nc_hi // rounds, ct_lo, ct_hi))
    rows.sort(reverse=True, key=lambda r: r[0])
    return [[f"`{_short(k)}`", f"{a:,} → {b:,}", ms(c_lo), ms(c_hi)] for _, k, a, b, c_lo, c_hi in rows[:TOP]]


def run_pipeline(cfg: BenchConfig, name: str) -> dict:
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    spec = resolve_pipeline(name, cfg)
    n_hi = cfg.pick(64, 4)
    print(f"\n## profile on {spec.name}: 2 resident against {n_hi}, the same 2 active", flush=True)
    lo, hi = load_pipe(spec), load_pipe(spec)
    loras = [make_lora(lo, spec, seed=1000 + i) for i in range(n_hi + 1)]
    with quiet():
        for i in range(2):
            lo.load_lora_weights(dict(loras[i]), adapter_name=f"a{i}")
        for i in range(n_hi):
            hi.load_lora_weights(dict(loras[i]), adapter_name=f"a{i}")
    mix_names = ["a0", "a1"]
    for p in (lo, hi):
        p.set_adapters(mix_names, adapter_weights=[0.8, 0.6])

    def switch(p):
        def op():
            p.set_adapters(mix_names, adapter_weights=[0.5, 0.9])
            p.set_adapters(mix_names, adapter_weights=[0.8, 0.6])

        return op

    def load_next(p):
        def op():
            p.load_lora_weights(dict(loras[-1]), adapter_name="probe")
            p.delete_adapters("probe")
            p.set_adapters(mix_names, adapter_weights=[0.8, 0.6])

        return op

    ops = {
        "generation": (lambda p: lambda: generate(p, spec), 1),
        "switch (2 × set_adapters)": (switch, 3),
        "next load (+ delete)": (load_next, 1),
    }
    growth, tables = {}, []
    with quiet():
        for op_name, (make, rounds) in ops.items():
            make(lo)(), make(hi)()  # warm
            p_lo, p_hi = _profile(make(lo), rounds), _profile(make(hi), rounds)
            rows = _growth(p_lo, p_hi, rounds)
            cumulative = _growth_cumulative(p_lo, p_hi, rounds)
            growth[op_name] = {"own": rows, "cumulative": cumulative}
            tables.append(table(
                f"{op_name} on {spec.name}: functions whose own time grew most, 2 → {n_hi} resident (cProfile)",
                ["function", "calls (2 → N)", "own time, 2", f"own time, {n_hi}", f"cumulative, {n_hi}"], rows,
            ))  # fmt: skip
            tables.append(table(
                f"{op_name} on {spec.name}: peft / diffusers functions whose cumulative time grew most",
                ["function", "calls (2 → N)", "cumulative, 2", f"cumulative, {n_hi}"], cumulative,
            ))  # fmt: skip

    # The suspects alone, lo against hi in the same rounds.
    latents = torch.randn(2, 4, spec.size // lo.vae_scale_factor, spec.size // lo.vae_scale_factor)
    text = torch.randn(2, lo.tokenizer.model_max_length, lo.unet.config.cross_attention_dim)

    def unet_forward(p):
        def op():
            with torch.inference_mode():
                p.unet(latents, 500, encoder_hidden_states=text)

        return op

    def peft_set_adapter(p):
        layers = [m for m in p.unet.modules() if isinstance(m, BaseTunerLayer)]

        def op():
            for layer in layers:
                layer.set_adapter(mix_names, inference_mode=True)

        return op

    def direct_activation(p):
        layers = [m for m in p.unet.modules() if isinstance(m, BaseTunerLayer)]

        def op():  # the floor: what activation costs without the walks and the requires_grad toggling
            for layer in layers:
                layer._active_adapter = mix_names
                layer.set_scale("a0", 0.8)
                layer.set_scale("a1", 0.6)

        return op

    suspects = {
        "UNet forward alone (one step, batch 2)": unet_forward,
        "pipe._execution_device": lambda p: lambda: p._execution_device,
        "pipe.unet.device": lambda p: lambda: p.unet.device,
        "pipe.enable_lora()": lambda p: p.enable_lora,
        "pipe.set_adapters(2 names)": lambda p: lambda: p.set_adapters(mix_names, adapter_weights=[0.8, 0.6]),
        "peft set_adapter on each LoRA layer": peft_set_adapter,
        "floor: layer._active_adapter = names + set_scale, each LoRA layer": direct_activation,
        "pipe.unet.state_dict()": lambda p: p.unet.state_dict,
    }
    cases = {}
    for label, make in suspects.items():
        cases[f"{label}|lo"], cases[f"{label}|hi"] = timed(make(lo)), timed(make(hi))
    with quiet():
        times = interleave(cases, cfg.pick(max(cfg.repeats, 3), 1), cfg.warmup)
    suspect_rows, suspect_data = [], {}
    for label in suspects:
        t_lo, t_hi = median(times[f"{label}|lo"]), median(times[f"{label}|hi"])
        r = median([b / a for a, b in zip(times[f"{label}|lo"], times[f"{label}|hi"], strict=True)])
        suspect_rows.append([label, ms(t_lo), ms(t_hi), f"{r:.2f}×"])
        suspect_data[label] = {"lo_s": t_lo, "hi_s": t_hi, "ratio": r}
    modules = [sum(1 for _ in p.unet.modules()) for p in (lo, hi)]
    tables.append(table(
        f"The suspects timed alone on {spec.name}: 2 resident against {n_hi} (UNet modules {modules[0]:,} → "
        f"{modules[1]:,})", ["operation", "2 resident", f"{n_hi} resident", "ratio"], suspect_rows,
    ))  # fmt: skip
    return {"pipeline": spec.describe(), "n_hi": n_hi, "unet_modules": modules, "growth": growth,
            "suspects": suspect_data, "tables": tables}  # fmt: skip


def run(cfg: BenchConfig) -> dict:
    results = {name: run_pipeline(cfg, name) for name in cfg.pipelines}
    write_result(cfg, "profile", {"pipelines": results})
    return {}
