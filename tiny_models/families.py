"""Tiny pipelines of every LoRA-capable family the studio knows, built from configs with no Hub, and LoRAs for them.

    sd         StableDiffusionPipeline    (tiny_models/image.py's, the bundled default's architecture)
    sdxl       StableDiffusionXLPipeline  UNet with text_time embeddings, two CLIP text encoders
    sd3        StableDiffusion3Pipeline   MMDiT transformer, two CLIP + one T5 text encoder, flow matching
    flux       FluxPipeline               FLUX.1 transformer (double + single blocks), CLIP + T5, flow matching
    qwenimage  QwenImagePipeline          Qwen-Image transformer, Qwen2.5-VL text encoder, its own 3D VAE

Shapes follow diffusers' own tests (tests/pipelines/<family>/ and tests/lora/test_lora_layers_<family>.py): a few
thousand parameters per part, each model built right after `torch.manual_seed(0)`, so the same call always gives
the same weights. Unlike those tests nothing comes from the Hub: the tokenizers are made here (CLIP from a byte
alphabet, T5 from a `tokenizers` Unigram model, Qwen2 from a byte-level BPE). The VAEs downsample 8x as the real
ones do, so each family's size multiple and `default_sample_size x vae_scale_factor` are the real family's (FLUX
and Qwen-Image: 1024 px by default, multiples of 16). A 32-64 px image takes well under a second on a CPU.
"""

import string
from pathlib import Path

import torch

from peft_core import private
from tiny_models.image import build_tiny_pipeline, write_clip_tokenizer

FAMILIES = ("sd", "sdxl", "sd3", "flux", "qwenimage")
CLIP_HIDDEN = 32
CLIP_MAX_TOKENS = 16  # the prompts here are a few words; a short context keeps the text encoders cheap
# Attention projections every family's denoiser has (diffusers' Attention), and CLIP's: what real LoRAs target.
DENOISER_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
CLIP_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
# peft's init_lora_weights=False draws weights of ~1: scaled per family so that a LoRA moves a 2-step 32-px image by
# about a level of 255 on average (visible in a PNG, A != B != mix), not into saturated noise.
LORA_SCALE = {"sd": 0.3, "sdxl": 0.5, "sd3": 1.5, "flux": 2.0, "qwenimage": 3.0}


def build_tiny_family(family: str, folder: Path):
    """A tiny pipeline of `family` (one of FAMILIES), saved to `folder` as a diffusers pipeline (safetensors).

    Returns the pipeline as built (on the CPU, float32); `folder` then loads with DiffusionPipeline.from_pretrained.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    folder = Path(folder)
    if family == "sd":
        return build_tiny_pipeline(folder)
    pipe = {"sdxl": _sdxl, "sd3": _sd3, "flux": _flux, "qwenimage": _qwenimage}[family](folder / "_tokenizer_src")
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe


def family_lora_state_dict(pipe, family: str, seed: int, rank: int = 4, text_encoders: bool = False) -> dict:
    """A LoRA state dict in peft/diffusers keys ("unet.<module>.lora_A.weight", "transformer.<...>", and with
    `text_encoders` "text_encoder.<...>" for every CLIP text encoder the family's loader takes LoRAs in), whose
    weights change the output (init_lora_weights=False). The pipeline's weights and outputs are left as
    they were, but peft's layer wrappers stay in its module tree (`...to_q.base_layer`).
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    denoiser = "unet" if hasattr(pipe, "unet") else "transformer"
    parts = [(denoiser, DENOISER_TARGETS)]
    if text_encoders:
        # only the text encoders diffusers' loader of this pipeline takes LoRAs in
        loadable = private.lora_loadable_modules(pipe)
        parts += [(name, CLIP_TARGETS) for name in ("text_encoder", "text_encoder_2") if name in loadable]
    state = {}
    for name, targets in parts:
        model = getattr(pipe, name)
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False)
        model.add_adapter(config, adapter_name="_tmp")
        lora = get_peft_model_state_dict(model, adapter_name="_tmp")
        state.update({f"{name}.{k}": v.clone() * LORA_SCALE[family] for k, v in lora.items()})
        # diffusers' models call it delete_adapters, transformers' delete_adapter
        (model.delete_adapters if hasattr(model, "delete_adapters") else model.delete_adapter)("_tmp")
    return state


