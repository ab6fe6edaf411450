"""Memory: RSS added per resident adapter against its parameter bytes (issue 6, item 6).

Each case runs in a fresh child process (`python -m bench.memory child ...`) so one case's allocations do not
hide in another's: load the pipeline, generate once (the allocator's working set), read RSS; load N adapters;
generate once more; read RSS again. RSS is read from /proc/self/statm. Cases: ours (ImageStudio.load_adapter
from disk: every adapter in RAM, at most 4 in the pipeline's slots) and bare (`load_lora_weights` of a state
dict: every adapter injected). After the measurement the child calls glibc's `malloc_trim(0)` and reads RSS a
third time, to tell memory held by tensors from memory the allocator keeps.
"""

import ctypes
import gc
import json
import os
import subprocess
import sys

from bench.common import (
    ROOT,
    WEIGHT_NAME,
    BenchConfig,
    Goal,
    adapter_repos,
    generate,
    image_request,
    param_bytes,
    quiet,
    resolve_pipeline,
    studio_env,
    studio_for,
    table,
    write_result,
)

GOAL_RATIO = 1.5
MODES = ("ours", "bare")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _settle() -> int:
    gc.collect()
    return rss()


def child(cfg: BenchConfig, pipeline: str, n: int, mode: str, rank: int) -> dict:
    """One measurement, in this (fresh) process: RSS with n/4 adapters resident and with n, each after a
    generation with a0 active; the difference over the 3n/4 adapters between is the cost of one more adapter,
    without the fixed costs (the slots, a fusion's copies, the allocator's first growth)."""
    from safetensors.torch import load_file

    spec = resolve_pipeline(pipeline, cfg)
    first = max(1, n // 4)
    with studio_env(cfg), quiet():
        studio = studio_for(spec, cfg)
        repos = adapter_repos(studio.pipe, spec, cfg, n, rank)
        one = param_bytes(load_file(repos[0] / WEIGHT_NAME))
        pipe = studio.pipe
        generate(pipe, spec)
        before = _settle()
        readings = {}
        for i, repo in enumerate(repos):
            if mode == "ours":
                studio.load_adapter(str(repo), adapter_name=f"a{i}")
            else:
                pipe.load_lora_weights(load_file(repo / WEIGHT_NAME), adapter_name=f"a{i}")
            if i + 1 in (first, n):
                if mode == "ours":
                    studio.generate(image_request(spec, {"a0": 1.0}))
                else:
                    pipe.set_adapters(["a0"])
                    generate(pipe, spec)
                rss_now = _settle()
                ctypes.CDLL("libc.so.6").malloc_trim(0)
                readings[i + 1] = (rss_now, _settle())
    (lo, lo_trim), (hi, hi_trim) = readings[first], readings[n]
    added = max(n - first, 1)
    return {"mode": mode, "n": n, "first": first, "rank": rank, "param_bytes": one, "rss_before": before,
            "readings": readings, "per_adapter": (hi - lo) / added, "ratio": (hi - lo) / added / one,
            "ratio_after_trim": (hi_trim - lo_trim) / added / one,
            "fixed_first": (lo - before) - first * (hi - lo) / added}  # fmt: skip


def _measure(cfg: BenchConfig, pipeline: str, n: int, mode: str, rank: int) -> dict:
    if cfg.quick:  # in this process: keeps the quick mode fast; the figures then mean little
        return child(cfg, pipeline, n, mode, rank)
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", "child", pipeline, str(n), mode, str(rank), str(cfg.work)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def run(cfg: BenchConfig) -> dict:
    n = cfg.pick(32, 1)
    results, rows, goals = {}, [], []
    for pipeline in cfg.pipelines:
        spec = resolve_pipeline(pipeline, cfg)
        # The spec's rank, and for the medium pipeline also rank 64, closer to the LoRAs people publish.
        for rank in (spec.rank,) + (cfg.pick((64,), ()) if spec.name == "medium" else ()):
            for mode in MODES:
                r = _measure(cfg, spec.name, n, mode, rank)
                results[f"{spec.name}/r{rank}/{mode}"] = r
                rows.append([spec.name, rank, mode, f"{r['param_bytes'] / 2**20:.3f} MB",
                             f"{r['per_adapter'] / 2**20:.3f} MB", f"{r['ratio']:.2f}",
                             f"{r['ratio_after_trim']:.2f}"])  # fmt: skip
                if mode == "ours":
                    goals.append(Goal(f"RSS per resident adapter ≤ {GOAL_RATIO} × its parameter bytes [{mode}, "
                                      f"rank {rank}]", pipeline=spec.name, measured=f"{r['ratio']:.2f}×",
                                      passed=r["ratio"] <= GOAL_RATIO))  # fmt: skip
    text = table(f"RSS added per resident adapter: from {max(1, n // 4)} to {n} adapters resident, in a fresh process",
                 ["pipeline", "rank", "how", "parameter bytes", "RSS added per adapter", "ratio",
                  "ratio after malloc_trim"], rows)  # fmt: skip
    write_result(cfg, "memory", {"n": n, "results": results, "table": text, "goals": goals})
    return {"goals": goals}


if __name__ == "__main__":
    # python -m bench.memory child <pipeline> <n> <mode> <rank> <work>
    import torch

    torch.set_num_threads(1)
    _, _, pipeline_name, count, how, adapter_rank, work = sys.argv
    from pathlib import Path

    config = BenchConfig(work=Path(work))
    print(json.dumps(child(config, pipeline_name, int(count), how, int(adapter_rank))))
