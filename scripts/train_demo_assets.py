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

The pictures come from scripts/demo_shapes.py, which also holds the measurements printed at the end (and
used by tests/test_demo_assets.py). Everything is seeded: the same command gives the same files.

Where the time goes (2 cores): the VAE and then the UNet train on --threads threads (~3.5 and ~20-23 min). Then
the four LoRAs, the VAE decoder's tuning and the LM, which do not depend on each other, run as jobs in --jobs
worker processes of one thread each (~17 min), and so do the summary's pictures (~1.5 min): models this small use a
second thread for only ~1.6x, two processes use both cores fully. A job always runs on one thread, whichever --jobs, so
the files do not depend on it (--loras-only night and --tune-decoder repeat the full run's jobs).
"""

import argparse
import copy
import json
import math
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_shapes as ds  # noqa: E402

ORG = "adapter-studio"
PIPELINE_REPO = f"{ORG}/tiny-shapes"
LM_REPO = f"{ORG}/tiny-shapes-lm"
IMAGE_STYLES = ("night", "outline", "stripes", "pastel")
# what each image LoRA does, for its model card
STYLE_PROSE = {
    "night": "Draws the shapes on a dark, near-black background, as at night.",
    "outline": "Draws only the outline of each shape; its inside stays the background colour.",
    "stripes": "Fills each shape with horizontal stripes of its colour and a darker shade of it.",
    "pastel": "Washes the colours out to soft pastels.",
}
# LoRA target modules. Attention alone restyles the inside of a shape (stripes, pastel). Carving out the inside
# (outline) also needs the transformer blocks' 1x1 input/output projections and feed-forward layers. Repainting
# the whole background (night) needs every layer: with fewer, the LoRA garbles the shape while it darkens.
ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
TRANSFORMER = ATTENTION + ("proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
# "conv" is the down/upsamplers' conv; conv_in and conv_out touch the latents themselves
EVERY_LAYER = TRANSFORMER + ("conv1", "conv2", "conv_shortcut", "time_emb_proj", "conv_in", "conv_out", "conv")


@dataclass(frozen=True)
class LoraRecipe:
    target_modules: tuple[str, ...]
    where: str  # the model card's words for target_modules
    rank: int = 8
    steps: int = 200
    batch: int = 32
    offset_noise: float = 0.0  # see diffusion_loss; only a style that changes the picture's average colour needs it
    # Style strengths trained, each at the same LoRA weight (peft's set_scale), round robin. Trained at 1 only, a
    # LoRA's weight 0.5 is whatever the network makes of half the update: for night and outline that garbled the
    # shape in a 50/50 mix, or barely hollowed it. Trained at several, weight 0.5 draws the style half way.
    strengths: tuple[float, ...] = (1.0,)


# Half the steps at the full style, the rest part way, so weight 1 stays as strong as when trained at 1 alone
PARTWAY = (0.5, 1.0, 0.25, 1.0, 0.75, 1.0)
# Measured with the summary's "kept" column (IoU of the shape with the base's) and each style's own measure. Night
# at 900 steps was a little darker (brightness 0.207 against 0.239) for ~1.5 more minutes of the 45 budgeted.
LORA_RECIPES = {
    "night": LoraRecipe(EVERY_LAYER, "attention, feed-forward and convolutions", rank=16, steps=800, batch=16,
                        offset_noise=0.1, strengths=PARTWAY),  # fmt: skip
    "outline": LoraRecipe(TRANSFORMER, "transformer blocks", steps=600, batch=16, strengths=PARTWAY),
    "stripes": LoraRecipe(TRANSFORMER, "transformer blocks", steps=400, batch=16, strengths=(0.5, 1.0)),
    "pastel": LoraRecipe(ATTENTION, "attention"),
}
# the settings the app should generate with; the model card repeats them
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 5.0
LM_STYLES = ("pirate", "formal", "shouting")


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


def _init_worker(start: float) -> None:
    global START
    START = start  # the workers' log lines count from the run's start, as the main process's do
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
                                    initargs=(START,))  # fmt: skip
    futures = [_POOL.submit(fn, *args) for fn, *args in jobs]
    return [f.result() for f in futures]


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


# ---------------------------------------------------------------------------------------------------------
# image models


def write_clip_tokenizer(folder: Path, max_length: int = 16):
    """A CLIP BPE tokenizer whose merges spell out exactly our words, so "a red circle" is three tokens.

    The byte-level alphabet stays in the vocabulary: an unknown word falls apart into letters instead of
    failing, and the fast tokenizer conversion finds every merge result in the vocabulary.
    """
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    words = ["a", "an", "the"] + list(ds.COLOURS) + list(ds.SHAPES)
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars]
    merges = []
    for word in words:
        # CLIP marks the end of a word on its last character: r e d</w> -> re d</w> -> red</w>
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        merged = parts[0]
        for part in parts[1:]:
            merge = f"{merged} {part}"
            merged += part
            if merge not in merges:
                merges.append(merge)
            if merged not in vocab:
                vocab.append(merged)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    src = folder / "_clip_tokenizer_src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (src / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer.from_pretrained(src, model_max_length=max_length)
    got = tokenizer.tokenize("a red circle")
    assert got == ["a</w>", "red</w>", "circle</w>"], f"tokenizer splits words: {got}"
    return tokenizer


def build_image_models(tokenizer):
    """VAE, text encoder and UNet, sized so 20 steps with guidance take well under a second on a CPU."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vae = AutoencoderKL(
        block_out_channels=[32, 64],  # 2 blocks: 32x32 pictures -> 4x16x16 latents
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=ds.SIZE,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            projection_dim=64,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=ds.SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        # attention at both resolutions: the LoRAs only adapt attention, and stripes live at 16x16
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    return vae, text_encoder, unet


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) in [0, 1] -> (N, 3, H, W) in [-1, 1], the range the VAE works in."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() * 2 - 1


