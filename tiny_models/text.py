"""A tiny causal LM built from configs after a fixed seed, and peft adapter folders for it.

The LM is a 2-layer Llama with hidden size 32 and a word-level tokenizer over WORDS (about 20k parameters), so a
forward pass takes about a millisecond and 30 training steps about a second on a CPU.
"""

import copy
import json
from pathlib import Path

import torch

WORDS = (
    "the a cat dog pirate ship sails sat on mat sea ran to home and is big small red blue arr matey ahoy "
    "hello good morning sir madam please thank you yes no gold map island treasure captain . , ! ?"
).split()
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]


def write_tokenizer(folder: Path):
    """A word-level tokenizer: every word of WORDS is one token, anything else is <unk>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece()  # joins words with spaces and tidies the space before "."
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_tiny_lm(folder: Path):
    """A tiny LlamaForCausalLM (seed 0) and its tokenizer, saved to `folder` as safetensors; returns the model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        # Ten times transformers' default: with 0.02 the logits of so small a model stay nearly flat, and no
        # adapter could make it sure of the next word in a few dozen training steps.
        initializer_range=0.2,
        # SDPA's CPU kernel costs milliseconds per call whatever the size; eager attention is 10x faster here.
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    return model


def write_adapter(model, folder: Path, config, seed: int, base: str, scale: float = 1.0) -> Path:
    """A peft adapter folder for `model` made with PeftModel.save_pretrained (the model itself is not changed).

    Use `init_lora_weights=False` (or `init_weights=False`) in `config` so the adapter changes the output;
    `scale` multiplies its weights to make the change bigger. `base` goes into base_model_name_or_path.
    """
    from peft import get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(copy.deepcopy(model), config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "default" in name.split("."):
                p.mul_(scale)
    peft_model.save_pretrained(folder)
    path = folder / "adapter_config.json"
    data = json.loads(path.read_text())
    data["base_model_name_or_path"] = base
    path.write_text(json.dumps(data, indent=2))
    return folder


def rename_keys(src: Path, dst: Path, rename) -> Path:
    """A copy of adapter folder `src` whose tensor names went through `rename` (to fake a mismatched adapter)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    state = load_file(src / "adapter_model.safetensors")
    save_file({rename(k): v for k, v in state.items()}, dst / "adapter_model.safetensors")
    return dst
