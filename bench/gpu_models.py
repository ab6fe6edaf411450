"""Real-size SDXL and FLUX.1 architectures with random weights, built from configs on the GPU (no Hub), for
`python -m bench gpu`. The sizes are the published ones (SDXL base 1.0: 2.6B UNet, CLIP-L + OpenCLIP bigG;
FLUX.1-dev: 12B transformer, CLIP-L + T5-XXL), so load, switch and memory figures are what a real checkpoint gives;
the images are noise. The tokenizers are tiny_models' local ones (their ids fit any vocabulary).

Saved as a diffusers folder in the family's dtype, so the studio loads it as it loads a Hub snapshot: FLUX needs
~33 GB of disk for it (transformer 24 GB + T5 9.5 GB in bfloat16), SDXL ~7 GB.
"""

from pathlib import Path

CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
              projection_dim=768, hidden_act="quick_gelu", vocab_size=49408, max_position_embeddings=77)  # fmt: skip
CLIP_BIG_G = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                  projection_dim=1280, hidden_act="gelu", vocab_size=49408, max_position_embeddings=77)  # fmt: skip
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, feed_forward_proj="gated-gelu",
              vocab_size=32128, relative_attention_num_buckets=32, pad_token_id=0, eos_token_id=1,
              decoder_start_token_id=0)  # fmt: skip
# SDXL base 1.0's UNet (its unet/config.json, the fields that set its shapes)
SDXL_UNET = dict(sample_size=128, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 block_out_channels=(320, 640, 1280), layers_per_block=2, attention_head_dim=(5, 10, 20),
                 transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816)  # fmt: skip
VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
           up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, sample_size=1024)  # fmt: skip


def build_real(family: str, folder: Path, device: str, dtype) -> None:
    """Save a random-weight, real-size pipeline of `family` ("sdxl" or "flux") to `folder`, in `dtype`."""
    import torch

    builders = {"sdxl": _sdxl, "flux": _flux}
    if family not in builders:
        raise ValueError(f"no real-size architecture for {family!r} here; one of {', '.join(builders)}")
    torch.manual_seed(0)
    with torch.device(device):
        pipe = builders[family](folder / "_tokenizer_src", dtype)
    pipe.save_pretrained(folder, safe_serialization=True)
    del pipe
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _clip(tokenizer, config: dict, projection: bool, dtype):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(CLIPTextConfig(**config, **ids)).to(dtype)


def _clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    from tiny_models.image import write_clip_tokenizer

    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder / "clip"), model_max_length=77)


def _sdxl(tok_dir: Path, dtype):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(**SDXL_UNET).to(dtype)
    tokenizer = _clip_tokenizer(tok_dir)
    return StableDiffusionXLPipeline(
        vae=AutoencoderKL(**VAE, latent_channels=4, scaling_factor=0.13025).to(dtype),
        text_encoder=_clip(tokenizer, CLIP_L, False, dtype),
        text_encoder_2=_clip(tokenizer, CLIP_BIG_G, True, dtype),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            timestep_spacing="leading",
            steps_offset=1,
        ),  # fmt: skip
    )


def _flux(tok_dir: Path, dtype):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from tiny_models.families import t5_tokenizer

    tokenizer = _clip_tokenizer(tok_dir)
    return FluxPipeline(
        transformer=FluxTransformer2DModel(guidance_embeds=True).to(dtype),  # its defaults are FLUX.1's sizes
        vae=AutoencoderKL(
            **VAE,
            latent_channels=16,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.1159,
            scaling_factor=0.3611,
        ).to(dtype),  # fmt: skip
        scheduler=FlowMatchEulerDiscreteScheduler(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        ),  # fmt: skip
        text_encoder=_clip(tokenizer, CLIP_L, False, dtype),
        text_encoder_2=T5EncoderModel(T5Config(**T5_XXL)).to(dtype),
        tokenizer=tokenizer,
        tokenizer_2=t5_tokenizer(),  # the tiny Unigram tokenizer: its ids fit T5-XXL's vocabulary
    )