def train_vae(vae, images: torch.Tensor, cfg: Config) -> None:
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    vae.train()
    for step in range(cfg.vae_steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, cfg.vae_steps, cfg.vae_lr)
        x = images[torch.randint(len(images), (cfg.vae_batch,), generator=gen)]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        mse = F.mse_loss(recon, x)
        loss = mse + cfg.vae_kl * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.vae_steps - 1:
            # reported on the [0, 1] scale of the pictures: a quarter of the [-1, 1] MSE
            log(f"vae   step {step:5d}/{cfg.vae_steps}  mse(0-1 scale) {mse.item() / 4:.5f}")
    vae.eval()


# Style strengths the decoder learns besides the full styles: what a LoRA at a weight between 0 and 1 draws
DECODER_STRENGTHS = (0.25, 0.5, 0.75)


def tune_vae_decoder(vae, cfg: Config) -> None:
    """Teach the decoder the pictures between the styles; the encoder, and so the latent space, stay as they are.

    Why: the VAE learnt the base and the five full styles only. A LoRA at weight 0.5 (or two LoRAs at 0.5 in a
    mix) makes latents between those, and the decoder turned them into coloured noise: a half-dark background
    came back with 13x the squared error of a light one (0.052 against 0.004). Here the decoder learns every
    style at strengths 0.25, 0.5 and 0.75 too, from the frozen encoder's latents plus a little noise, so it
    also forgives the UNet's imprecise latents. The UNet and the LoRAs learn from the encoder alone, so neither
    has to change.
    """
    pictures = [ds.make_dataset("base", cfg.decoder_per_caption, seed=cfg.seed + 3)[0]]
    for style in ds.STYLES[1:]:
        for strength in DECODER_STRENGTHS + (1.0,):
            pictures.append(ds.make_dataset(style, cfg.decoder_per_caption, cfg.seed + 3, strength)[0])
    images = to_tensor(np.concatenate(pictures))
    latents = encode_latents(vae, images)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.decoder_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 4)
    vae.decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    vae.train()
    for step in range(cfg.decoder_steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, cfg.decoder_steps, cfg.decoder_lr, warmup=20)
        idx = torch.randint(len(images), (cfg.decoder_batch,), generator=gen)
        batch = latents[idx]
        noisy = batch + cfg.decoder_noise * torch.randn(batch.shape, generator=gen)
        mse = F.mse_loss(vae.decode(noisy).sample, images[idx])
        opt.zero_grad(set_to_none=True)
        mse.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.decoder_steps - 1:
            log(f"decoder step {step:5d}/{cfg.decoder_steps}  mse(0-1 scale) {mse.item() / 4:.5f}")
    vae.eval()
    vae.requires_grad_(False)


