"""Resident LoRA adapters kept in RAM, and a few slots in the pipeline that hold the ones in use.

Why: with every resident adapter injected, each one adds three modules per adapted layer (lora_A, lora_B,
lora_dropout), and diffusers and peft walk the whole module tree on every generation (the group-offload hook
lookup), every `set_adapters` and every load. With 64 adapters resident, generation took 1.5x as long, a switch
9x and the next load 7x, although only two adapters were active (docs/BENCHMARKS.md). Here the model holds at
most `k` injected adapters, the *slots* ("slot0", "slot1", ...), whatever the number resident, so all of
those walks cost the same at 1 resident adapter or 64.

- Loading goes through diffusers' own `load_lora_weights` into a slot (every layout diffusers reads, text
  encoders too); the adapter that slot held stays resident in RAM. What peft registered is then copied out as
  its state dict and `LoraConfig` (`get_peft_model_state_dict`): that copy is the adapter from then on.
- A mix whose adapters are not all in slots refills the least recently used slots: in place, tensor by tensor
  (what peft's hotswap does), when the slot's adapter has the same layers, shapes and scaling config, and
  otherwise by deleting the slot's adapter and re-adding it with peft (`add_adapter` +
  `set_peft_model_state_dict`). Both give the layers exactly the tensors and scaling that the first load gave,
  so an image does not depend on which slot an adapter sits in or how it got there.
- Switching between mixes already in slots calls peft's layer methods (`set_adapter`, `set_scale`,
  `enable_adapters`) on the LoRA layers listed once, instead of `pipe.set_adapters`, which walks the whole
  pipeline for them: the same calls diffusers makes, without the walk.
- Fusion: the applied mix is merged into the base weights (peft's `merge`), so each denoising step costs what
  the base costs, and unfused by copying the base weights back, bit for bit (fusion.py says why and how).

What is here: the adapters' weights and which slot holds which. What is not: which adapters exist and their
facts (the studio's AdapterPool, peft_core/pool.py), and every call that reads diffusers' own state
(pipeline.py). The slots keep a use order of their own: it decides which slot a refill or a load takes, counting
loads and exports too, and it changes only speed, never an image; the pool's order decides which adapter leaves
RAM, where a just-loaded adapter that was never used comes first.

Not thread-safe: the image studio calls it under its lock.
"""

import math
from dataclasses import dataclass, field

from peft_core.image.compile import run_compiled
from peft_core.image.fusion import Fusion, holds
from peft_core.image.pipeline import drop_adapter_config, lora_components
from peft_core.runtime import quiet_libraries

# LoraConfig fields that decide what a slot's layers compute from its tensors (with the tensors' names and
# shapes): two adapters that agree on these can take each other's slot by copying tensors alone.
# (LoHa / LoKr configs: peft_type tells them apart, and their own alpha and factor fields count too.)
_SCALING_FIELDS = ("peft_type", "r", "lora_alpha", "alpha", "rank_pattern", "alpha_pattern", "use_rslora", "use_dora",
                   "lora_bias", "fan_in_fan_out", "use_effective_conv2d", "decompose_both",
                   "decompose_factor")  # fmt: skip


class Packed:
    """A state dict kept as one flat buffer per dtype and a layout of (key, dtype, shape), shared with every
    adapter of the same shapes.

    Why: a LoRA is many small tensors (the bundled ones: 112 of 0.18 MB in all), and each tensor costs its own
    allocation, storage and tensor object, ~0.9 KB here: half as much again as the bundled LoRAs' parameters.
    Views are made only while a slot is refilled.
    """

    __slots__ = ("layout", "buffers")

    def __init__(self, tensors: dict, layouts: dict):
        import torch

        layout = tuple((key, value.dtype, tuple(value.shape)) for key, value in tensors.items())
        self.layout = layouts.setdefault(layout, layout)
        self.buffers = {}
        for dtype in dict.fromkeys(d for _, d, _ in layout):
            parts = [v.detach().reshape(-1) for v in tensors.values() if v.dtype == dtype]
            self.buffers[dtype] = torch.cat(parts) if parts else torch.empty(0, dtype=dtype)

    def items(self):
        """(key, tensor) pairs: views into the buffers, as the state dict was."""
        offsets = dict.fromkeys(self.buffers, 0)
        for key, dtype, shape in self.layout:
            n = math.prod(shape)
            start = offsets[dtype]
            offsets[dtype] = start + n
            yield key, self.buffers[dtype][start : start + n].view(shape)

    def to_dict(self) -> dict:
        return dict(self.items())

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers.values())


