"""Resident adapters: switch latency, generation and the next load at N = 1, 4, 16, 64 resident (issue 6, items 1, 8).

Per pipeline, these set-ups live side by side and are timed in the same rounds:

- ours:   an ImageStudio holding N adapters (loaded by local path, as the app loads them); a switch is what
          `generate` does when the request's mix differs from the applied one (`enable_lora` + `set_adapters`)
- bare:   the same pipeline through the bare diffusers call (`set_adapters`, `load_lora_weights` of the file)
- ref:    an ImageStudio holding only the active adapters: the "1 resident" baseline the ratios divide by
- reload: a bare pipeline holding only the active adapters that switches as many Spaces do: unload, then load
          from disk (or from a state dict kept in RAM)
- slots:  the K-slot prototype (bench/slots.py) with the N adapters in RAM; "hit" when the mix's adapters already
          sit in slots, "miss" when both must be filled (by `copy_`, or by `load_lora_weights(hotswap=True)`)

A switch case flips A -> B -> A and reports the mean of the two, so every case leaves mix A applied for the next.
"""

import numpy as np

from bench.common import (
    WEIGHT_NAME,
    BenchConfig,
    Goal,
    adapter_repos,
    generate,
    image_request,
    interleave,
    load_pipe,
    median,
    ms,
    quiet,
    resolve_pipeline,
    skip_offload_walk,
    studio_env,
    studio_for,
    summary,
    table,
    timed,
    write_result,
)
from bench.slots import SlotPool

K_SLOTS = 4
# "Flat": the cost at the largest N, as % of a generation, within 1.2x (or 0.1 points) of that at N = 4, the first
# N where A and B are different adapters (below it B is A at other weights, a cheaper switch for the slots).
FLAT_RATIO, FLAT_POINTS = 1.2, 0.1


def mixes(n: int) -> tuple[dict, dict]:
    """(A, B): two mixes of resident adapters; A is also the mix every generation uses."""
    if n >= 4:
        return {"a0": 0.8, "a1": 0.6}, {"a2": 0.7, "a3": 0.5}
    if n >= 2:
        return {"a0": 0.8, "a1": 0.6}, {"a0": 0.5, "a1": 0.9}
    return {"a0": 0.8}, {"a0": 0.5}


def _reapply(studio, spec, mix: dict) -> None:
    """Make the studio apply `mix` now (untimed), after something changed the pipeline behind its back."""
    with studio._lock:
        studio._applied = "unknown"
        studio._apply_mix(image_request(spec, mix))


def _flip(switch, a, b) -> float:
    """Seconds per switch of A -> B -> A."""
    import time

    start = time.perf_counter()
    switch(b)
    switch(a)
    return (time.perf_counter() - start) / 2


