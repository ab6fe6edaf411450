"""The tiny-shapes pipeline: its CLIP tokenizer, VAE, text encoder and UNet, trained from scratch on 32x32 pictures.

The VAE learns every style; the UNet and text encoder the base pictures. Once the LoRAs exist, the VAE decoder is
tuned again on pictures between the styles (tune_saved_decoder), as a job beside them.
"""

import json
import os
import time
from pathlib import Path

import demo_shapes as ds
import numpy as np
import torch
import torch.nn.functional as F

from tiny_models.image import write_clip_tokenizer
from train import PIPELINE_REPO
from train.common import DEFAULT_GUIDANCE, DEFAULT_STEPS, Config, cosine_lr, log, n_params, seed_all, write_card


def clip_tokenizer(folder: Path, max_length: int = 16):
    """A CLIP BPE tokenizer whose merges spell out exactly our words, so "a red circle" is three tokens.

    Its source files go to `folder`/_clip_tokenizer_src; the pipeline saves the tokenizer itself.
    """
    from transformers import CLIPTokenizer

    words = ["a", "an", "the"] + list(ds.COLOURS) + list(ds.SHAPES)
    src = write_clip_tokenizer(folder / "_clip_tokenizer_src", words)
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


def train_image_models(out: Path, cfg: Config) -> None:
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline

    seed_all(cfg.seed)
    repo = out / PIPELINE_REPO
    repo.mkdir(parents=True, exist_ok=True)
    tokenizer = clip_tokenizer(out / "_build")
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


PIPELINE_CARD = f"""
# tiny-shapes

A tiny Stable Diffusion pipeline (its own 2-block VAE, CLIP text encoder and UNet, ~3M parameters) trained
from scratch on procedural 32x32 pictures, so Adapter Studio can show real generations offline on a CPU.

It draws one shape on a light background. Prompts: "a <colour> <shape>" with colour one of
{", ".join(ds.COLOURS)} and shape one of {", ".join(ds.SHAPES)}, e.g. "a red circle".

Use {DEFAULT_STEPS} steps, guidance_scale {DEFAULT_GUIDANCE}, 32x32 (the default size). Made by
scripts/train_demo_assets.py; the style LoRAs are adapter-studio/shapes-night, -outline, -stripes and -pastel.
"""
