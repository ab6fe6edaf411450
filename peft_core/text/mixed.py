"""How the rows of one generation reach their adapters: one batch with a LoRA per row, a lone LoRA merged, or the set.

- **A LoRA per row** (`MixedRows`): peft's
  `PeftModel.generate(adapter_names=[...])` gives each row its own LoRA ("__base__" for the base) by a forward
  pre-hook on every LoRA layer that passes `adapter_names=` to the layer's forward
  (`LoraModel._enable_peft_forward_hooks`). The studio's model is a transformers model with peft layers injected by
  `load_adapter`, not a PeftModel, and transformers' `generate` has no such argument, so `MixedRows` registers the
  same hook itself through torch's public `register_forward_pre_hook`. That keyword on the layer's forward is the
  peft surface here that is not a documented method: tests/test_batching.py fails when peft changes it (rows then
  differ from their solo runs). The LoRA arithmetic of every row is peft's own (`_mixed_batch_forward`); none is
  written here.
- **A lone adapter merged.** `MergedAdapter` puts base + `get_delta_weight(adapter)` (peft's LoRA delta, the
  one `merge` adds) into each adapted layer's weight with the adapters switched off, so a lone request costs what
  the base costs. The base tensors are never written: the merged values are separate tensors swapped in by
  `Parameter.data`, and swapping back puts the very same base tensors in place, bit for bit. The merged values of
  the last MERGED_KEPT adapters are kept, so the next request with one of them is a swap, not a merge.
- **The active set**: transformers' `set_adapter` for everything else (several adapters at once, LoHa and the
  other peft types, DoRA), as the studio always did.

Helpers of model.py; each object's `apply()` sets the model up for its rows and `remove()` puts back what it
changed, so the turn can pass to another request between tokens (turns.py). Not thread-safe: called under the
text studio's lock.
"""

from collections import OrderedDict
from functools import partial

BASE_ROW = "__base__"  # peft's name for a row that uses no adapter
MERGED_KEPT = 2  # adapters whose merged weights stay in memory (each costs its adapted layers' base weights)


def lora_layers(model):
    """peft's LoRA layers of `model`, in module order."""
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def mixable(model, key: str) -> bool:
    """Whether a mixed batch (and a merge) can serve `key`: a plain LoRA. peft refuses DoRA in a mixed batch;
    modules_to_save, trainable tokens and LoRA biases change more than the LoRA matrices a merge adds up."""
    config = getattr(model, "peft_config", {}).get(key)
    if config is None or str(getattr(config, "peft_type", "")).rsplit(".", 1)[-1] != "LORA":
        return False
    plain = not (getattr(config, "use_dora", False) or getattr(config, "modules_to_save", None)
                 or getattr(config, "trainable_token_indices", None) or getattr(config, "lora_bias", False)
                 or getattr(config, "alora_invocation_tokens", None))  # fmt: skip
    return plain and not getattr(config, "layer_replication", None)


def _inject_adapter_names(module, args, kwargs, adapter_names):
    kwargs["adapter_names"] = adapter_names  # what peft's own pre-hook does (_adapter_names_pre_forward_hook)
    return args, kwargs


class MixedRows:
    """Row i through adapter `keys[i]` (None: the base), all in one forward pass."""

    def __init__(self, model, keys):
        self.model = model
        self.names = [BASE_ROW if key is None else key for key in keys]
        self._handles: list = []

    def apply(self) -> None:
        self.model.eval()
        self.model.enable_adapters()  # a disabled layer ignores adapter_names and returns the base
        hook = partial(_inject_adapter_names, adapter_names=self.names)
        self._handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in lora_layers(self.model)]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class ActiveSet:
    """Every row through the same active adapters (none: the disable toggle): transformers' set_adapter."""

    def __init__(self, set_active, keys):
        self.set_active, self.keys = set_active, list(keys)

    def apply(self) -> None:
        self.set_active(self.keys)

    def remove(self) -> None:
        pass  # the next request sets its own adapters


class MergedWeights:
    """The merged weights of recent lone adapters: {key: {base parameter: merged tensor}}, least recent first."""

    def __init__(self):
        self._cache: OrderedDict = OrderedDict()

    def forget(self, key: str | None = None) -> None:
        """Drop `key`'s merged weights (all when None): its LoRA weights changed or it is gone."""
        if key is None:
            self._cache.clear()
        else:
            self._cache.pop(key, None)

    def get(self, model, key: str, max_mb: float) -> dict | None:
        """{parameter: merged value} for `key`, computed once; None when the copies would pass `max_mb`."""
        import torch

        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        merged, size = {}, 0
        with torch.no_grad():
            for layer in lora_layers(model):
                if key not in layer.lora_A and key not in layer.lora_embedding_A:
                    continue
                weight = layer.get_base_layer().weight
                delta = layer.get_delta_weight(key)
                if delta.shape != weight.shape:
                    return None
                size += weight.numel() * weight.element_size()
                if size > max_mb * 2**20:
                    return None
                merged[weight] = (weight.data + delta.to(weight.dtype)).detach()
        self._cache[key] = merged
        while len(self._cache) > MERGED_KEPT:
            self._cache.popitem(last=False)
        return merged


class MergedAdapter:
    """Every row through one LoRA merged into the base weights, with the adapters off: the base's cost."""

    def __init__(self, model, merged: dict):
        self.model, self.merged = model, merged
        self._base: dict = {}

    def apply(self) -> None:
        self.model.eval()
        self.model.disable_adapters()  # the LoRA branch is in the weights now; peft's layers pass them through
        for param, value in self.merged.items():
            self._base[param] = param.data
            param.data = value

    def remove(self) -> None:
        for param, base in self._base.items():
            param.data = base  # the very tensor it held: the base bit for bit
        self._base = {}
