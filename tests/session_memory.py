"""What a session's adapters cost in RSS and what ending the session gives back, measured in a process of its own.

Run by tests/test_sessions.py::test_ending_a_session_gives_its_memory_back as
`python -m tests.session_memory PIPELINE SMALL_A SMALL_B BIG_A BIG_B`; prints one JSON line of RSS figures in MB.
A fresh process, so that no other test's allocations (or their freeing) move the figures: the tiny LoRAs of the
other tests are ~0.2 MB, under the noise of a process that has run a test suite, so the two LoRAs here are ~19 MB each
(rank 4096 on the tiny pipeline's attention layers and text encoder).

Why malloc_trim: glibc keeps freed memory in its arenas for the next allocation instead of handing it back, and
after a large block is freed it raises its mmap threshold to that size, so the next blocks of that size come from
the arenas too. Freed tensors can then stay in RSS although nothing references them: a leak and a kept free list
look alike. `malloc_trim(0)` returns the arenas' free pages to the OS, so what stays after it is memory something
still holds. (Not glibc: no trim, and the figures are what the allocator kept.) Measured on 2026-11-30 with and
without the trim, the figures were the same (the session's tensors are single blocks, mmapped and unmapped when
freed): the trim is there so that the test keeps measuring what is held, not what glibc chose to keep.
Checked that it can fail: with slots.remove keeping a reference to the adapter it drops, 38 of the 98 MB held stayed.
"""

import ctypes
import ctypes.util
import gc
import json
import sys


def rss_mb() -> float:
    """This process's resident set, from /proc (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def settled_rss_mb() -> float:
    """RSS once the garbage is collected and glibc has handed its free pages back (see the module docstring)."""
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    return rss_mb()


def measure(pipeline: str, small_a: str, small_b: str, big_a: str, big_b: str) -> dict:
    """RSS at the baseline, with a session holding BIG_A and BIG_B mixed, and after that session ended."""
    import torch

    from peft_core import sessions
    from peft_core.image.studio import ImageRequest, ImageStudio

    torch.set_num_threads(1)
    studio = ImageStudio(device="cpu")
    studio.load_base(pipeline)
    tracker = sessions.Tracker([studio])  # what app.py builds: demo.unload and the idle timeout call its end()
    mix = {"a": 1.0, "b": 0.5}
    request = ImageRequest("a red circle", mix, True, 0, steps=2, guidance_scale=5.0, width=32, height=32)

    # Warm-up with small adapters on the same layers, in a session that ends: the code paths (peft's modules,
    # torch's kernels, the fusion copies of the base weights) allocate what they keep once, before the baseline.
    with sessions.bound("warm-up"):
        studio.load_adapter(small_a, adapter_name="a")
        studio.load_adapter(small_b, adapter_name="b")
        studio.generate(request)
    tracker.end("warm-up")
    baseline = settled_rss_mb()

    with sessions.bound("visitor"):
        studio.load_adapter(big_a, adapter_name="a")
        studio.load_adapter(big_b, adapter_name="b")
        studio.generate(request)  # in a slot and fused into the mix: every place an adapter's weights go
    held = settled_rss_mb()
    resident_held = len(studio.slots.residents)
    tracker.end("visitor")
    after = settled_rss_mb()
    return {
        "baseline": baseline,
        "held": held,
        "after": after,
        "resident_held": resident_held,
        "resident_after": len(studio.slots.residents),
    }


if __name__ == "__main__":
    print(json.dumps(measure(*sys.argv[1:6])))
