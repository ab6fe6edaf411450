"""Adapter facts and peft plumbing for the text studio, kept apart from its state and its lock.

- checking an adapter folder (adapter_config.json + adapter_model.safetensors) before the model is touched: its
  config through the allowlist of config_checks.py, finite tensors, and keys that name modules the model has;
- checking it against the model on a meta-device copy (`check_fits`): peft builds the adapter there, allocating
  nothing, which gives its exact tensor names, shapes and size, so the file must hold exactly those and fit the
  admin's cap (STUDIO_MAX_ADAPTER_MB) before anything real is allocated;
- loading it with transformers' `load_adapter` from the checked config object and tensors (the library never reads
  the file), checking that every weight landed, and undoing a failed load (transformers leaves a half-injected
  adapter behind when its load fails);
- the modules of a causal LM an adapter can wrap, for `target_modules` checks and error messages;
- writing one adapter back out as peft saves it.

Every function takes the model as an argument and changes it only where its name says so.
"""

import contextlib
import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path

from peft_core import settings
from peft_core.adapters import check_safetensors_header
from peft_core.config_checks import (
    ADAPTER_CONFIG_MAX_BYTES,
    MODULE_NAME,
    build_peft_config,
    check_adapter_config,
    check_peft_type,
    peft_type_name,
    read_json_object,
)
from peft_core.errors import AdapterError
from peft_core.runtime import quiet_libraries

__all__ = ["peft_type_name"]  # text.py names methods in its messages through this module

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

    The config goes through config_checks' allowlist and becomes a peft config object here; nothing later reads
    the file again. `source` names the folder in errors (the repo id the user gave).
    """
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    what = f"{source}: {ADAPTER_CONFIG}"
    data = read_json_object(folder / ADAPTER_CONFIG, what, "peft config", ADAPTER_CONFIG_MAX_BYTES, AdapterError)
    peft_type = check_peft_type(data, source, AdapterError)
    weights = folder / ADAPTER_WEIGHTS
    check_safetensors_header(weights)
    try:
        state_dict = load_file(weights)
    except SafetensorError as exc:
        raise AdapterError(f"{source}: {ADAPTER_WEIGHTS} could not be read as safetensors: {exc}") from None
    if not state_dict:
        raise AdapterError(f"{source}: {ADAPTER_WEIGHTS} holds no tensors")
    for key, tensor in state_dict.items():
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in WEIGHT_DTYPES:
            raise AdapterError(
                f"{source}: {ADAPTER_WEIGHTS} holds {key!r} as {dtype}; adapter weights are one of "
                f"{', '.join(WEIGHT_DTYPES)}"
            )
        if not bool(tensor.isfinite().all()):
            raise AdapterError(f"{source}: {ADAPTER_WEIGHTS} has NaN or infinite values in {key!r}")
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


def check_keys_match(adapter: AdapterFolder, model, source: str, model_id: str) -> None:
    """Refuse an adapter none of whose weights name a module of `model` (it was made for another base)."""
    if not adapter.module_paths:
        raise AdapterError(f"{source}: none of the {adapter.num_tensors} tensors is a {adapter.peft_type} weight")
    known = set(targetable_modules(model))
    if not adapter.module_paths & known:
        example = sorted(adapter.module_paths)[0]
        raise AdapterError(
            f"{source} does not fit {model_id!r}: its weights name modules such as {example!r} that the model does "
            f"not have (its layers are named like {_example_module(known)!r}); it was probably made for another base"
        )


def check_fits(model, adapter: AdapterFolder, adapter_name: str, source: str, model_id: str) -> dict:
    """The tensors to load, once the file holds exactly what peft builds for `model` from the checked config.

    peft builds the adapter on a meta-device copy of the model (same architecture, no memory, the model itself
    untouched), which gives the adapter's true tensor names, shapes and size. Refused: a declared size over
    STUDIO_MAX_ADAPTER_MB (r=1e6 in a 0.1 MB file), weights the file lacks, tensors it should not hold (a file
    can name base weights, which transformers would load over the base), and shapes that differ from the config.
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


