"""The checks of a pipeline repo's configs, before its weights are downloaded or anything is built.

A pipeline repo is a stranger's: model_index.json names the classes to build, each component's config.json their
sizes and options, the model card the defaults every request starts from. diffusers and transformers trust all of
it; here each is read first (a few small files), and a refusal names the file, the field and what would be valid:

- model_index.json: only pipeline and component classes that ship with diffusers or transformers, components
  named like Python attributes (they are folder names too);
- each component's configs: no `auto_map` (code from the repo), no `quantization_config` (quantized loading is not
  supported here), `_attn_implementation` only one built into transformers (others fetch kernels from the Hub);
- declared sizes: every model component is built on the meta device (no memory) and its parameters x the bytes of
  the studio's dtype are added up against STUDIO_MAX_MODEL_MB, so a 1 KB config declaring billions of parameters is
  refused before from_pretrained allocates them;
- the model card's `studio_defaults`: each field within the range a request may use, and `dtype` one of three;
- the pipeline class has a LoRA loader (else it is refused now, before its weights are downloaded); its family
  (families.py) and the dtype it will run in come out of these checks (`PipelinePlan`).
"""

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from peft_core import hub, limits, settings
from peft_core.errors import HubError, InputError, first_line, shown
from peft_core.image import families
from peft_core.runtime import quiet_libraries

# Component libraries whose classes from_pretrained may build: the pipeline's parts ship with these two.
PIPELINE_LIBRARIES = ("diffusers", "transformers")
# The configs of a component folder that the libraries read as options (tokenizer.json, vocab.json ... are data).
COMPONENT_CONFIGS = (
    "config.json",
    "scheduler_config.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
)
# Configs are a few KB; the largest real ones (tokenizer_config.json listing every added token) reach ~2 MB.
MAX_CONFIG_BYTES = 8 * 2**20
# transformers' built-in attention implementations; any other value names a kernel repo to download and run.
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3")
# Real components have a few thousand modules (SDXL's UNet ~700, Kandinsky 3's ~2,750); building one on the meta
# device costs ~0.2 ms a module, so a config declaring millions of layers is stopped at this many.
MAX_COMPONENT_MODULES = 10_000
# What a model card's `studio_defaults` may set: the request fields a pipeline has defaults for.
STUDIO_DEFAULTS = ("steps", "guidance_scale", "width", "height")


@dataclass(frozen=True)
class PipelinePlan:
    """What the checks learned that the build needs: the pipeline's family and the dtype to load it in."""

    family: families.Family
    dtype: str  # "float32", "float16" or "bfloat16"


def check_pipeline(repo: hub.Repo, sizes: dict[str, int | None], device: str) -> PipelinePlan:
    """Every check of this module on `repo` (`sizes`: its `file_sizes()`); downloads only its small configs.

    Args:
        device: where it will run; with its family this picks the dtype its declared sizes are counted in.
    """
    index = check_model_index(repo.repo_id, repo.file_path("model_index.json"))
    components = model_index_components(index)
    configs = {}
    for component, _, _ in components:
        for filename in COMPONENT_CONFIGS:
            rel = f"{component}/{filename}"
            if rel in sizes:
                configs[rel] = _read_json(repo, rel, sizes[rel])
                check_config_fields(repo.repo_id, rel, configs[rel])
    card = check_studio_defaults(repo.card_data(sizes), repo.repo_id)
    family = families.family_of(index["_class_name"])
    dtype = families.dtype_name(family, device, configs, card.get("dtype"))
    check_declared_size(repo, components, sizes, families.torch_dtype(dtype))
    return PipelinePlan(family, dtype)


