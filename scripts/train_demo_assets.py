"""Train the tiny demo models that ship with Adapter Studio, from procedural data, on a laptop CPU.

    python scripts/train_demo_assets.py --out assets/hub            # the bundled assets (~42-45 min on 2 cores)
    python scripts/train_demo_assets.py --out /tmp/hub --quick      # every step, tiny step counts (< 60 s)
    python scripts/train_demo_assets.py --loras-only night,outline  # only these LoRAs on the saved pipeline (~15 min)
    python scripts/train_demo_assets.py --tune-decoder              # only the VAE decoder's last step (~5-8 min)

Writes Hub-style repos (a folder per repo id, each with a model card) under --out:

    adapter-studio/tiny-shapes        StableDiffusionPipeline: 32x32 pictures for prompts like "a red circle"
    adapter-studio/shapes-night       LoRA for it: near-black background
    adapter-studio/shapes-outline     LoRA: hollow shapes
    adapter-studio/shapes-stripes     LoRA: striped fill
    adapter-studio/shapes-pastel      LoRA: washed-out colours
    adapter-studio/tiny-shapes-lm     LlamaForCausalLM + word-level tokenizer: sentences about the same shapes
    adapter-studio/lm-pirate          PEFT LoRA: "arr , the red circle be next to ..."
    adapter-studio/lm-formal          PEFT LoRA: "kindly note that ... . thank you ."
    adapter-studio/lm-shouting        PEFT LoRA: UPPER-CASE words

This file is the command line; the steps live in scripts/train/, a module per kind of model. The pictures come
from scripts/demo_shapes.py, which also holds the measurements printed at the end (and used by
tests/test_demo_assets.py). Everything is seeded: the same command gives the same files, except that a LoRA's
.safetensors header may list its two metadata entries in either order (safetensors keeps them in a hash map).

Where the time goes (2 cores): the VAE and then the UNet train on --threads threads (~3.5 and ~20-23 min). Then
the four LoRAs, the VAE decoder's tuning and the LM, which do not depend on each other, run as jobs in --jobs
worker processes of one thread each (~17 min), and so do the summary's pictures (~1.5 min): models this small use a
second thread for only ~1.6x, two processes use both cores fully. A job always runs on one thread, whichever --jobs, so
the files do not depend on it (--loras-only night and --tune-decoder repeat the full run's jobs).
"""

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # train/ and demo_shapes beside this file; tiny_models above it

from train import IMAGE_STYLES, ORG, PIPELINE_REPO  # noqa: E402
from train.common import QUICK, Config, log, repo_mb  # noqa: E402
from train.images import train_image_models, tune_saved_decoder  # noqa: E402
from train.jobs import close_pool, run_jobs  # noqa: E402
from train.loras import train_saved_lora  # noqa: E402
from train.summary import image_summary, text_summary  # noqa: E402
from train.text import train_text_models  # noqa: E402


def _styles(text: str) -> list[str]:
    """Split a --loras-only value ("night,outline") into styles, each one of IMAGE_STYLES."""
    styles = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in styles if s not in IMAGE_STYLES]
    if unknown or not styles:
        raise argparse.ArgumentTypeError(f"unknown style(s) {unknown or text!r}; expected some of {IMAGE_STYLES}")
    return list(dict.fromkeys(styles))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("assets/hub"), help="where the <org>/<name> repos go")
    parser.add_argument("--quick", action="store_true", help="tiny step counts: checks the script, not the models")
    parser.add_argument("--grid", type=Path, default=None, help="also save a PNG grid of samples here")
    parser.add_argument("--skip-images", action="store_true", help="only (re)train the text models")
    parser.add_argument("--skip-text", action="store_true", help="only (re)train the image models")
    parser.add_argument(
        "--loras-only",
        type=_styles,
        default=None,
        metavar="STYLES",
        help="only (re)train these image LoRAs (e.g. night,outline) on the pipeline already in --out",
    )
    parser.add_argument("--tune-decoder", action="store_true",
                        help="tune the VAE decoder of the pipeline already in --out (see tune_vae_decoder)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the VAE, UNet and decoder")
    parser.add_argument("--jobs", type=int, default=2,
                        help="worker processes (one thread each) for the LoRAs, the LM and the summary")
    args = parser.parse_args()

    # 2: the machine this is budgeted for; more threads barely help models this small
    torch.set_num_threads(args.threads)
    # Adam's squared-gradient averages of tiny models sink into denormal floats, which CPUs process ~100x slower
    torch.set_flush_denormal(True)
    cfg = Config(**QUICK) if args.quick else Config()
    start = time.time()
    styles, decoder = [], False
    if args.loras_only or args.tune_decoder:
        if not (args.out / PIPELINE_REPO / "model_index.json").is_file():
            parser.error(f"--loras-only and --tune-decoder need the pipeline {PIPELINE_REPO} under --out {args.out}")
        args.skip_text = True
        styles, decoder = args.loras_only or [], args.tune_decoder
    elif not args.skip_images:
        train_image_models(args.out, cfg)
        log(f"pipeline saved at {time.time() - start:.0f}s")
        styles, decoder = list(IMAGE_STYLES), True
    # Roughly the longest first, so the workers finish together (one-thread minutes, the full run): night ~11,
    # decoder ~5.5, outline ~7.5, stripes ~5, pastel ~3.5, LM ~1.
    jobs = [(train_saved_lora, args.out, style, cfg) for style in styles]
    jobs[1:1] = [(tune_saved_decoder, args.out, cfg)] if decoder else []
    if not args.skip_text:
        jobs.append((train_text_models, args.out, cfg))
    if jobs:
        run_jobs(jobs, args.jobs)
        done = styles + ["decoder"] * decoder + ([] if args.skip_text else ["LM"])
        log(f"{', '.join(done)} done at {time.time() - start:.0f}s")
    build = args.out / "_build"
    if build.exists():  # the tokenizer source files: the pipeline folder holds the saved tokenizer
        for f in sorted(build.rglob("*"), reverse=True):
            f.rmdir() if f.is_dir() else f.unlink()
        build.rmdir()

    log("\nrepos:")
    for folder in sorted(p for p in (args.out / ORG).iterdir() if p.is_dir()):
        log(f"  {ORG}/{folder.name:18s} {repo_mb(folder):7.2f} MB")
    log(f"  total {repo_mb(args.out / ORG):.2f} MB")
    if not args.skip_images:
        image_summary(args.out, cfg, args.grid, args.jobs)
    if not args.skip_text:
        text_summary(args.out)
    close_pool()
    log(f"\ntotal time {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
