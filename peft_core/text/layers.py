"""The adapters peft put into the loaded LM, read layer by layer, written out and removed (backend: torch and peft).

- the modules of a causal LM an adapter can wrap, for `target_modules` checks and error messages;
- one adapter's parameters, size and record (what list_adapters shows), read from the peft layers that hold it;
- writing one adapter back out as peft saves it;
- removing every trace of a half-made adapter;
- `seeded`: the forked RNG every random step of the text side runs under.

Helpers of model.py (and merge.py, train.py); every function takes the model as an argument and changes it only
where its name says so.
"""

import contextlib
from pathlib import Path

from peft_core import private
from peft_core.errors import AdapterError
from peft_core.runtime import quiet_libraries
from peft_core.text.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    PEFT_KEY_PREFIX,
    TextAdapterInfo,
    example_module,
    peft_type_of,
)


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
            f"{', '.join(short)} (or a longer path such as {example_module(set(known))!r}), or 'all-linear'"
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

    The config names `base_id` as its base, so loading the folder as a model (TextStudio.load_base, or
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
            private.forget_peft_config(model)


@contextlib.contextmanager
def seeded(seed: int, device: str):
    """A fixed seed for the torch RNG of `device`, without disturbing the caller's RNG state."""
    import torch

    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
