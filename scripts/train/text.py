"""The tiny-shapes LM: a tiny Llama and word-level tokenizer trained from scratch on sentences about shapes, and
its three style adapters (pirate, formal, shouting)."""

import copy
import random
from pathlib import Path

import demo_shapes as ds
import torch

from train import LM_REPO, LM_STYLES, ORG
from train.common import Config, cosine_lr, log, n_params, seed_all, write_card

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
