"""The style LoRAs of the tiny-shapes pipeline: each learns its style on the frozen UNet, at several strengths."""

from dataclasses import dataclass
from pathlib import Path

import demo_shapes as ds
import torch

from train import IMAGE_STYLES, ORG, PIPELINE_REPO
from train.common import Config, cosine_lr, log, seed_all, write_card
from train.images import diffusion_loss, encode_latents, text_ids, to_tensor

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


LORA_CARD = """
# shapes-{style}

{prose}

A LoRA (rank {rank} on the UNet {where}: {targets}) for [{repo}](../tiny-shapes), trained on the
same captions as the base with pictures drawn in this style. No trigger words: it restyles every prompt.
Made by scripts/train_demo_assets.py.{weights}
"""