def check_model_index(repo_id: str, path: Path) -> dict:
    """Refuse a pipeline whose model_index.json names code that does not ship with diffusers or transformers
    (a custom pipeline class, a component from another module), before anything else is downloaded; returns it.

    diffusers itself refuses such code without trust_remote_code, but only after the download, and with messages
    such as "attribute name must be string, not 'list'".
    """
    import diffusers

    index = _parse_json(repo_id, "model_index.json", path)
    name = index.get("_class_name")
    pipeline_class = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(pipeline_class, type) and issubclass(pipeline_class, diffusers.DiffusionPipeline)):
        raise HubError(
            f"{repo_id!r} names the pipeline class {name!r}, which is not a pipeline that ships with diffusers; "
            "custom pipeline code is never run here (no custom_pipeline, no trust_remote_code)"
        )
    if not hasattr(pipeline_class, "load_lora_weights"):
        raise HubError(
            f"{repo_id!r} is a {name}, which diffusers gives no LoRA loader (no load_lora_weights): LoRA adapters "
            "cannot be loaded into it. Load a pipeline with one (StableDiffusion, SDXL, SD3, Flux, QwenImage ...)"
        )
    for component, value in index.items():
        if component.startswith("_") or not isinstance(value, list) or value == [None, None]:
            continue
        if not (component.isidentifier() and component.isascii() and len(component) <= 64):
            raise HubError(
                f"{repo_id!r}: model_index.json names a component {component[:80]!r}; components are folder and "
                "attribute names like 'unet' or 'text_encoder'"
            )
        library = value[0] if value else None
        if library not in PIPELINE_LIBRARIES and not hasattr(diffusers.pipelines, str(library)):
            raise HubError(
                f"{repo_id!r}: its component {component!r} is {value!r}, which is not a class from "
                f"{' or '.join(PIPELINE_LIBRARIES)}; custom component code is never run here"
            )
    return index


def check_config_fields(repo_id: str, rel: str, config: dict) -> None:
    """Refuse the options of a component config (at any depth: text_config, vision_config ... are read too) that
    would run a repo's code, load quantized weights or fetch attention kernels. `rel`: e.g. "unet/config.json"."""
    stack: list[tuple[str, object]] = [("", config)]
    while stack:  # a loop, not recursion: the depth is the stranger's
        where, node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            field = f"{where}[{key}]" if isinstance(node, list) else f"{where}.{key}" if where else key
            if key == "auto_map" and value:
                raise HubError(
                    f"{repo_id!r}: {rel} sets {field!r}, which asks for code from the repo; code from a repo is never "
                    "run here (leave auto_map out)"
                )
            if key == "quantization_config" and value is not None:
                raise HubError(
                    f"{repo_id!r}: {rel} sets {field!r}; quantized components are not loaded here, use the "
                    "unquantized weights (leave quantization_config out)"
                )
            if key in ("attn_implementation", "_attn_implementation") and not _known_attention(value):
                raise HubError(
                    f"{repo_id!r}: {rel} sets {field!r} to {shown(value)}; it must be one of "
                    f"{', '.join(ATTN_IMPLEMENTATIONS)} or left out"
                )
            stack.append((field, value))


def _known_attention(value) -> bool:
    values = value.values() if isinstance(value, dict) else [value]  # {"": "sdpa", "text_config": "eager"} too
    return all(v is None or (isinstance(v, str) and v in ATTN_IMPLEMENTATIONS) for v in values)


def check_studio_defaults(card_data: dict, repo_id: str = "") -> dict:
    """The model card's `studio_defaults` ({"steps": 20, "guidance_scale": 5.0, "width": 32, "height": 32}, each
    optional), checked with the ranges of a request's fields, so the defaults never make a request fail; {} when
    the card sets none."""
    defaults = card_data.get("studio_defaults")
    where = f"{repo_id!r}: its model card's " if repo_id else "the model card's "
    if defaults is None:
        return {}
    if not isinstance(defaults, dict):
        raise HubError(
            f"{where}studio_defaults must map {', '.join(STUDIO_DEFAULTS)} to values, got {shown(defaults)}"
        )
    for key in defaults:
        if key not in (*STUDIO_DEFAULTS, "dtype"):
            raise HubError(
                f"{where}studio_defaults.{str(key)[:80]} is not a field it can set; the fields are "
                f"{', '.join(STUDIO_DEFAULTS)} and dtype"
            )
    checks = {
        "steps": lambda name, value: limits.check_int(name, value, limits.STEPS_MIN, limits.STEPS_MAX),
        "guidance_scale": lambda name, value: limits.check_number(
            name, value, limits.GUIDANCE_MIN, limits.GUIDANCE_MAX
        ),
        "width": limits.check_size,
        "height": limits.check_size,
        "dtype": _check_dtype,  # the dtype it runs in on CUDA (float32 on a CPU whatever it says)
    }
    checked = {}
    for key, value in defaults.items():
        try:
            checked[key] = checks[key](f"studio_defaults.{key}", value)
        except InputError as exc:
            raise HubError(f"{where}{exc}") from None
    return checked


