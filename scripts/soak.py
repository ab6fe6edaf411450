"""Soak test: N load -> generate -> delete cycles on one pipeline, watching the process's resident memory (RSS).

A leak in the adapter life cycle (a LoRA layer, a peft_config entry or a cached tensor left behind by each delete)
shows up as RSS growing with the cycle count. The goal: RSS at the end within 5 % of RSS after the first cycle
(the first cycle pays for lazy imports, kernels and allocator pools, so it is the baseline, not the start).

    python scripts/soak.py                 # 200 cycles on the bundled tiny-shapes pipeline and its LoRAs
    python scripts/soak.py --cycles 3      # a quick run (what the test suite does)
    python scripts/soak.py --tiny          # build a tiny pipeline and LoRA from configs instead of the bundled ones

Not a timed test: it prints its figures and exits 0; --check makes it exit 1 when the goal is missed.
"""

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """Resident set size of this process in MB, from /proc (Linux) or psutil."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss / 2**20


def bundled_setup() -> tuple[str, list[str]] | None:
    """The bundled pipeline and its LoRA repos, or None when assets/hub does not hold them."""
    from peft_core import bundled

    pipeline = bundled.BUNDLED_PIPELINE
    loras = [f"{bundled.BUNDLED_ORG}/{name}" for name in bundled.DEFAULT_IMAGE_ADAPTERS]
    loras = [repo for repo in loras if bundled.bundled_path(repo) is not None]
    if bundled.bundled_path(pipeline) is None or not loras:
        return None
    return pipeline, loras


def tiny_setup(folder: Path) -> tuple[str, list[str]]:
    """A tiny pipeline and two LoRAs built from configs (tiny_models/image.py), allowed as local paths."""
    from peft_core import settings
    from tiny_models.image import build_tiny_pipeline, lora_state_dict, write_repo

    pipe = build_tiny_pipeline(folder / "tiny-sd")
    loras = [
        write_repo(folder / f"lora-{seed}", {"pytorch_lora_weights.safetensors": lora_state_dict(pipe, seed, 4, True)})
        for seed in (1, 2)
    ]
    os.environ["STUDIO_LOCAL_DIRS"] = str(folder)
    settings.reload()  # read once (peft_core/settings.py): this process changed its environment
    return str(folder / "tiny-sd"), [str(p) for p in loras]


def leftovers(studio) -> int:
    """LoRA entries still held by the pipeline's layers and configs (0 when nothing is loaded)."""
    from peft_core import private

    pipe, count = studio.pipe, 0
    for component in private.lora_loadable_modules(pipe):
        model = getattr(pipe, component, None)
        if model is None:
            continue
        count += len(getattr(model, "peft_config", {}) or {})
        for module in model.modules():
            for attr in ("lora_A", "lora_B", "scaling", "lora_dropout"):
                count += len(getattr(module, attr, None) or {})
    return count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200, help="load -> generate -> delete cycles (default 200)")
    parser.add_argument("--tiny", action="store_true", help="use a tiny pipeline built from configs")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per generation")
    parser.add_argument("--check", action="store_true", help="exit 1 if the end is more than 5 %% over cycle 1")
    args = parser.parse_args(argv)

    import torch

    from peft_core.image.studio import ImageRequest, ImageStudio

    torch.set_num_threads(1)  # tiny models: one thread is faster and the figures are steadier
    with tempfile.TemporaryDirectory() as tmp:
        setup = None if args.tiny else bundled_setup()
        source = "bundled" if setup else "tiny (built from configs)"
        pipeline, loras = setup or tiny_setup(Path(tmp))
        studio = ImageStudio(device="cpu")
        info = studio.load_base(pipeline)
        size = min(info.default_width, 64)
        request = ImageRequest("a red circle", {}, True, 0, args.steps, None, size, size)
        studio.generate(request)  # warm-up: the base path's kernels
        gc.collect()
        start = rss_mb()
        print(f"pipeline: {info.model_id} ({source}), {len(loras)} LoRA repo(s), {args.cycles} cycles")
        print(f"RSS at start:            {start:8.1f} MB")
        began, first = time.perf_counter(), None
        for cycle in range(1, args.cycles + 1):
            name = f"soak_{cycle}"
            studio.load_adapter(loras[cycle % len(loras)], adapter_name=name)
            studio.generate(ImageRequest("a red circle", {name: 0.8}, True, cycle, args.steps, None, size, size))
            studio.delete_adapter(name)
            if cycle == 1:
                gc.collect()
                first = rss_mb()
                print(f"RSS after the 1st cycle: {first:8.1f} MB")
            elif cycle % max(1, args.cycles // 5) == 0 and cycle != args.cycles:
                print(f"  cycle {cycle:4d}:             {rss_mb():8.1f} MB")
        gc.collect()
        end = rss_mb()
        ratio = end / first
        seconds = time.perf_counter() - began
        print(f"RSS at the end:          {end:8.1f} MB")
        print(f"end / after 1st cycle:   {ratio:8.3f} ({(ratio - 1) * 100:+.1f} %; goal within 5 %)")
        print(f"LoRA entries left in the pipeline: {leftovers(studio)}; {seconds / args.cycles:.2f} s per cycle")
    return 1 if args.check and ratio > 1.05 else 0


if __name__ == "__main__":
    sys.exit(main())
