"""`python -m bench [names...] [--quick] [--tiny] [--pipelines auto,medium] [--repeats 5]`: run benchmarks, print
tables and the goals, write JSON to bench/results/. With no names, runs them all (see BENCHMARKS below)."""

import argparse
import importlib
import sys
import time
from pathlib import Path

# name -> module in bench/: what the issue calls it
BENCHMARKS = {
    "resident": "switch latency, generation and next load against N resident (items 1 and 8)",
    "generation": "base / unfused / fused generation time beside the FLOP ratio (item 2)",
    "load": "ImageStudio.load_adapter against a bare load_lora_weights (item 3)",
    "api": "gradio_client round trip against the direct core call (item 4)",
    "coldstart": "python app.py until the page answers and until the first image (item 5)",
    "memory": "RSS added per resident adapter against its parameter bytes (item 6)",
    "text": "tokens per second: base, one adapter unmerged, merged (item 7)",
    "textbatch": "1-8 concurrent text clients with their own adapters against one at a time (issue 30)",
    "profile": "why time grows with N: cProfile at N = 1 and N = max, and the culprits timed alone",
    "plot": "docs/switch_latency.png from bench/results/resident.json",
    "turns": "a short request behind a long one, step-level against whole-request turns; the mix switch per step",
    "gpu": "every family, studio against bare diffusers: real-size SDXL and FLUX.1 on CUDA, or --tiny (issue 16)",
    "compile": "STUDIO_COMPILE=1: compiled ÷ eager generation and the recompiles per switch (issue 30)",
    "realsize": "real-size SDXL on the CPU: peak RSS, load, fuse/unfuse, one image; studio and bare diffusers",
}


def main(argv=None) -> int:
    from bench.common import RESULTS, BenchConfig, goals_table

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="tiny N, one repeat, tiny pipeline (for tests)")
    parser.add_argument("--pipelines", default="auto,medium", help="image pipelines: auto, tiny, medium, bundled")
    parser.add_argument("--tiny", action="store_true", help="gpu: every family's tiny pipeline, on the CPU")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of each interleaved measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a busy 2-core box)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON results")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    import torch

    from peft_core.runtime import quiet_libraries

    torch.set_num_threads(args.threads)
    _no_progress_bars()
    cfg = BenchConfig(quick=args.quick, pipelines=tuple(p for p in args.pipelines.split(",") if p),
                      repeats=args.repeats, threads=args.threads, out=args.out, tiny=args.tiny)  # fmt: skip
    if cfg.quick:
        cfg.work = cfg.out / "_work"
    goals = []
    for name in args.names or list(BENCHMARKS):
        print(f"\n# {name}: {BENCHMARKS[name]}", flush=True)
        start = time.perf_counter()
        with quiet_libraries():
            result = importlib.import_module(f"bench.{name}").run(cfg) or {}
        goals += result.get("goals", [])
        print(f"({name} took {time.perf_counter() - start:.0f} s)", flush=True)
    if goals:
        goals_table(goals)
    return 0


def _no_progress_bars() -> None:
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
