"""How the rows of one generation reach their adapters: one batch with a LoRA per row, a lone LoRA merged, or the set.

- **A LoRA per row, gathered** (`GatheredRows`): the adapters switched off, and a forward hook on each LoRA layer
  that adds every row's own LoRA in two batched matrix products, whatever the number of distinct adapters.
- **A LoRA per row, peft's** (`MixedRows`), for LoRA layers that are not Linear (embeddings): peft's
  `PeftModel.generate(adapter_names=[...])` gives each row its own LoRA ("__base__" for the base) by a forward
  pre-hook on every LoRA layer that passes `adapter_names=` to the layer's forward
  (`LoraModel._enable_peft_forward_hooks`). The studio's model is a transformers model with peft layers injected by
  `load_adapter`, not a PeftModel, and transformers' `generate` has no such argument, so `MixedRows` registers the
  same hook itself through torch's public `register_forward_pre_hook`. That keyword on the layer's forward, and
  the layers' `lora_A` / `lora_B` / `scaling` that `GatheredRows` reads, are the peft surfaces here that are not
  documented methods: tests/test_batching.py fails when peft changes them (rows then differ from their solo runs
  and from peft's own `adapter_names`).
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


class GatheredRows:
    """Row i through adapter `keys[i]` (None: the base), all in one forward pass, as Punica's and S-LoRA's kernels
    do it: each LoRA layer returns the base output (adapters off) and a forward hook adds, for every row at once,
    `bmm(bmm(x, A_rows), B_rows) * scaling_rows`, with each row's own A and B gathered once per generation (ranks
    padded with zeros, which add exactly nothing). peft's mixed batch (`MixedRows`) loops over the batch's distinct
    adapters in every layer at every token, which with 8 adapters cost more than the batch saved (BENCHMARKS.md);
    this is two matrix products per layer whatever their number. For `torch.nn.Linear` LoRA layers (`gatherable`);
    the others go through peft's."""

    def __init__(self, model, keys):
        self.model, self.keys = model, list(keys)
        self._handles: list = []

    def apply(self) -> None:
        import torch

        self.model.eval()
        self.model.disable_adapters()  # each layer returns its base output; the hook adds the rows' LoRA
        for layer in lora_layers(self.model):
            present = [k for k in self.keys if k is not None and k in layer.lora_A]
            if not present:
                continue
            first = layer.lora_A[present[0]].weight
            rank = max(layer.lora_A[k].weight.shape[0] for k in present)
            n, out = len(self.keys), layer.lora_B[present[0]].weight.shape[0]
            a = torch.zeros(n, first.shape[1], rank, dtype=first.dtype, device=first.device)
            b = torch.zeros(n, rank, out, dtype=first.dtype, device=first.device)
            scale = torch.zeros(n, 1, 1, dtype=first.dtype, device=first.device)
            for i, key in enumerate(self.keys):
                if key is None or key not in layer.lora_A:
                    continue  # the base row, or an adapter without this layer: nothing added
                r = layer.lora_A[key].weight.shape[0]
                a[i, :, :r] = layer.lora_A[key].weight.detach().T
                b[i, :r, :] = layer.lora_B[key].weight.detach().T
                scale[i] = layer.scaling[key]
            self._handles.append(layer.register_forward_hook(partial(_add_rows, a=a, b=b, scale=scale)))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def gatherable(model, key: str) -> bool:
    """Every layer of `key` is a LoRA on a torch Linear (or transformers' Conv1D): what GatheredRows serves."""
    import torch

    layers = [layer for layer in lora_layers(model) if key in layer.lora_A or key in layer.lora_embedding_A]
    return all(key in layer.lora_A and isinstance(layer.lora_A[key], torch.nn.Linear)
               and isinstance(layer.lora_B[key], torch.nn.Linear) for layer in layers)  # fmt: skip


def _add_rows(module, args, output, a, b, scale):
    import torch

    x = args[0]
    if x.dim() != 3 or x.shape[0] != a.shape[0]:
        raise ValueError(f"a batch of {a.shape[0]} rows got input of shape {tuple(x.shape)}")
    return output + (torch.bmm(torch.bmm(x.to(a.dtype), a), b) * scale).to(output.dtype)


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
