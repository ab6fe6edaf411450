"""What every training step shares: the run's settings, seeding, the learning-rate schedule, log lines, cards."""

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# the settings the app should generate with; the model card repeats them
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 5.0


@dataclass
class Config:
    seed: int = 0
    per_caption: int = 48  # pictures of each of the 18 captions per style (positions/sizes jittered)
    vae_steps: int = 400
    vae_batch: int = 16
    vae_lr: float = 1e-3
    vae_kl: float = 1e-6  # just enough to keep the latents tame; more blurs the 32x32 pictures
    # the decoder, tuned again once the UNet is trained (tune_vae_decoder)
    decoder_steps: int = 450  # its error flattens by ~400 (600 gave 0.00125 against 0.00134 at 400)
    decoder_batch: int = 32
    decoder_lr: float = 5e-4
    decoder_per_caption: int = 8  # pictures per caption, style and strength
    decoder_noise: float = 0.1  # std of the noise added to the latents it decodes (their own std is ~1.3)
    unet_steps: int = 1500
    unet_batch: int = 32
    unet_lr: float = 1e-3
    caption_dropout: float = 0.1  # empty prompt this often, so classifier-free guidance has an unconditional model
    lora_steps: int | None = None  # None: each style's LORA_RECIPES steps; a number overrides them all
    lora_batch: int | None = None  # likewise for the batch size
    lora_lr: float = 3e-3  # a LoRA of a tiny model learns fast; the base stays frozen
    lm_steps: int = 600
    lm_lora_steps: int = 200
    lm_batch: int = 64
    eval_prompts: int = 18  # prompts measured in the summary
    eval_steps: int = DEFAULT_STEPS  # sampling steps in the summary
    log_every: int = 100


QUICK = dict(per_caption=2, vae_steps=4, vae_batch=8, decoder_steps=2, decoder_per_caption=1, unet_steps=4,
             unet_batch=8, lora_steps=2, lora_batch=8, lm_steps=4, lm_lora_steps=2, lm_batch=8, eval_prompts=2,
             eval_steps=3, log_every=2)  # fmt: skip


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cosine_lr(step: int, total: int, peak: float, warmup: int = 50) -> float:
    """Linear warmup, then cosine decay to 2% of the peak: the decay does much of what an EMA would."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


START = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - START:6.0f}s] {msg}", flush=True)



def write_card(folder: Path, front: dict, body: str) -> None:
    """A model card: YAML front matter (the keys the Hub reads) and a few lines of prose."""
    lines = ["---"]
    for key, value in front.items():
        if isinstance(value, list):
            lines += [f"{key}:"] + [f"- {v}" for v in value]
        elif isinstance(value, dict):
            lines += [f"{key}:"] + [f"  {k}: {v}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {json.dumps(value) if value == '' or ':' in str(value) else value}")
    lines += ["---", "", body.strip(), ""]
    (folder / "README.md").write_text("\n".join(lines))


def n_params(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def repo_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6

