"""A tiny StableDiffusionPipeline built from configs after a fixed seed, and LoRA files and repos for it.

Shapes follow diffusers' own LoRA tests (tests/lora/utils.py): a few thousand parameters per part, so a
4-step 32x32 generation takes tens of milliseconds on a CPU.
"""

import json
from collections.abc import Sequence
from pathlib import Path

import torch

TEXT_HIDDEN = 32
# write_repo's model card; {trigger} is the LoRA's instance_prompt (its trigger words)
CARD = "---\nbase_model: tiny\ninstance_prompt: {trigger}\nlicense: mit\n---\n# {name}\nA test LoRA.\n"


def write_clip_tokenizer(folder: Path, words: Sequence[str] = ()) -> Path:
    """The files of a CLIP BPE tokenizer with a byte-level alphabet whose merges spell out exactly `words`.

    Without words there are no merges and every word splits into characters: enough for tests, as it is
    deterministic, needs no download, and different prompts give different ids. With words ("a", "red",
    "circle"), "a red circle" is three tokens. The alphabet stays in the vocabulary either way: an unknown word
    falls apart into letters instead of failing, and the fast tokenizer conversion finds every merge result in
    the vocabulary. Load the folder with CLIPTokenizer.from_pretrained.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

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
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n")
    return folder


def build_tiny_pipeline(folder: Path):
    """A tiny StableDiffusionPipeline from configs (seed 0), saved to `folder` as safetensors."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=2,
    )
    tok_dir = write_clip_tokenizer(folder / "_tokenizer_src")
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, model_max_length=16)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=TEXT_HIDDEN,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=16,
            projection_dim=TEXT_HIDDEN,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe


def lora_state_dict(pipe, seed: int, rank: int = 4, text_encoder: bool = False) -> dict[str, torch.Tensor]:
    """A diffusers-format LoRA state dict for `pipe` whose weights change the output (init_lora_weights=False).

    The pipeline is left as it was: the adapter is added, read out and deleted.
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )
    pipe.unet.add_adapter(config, adapter_name="_tmp")
    state = {
        f"unet.{k}": v.clone() * 0.3 for k, v in get_peft_model_state_dict(pipe.unet, adapter_name="_tmp").items()
    }
    pipe.unet.delete_adapters("_tmp")
    if text_encoder:
        te_config = LoraConfig(
            r=rank, lora_alpha=rank, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"], init_lora_weights=False
        )
        pipe.text_encoder.add_adapter(te_config, adapter_name="_tmp")
        te = get_peft_model_state_dict(pipe.text_encoder, adapter_name="_tmp")
        state.update({f"text_encoder.{k}": v.clone() * 0.3 for k, v in te.items()})
        pipe.text_encoder.delete_adapter("_tmp")
    return state


def write_repo(folder: Path, files: dict, trigger: str = "") -> Path:
    """A Hub-style repo folder: a model card and the given safetensors files ({file name: state dict})."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(CARD.format(trigger=trigger or "''", name=folder.name))
    for name, state in files.items():
        save_file({k: v.contiguous() for k, v in state.items()}, folder / name)
    return folder
