"""Does a checked adapter folder fit the loaded LM? Answered on a meta-device copy, before anything real is allocated
(backend: transformers, peft and torch; a helper of model.py).

peft builds the adapter on a copy of the model on the meta device (same architecture, no memory, the model itself
untouched), which gives the adapter's exact tensor names, shapes and size. The file must hold exactly those, and the
size must fit the admin's cap (STUDIO_MAX_ADAPTER_MB).
"""

import copy

from peft_core import settings
from peft_core.config_checks import peft_type_name
from peft_core.errors import AdapterError, first_line
from peft_core.runtime import quiet_libraries
from peft_core.text.adapters import ADAPTER_WEIGHTS, PEFT_KEY_PREFIX, AdapterFolder
from peft_core.text.layers import adapter_parameters, adapter_size


def check_fits(model, adapter: AdapterFolder, adapter_name: str, source: str, model_id: str) -> dict:
    """The tensors to load, once the file holds exactly what peft builds for `model` from the checked config.

    Refused: a declared size over STUDIO_MAX_ADAPTER_MB (r=1e6 in a 0.1 MB file), weights the file lacks, tensors
    it should not hold (a file can name base weights, which transformers would load over the base), and shapes that
    differ from the config.
    """
    import torch
    from peft import get_peft_model_state_dict, inject_adapter_in_model
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING
    from transformers import AutoModelForCausalLM

    kind = peft_type_name(adapter.peft_type)
    with quiet_libraries(), torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(model.config)
        try:
            # peft changes the config it injects (e.g. "all-linear" becomes names): it gets a copy
            inject_adapter_in_model(copy.deepcopy(adapter.config), skeleton, adapter_name)
        except Exception as exc:  # e.g. no target module in this model; only the meta copy saw it
            raise AdapterError(f"{source} does not fit {model_id!r}: {first_line(exc)}") from None
        built = get_peft_model_state_dict(skeleton, adapter_name=adapter_name, save_embedding_layers=False)
    _check_declared_size(skeleton, adapter_name, adapter, source, model_id)
    expected = {PEFT_KEY_PREFIX + k: tuple(v.shape) for k, v in built.items()}
    prefix = "." + PEFT_TYPE_TO_PREFIX_MAPPING[adapter.config.peft_type]
    wrapped = {k.rsplit(prefix, 1)[0] for k in expected}
    tensors, extra = {}, []
    for key, tensor in adapter.state_dict.items():
        full = key if key.startswith(PEFT_KEY_PREFIX) else PEFT_KEY_PREFIX + key
        if full in expected:
            tensors[full] = tensor
        elif not _is_base_copy(full, wrapped):
            extra.append(key)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        layers = {k.rsplit(prefix, 1)[0] for k in missing}
        raise AdapterError(
            f"{source} does not fit {model_id!r}: {len(layers)} of its layers got no weights from the file (for "
            f"example {missing[0]!r}); it was probably made for another base"
        )
    if extra:
        raise AdapterError(
            f"{source}: {ADAPTER_WEIGHTS} holds {extra[0]!r}, which is not a weight of this {kind} adapter on "
            f"{model_id!r} ({len(extra)} such tensors); an adapter file may hold only the adapter's own weights, "
            "never the base model's"
        )
    for key, tensor in tensors.items():
        if tuple(tensor.shape) != expected[key]:
            raise AdapterError(
                f"{source}: {ADAPTER_WEIGHTS} holds {key!r} of shape {list(tensor.shape)}, but its config "
                f"({_rank_of(adapter.config)}) on {model_id!r} makes it {list(expected[key])}"
            )
    return {_for_transformers(k): v for k, v in tensors.items()}


def _check_declared_size(skeleton, adapter_name: str, adapter: AdapterFolder, source: str, model_id: str) -> None:
    """The size peft allocates for the adapter (on the meta copy: its parameters' numbers and dtypes), capped."""
    params = adapter_parameters(skeleton, adapter_name).values()
    size = sum(p.numel() * p.element_size() for p in params)
    cap = settings.current().max_adapter_mb
    if size > cap * 2**20:
        layers, _ = adapter_size(skeleton, adapter_name)
        raise AdapterError(
            f"{source} declares {size / 2**20:,.2f} MB of adapter weights ({_rank_of(adapter.config)} on {layers} "
            f"layers of {model_id!r}); this Space accepts adapters of at most {cap:g} MB (STUDIO_MAX_ADAPTER_MB)"
        )


def _rank_of(config) -> str:
    """The config's ranks in words, for messages: "r=8", "r=8 and rank_pattern {...}" or "its config" (IA³)."""
    rank, patterns = getattr(config, "r", None), getattr(config, "rank_pattern", None)
    if rank is None:
        return "its config"
    return f"r={rank}" + (f" and rank_pattern {dict(patterns)}"[:100] if patterns else "")


def _is_base_copy(key: str, wrapped: set[str]) -> bool:
    """peft saves the base weights of an embedding or output head it adapts next to the adapter (its
    save_embedding_layers="auto", for vocabularies resized in training); they are left out, as an adapter never
    changes the base. Base weights of any other layer in the file are refused."""
    from peft.utils.constants import EMBEDDING_LAYER_NAMES

    module, _, tail = key.rpartition(".base_layer.")
    return module in wrapped and tail == "weight" and module.rsplit(".", 1)[-1] in EMBEDDING_LAYER_NAMES


def _for_transformers(key: str) -> str:
    """transformers 5.23's load_adapter maps a DoRA file key "<path>.lora_magnitude_vector" to
    "<path>.lora_magnitude_vector.<name>", but peft holds "<...>.<name>.weight": give it the key it maps right."""
    return key + ".weight" if key.endswith(".lora_magnitude_vector") else key