def load_adapter_folder(model, adapter_name: str, adapter: AdapterFolder, repo, model_id: str) -> TextAdapterInfo:
    """transformers' load_adapter from a checked folder of `repo`, then check that every weight landed; on any
    failure, undo it. Returns the adapter's record."""
    source = repr(repo.repo_id)
    check_keys_match(adapter, model, source, model_id)
    tensors = check_fits(model, adapter, adapter_name, source, model_id)
    try:
        with quiet_libraries():
            # The checked config object and tensors: the library never reads the repo's files. hotswap=False: a
            # new adapter, never one replacing another's weights.
            loading = model.load_adapter(
                adapter_name=adapter_name, peft_config=copy.deepcopy(adapter.config), adapter_state_dict=tensors,
                hotswap=False, use_safetensors=True,
            )  # fmt: skip
    except Exception as exc:
        undo_inject(model, adapter_name, adapter.peft_type)
        raise AdapterError(f"{source} could not be loaded into {model_id!r}: {first_line(exc)}") from None
    # A second line behind check_fits: weights of this adapter that the load did not fill keep their fresh init.
    missing = sorted(set(loading.missing_keys) & set(adapter_parameters(model, adapter_name)))
    if missing:
        undo_inject(model, adapter_name, adapter.peft_type)
        raise AdapterError(
            f"{source} does not fit {model_id!r}: {len(missing)} of its layers got no weights from the file (for "
            f"example {missing[0]!r}); it was probably made for another base"
        )
    model.eval()
    model.requires_grad_(False)
    return adapter_record(model, adapter_name, repo.repo_id, repo.revision, "hub", trainable=False)


def adapter_record(model, adapter_name: str, repo_id, revision, source: str, trainable: bool) -> TextAdapterInfo:
    """What list_adapters shows about `adapter_name`, read from the model's peft config and layers."""
    config = model.peft_config[adapter_name]
    targets = config.target_modules
    layers, params = adapter_size(model, adapter_name)
    alpha = getattr(config, "lora_alpha", getattr(config, "alpha", None))
    return TextAdapterInfo(
        adapter_name=adapter_name,
        repo_id=repo_id,
        revision=revision,
        source=source,
        peft_type=peft_type_of(config),
        r=int(config.r) if getattr(config, "r", None) is not None else None,
        lora_alpha=float(alpha) if alpha is not None else None,
        target_modules=[targets] if isinstance(targets, str) else sorted(targets or []),
        trainable=trainable,
        num_layers=layers,
        num_parameters=params,
    )


