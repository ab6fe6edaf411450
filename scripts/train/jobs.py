"""Run steps that do not depend on each other in worker processes of one thread each, or in this process.

Models this small use a second thread for only ~1.6x; two processes of one thread use both cores fully. A job
always runs on one thread, whichever the number of workers, so the files it writes do not depend on it.
"""

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

from train import common


def _init_worker(start: float) -> None:
    common.START = start  # the workers' log lines count from the run's start, as the main process's do
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)


_POOL: ProcessPoolExecutor | None = None  # one for the whole run: each new worker pays ~10 s of imports


def run_jobs(jobs: list[tuple], workers: int) -> list:
    """Run each (function, *args) on one thread, in `workers` processes; the results in the jobs' order.

    One thread always, even in this process with workers <= 1: a job's numbers then do not depend on `workers`.
    """
    if workers <= 1 or len(jobs) <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the rest of _init_worker is this process's already (main() flushes denormals)
        try:
            return [fn(*args) for fn, *args in jobs]
        finally:
            torch.set_num_threads(threads)
    global _POOL
    if _POOL is None:
        # spawn, not fork: a forked child of a process whose OpenMP pool already ran can hang
        _POOL = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                    initargs=(common.START,))  # fmt: skip
    futures = [_POOL.submit(fn, *args) for fn, *args in jobs]
    return [f.result() for f in futures]


def close_pool() -> None:
    """Shut the worker processes down (at the end of a run); the next run_jobs starts new ones."""
    global _POOL
    if _POOL is not None:
        _POOL.shutdown()
        _POOL = None