@dataclass
class Resident:
    """One adapter as it waits in RAM: per pipeline part, peft's state dict and config."""

    state: dict  # component -> Packed {"<module>.lora_A.weight": tensor, ...} (peft keys, no adapter name)
    config: dict  # component -> LoraConfig
    signature: tuple = ()  # equal signatures: a slot can swap one for the other by copying tensors
    nbytes: int = 0


@dataclass
class Slot:
    name: str  # the adapter name inside the pipeline
    holder: str | None = None  # the resident adapter whose tensors it holds now; None: empty
    signature: tuple | None = None
    used: int = 0  # request counter of its last use, for least-recently-used refills
    params: dict = field(default_factory=dict)  # component -> {peft key: the slot's parameter}, for copies


class LoraSlots:
    """The resident adapters of one pipeline and the slots that hold the ones in use."""

    def __init__(self, pipe, k: int, fuse: bool, fuse_max_mb: float, compiled: bool = False):
        """`k` slots at first (a mix of more adapters adds slots while it is needed); `fuse` and `fuse_max_mb` as
        settings.py's STUDIO_FUSE and STUDIO_FUSE_MAX_MB; `compiled`: the denoiser is compiled (compile.py), so
        the LoRA layers are kept in the one state its graph was traced in."""
        self.pipe = pipe
        self.compiled = compiled
        self.slots = [Slot(f"slot{i}") for i in range(max(1, k))]
        self.fuse, self.fuse_max_mb = fuse, fuse_max_mb
        self.residents: dict[str, Resident] = {}
        self._requests = 0
        self._layers: list | None = None  # peft's LoRA layers in the pipeline; None: list them again
        self._enabled: bool | None = None  # None: unknown (diffusers changed it during a load)
        self._applied: dict[str, float] = {}  # the mix of the last activate(); {}: the base
        # One copy of each distinct layout and signature, shared by the residents that have it (Packed's why).
        self._layouts: dict = {}
        self._signatures: dict = {}
        self.stats = {"copy_fills": 0, "inject_fills": 0, "fuses": 0, "cached_fuses": 0, "too_big_to_fuse": 0,
                      "fused_to_fused": 0}  # fmt: skip
        self.fusion = Fusion(fuse_max_mb, self.stats)

    # --- resident adapters ---------------------------------------------------------------------------------------

    def slot_for_load(self) -> str:
        """The name of an empty slot for a new adapter to be loaded into (pipeline.load_lora), then `add`ed.

        The least recently used slot outside the applied mix is emptied for it; its old adapter stays resident in
        RAM. A load that fails leaves the slot empty, which is a state like any other.
        """
        self.unfuse()
        slot = self._free_slot(exclude=set(self._applied))
        if slot.holder is not None or self._slot_injected(slot):
            self._empty(slot)
        self._forget_activation()
        self._layers = None  # the load adds LoRA layers
        return slot.name

    def add(self, adapter_name: str, slot_name: str) -> None:
        """Make the adapter just loaded into `slot_name` resident as `adapter_name`: copied out as peft holds it."""
        slot = next(s for s in self.slots if s.name == slot_name)
        self.fusion.forget(adapter_name)
        resident = self._read_slot(slot)
        self.residents[adapter_name] = resident
        slot.holder, slot.signature, slot.used = adapter_name, resident.signature, self._tick()

    def remove(self, adapter_name: str) -> None:
        """Drop `adapter_name` from RAM and from any slot holding it."""
        with quiet_libraries():
            self.unfuse()
            del self.residents[adapter_name]
            self.fusion.forget(adapter_name)
            for slot in self.slots:
                if slot.holder == adapter_name:
                    self._empty(slot)

    @property
    def applied(self) -> dict[str, float]:
        """The mix of the last activate() (adapter_name -> weight); {}: the base."""
        return dict(self._applied)

    def slot_of(self, adapter_name: str) -> str | None:
        return next((s.name for s in self.slots if s.holder == adapter_name), None)

    # --- the mix -------------------------------------------------------------------------------------------------

    def activate(self, mix: dict[str, float]) -> None:
        """Make the pipeline compute exactly `mix` (adapter_name -> weight); an empty mix is the base."""
        self._activate(mix)
        if self.compiled:  # the base and a fused mix run compiled; an unfused mix needs the LoRA branch: eager
            run_compiled(self.fusion.fused or not mix)

    def _activate(self, mix: dict[str, float]) -> None:
        key = tuple(mix.items())
        if self.fusion.fused and key == self.fusion.key:
            return  # the same mix, still fused
        # Fused to fused, the next mix merged before: the parameters that its merged weights overwrite are not
        # restored first (half the copying of a switch). _fuse restores any it does not overwrite; a refill by
        # copy touches the LoRA tensors only, and one with peft restores them first (see _inject_into).
        cached = self.fusion.cached(key) if self.fuse and mix else None
        if cached is not None and self.fusion.fused:
            self.stats["fused_to_fused"] += 1
        self.unfuse(keep=cached)
        self._applied = dict(mix)
        if not mix:
            self._enable(False)
            return
        try:
            self._fill(list(mix))
        except BaseException:
            self.fusion.restore_stale()
            raise
        slot_of = {s.holder: s.name for s in self.slots if s.holder is not None}
        # Slot order, not mix order: the same set of slots gives the same list, so set_adapter can be skipped.
        names = [s.name for s in self.slots if s.holder in mix]
        weights = {slot_of[a]: float(w) for a, w in mix.items()}
        layers = self._lora_layers()
        if not self.compiled:  # compiled, the layers stay off unless the mix cannot be fused (_fuse says why)
            self._enable(True)
        for layer in layers:  # scales first: a merge reads them (set_scale skips layers without the adapter)
            for name in names:
                layer.set_scale(name, weights[name])
        if self.fuse and self._fuse(names, key):
            return
        self._enable(True)
        for layer in layers:
            if layer.active_adapters != names:
                layer.set_adapter(names, inference_mode=True)

    def place(self, mix: dict[str, float]) -> dict[str, float]:
        """Put `mix`'s adapters into slots without activating them; returns the mix by slot name (for export)."""
        self.unfuse()
        self._fill(list(mix))
        slot_of = {s.holder: s.name for s in self.slots if s.holder is not None}
        return {slot_of[a]: w for a, w in mix.items()}

    def _fill(self, names: list[str]) -> None:
        while len(self.slots) < len(names):
            self.slots.append(Slot(f"slot{len(self.slots)}"))
        tick = self._tick()
        for slot in self.slots:
            if slot.holder in names:
                slot.used = tick
        for adapter_name in names:
            if any(s.holder == adapter_name for s in self.slots):
                continue
            resident = self.residents[adapter_name]
            slot = self._free_slot(exclude=set(names), signature=resident.signature)
            if slot.holder is not None and slot.signature == resident.signature:
                self._copy_into(slot, resident)
                self.stats["copy_fills"] += 1
            else:
                self._inject_into(slot, resident)
                self.stats["inject_fills"] += 1
            slot.holder, slot.signature, slot.used = adapter_name, resident.signature, tick

    # --- fusion (fusion.py) -----------------------------------------------------------------------------------

    def _fuse(self, names: list[str], key: tuple) -> bool:
        """Merge slots `names` (scales already set) into the base weights; False when the copy would pass the cap."""
        layers = self._lora_layers()
        if not self.fusion.fuse(layers, names, key):
            return False
        if self.compiled:
            # What the compiled graph was traced in (compile.py): adapters off, nothing merged on record, so every
            # LoRA layer computes its base layer alone, which holds the merge. The fusion keeps its own record.
            for layer in self.fusion.layers:
                layer.merged_adapters.clear()
            self._enable(False)
            return True
        # A merged layer computes its base layer alone, whatever its active adapters, so those are left as they
        # are (set_adapter costs a walk over every parameter of the layer). The layers left unmerged must not
        # keep another slot active.
        for layer in layers:
            if not layer.merged and any(holds(layer, a) and a not in names for a in layer.active_adapters):
                layer.set_adapter(names, inference_mode=True)
        return True

    def unfuse(self, keep: dict | None = None) -> None:
        """Back to the unfused model, bit for bit (Fusion.unfuse)."""
        self.fusion.unfuse(keep)

    @property
    def fused(self) -> bool:
        return self.fusion.fused

    # --- slots ---------------------------------------------------------------------------------------------------

    def _tick(self) -> int:
        self._requests += 1
        return self._requests

    def _free_slot(self, exclude: set, signature: tuple | None = None) -> Slot:
        """The slot to (re)fill: the least recently used one outside `exclude` holding an adapter of the same
        `signature` (a copy refills it), else an empty slot, else the least recently used outside `exclude`."""
        candidates = [s for s in self.slots if s.holder is not None and s.holder not in exclude]
        same = [s for s in candidates if signature is not None and s.signature == signature]
        if same:
            return min(same, key=lambda s: s.used)
        empty = [s for s in self.slots if s.holder is None]
        if empty:
            return empty[0]
        if not candidates:  # every slot is in use: one more
            self.slots.append(Slot(f"slot{len(self.slots)}"))
            return self.slots[-1]
        return min(candidates, key=lambda s: s.used)

    def _components(self):
        return lora_components(self.pipe)

    def _slot_injected(self, slot: Slot) -> bool:
        return any(slot.name in (getattr(m, "peft_config", None) or {}) for _, m in self._components())

    def _empty(self, slot: Slot) -> None:
        """What `pipe.delete_adapters(slot.name)` does, through peft's layer method on the layers listed once.

        diffusers walks every module of every component twice for it (for the layers, then for a group-offloading
        hook the studio never sets), and a load into a full set of slots pays it first. The layers stay peft
        layers, holding the other slots, so the list stays valid.
        """
        import warnings

        if self._slot_injected(slot):
            with warnings.catch_warnings():  # "Adapter slotN was active which is now deleted": set again on use
                warnings.simplefilter("ignore", UserWarning)
                for layer in self._lora_layers():
                    layer.delete_adapter(slot.name)
        drop_adapter_config(self.pipe, slot.name)
        slot.holder, slot.signature, slot.params = None, None, {}
        self._forget_activation()

    def _forget_activation(self) -> None:
        self._enabled = None

    def _read_slot(self, slot: Slot) -> Resident:
        """The adapter in `slot` as peft registered it, copied out of the model."""
        state, config, signature, nbytes = {}, {}, [], 0
        self._index_params(slot)
        for component, tensors in slot.params.items():
            model = getattr(self.pipe, component)
            state[component] = Packed(tensors, self._layouts)  # a copy: the slot's tensors change on refills
            config[component] = model.peft_config[slot.name]
            nbytes += state[component].nbytes
            shapes = tuple(sorted((k, tuple(v.shape), str(v.dtype)) for k, v in tensors.items()))
            scaling = tuple(repr(getattr(config[component], f, None)) for f in _SCALING_FIELDS)
            signature.append((component, shapes, scaling))
        signature = tuple(signature)
        signature = self._signatures.setdefault(signature, signature)
        return Resident(state=state, config=config, signature=signature, nbytes=nbytes)

    def _index_params(self, slot: Slot) -> None:
        """References to the slot's parameters under peft's state-dict keys, so a refill is a copy per tensor."""
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils import get_peft_model_state_dict

        slot.params = {}
        marker = f".{slot.name}."
        for component, model in self._components():
            if slot.name not in (getattr(model, "peft_config", None) or {}):
                continue
            # Only the slot's own parameters, handed to peft, which turns them into its saved keys: cheaper than
            # letting it build the state dict of the whole model (the base weights included) to filter it.
            own = {key: param for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)
                   for key, param in module.named_parameters(prefix=name, recurse=True)
                   if marker in key or key.endswith(f".{slot.name}")}  # fmt: skip
            # get_peft_model_state_dict returns these parameters themselves (detached), keyed as saved.
            slot.params[component] = get_peft_model_state_dict(model, state_dict=own, adapter_name=slot.name)

    def _copy_into(self, slot: Slot, resident: Resident) -> None:
        import torch

        with torch.no_grad():
            for component, packed in resident.state.items():
                params = slot.params[component]
                for key, value in packed.items():
                    params[key].copy_(value)

    def _inject_into(self, slot: Slot, resident: Resident) -> None:
        """Re-add `resident` under the slot's name with peft: its config, then its tensors."""
        import copy
        import warnings

        from peft.utils import set_peft_model_state_dict

        self.fusion.restore_stale()  # peft may read the base weights to initialise a new adapter
        if slot.holder is not None or self._slot_injected(slot):
            self._empty(slot)
        self._forget_activation()
        self._layers = None
        for component, model in self._components():
            if component not in resident.state:
                continue
            with warnings.catch_warnings():  # "Already found a peft_config": the other slots, as intended
                warnings.simplefilter("ignore", UserWarning)
                model.add_adapter(copy.deepcopy(resident.config[component]), adapter_name=slot.name)
            result = set_peft_model_state_dict(model, resident.state[component].to_dict(), adapter_name=slot.name)
            unexpected = getattr(result, "unexpected_keys", None)
            if unexpected:
                raise RuntimeError(f"re-adding {slot.name}: keys peft did not place: {unexpected[:3]}")
        self._index_params(slot)

    def _lora_layers(self) -> list:
        if self._layers is None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            self._layers = [m for _, model in self._components() for m in model.modules()
                            if isinstance(m, BaseTunerLayer)]  # fmt: skip
        return self._layers

    def _enable(self, enabled: bool) -> None:
        if enabled != self._enabled:
            for layer in self._lora_layers():
                layer.enable_adapters(enabled)
            self._enabled = enabled