def write_adapter_folder(model, adapter_name: str, folder: Path, base_id: str, base_revision: str) -> Path:
    """`folder/<adapter_name>/` as PeftModel.save_pretrained writes it, and a zip of it; returns the zip's path.

    The config names `base_id` as its base, so loading the folder as a model (TextStudio.load_model, or
    AutoModelForCausalLM.from_pretrained) brings the same base back.
    """
    import copy
    import zipfile

    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    # save_embedding_layers=False: "auto" may ask the Hub about the base's vocabulary.
    state = get_peft_model_state_dict(model, adapter_name=adapter_name, save_embedding_layers=False)
    state = {PEFT_KEY_PREFIX + k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    config = copy.deepcopy(model.peft_config[adapter_name])
    config.base_model_name_or_path = base_id
    config.revision = None if base_revision == "main" else base_revision
    config.inference_mode = True
    out = folder / adapter_name
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out))
    save_file(state, out / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    archive = out.with_name(f"{adapter_name}.zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            zf.write(out / name, f"{adapter_name}/{name}")
    return archive


def targetable_modules(model) -> dict[str, str]:
    """{module path: class name} of the layers an adapter can wrap, by their unwrapped names.

    Layers already wrapped by peft count under their own name ("...q_proj", not "...q_proj.base_layer"), and
    the adapters' own sub-layers (lora_A, lora_B ...) are left out.
    """
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    kinds = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    wrapped: list[str] = []
    found: dict[str, str] = {}
    for name, module in model.named_modules():
        if any(name.startswith(w + ".") for w in wrapped):
            continue  # inside a peft layer: its base layer or the adapters' own matrices
        if isinstance(module, BaseTunerLayer):
            wrapped.append(name)
            base = module.get_base_layer()
            found[name] = type(base).__name__
        elif isinstance(module, kinds) or type(module).__name__ == "Conv1D":  # transformers' GPT-2 Conv1D
            found[name] = type(module).__name__
    return found


def check_target_modules(model, targets: list[str], model_id: str) -> list[str]:
    """Each name must match a layer the way peft matches it (the full path or a '.'-suffix of it)."""
    known = targetable_modules(model)
    missing = [t for t in targets if not any(p == t or p.endswith("." + t) for p in known)]
    if missing:
        short = sorted({p.rsplit(".", 1)[-1] for p in known})
        raise AdapterError(
            f"target module(s) {', '.join(map(repr, missing))} not found in {model_id!r}; valid names: "
            f"{', '.join(short)} (or a longer path such as {_example_module(set(known))!r}), or 'all-linear'"
        )
    return targets


def adapter_parameters(model, adapter_name: str) -> dict:
    """{state-dict name: parameter} of one adapter, read from the peft layers that hold it.

    Not a match on names: an adapter may be called "mlp" or "layers", which are also parts of base weight names.
    """
    import torch

    params = {}
    for path, attr, item in _adapter_slots(model, adapter_name):
        prefix = f"{path}.{attr}.{adapter_name}"
        if isinstance(item, torch.nn.Parameter):
            params[prefix] = item
        else:
            params.update({f"{prefix}.{n}": p for n, p in item.named_parameters()})
    return params


def adapter_size(model, adapter_name: str) -> tuple[int, int]:
    """(layers that carry `adapter_name`, its number of parameters)."""
    layers = {path for path, _, _ in _adapter_slots(model, adapter_name)}
    return len(layers), sum(p.numel() for p in adapter_parameters(model, adapter_name).values())


def _adapter_slots(model, adapter_name: str):
    """(layer path, attribute, module or parameter) for each place a peft layer keeps `adapter_name`."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for path, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            for attr in module.adapter_layer_names:  # e.g. ("lora_A", "lora_B", "lora_embedding_A", ...)
                container = getattr(module, attr, None)
                if container is not None and adapter_name in container:
                    yield path, attr, container[adapter_name]


def undo_inject(model, adapter_name: str, peft_type: str) -> None:
    """Remove every trace of `adapter_name` after a failed or partial load, so the model works as before.

    transformers' delete_adapter needs the name in `model.peft_config`, which a failed injection may not have
    reached; peft's functional delete_adapter works on the layers directly, so use it and tidy the config here.
    """
    from peft import PeftType
    from peft.functional import delete_adapter
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

    with quiet_libraries():  # peft warns that the deleted adapter was active: expected here
        delete_adapter(model, adapter_name=adapter_name, prefix=PEFT_TYPE_TO_PREFIX_MAPPING[PeftType(peft_type)])
    config = getattr(model, "peft_config", None)
    if isinstance(config, dict):
        config.pop(adapter_name, None)
        if not config:  # the state transformers leaves after deleting its last adapter
            del model.peft_config
            model._hf_peft_config_loaded = False


@contextlib.contextmanager
def seeded(seed: int, device: str):
    """A fixed seed for the torch RNG of `device`, without disturbing the caller's RNG state."""
    import torch

    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _example_module(names: set[str]) -> str:
    # The longest name shows the nesting best ("model.layers.0.self_attn.q_proj" rather than "lm_head").
    return max(sorted(names), key=len) if names else "none"


def first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
