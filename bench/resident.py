"""Resident adapters: switch latency, generation and the next load at N = 1, 4, 16, 64 resident (issue 6, items 1, 8).

Per pipeline, these set-ups live side by side and are timed in the same rounds:

- ours:   an ImageStudio holding N adapters (loaded by local path, as the app loads them): N in RAM, at most
          4 in the pipeline's slots (peft_core/image/slots.py). "hit": both mixes already sit in slots; "miss": the
          slots hold other adapters of the same shapes, so each switch fills them by copy. Fused (the app's
          default) and unfused (STUDIO_FUSE=0) are both timed.
- ref:    an ImageStudio holding only the active adapters: the "1 resident" baseline the ratios divide by
- bare:   a pipeline with all N adapters injected, switched and loaded through the bare diffusers calls
          (`set_adapters`, `load_lora_weights`): the behaviour of diffusers#11816
- reload: a bare pipeline holding only the active adapters that switches as many Spaces do: unload, then load
          from disk (or from a state dict kept in RAM), or `load_lora_weights(hotswap=True)` over them

A switch case flips A -> B -> A and reports the mean of the two, so every case leaves mix A applied for the next.
"""

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
    studio_env,
    studio_for,
    summary,
    table,
    timed,
    write_result,
)

# "Flat": the cost at the largest N, as % of a generation, within 1.2x (or 0.1 points) of that at N = 4, the first
# N where A and B are different adapters (below it B is A at other weights).
FLAT_RATIO, FLAT_POINTS = 1.2, 0.1


def mixes(n: int) -> tuple[dict, dict]:
    """(A, B): two mixes of resident adapters; A is also the mix every generation uses."""
    if n >= 4:
        return {"a0": 0.8, "a1": 0.6}, {"a2": 0.7, "a3": 0.5}
    if n >= 2:
        return {"a0": 0.8, "a1": 0.6}, {"a0": 0.5, "a1": 0.9}
    return {"a0": 0.8}, {"a0": 0.5}


def _reapply(studio, spec, mix: dict) -> None:
    """Make the studio apply `mix` now (untimed)."""
    with studio._lock:
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
    ns = cfg.pick((1, 4, 16, 64), (1, 4))
    print(f"\n## resident adapters on {spec.name}: N = {ns}\n{spec.note}", flush=True)
    studio, ref = studio_for(spec, cfg), studio_for(spec, cfg)
    bare_pipe, reload_pipe = load_pipe(spec), load_pipe(spec)
    repos = adapter_repos(ref.pipe, spec, cfg, max(ns) + 1)
    names = [f"a{i}" for i in range(len(repos))]
    probe = repos[-1]  # the "next load": never resident
    with quiet():
        ram = {n: _read(repo) for n, repo in zip(names, repos, strict=True)}
    loaded, rows, per_n = 0, [], {}
    for n in ns:
        a, b = mixes(n)
        with quiet():
            while loaded < n:
                studio.load_adapter(str(repos[loaded]), adapter_name=names[loaded])
                bare_pipe.load_lora_weights(dict(ram[names[loaded]]), adapter_name=names[loaded])
                loaded += 1
            for adapter in a:
                if adapter not in {x["adapter_name"] for x in ref.list_adapters()}:
                    ref.load_adapter(str(repos[names.index(adapter)]), adapter_name=adapter)
            for adapter in reload_pipe.get_list_adapters().get("unet", []):
                reload_pipe.delete_adapters(adapter)
            for adapter in a:
                reload_pipe.load_lora_weights(dict(ram[adapter]), adapter_name=adapter)
            reload_pipe.set_adapters(list(a), adapter_weights=list(a.values()))
            bare_pipe.set_adapters(list(a), adapter_weights=list(a.values()))
        _reapply(studio, spec, a)
        _reapply(ref, spec, a)
        cases = _cases(spec, studio, ref, bare_pipe, reload_pipe, repos, ram, probe, a, b)
        with quiet():
            times = interleave(cases, cfg.repeats, cfg.warmup)
        per_n[n] = result = _ratios(times)
        result["times"] = summary(times)
        result["modules_in_unet"] = {"ours": sum(1 for _ in studio.pipe.unet.modules()),
                                     "bare": sum(1 for _ in bare_pipe.unet.modules())}  # fmt: skip
        result["slots"] = len(studio.slots.slots)
        rows.append(_row(n, result))
    title = f"on {spec.name} ({spec.steps} steps, {spec.size}x{spec.size}), medians of per-round ratios"
    text = table(
        f"Generation and next load against N resident {title}; 'ref' holds only the active adapters",
        ["N", "modules in UNet (ours / bare)", "gen ours ÷ ref", "gen bare ÷ ref", "next load ours ÷ ref",
         "next load bare ÷ ref"],
        [r[0] for r in rows],
    )  # fmt: skip
    text += table(
        f"One switch between mixes A and B, as % of one generation, {title}",
        ["N", "ours, hit (fused)", "ours, hit (unfused)", "ours, miss (copy, fused)", "bare set_adapters",
         "unload + load (disk)", "unload + load (RAM)", "load_lora_weights(hotswap=True)", "unload+load ÷ ours hit",
         "unload+load ÷ ours miss"],
        [r[1] for r in rows],
    )  # fmt: skip
    return {"pipeline": spec.describe(), "ns": list(ns), "per_n": per_n, "table": text,
            "goals": _goals(spec.name, ns, per_n)}  # fmt: skip


