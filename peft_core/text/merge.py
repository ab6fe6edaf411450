"""Merging LoRA adapters of the text model with peft's own `add_weighted_adapter`.

`check_merge_request` checks the request alone (the studio calls it before the lock); `check_mergeable` and
`weighted_merge` read and change the model, and are backend (peft), called by model.py only.

The transformers integration injects LoRA layers without keeping a peft `LoraModel`, and add_weighted_adapter
exists only there. Rather than re-implement its maths, `weighted_merge` runs peft's real method on the
transformers model (see its docstring for how). Everything peft would refuse, or silently get wrong, is checked
first by `check_merge_request` and `check_mergeable`, so a refused merge leaves the model as it was.
"""

from peft_core import limits
from peft_core.config_checks import peft_type_name
from peft_core.errors import AdapterError, InputError
from peft_core.text.adapters import peft_type_of
from peft_core.text.layers import seeded

# peft's add_weighted_adapter methods offered here, and which of them need `density` (the share of weights kept).
MERGE_TYPES = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune")
MERGE_TYPES_WITH_DENSITY = ("ties", "dare_linear", "dare_ties", "magnitude_prune")
# These combine A and B matrices element-wise, so every adapter needs the same rank; cat and svd do not.
MERGE_TYPES_SAME_RANK = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
MERGE_SEED = 0  # dare_* drop weights at random: a fixed seed makes the same request give the same adapter


def check_merge_request(adapters, combination_type, density) -> tuple[dict[str, float], str, float | None]:
    """(weights, combination_type, density) normalised, or an InputError naming the bad value."""
    if not isinstance(adapters, dict) or not adapters:
        raise InputError(f"adapters must map adapter names to weights, like {{'a': 1.0, 'b': 0.5}}, got {adapters!r}")
    weights = {name: limits.check_weight(name, w) for name, w in adapters.items()}
    kind = combination_type.strip().lower() if isinstance(combination_type, str) else combination_type
    if kind not in MERGE_TYPES:
        raise InputError(f"combination_type must be one of {', '.join(MERGE_TYPES)}; got {combination_type!r}")
    if len(weights) == 1:
        kind = "linear"  # what peft does with one adapter: every method reduces to scaling it
    if kind not in MERGE_TYPES_WITH_DENSITY:
        return weights, kind, None  # density means nothing to linear, cat and svd: ignored
    if density is None:
        raise InputError(f"combination_type {kind!r} needs density, the share of weights kept, in (0, 1]")
    return weights, kind, limits.check_positive("density", density, 1.0)


def check_mergeable(model, weights: dict, kind: str) -> None:
    """What add_weighted_adapter would refuse or get wrong for these loaded adapters, before anything is made."""
    configs = {name: model.peft_config[name] for name in weights}
    others = [f"{n!r} ({peft_type_name(peft_type_of(c))})" for n, c in configs.items() if peft_type_of(c) != "LORA"]
    if others:
        raise AdapterError(f"only LoRA adapters can be merged; not {', '.join(others)}")
    dora = [n for n, c in configs.items() if getattr(c, "use_dora", False)]
    if dora:
        raise AdapterError(
            f"DoRA adapters cannot be merged (their magnitude vectors do not add up): {', '.join(dora)}"
        )
    if any(getattr(c, "target_parameters", None) for c in configs.values()):
        raise AdapterError("adapters that target parameters (target_parameters) cannot be merged")
    if kind in MERGE_TYPES_SAME_RANK and len({frozenset(ranks(c)) for c in configs.values()}) > 1:
        shown = ", ".join(f"{n!r} (r={'/'.join(map(str, sorted(ranks(c))))})" for n, c in configs.items())
        raise AdapterError(
            f"combination_type {kind!r} needs adapters of one rank, got {shown}; use 'cat' or 'svd', which combine "
            "different ranks"
        )
    if len({isinstance(c.target_modules, str) for c in configs.values()}) > 1:
        raise AdapterError("adapters whose target_modules is a regex cannot be merged with ones that list names")
    if sum(bool(getattr(c, "modules_to_save", None)) for c in configs.values()) > 1:
        raise AdapterError("only one of the merged adapters may carry fully trained modules (modules_to_save)")


def weighted_merge(model, weights: dict[str, float], new_name: str, combination_type: str, density) -> None:
    """Add `new_name` to `model` with peft's `LoraModel.add_weighted_adapter`.

    A `LoraModel` is made around the transformers model with peft's dummy target (it matches no layer, so
    nothing is injected). Its constructor finds the model's `peft_config` and shares that dict, so the tuner sees
    every adapter transformers loaded or added; the merge then runs peft's own code on the model's own LoRA
    layers. The tuner's scratch entry is removed afterwards. Check first (check_mergeable): on failure the caller
    undoes the half-made adapter.
    """
    from peft import LoraConfig
    from peft.tuners.lora import LoraModel
    from peft.utils.constants import DUMMY_TARGET_MODULES

    scratch = "_studio_merge"
    while scratch in model.peft_config:
        scratch += "_"
    try:
        tuner = LoraModel(model, LoraConfig(target_modules=DUMMY_TARGET_MODULES), adapter_name=scratch)
        with seeded(MERGE_SEED, str(next(model.parameters()).device)):
            tuner.add_weighted_adapter(
                list(weights), list(weights.values()), new_name, combination_type=combination_type, density=density
            )
    finally:
        model.peft_config.pop(scratch, None)
    if new_name not in model.peft_config:  # add_weighted_adapter returns silently when it did nothing
        raise AdapterError(f"peft did not create the merged adapter {new_name!r}")


def ranks(config) -> set[int]:
    """Every rank an adapter uses: its `r` and any per-module `rank_pattern` values."""
    return {int(config.r), *(int(r) for r in (getattr(config, "rank_pattern", None) or {}).values())}
