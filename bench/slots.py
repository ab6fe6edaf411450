"""A prototype of the fix for "everything grows with the number of resident adapters": K fixed LoRA slots.

Only K adapters are ever injected into the UNet ("slot0" ... "slot{K-1}", made once with the largest rank and the
union of target modules). Every resident adapter waits in RAM as a peft-format state dict, checked and converted
when it is loaded. A request's mix puts its adapters into slots (filling in place the slots whose occupant the
mix does not use, least recently used first) and activates those slots with the usual `set_adapters`. The
module tree, and so every walk diffusers and peft make over it, holds K adapters whatever the number resident.

Two ways to fill a slot, both measured by bench/resident.py:

- "hotswap": `pipe.load_lora_weights(state_dict, adapter_name=slot, hotswap=True)`, the public diffusers API
  (which calls peft's `hotswap_adapter_from_state_dict`);
- "copy": `copy_` into the slot's lora_A / lora_B tensors, through references kept when the slots were made.

Constraints this brings (checked in `add`, before anything changes):
- an adapter's rank must be <= the slot rank (a smaller one is zero-padded; the padded rank costs compute);
- its target modules must be among the slots' (peft cannot add layers during a hotswap);
- its scale (alpha / r, per module) is folded into lora_B when it is loaded, because after a hotswap
  `set_adapters` recomputes the scale from the *slot's* alpha and rank (LoraLayer.set_scale), not the new file's;
- UNet only here: diffusers refuses hotswap for text encoders ("not yet supported"); the "copy" fill has no
  such limit and would do for them too.
"""

import time
from dataclasses import dataclass


class SlotMismatch(ValueError):
    """The adapter does not fit the slots (rank or targets): they would have to be rebuilt first."""


@dataclass
class _Slot:
    name: str
    holder: str | None = None  # the resident adapter whose weights the slot holds now
    used: int = 0  # request counter, for least-recently-used refills
    covered: frozenset = frozenset()  # modules whose lora_B is non-zero (to zero on the next fill)


