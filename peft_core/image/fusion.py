"""The applied mix merged into the pipeline's base weights, undone bit for bit, and the merged weights of recent mixes.

Why fuse: for a diffusion pipeline it pays even for a single image. Merging costs about one step's worth of the
LoRA layers' extra work, once, while unfused LoRA layers add it at every step (times two with classifier-free
guidance). The slots (slots.py) fuse every adapted request, not only a mix seen before, so that an image is a
function of the request alone: the same request gives the same bits whatever ran before it. Any other mix unfuses
first.

peft's `unmerge` subtracts the delta again, which costs as much as the merge and is not exact in floating point, so
unfusing copies the base weights back from a copy taken at the first fusion instead: after unfusing the model is
bit for bit what it was. A fused image differs from the unfused one by rounding only (tests/test_slots.py states the
tolerance). The merged weights of the last FUSED_MIXES mixes are kept too, so going back to a recent mix is a copy
rather than a merge, with the same bits; and the base weights that copy overwrites are not copied back first
("stale" until then), so a switch between two recent mixes copies each adapted weight once. The copies cost the
adapted layers' base weights in memory, once plus once per kept mix, all under `fuse_max_mb`; past it fewer mixes
are kept, and then nothing is fused.

Not thread-safe: the image studio calls it, through the slots, under its lock.
"""

from collections import OrderedDict

# Fusing keeps a copy of the adapted layers' base weights (for the exact unfuse) and the merged weights of the
# last FUSED_MIXES mixes (so going back to one is a copy, not a merge); past fuse_max_mb, no fusion.
FUSED_MIXES = 4


class Fusion:
    """Which mix is merged into the base weights, the base weights' copies, and the merged weights of recent mixes.

    A mix is a key: the tuple of its (adapter name, weight) items as the slots activate it.
    """

    def __init__(self, fuse_max_mb: float, stats: dict):
        self.fuse_max_mb = fuse_max_mb
        self.stats = stats  # the slots' counters: fuses, cached_fuses, too_big_to_fuse
        self.layers: list | None = None  # while fused: the layers merged
        self.key: tuple | None = None  # the mix merged into the base weights
        self._originals: dict = {}  # base parameter -> its copy from before any merge (kept for the next fusion)
        self._cache: OrderedDict = OrderedDict()  # mix -> {base parameter: its merged value}, LRU first
        self._stale: set = set()  # base parameters still holding the last mix's merge, overwritten by the next

    @property
    def fused(self) -> bool:
        return self.layers is not None

    def cached(self, key: tuple) -> dict | None:
        """The merged weights kept for mix `key`, if any (what `unfuse(keep=...)` may leave in place)."""
        return self._cache.get(key)

    def fuse(self, layers: list, names: list[str], key: tuple) -> bool:
        """Merge slots `names` (their scales set already) into the base weights of peft `layers` that hold them;
        False, and nothing merged, when the copies would pass fuse_max_mb."""
        import warnings

        import torch

        todo = [(layer, [n for n in names if holds(layer, n)]) for layer in layers]
        todo = [(layer, present) for layer, present in todo if present]
        params = [p for layer, _ in todo for p in _base_params(layer)]
        size = sum(p.numel() * p.element_size() for p in params)
        too_big = size > self.fuse_max_mb * 2**20
        cached = self._cache.pop(key, None)
        if cached is None or not all(p in cached for p in params) or too_big:
            cached = None
            self.restore_stale()  # a merge adds to the base weights: they must be the base first
        if too_big:
            self.stats["too_big_to_fuse"] += 1
            return False
        with torch.no_grad():
            for param in params:
                if param not in self._originals:  # never merged into yet: this is the base weight
                    self._originals[param] = param.detach().clone()
            self.layers, self.key = [layer for layer, _ in todo], key
            if cached is not None:
                # A mix merged before: its merged weights, copied back. The bits are those the merge gave.
                for param in params:
                    param.copy_(cached[param])
                self._stale.difference_update(params)
                self.restore_stale()
                for layer, present in todo:
                    layer.merged_adapters.extend(present)  # the record peft's merge keeps
                self.stats["cached_fuses"] += 1
            else:
                # Slot by slot, each into every layer holding it: a weight gets the same sums in the same order
                # whichever peft layer wraps which (a LoHa slot's layer wraps a LoRA slot's where both adapt it).
                with warnings.catch_warnings():  # "Already ... merged slot0. You are now additionally merging"
                    warnings.simplefilter("ignore", UserWarning)
                    for name in names:
                        for layer, present in todo:
                            if name in present:
                                layer.merge(adapter_names=[name])
                cached = {p: p.detach().clone() for p in params} if self._cache_room(size) else None
            if cached is not None:
                self._cache[key] = cached  # most recently used last
        self.stats["fuses"] += 1
        return True

    def unfuse(self, keep: dict | None = None) -> None:
        """Back to the unfused model, bit for bit: the base weights copied back from before the merge.

        Parameters in `keep` (the `cached` weights of the mix about to be fused) are left as they are: the next
        `fuse` overwrites them.
        """
        if self.layers is None:
            self.restore_stale()
            return
        import torch

        keep = keep or {}
        with torch.no_grad():
            for layer in self.layers:
                for param in _base_params(layer):
                    if param in keep:
                        self._stale.add(param)
                    else:
                        param.copy_(self._originals[param])
                # What peft's unmerge() would leave, without its inexact subtraction (overwritten just above).
                layer.merged_adapters.clear()
        self.layers = self.key = None
        if not keep:
            self.restore_stale()

    def restore_stale(self) -> None:
        """Copy the base weights back where a kept mix's merge was left for the next fuse (before anything reads
        them: a merge, or peft initialising a new adapter)."""
        if self._stale:
            import torch

            with torch.no_grad():
                for param in self._stale:
                    param.copy_(self._originals[param])
            self._stale.clear()

    def forget(self, adapter_name: str) -> None:
        """Drop the merged weights of every kept mix that uses `adapter_name` (deleted, or its name reused)."""
        for key in [k for k in self._cache if adapter_name in dict(k)]:
            del self._cache[key]

    def _cache_room(self, size: int) -> bool:
        """Make room for `size` more bytes of merged weights under fuse_max_mb (with the originals), dropping the
        least recently used mixes; False when even an empty cache has no room."""
        cap = self.fuse_max_mb * 2**20 - sum(t.numel() * t.element_size() for t in self._originals.values())
        while self._cache and size + self._cache_bytes() > cap or len(self._cache) >= FUSED_MIXES:
            self._cache.pop(next(iter(self._cache)))
        return size <= cap

    def _cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for entry in self._cache.values() for t in entry.values())


def holds(layer, name: str) -> bool:
    """Whether peft `layer` (LoRA, LoHa or LoKr: each keeps a rank per adapter it holds) holds adapter `name`."""
    return name in getattr(layer, "r", ())


def _base_params(layer) -> list:
    """The base weights a merge of `layer` writes to."""
    base = layer.get_base_layer()
    return [p for p in (base.weight, getattr(base, "bias", None)) if p is not None]