def _check_dtype(name: str, value) -> str:
    if value not in ("float32", "float16", "bfloat16"):
        raise InputError(f"{name} must be one of float32, float16, bfloat16, got {shown(value)}")
    return value


# --- declared sizes ------------------------------------------------------------------------------------------------


class _Declared(BaseException):
    """Raised from inside a component's constructor once it has declared too much. A BaseException, so that no
    `except Exception` in library code swallows it and lets the build go on."""


def check_declared_size(repo: hub.Repo, components, sizes: dict[str, int | None], dtype) -> None:
    """Build every model component of the pipeline on the meta device from its config.json (no weights, no memory)
    and refuse the pipeline when their parameters and buffers, in `dtype`, add up to more than STUDIO_MAX_MODEL_MB.

    The build is stopped as soon as it passes the cap or MAX_COMPONENT_MODULES, so a config declaring a vocabulary
    of billions or millions of layers costs no more than a real one.
    """
    import torch

    max_mb = settings.current().max_model_mb
    itemsize = dtype.itemsize
    dtype_name = str(dtype).replace("torch.", "")
    total = 0
    for component, library, class_name in components:
        cls = _model_class(library, class_name)
        rel = f"{component}/config.json"
        if cls is None or rel not in sizes:
            continue  # not a model (tokenizer, scheduler ...), or nothing to build: from_pretrained says what is wrong
        folder = repo.file_path(rel).parent
        what = f"{repo.repo_id!r}: its component {component!r} ({class_name})"
        counter = _Counter(budget=max_mb * 2**20 - total, itemsize=itemsize)
        try:
            with counter, quiet_libraries(), torch.device("meta"):
                _build(cls, folder)
        except _Declared:
            if counter.modules > MAX_COMPONENT_MODULES:
                raise HubError(
                    f"{what} declares more than {MAX_COMPONENT_MODULES:,} layers (modules) in {rel}; real models have "
                    "a few thousand at most"
                ) from None
            counter.over = True
        except Exception as exc:  # what from_pretrained would fail on, after downloading the weights
            raise HubError(f"{what} cannot be built from its {rel}: {first_line(exc)}") from None
        total += counter.bytes
        if counter.over or total > max_mb * 2**20:
            more = "more than " if counter.over else ""
            raise HubError(
                f"{what} declares {more}{counter.numel:,} parameters in {rel} ({more}{counter.bytes / 2**20:,.1f} MB "
                f"as {dtype_name}; {more}{total / 2**20:,.1f} MB with the components before it); this Space loads "
                f"models of at most {max_mb:g} MB (STUDIO_MAX_MODEL_MB)"
            )


def _build(cls, folder: Path):
    """`cls` from the config in `folder`, as from_pretrained builds it before loading weights into it."""
    from diffusers import ModelMixin

    if issubclass(cls, ModelMixin):
        return cls.from_config(cls.load_config(folder))
    # from_json_file, not from_pretrained: only the config file is read (the loader test in test_bad_inputs.py
    # holds every from_pretrained to use_safetensors=True, and this one loads no weights)
    return cls._from_config(cls.config_class.from_json_file(Path(folder) / "config.json"))