class SlotPool:
    """K LoRA slots in `pipe.unet`; resident adapters in RAM. Not thread-safe: callers hold their own lock."""

    def __init__(self, pipe, k: int, rank: int, targets):
        from peft import LoraConfig
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.pipe, self.rank = pipe, rank
        self.slots = [_Slot(f"slot{i}") for i in range(k)]
        self.store: dict[str, dict] = {}  # adapter name -> peft-format state dict ("<module>.lora_A.weight")
        self._requests = 0
        for slot in self.slots:
            # init_lora_weights=True: lora_B starts at zero, so an empty slot changes nothing even if active.
            config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), init_lora_weights=True)
            pipe.unet.add_adapter(config, adapter_name=slot.name)
        # References to every slot tensor, so a "copy" fill is a dict lookup and a copy_ per tensor.
        self.params: dict[str, dict] = {s.name: {} for s in self.slots}
        for module_name, module in pipe.unet.named_modules():
            if hasattr(module, "lora_A") and hasattr(module, "lora_B") and self.slots[0].name in module.lora_A:
                for slot in self.slots:
                    self.params[slot.name][f"{module_name}.lora_A.weight"] = module.lora_A[slot.name].weight
                    self.params[slot.name][f"{module_name}.lora_B.weight"] = module.lora_B[slot.name].weight
        self.modules = {key.rsplit(".lora_", 1)[0] for key in self.params[self.slots[0].name]}
        self.layers = [m for m in pipe.unet.modules() if isinstance(m, BaseTunerLayer)]
        self._active: list[str] | None = None  # the slots set active on every layer; None: unknown
        self._enabled = True
        self._enable(False)

    # --- resident adapters: RAM only ---------------------------------------------------------------------------

    def add(self, name: str, source) -> None:
        """Make `source` (a file path or a diffusers-style state dict, any layout diffusers reads) resident.

        Converted to peft keys once, its scale folded into lora_B, checked against the slots; the UNet is not
        touched. Raises SlotMismatch when the slots would have to be rebuilt to take it.
        """
        from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

        state_dict, alphas = self.pipe.lora_state_dict(dict(source) if isinstance(source, dict) else str(source))
        unet = {k.removeprefix("unet."): v for k, v in state_dict.items() if k.startswith("unet.")}
        if len(unet) != len(state_dict):
            raise SlotMismatch(f"{name!r} also adapts the text encoder; these slots hold UNet LoRAs only")
        if unet and not any("lora_A" in k for k in unet):
            unet = convert_unet_state_dict_to_peft(unet)
        unet = {k: v.float() for k, v in unet.items()}
        for key, value in (alphas or {}).items():
            module = key.removeprefix("unet.").removesuffix(".alpha")
            b_key = f"{module}.lora_B.weight"
            if b_key not in unet:
                raise SlotMismatch(f"{name!r}: alpha {key!r} names no LoRA module")
            unet[b_key] = unet[b_key] * (float(value) / unet[b_key].shape[1])
        unknown = sorted({k.rsplit(".lora_", 1)[0] for k in unet} - self.modules)
        if unknown:
            raise SlotMismatch(f"{name!r} adapts {len(unknown)} modules the slots lack, e.g. {unknown[0]!r}")
        rank = max(v.shape[0] for k, v in unet.items() if ".lora_A." in k)
        if rank > self.rank:
            raise SlotMismatch(f"{name!r} has rank {rank}; the slots hold at most {self.rank}")
        self.store[name] = unet

    def delete(self, name: str) -> None:
        del self.store[name]
        for slot in self.slots:
            if slot.holder == name:
                slot.holder = None

    def forget(self) -> None:
        """Empty every slot's record, so the next mix refills (to time a fill; the weights stay in place)."""
        for slot in self.slots:
            slot.holder = None

    # --- the mix -----------------------------------------------------------------------------------------------

    def activate(self, mix: dict[str, float], fill: str = "copy", activation: str = "layers",
                 policy: str = "lru") -> dict:  # fmt: skip
        """Make the pipeline compute exactly `mix` (adapter name -> weight); an empty mix is the base.

        Args:
            fill: "copy" or "hotswap" (see the module docstring).
            activation: "diffusers" calls `pipe.enable_lora()` and `pipe.set_adapters(...)`, which walk every
                module of the pipeline; "layers" calls the same peft methods on the LoRA layers listed once when
                the slots were made: `set_adapter(names, inference_mode=True)` only when the set of active slots
                changed (it toggles requires_grad on every slot's parameters), `set_scale` always.
            policy: "lru" keeps adapters where they are and refills the least recently used slots (fewest
                copies); "positional" puts a mix of m adapters in slots 0..m-1 (the active set stays the same, so
                a switch is copies and scales only).

        Returns {"filled": slots filled, "fill_s": seconds spent filling} for the benchmark.
        """
        if len(mix) > len(self.slots):
            raise ValueError(f"a mix of {len(mix)} adapters needs {len(mix)} slots; there are {len(self.slots)}")
        missing = [n for n in mix if n not in self.store]
        if missing:
            raise KeyError(f"not resident: {missing}")
        if not mix:
            self._enable(False)
            return {"filled": 0, "fill_s": 0.0}
        self._requests += 1
        candidates = self.slots[: len(mix)] if policy == "positional" else self.slots
        by_holder = {s.holder: s for s in candidates if s.holder is not None}
        free = sorted((s for s in candidates if s.holder not in mix), key=lambda s: s.used)
        filled, start = 0, time.perf_counter()
        for name in mix:
            slot = by_holder.get(name)
            if slot is None:
                slot = free.pop(0)
                self._fill(slot, name, fill)
                filled += 1
            slot.used = self._requests
        fill_s = time.perf_counter() - start
        # Slot order, not mix order: the same set of slots gives the same list, so set_adapter can be skipped.
        active = [(s.name, mix[s.holder]) for s in self.slots if s.holder in mix]
        names, weights = [n for n, _ in active], [w for _, w in active]
        if activation == "diffusers":
            self.pipe.enable_lora()
            self.pipe.set_adapters(names, adapter_weights=weights)
            self._enabled, self._active = True, names
        elif activation == "layers":
            self._enable(True)
            changed = names != self._active
            for layer in self.layers:
                if changed:
                    layer.set_adapter(names, inference_mode=True)
                for name, weight in zip(names, weights, strict=True):
                    layer.set_scale(name, weight)
            self._active = names
        else:
            raise ValueError(f"activation must be 'diffusers' or 'layers', got {activation!r}")
        return {"filled": filled, "fill_s": fill_s}

    def _enable(self, enabled: bool) -> None:
        if enabled != self._enabled:
            for layer in self.layers:
                layer.enable_adapters(enabled)
            self._enabled = enabled

    def _fill(self, slot: _Slot, name: str, fill: str) -> None:
        import torch

        state = self.store[name]
        covered = frozenset(k.rsplit(".lora_", 1)[0] for k in state)
        if fill == "hotswap":  # peft zeroes the slot's layers that the new adapter lacks
            with torch.no_grad():
                self.pipe.load_lora_weights({f"unet.{k}": v for k, v in state.items()}, adapter_name=slot.name,
                                            hotswap=True)  # fmt: skip
        elif fill == "copy":
            params = self.params[slot.name]
            with torch.no_grad():
                for module in slot.covered - covered:  # the old occupant's layers the new one lacks
                    params[f"{module}.lora_B.weight"].zero_()
                for key, value in state.items():
                    target = params[key]
                    if target.shape == value.shape:
                        target.copy_(value)
                    else:  # a smaller rank: zero-padded
                        target.zero_()
                        target[tuple(slice(0, n) for n in value.shape)].copy_(value)
        else:
            raise ValueError(f"fill must be 'copy' or 'hotswap', got {fill!r}")
        slot.holder, slot.covered = name, covered