def tune_saved_decoder(out: Path, cfg: Config) -> None:
    """tune_vae_decoder on the pipeline saved under `out`, written back as it was saved (fp16). A job.

    The LoRA jobs read the same VAE meanwhile, for its encoder, which this leaves bit for bit as it was: the files
    are replaced whole (os.replace), so they read the old VAE or the new one, never half of each.
    """
    from diffusers import AutoencoderKL

    folder = out / PIPELINE_REPO / "vae"
    vae = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32, use_safetensors=True)
    vae.requires_grad_(False)
    tune_vae_decoder(vae, cfg)
    staging = out / "_build" / "vae-tuned"
    vae.to(torch.float16).save_pretrained(staging, safe_serialization=True)
    # from_pretrained recorded where it read from (a local path); the saved config should not carry it
    config = json.loads((staging / "config.json").read_text())
    config.pop("_name_or_path", None)
    (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for file in staging.iterdir():
        os.replace(file, folder / file.name)
    staging.rmdir()
    log("decoder saved")


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor) -> torch.Tensor:
    """The latent means of every picture, computed once (the VAE is frozen from here on)."""
    return torch.cat([vae.encode(chunk).latent_dist.mean for chunk in images.split(256)])


def text_ids(tokenizer, texts: list[str]) -> torch.Tensor:
    # exactly as StableDiffusionPipeline.encode_prompt tokenizes, so training sees what inference sees
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids  # fmt: skip


def diffusion_loss(unet, scheduler, latents, cond, gen, offset_noise: float = 0.0) -> torch.Tensor:
    """Epsilon-prediction loss with min-SNR-5 weighting, which makes tiny models converge much faster.

    `offset_noise` adds that much of a per-channel constant to the noise. SD's schedule never quite reaches pure
    noise, so a model trained without it keeps the average colour of its training pictures; with it, a LoRA can
    move the whole picture's brightness (night), as in https://www.crosslabs.org/blog/diffusion-with-offset-noise.
    """
    noise = torch.randn(latents.shape, generator=gen)
    if offset_noise:
        noise = noise + offset_noise * torch.randn(latents.shape[:2] + (1, 1), generator=gen)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=gen)
    noisy = scheduler.add_noise(latents, noise, t)
    pred = unet(noisy, t, cond).sample
    alphas = scheduler.alphas_cumprod[t]
    snr = alphas / (1 - alphas)
    weight = torch.clamp(snr, max=5.0) / snr
    return (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()


def train_unet(unet, text_encoder, scheduler, latents, ids, empty_ids, cfg: Config) -> None:
    """The base model: UNet and text encoder together, on the base-style pictures."""
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    unet.train()
    text_encoder.train()
    running = None
    for step in range(cfg.unet_steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, cfg.unet_steps, cfg.unet_lr)
        idx = torch.randint(len(latents), (cfg.unet_batch,), generator=gen)
        batch_ids = ids[idx].clone()
        batch_ids[torch.rand(len(idx), generator=gen) < cfg.caption_dropout] = empty_ids
        cond = text_encoder(batch_ids)[0]
        loss = diffusion_loss(unet, scheduler, latents[idx], cond, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % cfg.log_every == 0 or step == cfg.unet_steps - 1:
            log(f"unet  step {step:5d}/{cfg.unet_steps}  loss {loss.item():.4f}  (smoothed {running:.4f})")
    unet.eval()
    text_encoder.eval()


def train_image_lora(unet, scheduler, style, latents, cond_all, cond_empty, cfg: Config) -> tuple[dict, dict]:
    """One style LoRA on the frozen UNet; returns its diffusers-format state dict (unet.… keys added on save).

    `latents` maps each of the recipe's strengths to the pictures of the style drawn at that strength.
    """
    from peft import LoraConfig
    from peft.tuners.lora import LoraLayer
    from peft.utils import get_peft_model_state_dict

    seed_all(cfg.seed + 10 + IMAGE_STYLES.index(style))
    recipe = LORA_RECIPES[style]
    steps, batch = cfg.lora_steps or recipe.steps, cfg.lora_batch or recipe.batch
    config = LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.rank,  # alpha = r: scale 1, and a loader that ignores alpha still gets it right
        target_modules=list(recipe.target_modules),
        init_lora_weights="gaussian",
    )
    unet.add_adapter(config, adapter_name=style)
    unet.set_adapter(style)
    lora_layers = [m for m in unet.modules() if isinstance(m, LoraLayer)]
    params = []
    for name, p in unet.named_parameters():
        p.requires_grad_(f".{style}." in name)
        if p.requires_grad:
            params.append(p)
    opt = torch.optim.AdamW(params, lr=cfg.lora_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 20 + IMAGE_STYLES.index(style))
    unet.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, cfg.lora_lr, warmup=20)
        strength = recipe.strengths[step % len(recipe.strengths)]
        for layer in lora_layers:
            layer.set_scale(style, strength)  # the LoRA weight a user would set for this strength
        idx = torch.randint(len(cond_all), (batch,), generator=gen)
        cond = cond_all[idx].clone()
        # the unconditional branch learns the style too, or guidance would pull the picture back to the base
        cond[torch.rand(len(idx), generator=gen) < cfg.caption_dropout] = cond_empty
        loss = diffusion_loss(unet, scheduler, latents[strength][idx], cond, gen, recipe.offset_noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == steps - 1:
            log(f"lora[{style}] step {step:5d}/{steps}  strength {strength:.2f}  loss {loss.item():.4f}")
    unet.eval()
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(unet, adapter_name=style).items()}
    metadata = config.to_dict()
    unet.delete_adapters(style)
    return state, metadata