def _model_class(library, class_name):
    """The diffusers or transformers model class a component names, or None for anything else (tokenizers,
    schedulers, processors)."""
    import diffusers
    import transformers
    from diffusers import ModelMixin
    from transformers import PreTrainedModel

    if not isinstance(library, str) or not isinstance(class_name, str):
        return None
    module = {"diffusers": diffusers, "transformers": transformers}.get(library)
    try:
        module = module or getattr(diffusers.pipelines, library, None)
        cls = getattr(module, class_name, None)
    except Exception:  # a lazy module that fails to import: from_pretrained reports it
        return None
    return cls if isinstance(cls, type) and issubclass(cls, (ModelMixin, PreTrainedModel)) else None


class _Counter:
    """Counts the modules, parameters and buffers a constructor registers in this thread and stops it past the
    budget (raises _Declared from inside it). Other threads building models meanwhile are not counted."""

    def __init__(self, budget: float, itemsize: int):
        self.budget, self.itemsize = budget, itemsize
        self.modules = self.numel = self.bytes = 0
        self.over = False
        self._seen: dict[int, object] = {}  # id -> tensor: a tied weight registered twice counts once

    def __enter__(self):
        _install_hooks()
        _ACTIVE.counter = self
        return self

    def __exit__(self, *exc):
        _ACTIVE.counter = None
        self._seen.clear()
        return False

    def module(self) -> None:
        self.modules += 1
        if self.modules > MAX_COMPONENT_MODULES:
            raise _Declared()

    def tensor(self, tensor) -> None:
        if id(tensor) in self._seen:
            return
        self._seen[id(tensor)] = tensor
        self.numel += tensor.numel()
        self.bytes += tensor.numel() * (self.itemsize if tensor.is_floating_point() else tensor.element_size())
        if self.bytes > self.budget:
            raise _Declared()


_ACTIVE = threading.local()  # .counter: the _Counter of the check running in this thread, if any
_HOOKS_LOCK = threading.Lock()
_hooks_installed = False


def _install_hooks() -> None:
    """torch's global registration hooks, installed once for the process and never removed: adding or removing one
    while another thread builds a model would change the dict that thread is iterating. They cost one attribute
    lookup per registration when no check runs."""
    global _hooks_installed
    with _HOOKS_LOCK:
        if _hooks_installed:
            return
        from torch.nn.modules import module

        def on_module(parent, name, submodule):
            counter = getattr(_ACTIVE, "counter", None)
            if counter is not None and submodule is not None:
                counter.module()

        def on_tensor(owner, name, tensor):
            counter = getattr(_ACTIVE, "counter", None)
            if counter is not None and tensor is not None:
                counter.tensor(tensor)

        module.register_module_module_registration_hook(on_module)
        module.register_module_parameter_registration_hook(on_tensor)
        module.register_module_buffer_registration_hook(on_tensor)
        _hooks_installed = True


# --- helpers -------------------------------------------------------------------------------------------------------


def model_index_components(index: dict) -> list[tuple[str, object, object]]:
    """(component, library, class name) of every component model_index.json sets, e.g. ("unet", "diffusers",
    "UNet2DConditionModel")."""
    return [
        (name, value[0], value[1])
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and value != [None, None]
    ]


def _read_json(repo: hub.Repo, rel: str, size: int | None) -> dict:
    if (size or 0) > MAX_CONFIG_BYTES:
        raise HubError(f"{repo.repo_id!r}: {rel} is {size:,} bytes; a config has at most {MAX_CONFIG_BYTES:,}")
    return _parse_json(repo.repo_id, rel, repo.file_path(rel))


def _parse_json(repo_id: str, rel: str, path: Path) -> dict:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise HubError(f"{repo_id!r}: {rel} is {path.stat().st_size:,} bytes; a config has at most "
                           f"{MAX_CONFIG_BYTES:,}")  # fmt: skip
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise HubError(f"{repo_id!r}: {rel} is not valid JSON ({first_line(exc)})") from None
    if not isinstance(value, dict):
        raise HubError(f"{repo_id!r}: {rel} is not a JSON object")
    return value