def run_pipeline(cfg: BenchConfig, name: str) -> dict:
    spec = resolve_pipeline(name, cfg)
    ns = cfg.pick((1, 4, 16, 64), (1, 2))
    print(f"\n## resident adapters on {spec.name}: N = {ns}\n{spec.note}", flush=True)
    studio, ref = studio_for(spec, cfg), studio_for(spec, cfg)
    reload_pipe, slot_pipe = load_pipe(spec), load_pipe(spec)
    repos = adapter_repos(ref.pipe, spec, cfg, max(ns) + 1)
    names = [f"a{i}" for i in range(len(repos))]
    probe = repos[-1]  # the "next load": never resident
    with quiet():
        ram = {n: _read(repo) for n, repo in zip(names, repos, strict=True)}
        pool = SlotPool(slot_pipe, K_SLOTS, spec.rank, spec.targets)
        ref_pool = SlotPool(load_pipe(spec), K_SLOTS, spec.rank, spec.targets)  # holds only mix A: the slots' ref
    loaded, rows, per_n = 0, [], {}
    for n in ns:
        a, b = mixes(n)
        with quiet():
            while loaded < n:
                studio.load_adapter(str(repos[loaded]), adapter_name=names[loaded])
                pool.add(names[loaded], repos[loaded] / WEIGHT_NAME)
                loaded += 1
            for adapter in a:
                if adapter not in {x["adapter_name"] for x in ref.list_adapters()}:
                    ref.load_adapter(str(repos[names.index(adapter)]), adapter_name=adapter)
                    ref_pool.add(adapter, repos[names.index(adapter)] / WEIGHT_NAME)
            for adapter in reload_pipe.get_list_adapters().get("unet", []):
                reload_pipe.delete_adapters(adapter)
            for adapter in a:
                reload_pipe.load_lora_weights(dict(ram[adapter]), adapter_name=adapter)
            reload_pipe.set_adapters(list(a), adapter_weights=list(a.values()))
        _reapply(studio, spec, a)
        _reapply(ref, spec, a)
        check = _check_slots(pool, ref, spec, a) if n == ns[-1] else None
        cases = _cases(cfg, spec, studio, ref, reload_pipe, pool, ref_pool, repos, ram, probe, a, b)
        with quiet():
            times = interleave(cases, cfg.repeats, cfg.warmup)
        per_n[n] = result = _ratios(times)
        result["times"] = summary(times)
        result["modules_in_unet"] = {"ours": sum(1 for _ in studio.pipe.unet.modules()),
                                     "slots": sum(1 for _ in pool.pipe.unet.modules())}  # fmt: skip
        if check is not None:
            result["slots_max_pixel_diff_vs_injected"] = check
        rows.append(_row(n, result))
    title = f"on {spec.name} ({spec.steps} steps, {spec.size}x{spec.size}), medians of per-round ratios"
    text = table(
        f"Generation and next load against N resident {title}; 'ref' holds only the active adapters",
        ["N", "modules in UNet (ours / slots)", "gen ours ÷ ref", "gen ours + stop-gap ÷ ref", "gen slots ÷ ref",
         "next load ours ÷ ref", "next load bare ÷ ref", "next load slots ÷ ref", "next load slots ÷ slots ref"],
        [r[0] for r in rows],
    )  # fmt: skip
    text += table(
        f"One switch between mixes A and B, as % of one generation, {title}",
        ["N", "ours (studio)", "bare set_adapters", "unload + load (disk)", "unload + load (RAM)",
         "slots hit", "slots hit, diffusers set_adapters", "slots positional (copy + scales)", "slots miss (copy)",
         "slots miss (hotswap=True)", "unload+load ÷ ours", "unload+load ÷ slots miss"],
        [r[1] for r in rows],
    )  # fmt: skip
    return {"pipeline": spec.describe(), "ns": list(ns), "k_slots": K_SLOTS, "per_n": per_n, "table": text,
            "goals": _goals(spec.name, ns, per_n)}  # fmt: skip


def _read(repo):
    from safetensors.torch import load_file

    return load_file(repo / WEIGHT_NAME)