# --- text encoders and tokenizers ------------------------------------------------------------------------------------


def _clip(tokenizer, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=CLIP_HIDDEN,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=CLIP_MAX_TOKENS,
        projection_dim=CLIP_HIDDEN,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder / "clip"), model_max_length=CLIP_MAX_TOKENS)


def t5_tokenizer():
    """A T5 tokenizer from a `tokenizers` Unigram model over single characters and the space marker (ids < 100,
    so it fits any T5 vocabulary: bench/gpu_models.py gives it to a real-size T5-XXL)."""
    from transformers import T5Tokenizer

    pieces = ["▁", *string.ascii_lowercase, *string.ascii_uppercase, *string.digits, *string.punctuation]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(p, -2.0) for p in pieces]
    vocab += [(f"▁{c}", -1.5) for c in string.ascii_lowercase]  # word starts: fewer, more distinct tokens
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _t5(d_model: int = 32):
    """A tiny T5 encoder and its tokenizer."""
    from transformers import T5Config, T5EncoderModel

    tokenizer = t5_tokenizer()
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_ff=37,
        d_kv=8,
        num_heads=4,
        num_layers=2,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config), tokenizer


def _qwen_text(hidden: int = 16):
    """A Qwen2.5-VL text encoder (the vision tower is built but unused: the pipeline sends only text) and a byte-level
    BPE tokenizer with no merges, plus the chat markers Qwen-Image's prompt template uses."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
    vocab = {tok: i for i, tok in enumerate(chars + specials)}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=1024)
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": hidden,
            "intermediate_size": hidden,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "vocab_size": len(vocab),
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": hidden,
        },
        hidden_size=hidden,
        vocab_size=len(vocab),
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
        vision_token_id=vocab["<|image_pad|>"],
        image_token_id=vocab["<|image_pad|>"],
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval(), tokenizer


def _flow_vae(latent_channels: int):
    """The AutoencoderKL of SD3 and FLUX: no quant convs, a shift factor, 8x downsampling (four blocks)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 4, 4, 4),
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


# --- the families ----------------------------------------------------------------------------------------------------


def _sdxl(tok_dir: Path):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + CLIP_HIDDEN,  # six size/crop numbers + the pooled text
        cross_attention_dim=2 * CLIP_HIDDEN,  # both encoders' hidden states, side by side
        norm_num_groups=2,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[4, 4, 4, 4],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=2,
        sample_size=256,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1
    )
    tokenizer = _clip_tokenizer(tok_dir)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=_clip(tokenizer, projection=False),
        text_encoder_2=_clip(tokenizer, projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )


def _sd3(tok_dir: Path):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,  # the T5 width: CLIP's side-by-side hidden states are cut or padded to it
        pooled_projection_dim=2 * CLIP_HIDDEN,  # the two CLIP encoders' pooled outputs, side by side
        out_channels=4,
    )
    tokenizer = _clip_tokenizer(tok_dir)
    text_encoder_3, tokenizer_3 = _t5(d_model=32)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        vae=_flow_vae(latent_channels=4),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=_clip(tokenizer, projection=True),
        text_encoder_2=_clip(tokenizer, projection=True),
        text_encoder_3=text_encoder_3,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        tokenizer_3=tokenizer_3,
    )


def _flux(tok_dir: Path):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,  # 1 latent channel, packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=CLIP_HIDDEN,
        axes_dims_rope=[4, 4, 8],
    )
    tokenizer = _clip_tokenizer(tok_dir)
    text_encoder_2, tokenizer_2 = _t5(d_model=32)
    return FluxPipeline(
        transformer=transformer,
        vae=_flow_vae(latent_channels=1),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=_clip(tokenizer, projection=False),
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
    )


def _qwenimage(tok_dir: Path):
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,  # 4 latent channels, packed 2x2
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,  # the text encoder's width
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    torch.manual_seed(0)
    z_dim = 4
    vae = AutoencoderKLQwenImage(
        base_dim=z_dim * 6,
        z_dim=z_dim,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],  # 2 ** 3: the real model's 8x
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    text_encoder, tokenizer = _qwen_text(hidden=16)
    return QwenImagePipeline(
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )
