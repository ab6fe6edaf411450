"""What the text side knows about an adapter without touching a model: its record, and its folder read and checked.

- `TextAdapterInfo`: one adapter held by the model, as listed to users and API clients;
- `read_adapter_folder`: an adapter folder (adapter_config.json + adapter_model.safetensors) parsed and checked:
  its config through the allowlist of config_checks.py (it becomes a peft config object here, and nothing later
  reads the file again), its tensors through safetensors_file.py (header, checked read, finite values), their
  dtypes, and the module paths they name;
- `check_keys_match`: the message for an adapter none of whose weights name a module of the base.

peft is read here for its config classes and key prefixes only; no model is built or changed (that is model.py).
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

from peft_core.config_checks import (
    ADAPTER_CONFIG_MAX_BYTES,
    MODULE_NAME,
    build_peft_config,
    check_adapter_config,
    check_peft_type,
    read_json_object,
)
from peft_core.errors import AdapterError
from peft_core.safetensors_file import read_checked

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# What peft's PeftModel.save_pretrained puts in front of every key; transformers' load_adapter accepts it too.
PEFT_KEY_PREFIX = "base_model.model."
# Tensor types an adapter file may hold: what peft saves. Others (integers, float8) are not adapter weights.
WEIGHT_DTYPES = ("float32", "float16", "bfloat16", "float64")


@dataclass
class TextAdapterInfo:
    """One adapter held by the text model, as listed to users and API clients."""

    adapter_name: str
    repo_id: str | None  # None for adapters made in the app (added, trained or merged)
    revision: str | None
    source: str  # "hub" (loaded), "added" (new, trainable) or "merged" (add_weighted_adapter)
    peft_type: str  # "LORA", "LOHA" ... as peft spells it
    r: int | None  # None for methods without a rank (IA³)
    lora_alpha: float | None
    target_modules: list[str]
    trainable: bool  # train_adapter accepts it: adapters made here; loaded ones stay as their author made them
    num_layers: int  # modules that carry it
    num_parameters: int
    steps_trained: int = 0
    merged_from: dict = field(default_factory=dict)  # for merges: {adapter_name: weight}
    combination_type: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AdapterFolder:
    """A checked adapter folder: its config and what its file names."""

    folder: Path
    config: object = field(repr=False)  # a peft PeftConfig subclass (LoraConfig, LoHaConfig ...)
    peft_type: str
    module_paths: set[str]  # modules the weights belong to, e.g. "model.layers.0.self_attn.q_proj"
    num_tensors: int
    state_dict: dict = field(repr=False, default_factory=dict)  # the file's tensors, as its keys name them


def peft_type_of(config) -> str:
    """A peft config's type as a plain string: "LORA", "LOHA" ..."""
    return str(getattr(config.peft_type, "value", config.peft_type))


def read_adapter_folder(folder: Path, source: str) -> AdapterFolder:
    """Parse and check an adapter folder without touching any model; never unpickles.

    `source` names the folder in errors (the repo id the user gave).
    """
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

    what = f"{source}: {ADAPTER_CONFIG}"
    data = read_json_object(folder / ADAPTER_CONFIG, what, "peft config", ADAPTER_CONFIG_MAX_BYTES, AdapterError)
    peft_type = check_peft_type(data, source, AdapterError)
    state_dict = read_checked(folder / ADAPTER_WEIGHTS, f"{source}: {ADAPTER_WEIGHTS}")
    for key, tensor in state_dict.items():
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in WEIGHT_DTYPES:
            raise AdapterError(
                f"{source}: {ADAPTER_WEIGHTS} holds {key!r} as {dtype}; adapter weights are one of "
                f"{', '.join(WEIGHT_DTYPES)}"
            )
    prefix = PEFT_TYPE_TO_PREFIX_MAPPING[PeftType(peft_type)]
    # The same split peft's inject_adapter uses: "<module path>.<prefix>..." -> "<module path>".
    paths = {k.removeprefix(PEFT_KEY_PREFIX).rsplit("." + prefix, 1)[0] for k in state_dict if "." + prefix in k}
    odd = sorted(p for p in paths if not MODULE_NAME.fullmatch(p))
    if odd:  # such a path could become a target module (see check_adapter_config): plain names only
        raise AdapterError(
            f"{source}: {ADAPTER_WEIGHTS} names a module {odd[0][:80]!r}, which is not a module path (letters, "
            "digits and '_', joined by '.')"
        )
    clean = check_adapter_config(data, peft_type, source, paths, AdapterError)
    config = build_peft_config(peft_type, clean, source, AdapterError)
    return AdapterFolder(folder, config, peft_type, paths, len(state_dict), state_dict)


def check_keys_match(adapter: AdapterFolder, modules: set[str], source: str, model_id: str) -> None:
    """Refuse an adapter none of whose weights name one of the base's `modules` (it was made for another base)."""
    if not adapter.module_paths:
        raise AdapterError(f"{source}: none of the {adapter.num_tensors} tensors is a {adapter.peft_type} weight")
    if not adapter.module_paths & modules:
        example = sorted(adapter.module_paths)[0]
        raise AdapterError(
            f"{source} does not fit {model_id!r}: its weights name modules such as {example!r} that the model does "
            f"not have (its layers are named like {example_module(modules)!r}); it was probably made for another base"
        )


def example_module(names: set[str]) -> str:
    """One module path for a message: the longest shows the nesting best ("model.layers.0.self_attn.q_proj")."""
    return max(sorted(names), key=len) if names else "none"