def _cases(cfg, spec, studio, ref, reload_pipe, pool, ref_pool, repos, ram, probe, a, b) -> dict:
    """Every timed case of one round; each returns its own seconds and leaves mix A applied."""
    req_a = image_request(spec, a)

    def gen_slots():
        pool.activate(a)
        return timed(lambda: generate(pool.pipe, spec))()

    def gen_patched():
        with skip_offload_walk():
            return timed(lambda: studio.generate(req_a))()

    def ours_switch(mix):
        with studio._lock:
            studio._apply_mix(image_request(spec, mix))

    def bare_switch(mix):
        studio.pipe.set_adapters(list(mix), adapter_weights=list(mix.values()))

    def reload_switch(source):
        def switch(mix):
            current = reload_pipe.get_list_adapters().get("unet", [])
            reload_pipe.delete_adapters(current)
            for adapter in mix:
                i = int(adapter[1:])
                if source == "disk":
                    reload_pipe.load_lora_weights(str(repos[i]), weight_name=WEIGHT_NAME, adapter_name=adapter)
                else:
                    reload_pipe.load_lora_weights(dict(ram[adapter]), adapter_name=adapter)
            reload_pipe.set_adapters(list(mix), adapter_weights=list(mix.values()))

        return switch

    def slots_switch(fill, activation, miss, policy="lru"):
        def switch(mix):
            if miss:
                pool.forget()
            pool.activate(mix, fill=fill, activation=activation, policy=policy)

        return switch

    def slots_hit(activation):
        def case():
            pool.activate(b, activation=activation)  # untimed: both mixes in slots, whatever ran before
            pool.activate(a, activation=activation)
            return _flip(slots_switch("copy", activation, False), a, b)

        return case

    def load_studio(target):
        def case():
            seconds = timed(lambda: target.load_adapter(str(probe), adapter_name="probe"))()
            target.delete_adapter("probe")
            _reapply(target, spec, a)
            return seconds

        return case

    def load_bare():
        seconds = timed(lambda: studio.pipe.load_lora_weights(str(probe), weight_name=WEIGHT_NAME,
                                                              adapter_name="probe"))()  # fmt: skip
        studio.pipe.delete_adapters("probe")
        _reapply(studio, spec, a)
        return seconds

    def load_slots(target):
        def case():
            seconds = timed(lambda: target.add("probe", probe / WEIGHT_NAME))()
            target.delete("probe")
            return seconds

        return case

    return {
        "gen_ref": timed(lambda: ref.generate(req_a)),
        "gen_ours": timed(lambda: studio.generate(req_a)),
        "gen_ours_stopgap": gen_patched,
        "gen_slots": gen_slots,
        "switch_ours": lambda: _flip(ours_switch, a, b),
        "switch_bare": lambda: _flip(bare_switch, a, b),
        "switch_unload_load_disk": lambda: _flip(reload_switch("disk"), a, b),
        "switch_unload_load_ram": lambda: _flip(reload_switch("ram"), a, b),
        "switch_slots_hit": slots_hit("layers"),
        "switch_slots_hit_diffusers": slots_hit("diffusers"),
        "switch_slots_positional": lambda: _flip(slots_switch("copy", "layers", False, "positional"), a, b),
        "switch_slots_miss_copy": lambda: _flip(slots_switch("copy", "layers", True), a, b),
        "switch_slots_miss_hotswap": lambda: _flip(slots_switch("hotswap", "diffusers", True), a, b),
        "load_ref": load_studio(ref),
        "load_ours": load_studio(studio),
        "load_bare": load_bare,
        "load_slots_ref": load_slots(ref_pool),
        "load_slots": load_slots(pool),
    }


def _ratios(times: dict) -> dict:
    """The figures: generation and load against the 1-resident reference; switches as % of its generation."""

    def per_round(x, y):
        return median([p / q for p, q in zip(times[x], times[y], strict=True)])

    out = {f"{k}_÷_ref": per_round(k, "gen_ref") for k in ("gen_ours", "gen_ours_stopgap", "gen_slots")}
    for k in times:
        if k.startswith("switch_"):
            out[f"{k}_%_of_gen"] = 100 * per_round(k, "gen_ref")
    for k in ("load_ours", "load_bare", "load_slots"):
        out[f"{k}_÷_load_ref"] = per_round(k, "load_ref")
    out["load_slots_÷_load_slots_ref"] = per_round("load_slots", "load_slots_ref")
    out["unload_load_disk_÷_switch_ours"] = per_round("switch_unload_load_disk", "switch_ours")
    out["unload_load_disk_÷_switch_slots_hit"] = per_round("switch_unload_load_disk", "switch_slots_hit")
    out["unload_load_disk_÷_switch_slots_miss_copy"] = per_round("switch_unload_load_disk", "switch_slots_miss_copy")
    out["gen_ref_s"] = median(times["gen_ref"])
    return out


def _row(n: int, r: dict) -> tuple[list, list]:
    """(generation/load row, switch row) of the tables."""
    t, mods = r["times"], r["modules_in_unet"]

    def sw(k):
        return f"{ms(t[k]['median_s'])} ({r[k + '_%_of_gen']:.2f} %)"

    gen = [n, f"{mods['ours']:,} / {mods['slots']:,}", f"{r['gen_ours_÷_ref']:.3f}",
           f"{r['gen_ours_stopgap_÷_ref']:.3f}", f"{r['gen_slots_÷_ref']:.3f}", f"{r['load_ours_÷_load_ref']:.2f}",
           f"{r['load_bare_÷_load_ref']:.2f}", f"{r['load_slots_÷_load_ref']:.2f}",
           f"{r['load_slots_÷_load_slots_ref']:.2f}"]  # fmt: skip
    switch = [n, sw("switch_ours"), sw("switch_bare"), sw("switch_unload_load_disk"), sw("switch_unload_load_ram"),
              sw("switch_slots_hit"), sw("switch_slots_hit_diffusers"), sw("switch_slots_positional"),
              sw("switch_slots_miss_copy"), sw("switch_slots_miss_hotswap"),
              f"{r['unload_load_disk_÷_switch_ours']:.0f}×",
              f"{r['unload_load_disk_÷_switch_slots_miss_copy']:.0f}×"]  # fmt: skip
    return gen, switch