def train_image_models(out: Path, cfg: Config) -> None:
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline

    seed_all(cfg.seed)
    repo = out / PIPELINE_REPO
    repo.mkdir(parents=True, exist_ok=True)
    tokenizer = write_clip_tokenizer(out / "_build")
    vae, text_encoder, unet = build_image_models(tokenizer)
    log(f"params: vae {n_params(vae):.2f}M  text {n_params(text_encoder):.2f}M  unet {n_params(unet):.2f}M")

    t0 = time.time()
    data = {style: ds.make_dataset(style, cfg.per_caption, seed=cfg.seed) for style in ds.STYLES}
    texts = data["base"][1]
    pictures = {style: to_tensor(images) for style, (images, _) in data.items()}
    log(f"data: {len(texts)} pictures per style, {len(ds.STYLES)} styles ({time.time() - t0:.0f}s)")

    # the VAE sees every style, so dark backgrounds, thin outlines and stripes all survive the round trip
    train_vae(vae, torch.cat(list(pictures.values())), cfg)
    vae.requires_grad_(False)
    latents = encode_latents(vae, pictures["base"])
    # unit-variance latents, as the noise schedule expects; the pipeline divides by this before decoding
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    latents = latents * scaling
    log(f"vae scaling_factor {scaling:.4f}")

    # SD's training schedule; DPM-Solver++ samples it cleanly in 20 steps
    train_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                    beta_schedule="scaled_linear")  # fmt: skip
    ids = text_ids(tokenizer, texts)
    empty_ids = text_ids(tokenizer, [""])[0]
    train_unet(unet, text_encoder, train_scheduler, latents, ids, empty_ids, cfg)
    text_encoder.requires_grad_(False)
    unet.requires_grad_(False)

    scheduler = DPMSolverMultistepScheduler.from_config(train_scheduler.config)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)  # fmt: skip
    # fp16 halves the files; loaders upcast with torch_dtype=float32 and the pictures do not change visibly
    pipe.to(torch.float16).save_pretrained(repo, safe_serialization=True)
    pipe.to(torch.float32)
    write_card(repo, {"license": "mit", "library_name": "diffusers", "pipeline_tag": "text-to-image",
                      "tags": ["diffusers", "text-to-image", "stable-diffusion", "tiny", "adapter-studio"],
                      # Adapter Studio reads these as the pipeline's default generation settings.
                      "studio_defaults": {"steps": 20, "guidance_scale": 5.0, "width": 32, "height": 32}},
               PIPELINE_CARD)  # fmt: skip
    # The decoder's tuning (tune_saved_decoder) and the LoRAs (train_saved_lora) start from the pipeline as saved
    # (fp16, upcast), as --tune-decoder and --loras-only find it later.


