"""The compiled denoiser (STUDIO_COMPILE=1, peft_core/image/compile.py): compiled ÷ eager generation with a switch
before every image, and the recompiles per switch (issue 30, item 3).

Two studios on the same pipeline folder with the same adapters, one eager and one compiled. The compiled one is
compiled by its first generation (timed alone: the one-off cost). Then, round by round, each studio switches to the
next mix of a cycle (weights, sets of adapters, a rank-2x adapter that refills a slot by re-adding, the base) and
generates: the ratio is the median of the per-round ratios. Recompiles are torch's own count of compiled frames
(compile.compiled_frames) across all those switches.
"""

from bench.common import (
    BenchConfig,
    Goal,
    adapter_repos,
    environ,
    image_request,
    interleave,
    median,
    ms,
    quiet,
    ratio,
    resolve_pipeline,
    studio_env,
    studio_for,
    summary,
    table,
    write_result,
)

# Hugging Face's "LoRA fast" post (https://huggingface.co/blog/lora-fast): FLUX.1-dev on an H100, hotswapping LoRAs
ANCHORS = [
    ["FLUX.1-dev, H100, bfloat16, no compile", "7.89 s", "huggingface.co/blog/lora-fast"],
    ["... hotswap + torch.compile, no recompile", "3.55 s (0.45×)", "huggingface.co/blog/lora-fast"],
    ["... torch.compile, recompiling at each swap", "5.09 s (0.65×)", "huggingface.co/blog/lora-fast"],
]
SLOTS = 2  # fewer slots than adapters, so that switches refill them


def _mixes(n: int) -> list[dict]:
    """The cycle of switches: single adapters at other weights, pairs, the rank-2x one ("big"), the base."""
    singles = [{f"a{i}": 0.4 + 0.2 * (i % 4)} for i in range(n)]
    pairs = [{f"a{i}": 0.6, f"a{(i + 1) % n}": 0.5} for i in range(n)]
    return [m for trio in zip(singles, pairs, [{"big": 0.8}, {}] * n, strict=False) for m in trio]


def run_pipeline(cfg: BenchConfig, name: str) -> dict:
    from peft_core.image.compile import compiled_frames

    spec = resolve_pipeline(name, cfg)
    print(f"\n## compile on {spec.name}: {spec.note}", flush=True)
    n = cfg.pick(4, 2)
    studios = {}
    for key, compiled in (("eager", "0"), ("compiled", "1")):
        with studio_env(cfg), environ(STUDIO_COMPILE=compiled, STUDIO_LORA_SLOTS=str(SLOTS)), quiet():
            studios[key] = studio = studio_for(spec, cfg)
            # made from the bare pipeline (before any LoRA layer wraps its projections), once and reused
            repos = adapter_repos(studio.pipe, spec, cfg, n) + adapter_repos(studio.pipe, spec, cfg, 1, 2 * spec.rank)
            for adapter_name, repo in zip([f"a{i}" for i in range(n)] + ["big"], repos, strict=True):
                studio.load_adapter(str(repo), adapter_name=adapter_name)
    import time

    frames_before = compiled_frames()
    start = time.perf_counter()
    with quiet():
        studios["compiled"].generate(image_request(spec, {}))
    first = time.perf_counter() - start
    frames_compiled = compiled_frames() - frames_before
    mixes = _mixes(n)
    position = {"eager": 0, "compiled": 0}

    def switch_and_generate(key: str) -> float:
        mix = mixes[position[key] % len(mixes)]
        position[key] += 1
        start = time.perf_counter()
        with quiet():
            studios[key].generate(image_request(spec, mix))
        return time.perf_counter() - start

    cases = {key: (lambda k=key: switch_and_generate(k)) for key in studios}
    after_first = compiled_frames()
    repeats = max(cfg.repeats, len(mixes)) if not cfg.quick else len(mixes)
    times = interleave(cases, repeats, warmup=0)
    switches = position["compiled"]
    recompiles = compiled_frames() - after_first
    fills = studios["compiled"].slots.stats
    r = ratio(times, "compiled", "eager")
    rows = [[spec.name, ms(first), frames_compiled, ms(median(times["eager"])), ms(median(times["compiled"])),
             f"{r:.3f}", switches, recompiles, f"{recompiles / switches:.2f}",
             f"{fills['copy_fills']} / {fills['inject_fills']}"]]  # fmt: skip
    text = table(
        f"Compiled ÷ eager on {spec.name} ({spec.steps} steps, {spec.size}x{spec.size}; {n} adapters of rank "
        f"{spec.rank} and one of rank {2 * spec.rank} in {SLOTS} slots, a switch before every image)",
        ["pipeline", "first image (compiles)", "frames compiled", "eager image", "compiled image", "compiled ÷ eager",
         "switches", "recompiles", "recompiles per switch", "refills by copy / by re-adding"], rows,
    )  # fmt: skip
    goals = [
        Goal("a switch, a refill with another rank and the base never recompile: 0 recompiles per switch",
             pipeline=spec.name, measured=f"{recompiles} in {switches} switches", passed=recompiles == 0),
    ]  # fmt: skip
    return {"pipeline": spec.describe(), "first_s": first, "frames_compiled": frames_compiled,
            "switches": switches, "recompiles": recompiles, "compiled_÷_eager": r, "fills": dict(fills),
            "times": summary(times), "table": text, "goals": goals}  # fmt: skip


def run(cfg: BenchConfig) -> dict:
    table("Anchors", ["what", "figure", "source"], ANCHORS)
    # the medium pipeline is the one that says something; the quick mode runs the tiny one
    names = [p for p in cfg.pipelines if p != "auto"] or ["medium"]
    results = {name: run_pipeline(cfg, name) for name in names}
    goals = [g for r in results.values() for g in r["goals"]]
    write_result(cfg, "compile", {"pipelines": results, "goals": goals})
    return {"goals": goals}