def _read(repo):
    from safetensors.torch import load_file

    return load_file(repo / WEIGHT_NAME)


def _cases(spec, studio, ref, bare_pipe, reload_pipe, repos, ram, probe, a, b) -> dict:
    """Every timed case of one round; each returns its own seconds and leaves mix A applied."""
    req_a = image_request(spec, a)
    slots = studio.slots

    def ours_switch(mix):
        with studio._lock:
            studio._apply_mix(image_request(spec, mix))

    def ours_unfused():
        slots.fuse = False
        try:
            _reapply(studio, spec, b)  # untimed: unfused and both mixes in slots
            _reapply(studio, spec, a)
            return _flip(ours_switch, a, b)
        finally:
            slots.fuse = True
            _reapply(studio, spec, b)
            _reapply(studio, spec, a)

    def ours_miss():
        def switch(mix):
            # Untimed: the slots now hold "other" adapters of the same shapes, as after serving other users.
            for i, slot in enumerate(slots.slots):
                if slot.holder is not None:
                    slot.holder = f"(other {i})"
            return timed(lambda: ours_switch(mix))()

        seconds = (switch(b) + switch(a)) / 2
        _reapply(studio, spec, a)
        return seconds

    def bare_switch(mix):
        bare_pipe.set_adapters(list(mix), adapter_weights=list(mix.values()))

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

    def hotswap_case():
        """Load B's files over A's adapters in place (names kept), then back: diffusers' hotswap."""
        held = list(a)

        def switch(mix):
            for target, adapter in zip(held, mix, strict=True):
                reload_pipe.load_lora_weights(dict(ram[adapter]), adapter_name=target, hotswap=True)
            reload_pipe.set_adapters(held, adapter_weights=list(mix.values()))

        return _flip(switch, a, b)

    def load_studio(target):
        def case():
            seconds = timed(lambda: target.load_adapter(str(probe), adapter_name="probe"))()
            target.delete_adapter("probe")
            # Untimed: the load took a slot from mix B; put it back, so the next round's "hit" is one.
            if all(name in target.slots.residents for name in b):  # ref holds mix A only
                _reapply(target, spec, b)
            _reapply(target, spec, a)
            return seconds

        return case

    def load_bare():
        seconds = timed(lambda: bare_pipe.load_lora_weights(str(probe), weight_name=WEIGHT_NAME,
                                                            adapter_name="probe"))()  # fmt: skip
        bare_pipe.delete_adapters("probe")
        bare_pipe.set_adapters(list(a), adapter_weights=list(a.values()))
        return seconds

    return {
        "gen_ref": timed(lambda: ref.generate(req_a)),
        "gen_ours": timed(lambda: studio.generate(req_a)),
        "gen_bare": timed(lambda: generate(bare_pipe, spec)),
        "switch_ours": lambda: _flip(ours_switch, a, b),
        "switch_ours_unfused": ours_unfused,
        "switch_ours_miss": ours_miss,
        "switch_bare": lambda: _flip(bare_switch, a, b),
        "switch_unload_load_disk": lambda: _flip(reload_switch("disk"), a, b),
        "switch_unload_load_ram": lambda: _flip(reload_switch("ram"), a, b),
        "switch_hotswap": hotswap_case,
        "load_ref": load_studio(ref),
        "load_ours": load_studio(studio),
        "load_bare": load_bare,
    }