def _check_slots(pool, ref, spec, a) -> int:
    """Largest pixel difference (0-255) between the slot pool and the injected adapters, for mix A and the base."""
    worst = 0
    for mix in (a, {}):
        pool.activate(mix)
        injected = np.asarray(ref.generate(image_request(spec, mix, use_adapters=bool(mix)))).astype(int)
        slotted = np.asarray(generate(pool.pipe, spec)).astype(int)
        worst = max(worst, int(np.abs(injected - slotted).max()))
    pool.activate(a)
    _reapply(ref, spec, a)
    return worst


def _goals(pipeline: str, ns, per_n: dict) -> list[Goal]:
    n_lo = next((n for n in ns if n >= 4), ns[0])
    lo, hi = per_n[n_lo], per_n[ns[-1]]
    goals = []
    for who, key in (("ours", "switch_ours"), ("slots prototype, hit", "switch_slots_hit"),
                     ("slots prototype, positional", "switch_slots_positional"),
                     ("slots prototype, miss (copy)", "switch_slots_miss_copy")):  # fmt: skip
        pct = [per_n[n][f"{key}_%_of_gen"] for n in ns]
        pct_lo, pct_hi = lo[f"{key}_%_of_gen"], hi[f"{key}_%_of_gen"]
        flat = pct_hi <= FLAT_RATIO * pct_lo or pct_hi - pct_lo <= FLAT_POINTS
        goals.append(Goal(
            f"switch ≤ 1 % of a generation at every N, flat N={n_lo}→{ns[-1]} [{who}]", pipeline=pipeline,
            measured=" → ".join(f"{p:.2f} %" for p in pct) + f" (N={n_lo}→{ns[-1]}: {pct_hi / pct_lo:.2f}×)",
            passed=max(pct) <= 1.0 and flat,
        ))  # fmt: skip
    for who, key in (("ours", "gen_ours_÷_ref"), ("ours + stop-gap", "gen_ours_stopgap_÷_ref"),
                     ("slots prototype", "gen_slots_÷_ref")):  # fmt: skip
        goals.append(Goal(f"generation with N={ns[-1]} resident within 5 % of 1 [{who}]", pipeline=pipeline,
                          measured=f"{hi[key]:.3f}×", passed=hi[key] <= 1.05))  # fmt: skip
    for who, key in (("ours", "load_ours_÷_load_ref"), ("slots prototype", "load_slots_÷_load_slots_ref")):
        goals.append(Goal(f"next load with N={ns[-1]} resident within 5 % of 1 [{who}]", pipeline=pipeline,
                          measured=f"{hi[key]:.2f}×", passed=hi[key] <= 1.05))  # fmt: skip
    for who, key in (("ours", "unload_load_disk_÷_switch_ours"),
                     ("slots prototype, miss (copy)", "unload_load_disk_÷_switch_slots_miss_copy")):  # fmt: skip
        goals.append(Goal(f"switch ≥ 50× faster than unload + load, N={ns[-1]} [{who}]", pipeline=pipeline,
                          measured=f"{hi[key]:.1f}×", passed=hi[key] >= 50))  # fmt: skip
    return goals


def run(cfg: BenchConfig) -> dict:
    with studio_env(cfg):
        results = {name: run_pipeline(cfg, name) for name in cfg.pipelines}
    goals = [g for r in results.values() for g in r["goals"]]
    write_result(cfg, "resident", {"pipelines": results, "goals": goals})
    return {"goals": goals}