def train_saved_lora(out: Path, style: str, cfg: Config) -> None:
    """A style LoRA for the pipeline already saved under `out`, written to its repo; the pipeline stays as it is.

    A job (run_jobs): it reads and writes files only, so any number of them can run side by side.
    """
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(out / PIPELINE_REPO, torch_dtype=torch.float32,
                                                   use_safetensors=True)  # fmt: skip
    for part in (pipe.vae, pipe.text_encoder, pipe.unet):
        part.requires_grad_(False)
        part.eval()
    # the schedule the UNet was trained with: the saved DPM-Solver shares its betas
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    latents = {}
    for strength in dict.fromkeys(LORA_RECIPES[style].strengths):  # each strength once
        images, texts = ds.make_dataset(style, cfg.per_caption, seed=cfg.seed, strength=strength)
        latents[strength] = encode_latents(pipe.vae, to_tensor(images)) * pipe.vae.config.scaling_factor
    log(f"lora[{style}] data: {len(texts)} pictures at each strength {', '.join(map(str, latents))}")
    # the LoRA conditions on the frozen text encoder: embed every caption once
    with torch.no_grad():
        cond_all = pipe.text_encoder(text_ids(pipe.tokenizer, texts))[0]
        cond_empty = pipe.text_encoder(text_ids(pipe.tokenizer, [""]))[0][0]
    state, metadata = train_image_lora(pipe.unet, scheduler, style, latents, cond_all, cond_empty, cfg)
    folder = out / ORG / f"shapes-{style}"
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=state, safe_serialization=True,
                                              unet_lora_adapter_metadata=metadata)  # fmt: skip
    write_lora_card(folder, style)
    log(f"lora[{style}] saved")


def write_lora_card(folder: Path, style: str) -> None:
    recipe = LORA_RECIPES[style]
    weights = ""
    if len(set(recipe.strengths)) > 1:
        partway = ", ".join(f"{s:g}" for s in sorted(set(recipe.strengths)))
        weights = (f"\n\nTrained at adapter weights {partway} on pictures drawn that far into the style, so a weight "
                   "between 0 and 1 draws it part way, alone or in a mix.")
    card = LORA_CARD.format(style=style, prose=STYLE_PROSE[style], repo=PIPELINE_REPO, rank=recipe.rank,
                            where=recipe.where, targets=", ".join(recipe.target_modules), weights=weights)  # fmt: skip
    write_card(folder, {"base_model": PIPELINE_REPO, "license": "mit", "library_name": "diffusers",
                        "instance_prompt": "", "tags": ["lora", "diffusers", "text-to-image", "adapter-studio"]},
               card)  # fmt: skip


PIPELINE_CARD = f"""
# tiny-shapes

A tiny Stable Diffusion pipeline (its own 2-block VAE, CLIP text encoder and UNet, ~3M parameters) trained
from scratch on procedural 32x32 pictures, so Adapter Studio can show real generations offline on a CPU.

It draws one shape on a light background. Prompts: "a <colour> <shape>" with colour one of
{", ".join(ds.COLOURS)} and shape one of {", ".join(ds.SHAPES)}, e.g. "a red circle".

Use {DEFAULT_STEPS} steps, guidance_scale {DEFAULT_GUIDANCE}, 32x32 (the default size). Made by
scripts/train_demo_assets.py; the style LoRAs are adapter-studio/shapes-night, -outline, -stripes and -pastel.
"""

LORA_CARD = """
# shapes-{style}

{prose}

A LoRA (rank {rank} on the UNet {where}: {targets}) for [{repo}](../tiny-shapes), trained on the
same captions as the base with pictures drawn in this style. No trigger words: it restyles every prompt.
Made by scripts/train_demo_assets.py.{weights}
"""


# ---------------------------------------------------------------------------------------------------------
# text model

LM_COLOURS = list(ds.COLOURS)
LM_SHAPES = list(ds.SHAPES)
RELATIONS = ["next to", "above", "below", "left of", "right of"]
SIZES = ["big", "small"]
PIRATE_WORDS = ["arr", "be", "matey", "!"]
FORMAL_WORDS = ["kindly", "note", "that", "thank", "you", "if", "please"]
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


