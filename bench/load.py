"""Adapter load: ImageStudio.load_adapter against a bare `pipe.load_lora_weights` of the same file (issue 6, item 3).

Timed in the same rounds, each followed by an untimed delete so every load starts from the same state (no other
adapter resident): ours (by local path, with every check the app makes), bare with `low_cpu_mem_usage` on (the
diffusers default) and off, and the parts of ours that the bare call does not do: reading and checking the file
(`read_lora_file`: header, finite values, layout) and counting the registered layers (`_count_lora_layers`).
"""

from bench.common import (
    WEIGHT_NAME,
    BenchConfig,
    adapter_repos,
    interleave,
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


def run_pipeline(cfg: BenchConfig, name: str) -> dict:
    from peft_core.image.lora_files import read_lora_file
    from peft_core.image.pipeline import count_lora_layers as _count_lora_layers

    spec = resolve_pipeline(name, cfg)
    print(f"\n## load on {spec.name}", flush=True)
    studio = studio_for(spec, cfg)
    pipe = studio_for(spec, cfg).pipe  # a second pipeline for the bare calls
    repo = adapter_repos(pipe, spec, cfg, 1)[0]

    def ours():
        seconds = timed(lambda: studio.load_adapter(str(repo), adapter_name="x"))()
        studio.delete_adapter("x")
        return seconds

    def bare(low_cpu_mem_usage):
        def case():
            seconds = timed(lambda: pipe.load_lora_weights(str(repo), weight_name=WEIGHT_NAME, adapter_name="x",
                                                           low_cpu_mem_usage=low_cpu_mem_usage))()  # fmt: skip
            pipe.delete_adapters("x")
            return seconds

        return case

    def count_layers():
        pipe.load_lora_weights(str(repo), weight_name=WEIGHT_NAME, adapter_name="x")
        seconds = timed(lambda: _count_lora_layers(pipe, "x"))()
        pipe.delete_adapters("x")
        return seconds

    cases = {
        "ours": ours,
        "bare_low_cpu_mem_usage_on": bare(True),
        "bare_low_cpu_mem_usage_off": bare(False),
        "ours_part_read_lora_file": timed(lambda: read_lora_file(repo / WEIGHT_NAME)),
        "ours_part_count_lora_layers": count_layers,
    }
    with quiet():
        times = interleave(cases, cfg.repeats, cfg.warmup)

    def r(a, b):
        return median([x / y for x, y in zip(times[a], times[b], strict=True)])

    ratios = {
        "ours_÷_bare_on": r("ours", "bare_low_cpu_mem_usage_on"),
        "ours_÷_bare_off": r("ours", "bare_low_cpu_mem_usage_off"),
        "bare_on_÷_bare_off": r("bare_low_cpu_mem_usage_on", "bare_low_cpu_mem_usage_off"),
        "read_lora_file_÷_bare_on": r("ours_part_read_lora_file", "bare_low_cpu_mem_usage_on"),
        "count_lora_layers_÷_bare_on": r("ours_part_count_lora_layers", "bare_low_cpu_mem_usage_on"),
    }
    rows = [[k.replace("_", " "), ms(median(v))] for k, v in times.items()]
    rows += [[k.replace("_", " "), f"{v:.2f}"] for k, v in ratios.items()]
    text = table(f"Loading one adapter ({(repo / WEIGHT_NAME).stat().st_size / 2**20:.2f} MB, rank {spec.rank}) "
                 f"into {spec.name}, nothing else resident", ["case", "median time or ratio"], rows)  # fmt: skip
    return {"pipeline": spec.describe(), "times": summary(times), "ratios": ratios, "table": text}


def run(cfg: BenchConfig) -> dict:
    with studio_env(cfg):
        results = {name: run_pipeline(cfg, name) for name in cfg.pipelines}
    write_result(cfg, "load", {"pipelines": results})
    return {}
