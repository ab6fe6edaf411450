"""Training one adapter of the text model on pasted text: tokens in, a loss curve out.

Small on purpose: the whole text is one batch of blocks, every step sees all of it, and only the named adapter's
parameters are handed to the optimizer, so every other weight stays bit for bit as it was. A fixed seed makes the
same request give the same adapter. Backend (torch): model.py calls it, once the studio validated the inputs and
while it holds the lock.
"""

import math
import time
from dataclasses import asdict, dataclass

from peft_core.errors import AdapterError, InputError
from peft_core.text.layers import adapter_parameters, seeded

# Long texts are cut into blocks of this many tokens (or the model's context, if shorter) and trained as a batch.
BLOCK_TOKENS = 256
TRAIN_SEED = 0


@dataclass
class TrainResult:
    """What train_adapter returns to the UI and the API (as a dict)."""

    adapter_name: str
    steps: int
    learning_rate: float
    num_tokens: int
    loss_start: float  # loss on the text before training, dropout off: comparable with loss_end
    loss_end: float  # the same loss after the last step
    losses: list[float]  # the training loss at each step, for the loss curve
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def make_batch(tokenizer, text: str, max_tokens: int, context: int | None, device: str) -> dict:
    """input_ids, attention_mask and labels for `text`, cut into blocks; padding is masked out of the loss."""
    import torch

    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if len(ids) > max_tokens:
        raise InputError(f"text is {len(ids):,} tokens long; at most {max_tokens:,} tokens can be trained on")
    if len(ids) < 2:
        raise InputError(f"text must be at least 2 tokens long to learn from, got {len(ids)}")
    block = min(BLOCK_TOKENS, context or BLOCK_TOKENS)
    blocks = [ids[i : i + block] for i in range(0, len(ids), block)]
    blocks = [b for b in blocks if len(b) >= 2] or blocks[:1]  # a 1-token tail has no next token to predict
    width = max(len(b) for b in blocks)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(blocks), width), pad, dtype=torch.long)
    mask = torch.zeros((len(blocks), width), dtype=torch.long)
    for row, b in enumerate(blocks):
        input_ids[row, : len(b)] = torch.tensor(b)
        mask[row, : len(b)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


# At most this many of the words that become <unk> are named back (the rest are counted).
UNKNOWN_SHOWN = 8


def preview(tokenizer, text: str, max_tokens: int, context: int | None) -> dict:
    """What training on `text` would see, before training: its token count against `max_tokens` (over it, training
    is refused), how many tokens become the tokenizer's <unk> (the adapter learns nothing from those) with the first
    few words that do, and the blocks the text is cut into (the model never sees across a block's edge). Read-only:
    tokenizes, changes nothing."""
    fast = getattr(tokenizer, "is_fast", False)
    encoded = tokenizer(text, add_special_tokens=True, return_offsets_mapping=fast)
    ids = encoded["input_ids"]
    unk = tokenizer.unk_token_id
    where = [i for i, t in enumerate(ids) if unk is not None and t == unk]
    words: list[str] = []
    for i in where if fast else ():
        start, end = encoded["offset_mapping"][i]
        word = text[start:end][:30]
        if word and word not in words:
            words.append(word)
    block = min(BLOCK_TOKENS, context or BLOCK_TOKENS)
    return {"tokens": len(ids), "max_tokens": max_tokens, "unknown": len(where),
            "unknown_words": words[:UNKNOWN_SHOWN], "block_tokens": block,
            "blocks": max(1, math.ceil(len(ids) / block))}  # fmt: skip


def train_adapter(model, adapter_name: str, batch: dict, steps: int, learning_rate: float, progress=None):
    """Train `adapter_name` alone for `steps` AdamW steps on `batch`; returns a TrainResult.

    `progress(step, total, loss)` is called after each step. If anything fails (a NaN loss, an exception from
    `progress`), the adapter's weights are put back as they were before the call and the error is raised.
    """
    import torch

    params = adapter_parameters(model, adapter_name)
    if not params:
        raise AdapterError(f"adapter {adapter_name!r} has no parameters to train")
    before = {name: p.detach().clone() for name, p in params.items()}
    device = str(next(iter(params.values())).device)
    started = time.perf_counter()

    model.enable_adapters()
    model.set_adapter(adapter_name)  # only this adapter in the forward pass
    model.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    try:
        loss_start = _eval_loss(model, batch)
        optimizer = torch.optim.AdamW(params.values(), lr=learning_rate, weight_decay=0.0)
        losses: list[float] = []
        model.train()  # the adapter's dropout, if it has one, is part of the training
        with seeded(TRAIN_SEED, device):
            for step in range(1, steps + 1):
                loss = model(**batch).loss
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise InputError(
                        f"training diverged at step {step} (loss is {value}); try a lower learning_rate than "
                        f"{learning_rate:g}"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(value)
                if progress is not None:
                    progress(step, steps, value)
        model.eval()
        loss_end = _eval_loss(model, batch)
    except BaseException:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(before[name])
        raise
    finally:
        model.eval()
        for p in params.values():
            p.requires_grad_(False)
            p.grad = None
    return TrainResult(
        adapter_name=adapter_name,
        steps=steps,
        learning_rate=learning_rate,
        num_tokens=int(batch["attention_mask"].sum()),
        loss_start=loss_start,
        loss_end=loss_end,
        losses=losses,
        seconds=round(time.perf_counter() - started, 3),
    )


def _eval_loss(model, batch: dict) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return float(model(**batch).loss)