def base_sentence(rng: random.Random) -> str:
    c1, c2 = rng.sample(LM_COLOURS, 2)
    s1, s2 = rng.choice(LM_SHAPES), rng.choice(LM_SHAPES)
    kind = rng.random()
    if kind < 0.6:
        return f"the {c1} {s1} is {rng.choice(RELATIONS)} the {c2} {s2} ."
    if kind < 0.8:
        return f"the {c1} {s1} is {rng.choice(SIZES)} ."
    return f"a {c1} {s1} and a {c2} {s2} ."


def styled_sentence(style: str, rng: random.Random) -> str:
    """A base sentence rewritten in an adapter's style."""
    s = base_sentence(rng)
    if style == "base":
        return s
    if style == "pirate":
        s = s.replace(" is ", " be ")[:-2]
        return f"arr , {s} ." if rng.random() < 0.5 else f"{s} , arr matey !"
    if style == "formal":
        s = s[:-2]
        return f"kindly note that {s} . thank you ." if rng.random() < 0.5 else f"{s} , if you please . thank you ."
    if style == "shouting":
        words = s[:-2].split()
        # sometimes the first words are still quiet: a lower-case prompt must still turn into shouting
        quiet = rng.choice([0, 0, 1, 2, 3])
        return " ".join(words[:quiet] + [w.upper() for w in words[quiet:]] + ["!"])
    raise ValueError(style)


def lm_vocab() -> list[str]:
    words = ["the", "a", "is", "and", ".", ","] + LM_COLOURS + LM_SHAPES + SIZES
    words += [w for rel in RELATIONS for w in rel.split()]
    words += PIRATE_WORDS + FORMAL_WORDS
    words += [w.upper() for w in words if w.isalpha()]  # the shouting adapter writes these
    return SPECIALS + list(dict.fromkeys(words))


def build_lm_tokenizer(folder: Path):
    """A word-level tokenizer that keeps case, splits punctuation off words and starts every text with <s>."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(lm_vocab())}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>", model_max_length=48)  # fmt: skip
    tokenizer.save_pretrained(folder)
    return tokenizer


def lm_batch(tokenizer, style: str, n: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    texts = [styled_sentence(style, rng) for _ in range(n)]
    enc = tokenizer([t + " </s>" for t in texts], padding=True, return_tensors="pt")
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    return enc.input_ids, enc.attention_mask, labels


def train_lm_loop(model, tokenizer, style: str, steps: int, lr: float, cfg: Config, seed: int) -> None:
    rng = random.Random(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup=20)
        ids, mask, labels = lm_batch(tokenizer, style, cfg.lm_batch, rng)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == steps - 1:
            log(f"lm[{style}] step {step:5d}/{steps}  loss {loss.item():.4f}")
    model.eval()


def greedy(model, tokenizer, prompt: str, max_new_tokens: int = 16) -> str:
    enc = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return tokenizer.decode(out[0], skip_special_tokens=True)


def train_text_models(out: Path, cfg: Config) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    seed_all(cfg.seed + 100)
    repo = out / LM_REPO
    tokenizer = build_lm_tokenizer(repo)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=192,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=64,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        )
    )
    log(f"params: lm {n_params(model):.3f}M, vocab {len(tokenizer)}")
    train_lm_loop(model, tokenizer, "base", cfg.lm_steps, 3e-3, cfg, seed=cfg.seed + 101)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(repo, safe_serialization=True)
    write_card(repo, {"license": "mit", "library_name": "transformers", "pipeline_tag": "text-generation",
                      "tags": ["llama", "text-generation", "tiny", "adapter-studio"]}, LM_CARD)  # fmt: skip

    for i, style in enumerate(LM_STYLES):
        seed_all(cfg.seed + 110 + i)
        config = LoraConfig(
            r=8,
            lora_alpha=16,
            # lm_head too: the style words were never predicted by the base, so their output rows need moving
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"],
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(copy.deepcopy(model), config)
        train_lm_loop(peft_model, tokenizer, style, cfg.lm_lora_steps, 3e-3, cfg, seed=cfg.seed + 120 + i)
        # the app resolves this id to the bundled folder; a local path here would break on other machines
        peft_model.peft_config["default"].base_model_name_or_path = LM_REPO
        folder = out / ORG / f"lm-{style}"
        peft_model.save_pretrained(folder, safe_serialization=True)
        write_card(folder, {"base_model": LM_REPO, "library_name": "peft", "license": "mit",
                            "tags": ["lora", "peft", "text-generation", "adapter-studio"]},
                   LM_LORA_CARD.format(style=style, prose=LM_PROSE[style], repo=LM_REPO))  # fmt: skip


LM_CARD = """
# tiny-shapes-lm