def _ratios(times: dict) -> dict:
    """The figures: generation and load against the 1-resident reference; switches as % of its generation."""

    def per_round(x, y):
        return median([p / q for p, q in zip(times[x], times[y], strict=True)])

    out = {f"{k}_÷_ref": per_round(k, "gen_ref") for k in ("gen_ours", "gen_bare")}
    for k in times:
        if k.startswith("switch_"):
            out[f"{k}_%_of_gen"] = 100 * per_round(k, "gen_ref")
    for k in ("load_ours", "load_bare"):
        out[f"{k}_÷_load_ref"] = per_round(k, "load_ref")
    out["unload_load_disk_÷_switch_ours"] = per_round("switch_unload_load_disk", "switch_ours")
    out["unload_load_disk_÷_switch_ours_miss"] = per_round("switch_unload_load_disk", "switch_ours_miss")
    out["gen_ref_s"] = median(times["gen_ref"])
    return out


def _row(n: int, r: dict) -> tuple[list, list]:
    """(generation/load row, switch row) of the tables."""
    t, mods = r["times"], r["modules_in_unet"]

    def sw(k):
        return f"{ms(t[k]['median_s'])} ({r[k + '_%_of_gen']:.2f} %)"

    gen = [n, f"{mods['ours']:,} / {mods['bare']:,}", f"{r['gen_ours_÷_ref']:.3f}", f"{r['gen_bare_÷_ref']:.3f}",
           f"{r['load_ours_÷_load_ref']:.2f}", f"{r['load_bare_÷_load_ref']:.2f}"]  # fmt: skip
    switch = [n, sw("switch_ours"), sw("switch_ours_unfused"), sw("switch_ours_miss"), sw("switch_bare"),
              sw("switch_unload_load_disk"), sw("switch_unload_load_ram"), sw("switch_hotswap"),
              f"{r['unload_load_disk_÷_switch_ours']:.0f}×", f"{r['unload_load_disk_÷_switch_ours_miss']:.0f}×"]
    return gen, switch


def _goals(pipeline: str, ns, per_n: dict) -> list[Goal]:
    n_lo = next((n for n in ns if n >= 4), ns[0])
    lo, hi = per_n[n_lo], per_n[ns[-1]]
    goals = []
    for who, key in (("ours, hit, fused", "switch_ours"), ("ours, hit, unfused", "switch_ours_unfused"),
                     ("ours, miss", "switch_ours_miss")):  # fmt: skip
        pct = [per_n[n][f"{key}_%_of_gen"] for n in ns]
        pct_lo, pct_hi = lo[f"{key}_%_of_gen"], hi[f"{key}_%_of_gen"]
        flat = pct_hi <= FLAT_RATIO * pct_lo or pct_hi - pct_lo <= FLAT_POINTS
        goals.append(Goal(
            f"switch ≤ 1 % of a generation at every N, flat N={n_lo}→{ns[-1]} [{who}]", pipeline=pipeline,
            measured=" → ".join(f"{p:.2f} %" for p in pct) + f" (N={n_lo}→{ns[-1]}: {pct_hi / pct_lo:.2f}×)",
            passed=max(pct) <= 1.0 and flat,
        ))  # fmt: skip
    goals.append(Goal(f"generation with N={ns[-1]} resident within 5 % of 1 [ours]", pipeline=pipeline,
                      measured=f"{hi['gen_ours_÷_ref']:.3f}× (bare diffusers: {hi['gen_bare_÷_ref']:.3f}×)",
                      passed=hi["gen_ours_÷_ref"] <= 1.05))  # fmt: skip
    measured = f"{hi['load_ours_÷_load_ref']:.2f}× (bare diffusers: {hi['load_bare_÷_load_ref']:.2f}×)"
    goals.append(Goal(f"next load with N={ns[-1]} resident within 5 % of 1 [ours]", pipeline=pipeline,
                      measured=measured, passed=hi["load_ours_÷_load_ref"] <= 1.05))  # fmt: skip
    for who, key in (("hit", "unload_load_disk_÷_switch_ours"), ("miss", "unload_load_disk_÷_switch_ours_miss")):
        goals.append(Goal(f"switch ≥ 50× faster than unload + load, N={ns[-1]} [ours, {who}]", pipeline=pipeline,
                          measured=f"{hi[key]:.1f}×", passed=hi[key] >= 50))  # fmt: skip
    return goals


def run(cfg: BenchConfig) -> dict:
    with studio_env(cfg):
        results = {name: run_pipeline(cfg, name) for name in cfg.pipelines}
    goals = [g for r in results.values() for g in r["goals"]]
    write_result(cfg, "resident", {"pipelines": results, "goals": goals})
    return {"goals": goals}