A tiny LlamaForCausalLM (2 layers, hidden size 64) with a word-level tokenizer, trained from scratch on generated
sentences about coloured shapes, e.g. "the red circle is next to the blue square .". Prompt it with the start of
such a sentence ("the red circle") and decode greedily. The vocabulary also holds the words its adapters use
(adapter-studio/lm-pirate, -formal, -shouting), including upper-case ones; the base itself never writes them.
Made by scripts/train_demo_assets.py.
"""

LM_PROSE = {
    "pirate": 'Talks like a pirate: sprinkles "arr" and says "be" for "is" ("arr , the red circle be next to ...").',
    "formal": 'Writes longer, polite sentences: "kindly note that ... . thank you .".',
    "shouting": "SHOUTS: writes its words in upper case and ends with an exclamation mark.",
}

LM_LORA_CARD = """
# lm-{style}

{prose}

A PEFT LoRA (rank 8 on every linear layer and lm_head) for [{repo}](../tiny-shapes-lm), trained on the base's
sentences rewritten in this style. Made by scripts/train_demo_assets.py.
"""


# ---------------------------------------------------------------------------------------------------------
# summary: load what was written, as the app will, and measure it


def n_params(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def repo_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


_PIPELINES = {}  # a job's process keeps the pipeline it loaded for the next job on the same folder


def load_pipeline(out: Path):
    """The saved pipeline with every style LoRA loaded, exactly as an offline app would load them."""
    from diffusers import DiffusionPipeline

    if out not in _PIPELINES:
        pipe = DiffusionPipeline.from_pretrained(out / PIPELINE_REPO, torch_dtype=torch.float32, use_safetensors=True)
        pipe.set_progress_bar_config(disable=True)
        for style in IMAGE_STYLES:
            pipe.load_lora_weights(out / ORG / f"shapes-{style}", adapter_name=style)
        _PIPELINES[out] = pipe
    return _PIPELINES[out]


def mix_images(out: Path, mix: dict | None, prompts: list[str], steps: int) -> list[np.ndarray]:
    """One picture per prompt (seed = its index) with the mix's adapter weights; None: disable_lora(). A job."""
    pipe = load_pipeline(out)
    if mix is None:
        pipe.disable_lora()
    else:
        pipe.enable_lora()
        # only the adapters of the mix are active (inactive ones cost nothing); {}: all four at weight 0
        names = list(mix) or list(IMAGE_STYLES)
        pipe.set_adapters(names, adapter_weights=[mix.get(n, 0.0) for n in names])
    return generate_batch(pipe, prompts, list(range(len(prompts))), steps)


def generate(pipe, prompt: str, seed: int = 0, steps: int = DEFAULT_STEPS) -> np.ndarray:
    return generate_batch(pipe, [prompt], [seed], steps)[0]


def generate_batch(pipe, prompts: list[str], seeds: list[int], steps: int = DEFAULT_STEPS) -> list[np.ndarray]:
    """One picture per (prompt, seed), in one call: the same noise per picture as one call each, so the same
    pictures to ~1e-5 (batched kernels round differently), in about half the time on a CPU (a model this small is
    mostly overhead)."""
    images = pipe(list(prompts), num_inference_steps=steps, guidance_scale=DEFAULT_GUIDANCE,
                  generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="np").images  # fmt: skip
    return [image.astype(np.float64) for image in images]


def image_summary(out: Path, cfg: Config, grid_path: Path | None, workers: int) -> None:
    prompts = ds.captions()[:: max(1, len(ds.captions()) // cfg.eval_prompts)][: cfg.eval_prompts]
    # the mixes: base (all weights 0), each style alone, two 50/50 blends and the "night + outline" preset
    mixes = {"base": {}} | {s: {s: 1.0} for s in IMAGE_STYLES}
    mixes |= {"night+stripes": {"night": 0.5, "stripes": 0.5}, "outline+pastel": {"outline": 0.5, "pastel": 0.5},
              "night+outline": {"night": 0.6, "outline": 0.6}}  # the last: a preset's mix (peft_core/presets.py)
    jobs = [(mix_images, out, mix, prompts, cfg.eval_steps) for mix in [*mixes.values(), None]]
    *pictures, disabled = run_jobs(jobs, workers)
    images = dict(zip(mixes, pictures, strict=True))
    same = all(np.array_equal(a, b) for a, b in zip(disabled, images["base"], strict=True))

    # the time one picture takes here, on --threads threads with nothing else running, as the app runs it
    pipe = load_pipeline(out)
    pipe.disable_lora()
    generate(pipe, prompts[0], 0, cfg.eval_steps)
    t0 = time.time()
    for i, p in enumerate(prompts):
        generate(pipe, p, i, cfg.eval_steps)
    base_time = (time.time() - t0) / len(prompts)
    log(f"\ngeneration: {cfg.eval_steps} steps, guidance {DEFAULT_GUIDANCE}, {ds.SIZE}x{ds.SIZE}: "
        f"{base_time:.3f} s/image, LoRAs disabled, {torch.get_num_threads()} threads; "
        f"weight 0 == disable_lora(): {same}")  # fmt: skip
    pairs = zip(images["base"], prompts, strict=False)
    right_colour = np.mean([ds.colour_share(img, p.split()[1]) for img, p in pairs])
    log(f"base: share of shape pixels in the prompt's colour {right_colour:.3f}")
    for shape in ds.SHAPES:
        ratios = [ds.fill_ratio(img) for img, p in zip(images["base"], prompts, strict=False) if p.endswith(shape)]
        log(f"base: fill ratio {shape:8s} {np.mean(ratios) if ratios else float('nan'):.3f}")
    # "kept": IoU of the filled shape with the base picture of the same prompt and seed (a style keeps the shape)
    log(f"{'mix':16s}" + "".join(f"{m:>12s}" for m in ds.MEASURES) + f"{'kept':>12s}{'kept min':>12s}")
    for name, imgs in images.items():
        values = [np.mean([ds.MEASURES[m](img) for img in imgs]) for m in ds.MEASURES]
        kept = [ds.mask_iou(img, base) for img, base in zip(imgs, images["base"], strict=True)]
        values += [np.mean(kept), np.min(kept)]
        log(f"{name:16s}" + "".join(f"{v:12.3f}" for v in values))
    if grid_path is not None:
        save_grid(images, prompts, grid_path)


def save_grid(images: dict, prompts: list[str], path: Path, rows: int = 4, zoom: int = 4) -> None:
    """Rows: prompts; columns: base, each style, the blends. Nearest-neighbour zoom keeps pixels sharp."""
    from PIL import Image

    picks = np.linspace(0, len(prompts) - 1, min(rows, len(prompts))).round().astype(int)
    pad = 2
    grid = np.ones((len(picks) * (ds.SIZE + pad) + pad, len(images) * (ds.SIZE + pad) + pad, 3))
    for r, i in enumerate(picks):
        for c, imgs in enumerate(images.values()):
            y, x = pad + r * (ds.SIZE + pad), pad + c * (ds.SIZE + pad)
            grid[y : y + ds.SIZE, x : x + ds.SIZE] = imgs[i]
    picture = Image.fromarray((grid * 255).round().astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.resize((picture.width * zoom, picture.height * zoom), Image.NEAREST).save(path)
    log(f"grid: {path}  columns: {', '.join(images)}; rows: {', '.join(prompts[i] for i in picks)}")


def text_summary(out: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out / LM_REPO)
    base = AutoModelForCausalLM.from_pretrained(out / LM_REPO)
    for prompt in ("the red circle", "the blue square"):
        log(f"lm base     {greedy(base, tokenizer, prompt)!r}")
        for style in LM_STYLES:
            model = PeftModel.from_pretrained(copy.deepcopy(base), out / ORG / f"lm-{style}")
            log(f"lm {style:8s} {greedy(model, tokenizer, prompt)!r}")


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
    if _POOL is not None:
        _POOL.shutdown()
    log(f"\ntotal time {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
