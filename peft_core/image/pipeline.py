"""The image side's backend: every call into diffusers for the pipeline itself, and nothing else.

- build a pipeline from a checked snapshot (`build`: diffusers' from_pretrained, on the device or offloaded) and
  the defaults and ranges a request starts from (`pipeline_defaults`, through the pipeline's family: families.py);
- the pipeline parts a LoRA can go in (`lora_components`, through peft_core/private.py: diffusers keeps the list
  private; slots.py and export.py walk the parts through it);
- load a LoRA into a slot with diffusers' `load_lora_weights`, check that every layer landed, and undo a failed
  load (`load_lora`);
- run the pipeline for one checked request (`run`): the call arguments the family's pipeline takes, the seeded
  generator, inference mode, and a hook after each denoising step, with what must be put back when another
  request ran in between (`CallState`: the scheduler and the attributes the family declares, families.py).

The studio calls these under its lock, with every input already checked; none of them keeps state of its own.
Heavy libraries are imported inside the functions, so importing this module (and app.py) stays cheap.
"""

import dataclasses

from peft_core import private
from peft_core.errors import AdapterError, HubError, first_line
from peft_core.image import families
from peft_core.runtime import quiet_libraries

# Files a diffusers pipeline needs; pickle weights are left out on purpose, and so are top-level weights: those
# are single-file checkpoints (for A1111 and the like) that from_pretrained never reads, often several GB each.
# (fnmatch's "*" matches "/", so "*.json" covers the component folders too.)
PIPELINE_PATTERNS = ["*.json", "*.txt", "*.model", "README.md", "*/*.safetensors"]


# --- the base pipeline -----------------------------------------------------------------------------------------------


def build(repo_id: str, folder, device: str, dtype, offload: str = "none", compile: bool = False):
    """The pipeline in `folder` (a snapshot whose configs checks.py has passed), on `device`, in `dtype`.

    Args:
        offload: on CUDA, "model" keeps each part in CPU memory until the pipeline uses it (diffusers'
            enable_model_cpu_offload: a whole part moves, its LoRA layers with it), "group" moves groups of
            blocks (enable_group_offload, block level); "none" puts everything on `device`.
        compile: torch.compile the denoiser (STUDIO_COMPILE; image/compile.py).
    """
    from diffusers import DiffusionPipeline

    with quiet_libraries():
        try:
            # No custom_pipeline, no trust_remote_code: only code that ships with diffusers runs.
            pipe = DiffusionPipeline.from_pretrained(
                folder, dtype=dtype, use_safetensors=True, trust_remote_code=False
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError, RuntimeError) as exc:
            raise HubError(f"{repo_id!r} could not be loaded as a diffusers pipeline: {exc}") from None
    if not hasattr(pipe, "load_lora_weights"):  # checks.check_model_index refused it already; kept as the guard
        raise AdapterError(f"{type(pipe).__name__} ({repo_id!r}) does not support LoRA adapters")
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "group":
        import torch

        pipe.enable_group_offload(
            onload_device=torch.device(device), offload_device=torch.device("cpu"), offload_type="block_level",
            num_blocks_per_group=1,
        )  # fmt: skip
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if compile:  # after the move: compiled for the device it runs on, traced at the first generation
        from peft_core.image.compile import compile_denoiser

        compile_denoiser(pipe)
    return pipe


def pipeline_defaults(pipe, family, card: dict, repo_id: str) -> dict:
    """What /load_pipeline answers about requests to `pipe` of `family` (families.py): the defaults a request
    starts from (the model card's `studio_defaults`, `card`, checked with the global ranges by
    checks.check_studio_defaults, else the family's, else the pipeline's own `__call__` defaults and native size)
    and the ranges its fields may take. Card defaults outside the family's ranges are refused (HubError)."""
    card = {k: v for k, v in card.items() if k != "dtype"}
    families.check_card_defaults(card, pipe, family, repo_id)
    ranges = dataclasses.asdict(families.ranges(pipe, family))
    return {"family": family.name, **families.defaults(pipe, family, card), **ranges}


def lora_components(pipe):
    """(component, model) for each part of `pipe` a LoRA can go in, e.g. ("unet", ...), ("text_encoder", ...)."""
    for component in private.lora_loadable_modules(pipe):
        model = getattr(pipe, component, None)
        if model is not None:
            yield component, model


# --- loading a LoRA into a slot --------------------------------------------------------------------------------------


def load_lora(pipe, slot_name: str, lora, source: str, model_id: str):
    """Load `lora` (a lora_files.LoraFile) into the empty slot `slot_name` with `load_lora_weights`, then check that
    every layer it names landed, per component; on any failure, undo it and raise with the file's load report,
    leaving the pipeline as it was. Returns the report (lora_report.LoadReport) with what landed filled in.

    Args:
        source: names the file in errors ("org/repo/file.safetensors"); model_id: the base, likewise.
    """
    from peft_core.image.lora_files import sd3_kohya_to_peft
    from peft_core.image.lora_report import base_family

    report = lora.report
    report.base, base_width = base_family(pipe)
    if lora.width is not None and base_width is not None and lora.width != base_width:
        raise AdapterError(f"{source} was made for {report.made_for}; the loaded base {model_id!r} is {report.base}")
    check_layer_count(lora, pipe, source, model_id)  # before peft matches its layers one by one
    try:
        with quiet_libraries():
            # Tensors, never the file: given a path, diffusers would build the LoraConfig from the file's
            # `lora_adapter_metadata` (a stranger's init_lora_weights, target_modules ...); given a dict it
            # builds it from the key names and alphas read_lora_file checked (plain names, no regex).
            # A copy: diffusers converts the dict in place, and the caller may reuse it. low_cpu_mem_usage off:
            # for LoRA-sized tensors its meta-device path is slower here (bench/load.py: 1.25-1.35x).
            if lora.algorithm == "lora":
                state = sd3_kohya_to_peft(lora.state_dict, getattr(pipe, "transformer", None))  # else a copy
                pipe.load_lora_weights(
                    state, adapter_name=slot_name, low_cpu_mem_usage=False, **_sgm_kwargs(pipe, lora)
                )
            else:
                _load_lycoris(pipe, slot_name, lora)
        registered = registered_modules(pipe, slot_name)
    except Exception as exc:
        undo_load(pipe, slot_name)
        if "not found in the base model" in str(exc):  # peft's words when no key matches a module at all
            report.matched = {}
            raise AdapterError(
                f"{source} ({lora.layout} layout) names {lora.num_layers} LoRA layers but none match {model_id!r}: "
                f"{why_not(pipe, lora, {})} ({report.line()})"
            ) from None
        raise AdapterError(f"{source} ({lora.layout} layout) does not fit {model_id!r}: {first_line(exc)}") from None
    if "unet" in report.named and getattr(pipe, "unet", None) is None and "transformer" in registered:
        # kohya calls every denoiser "unet" (lora_unet_double_blocks_... for FLUX): it is the transformer here
        report.named["transformer"] = report.named.pop("unet")
        lora.modules["transformer"] = lora.modules.pop("unet", {})
    report.matched = {component: len(registered.get(component, ())) for component in report.named}
    report.unmatched = _unmatched(lora, registered)
    if any(report.matched[c] < n for c, n in report.named.items()):
        undo_load(pipe, slot_name)
        raise AdapterError(
            f"{source} ({lora.layout} layout) names {lora.num_layers} LoRA layers but only "
            f"{sum(report.matched.values())} match {model_id!r}: {why_not(pipe, lora, registered)} ({report.line()})"
        )
    return report


def why_not(pipe, lora, registered: dict) -> str:
    """Why `lora`'s layers did not all land in `pipe` (diagnosis.py): both families when its keys point to another,
    else what did not match and why."""
    from peft_core.image import diagnosis

    report = lora.report
    if diagnosis.family_mismatch(report.made_for, pipe):
        return f"it was made for {report.made_for}; the loaded base is {report.base}"
    found = diagnosis.reasons(pipe, dict(lora_components(pipe)), report.named, lora.modules, registered)
    if found:
        return "; ".join(found)
    missing = sum(report.named.values()) - sum(report.matched.values())
    return f"{missing} of its layers name modules that this base has under other names or not at all"


# kohya's prefix for each pipeline part (sd-scripts networks/lora.py; lora_te1/lora_te2 for SDXL's two encoders)
_KOHYA_PREFIXES = {
    "unet": ("lora_unet_", "lycoris_"),  # lycoris_: LyCORIS' wrapper, diffusers' names (lycoris_files.py)
    "transformer": ("lycoris_",),
    "text_encoder": ("lora_te_", "lora_te1_"),
    "text_encoder_2": ("lora_te2_",),
}


def kohya_module_names(pipe) -> dict[str, dict[str, str]]:
    """{component: {kohya name: module name}} for every Linear and Conv2d of the pipeline's parts, spelled as kohya
    and LyCORIS spell them (`lora_unet_down_blocks_1_attentions_0_proj_in`). transformers 5's CLIPTextModel has no
    `text_model.` level, which files trained before it name: both spellings map to the module."""
    import torch

    names: dict[str, dict[str, str]] = {}
    for component, model in lora_components(pipe):
        prefixes = _KOHYA_PREFIXES.get(component, ())
        old_clip = type(model).__name__.startswith("CLIPTextModel") and not hasattr(model, "text_model")
        for name, module in model.named_modules():
            base = module.get_base_layer() if hasattr(module, "get_base_layer") else module  # another slot's layer
            if not isinstance(base, (torch.nn.Linear, torch.nn.Conv2d)) or ".base_layer" in name or ".lora_" in name:
                continue
            spellings = (name, f"text_model.{name}") if old_clip else (name, _sgm_spelling(model, name))
            for spelled in filter(None, spellings):
                for prefix in prefixes:
                    names.setdefault(component, {})[prefix + spelled.replace(".", "_")] = name
    return names


# A diffusers ResnetBlock2D's layers as Stability's sgm ResBlock names them.
_SGM_RESNET = {"conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "conv2": "out_layers.3",
               "conv_shortcut": "skip_connection"}  # fmt: skip


def _sgm_spelling(unet, name: str) -> str | None:
    """A UNet module's name in Stability's sgm/LDM UNet, which kohya's SDXL trainer (and so LyCORIS files trained
    with it) name: `down_blocks.1.attentions.0.proj_in` -> `input_blocks.4.1.proj_in`, `mid_block.attentions.0`
    -> `middle_block.1`, resnets' conv1 -> `in_layers.2`, a down block's sampler -> `input_blocks.3.0.op`, an up
    block's -> `output_blocks.2.2.conv` (sd-scripts' sdxl_original_unet.py). The inverse of diffusers'
    _maybe_map_sgm_blocks_to_diffusers; None for what has no such name here (the convolutions around the blocks)."""
    per_block = getattr(getattr(unet, "config", None), "layers_per_block", None)
    parts = name.split(".")
    if type(per_block) is not int or len(parts) < 4:  # noqa: E721 - bool is an int subclass
        return None
    if parts[2:] == ["downsamplers", "0", "conv"] and parts[0] == "down_blocks":  # sd-scripts' Downsample2D.op
        return f"input_blocks.{(int(parts[1]) + 1) * (per_block + 1)}.0.op"
    if parts[2:] == ["upsamplers", "0", "conv"] and parts[0] == "up_blocks":  # after the block's resnet (+ attention)
        block = unet.up_blocks[int(parts[1])] if int(parts[1]) < len(unet.up_blocks) else None
        inner = 2 if getattr(block, "attentions", None) else 1
        return f"output_blocks.{int(parts[1]) * (per_block + 1) + per_block}.{inner}.conv"
    if parts[0] == "mid_block" and parts[1] in ("resnets", "attentions"):
        head, rest = ["middle_block", "1" if parts[1] == "attentions" else str(2 * int(parts[2]))], parts[3:]
    elif parts[0] in ("down_blocks", "up_blocks") and parts[2] in ("resnets", "attentions") and len(parts) > 4:
        n = int(parts[1]) * (per_block + 1) + int(parts[3]) + (parts[0] == "down_blocks")  # input_blocks.0: conv_in
        side = "input_blocks" if parts[0] == "down_blocks" else "output_blocks"
        head, rest = [side, str(n), "1" if parts[2] == "attentions" else "0"], parts[4:]
    else:
        return None
    if "resnets" in parts[1:3] and len(rest) == 1 and rest[0] in _SGM_RESNET:
        rest = [_SGM_RESNET[rest[0]]]
    return ".".join(head + rest)


def _load_lycoris(pipe, slot_name: str, lora) -> None:
    """Load a LoHa / LoKr file (lycoris_files.py) into `slot_name` through peft: per pipeline part, `add_adapter`
    with a config built from the file (rank, alpha, targets: the model's own module names), then
    `set_peft_model_state_dict`. Modules the file names that the part lacks are left out: the count after says so
    (on FLUX, where a BFL layer may be several modules, they are named here instead)."""
    import warnings

    from peft.utils import set_peft_model_state_dict

    from peft_core.image.lycoris_files import flux_groups, peft_config, split_rows

    names = kohya_module_names(pipe)
    groups = flux_groups(getattr(pipe, "transformer", None))  # BFL names: one diffusers module or several
    parts: dict[str, dict] = {}
    for kohya_name, tensors in lora.lycoris.items():
        for component, spelled in names.items():
            if kohya_name in spelled:
                parts.setdefault(component, {})[spelled[kohya_name]] = tensors
        if kohya_name in groups:
            sizes = [pipe.transformer.get_submodule(m).out_features for m in groups[kohya_name]]
            split = split_rows(kohya_name, lora.algorithm, tensors, sizes)
            for module, part in zip(groups[kohya_name], split, strict=True):
                parts.setdefault("transformer", {})[module] = part
    unplaced = [k for k in lora.lycoris if k not in groups and not any(k in n for n in names.values())]
    if groups and unplaced and len(unplaced) < len(lora.lycoris):  # a split layer is several: the count cannot tell
        shown = [k[:120] for k in unplaced[:3]]
        raise ValueError(f"{len(unplaced)} of its {len(lora.lycoris)} layers name no module here: {shown}")
    for component, modules in parts.items():
        model = getattr(pipe, component)
        with warnings.catch_warnings():  # "Already found a peft_config": the other slots, as intended
            warnings.simplefilter("ignore", UserWarning)
            sizes = {m: _io_sizes(model.get_submodule(m)) for m in modules}
            model.add_adapter(peft_config(lora.algorithm, modules, sizes), adapter_name=slot_name)
        state = {f"{m}.{k}": t for m, tensors in modules.items() for k, t in tensors.items() if k != "alpha"}
        result = set_peft_model_state_dict(model, state, adapter_name=slot_name)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"keys peft did not place: {result.unexpected_keys[:3]}")


def _io_sizes(module) -> tuple[int, int]:
    """(out, in) channels or features of a Linear / Conv (its base layer when another slot's adapter wraps it)."""
    base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    if hasattr(base, "out_channels"):
        return int(base.out_channels), int(base.in_channels // base.groups)
    return int(base.out_features), int(base.in_features)


def _sgm_kwargs(pipe, lora) -> dict:
    """kohya's SDXL trainer names UNet blocks as Stability's sgm code does (`lora_unet_input_blocks_4_1_...`);
    diffusers renumbers them from the UNet's config, which its SDXL loader passes itself and its SD 1.x/2.x loader
    only when asked (the same sgm names appear in SD 1.x files converted from A1111 checkpoints)."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    sgm = ("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_")
    if type(pipe).lora_state_dict is StableDiffusionLoraLoaderMixin.lora_state_dict and any(
        k.startswith(sgm) for k in lora.state_dict
    ):
        return {"unet_config": pipe.unet.config}
    return {}


def _unmatched(lora, registered: dict) -> list[str]:
    """Up to five of the file's layers that landed nowhere, where its names compare with the modules' (see
    lora_files.flat_module); [] when every component has all its layers."""
    from peft_core.image.lora_report import MAX_UNMATCHED_SHOWN

    missing = []
    for component, modules in lora.modules.items():
        # transformers 5's CLIPTextModel has no `text_model.` level; the files trained before it name one
        modules = {flat.removeprefix("text_model_"): key for flat, key in modules.items()}
        landed = {name.replace(".", "_").removeprefix("text_model_") for name in registered.get(component, ())}
        if len(landed) >= len(modules) or (landed and not landed & set(modules)):
            continue  # all there, or spelled another way (sgm block numbers): the counts say it
        missing += [key for flat, key in modules.items() if flat not in landed]
    return missing[:MAX_UNMATCHED_SHOWN]


def check_layer_count(lora, pipe, source: str, model_id: str) -> None:
    """Refuse a file naming more LoRA layers than the pipeline has layers a LoRA can wrap, before it is loaded.

    diffusers turns every layer of a file into LoraConfig entries (target_modules, and rank_pattern where ranks
    differ) that peft matches against every module, one regex per entry: thousands of layers that name nothing
    would hold the pipeline for minutes. With this bound, a hostile file costs no more than a real one.
    """
    import torch

    # what the file's trainer can wrap: LyCORIS' modules take Linear and Conv layers, peft's LoRA Embeddings too
    wrappable = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    if lora.algorithm == "lora":
        wrappable += (torch.nn.Embedding,)
    capacity = 0
    for _, model in lora_components(pipe):
        if isinstance(model, torch.nn.Module):
            # a LoRA-wrapped layer counts once, as its base_layer; the adapters' own lora_A / lora_B do not
            capacity += sum(
                isinstance(m, wrappable) and ".lora_" not in f".{name}" for name, m in model.named_modules()
            )
    if lora.num_layers > capacity:
        raise AdapterError(
            f"{source} ({lora.layout} layout) names {lora.num_layers:,} {lora.report.algorithm} layers but "
            f"{model_id!r} has only {capacity:,} layers a {lora.report.algorithm} can wrap: {_too_many(lora, pipe)}"
        )


def _too_many(lora, pipe) -> str:
    from peft_core.image import diagnosis

    report = lora.report
    if diagnosis.family_mismatch(report.made_for, pipe):
        return f"it was made for {report.made_for}; the loaded base is {report.base}"
    return "the file names layers this base does not have (a larger model of its family, or names it does not use)"


def registered_modules(pipe, adapter_name: str) -> dict[str, list[str]]:
    """Per pipeline part, the names of the modules that carry `adapter_name`, e.g. {"unet": ["mid_block..."]}."""
    registered: dict[str, list[str]] = {}
    for component, model in lora_components(pipe):
        for name, module in model.named_modules():
            # a LoRA layer holds it in lora_A, a LoHa / LoKr layer in its factors; every peft layer has r
            if isinstance(getattr(module, "r", None), dict) and adapter_name in module.r:
                registered.setdefault(component, []).append(name)
    return registered


def count_lora_layers(pipe, adapter_name: str) -> int:
    """How many LoRA layers across the pipeline's parts carry `adapter_name`."""
    return sum(len(names) for names in registered_modules(pipe, adapter_name).values())


def undo_load(pipe, adapter_name: str) -> None:
    """Remove whatever a failed load registered, so the pipeline is exactly as before."""
    if adapter_name in {a for names in pipe.get_list_adapters().values() for a in names}:
        with quiet_libraries():
            pipe.delete_adapters(adapter_name)
    drop_adapter_config(pipe, adapter_name)


def drop_adapter_config(pipe, adapter_name: str) -> None:
    """Forget `adapter_name`'s LoraConfig in every part, as diffusers' `delete_adapters` leaves a part: with no
    adapter left, no `peft_config` at all (the next load starts as on a fresh model)."""
    for _, model in lora_components(pipe):
        config = getattr(model, "peft_config", None)
        if isinstance(config, dict):
            config.pop(adapter_name, None)
            if not config and private.peft_config_loaded(model):
                private.forget_peft_config(model)


# --- running it ------------------------------------------------------------------------------------------------------


class CallState:
    """What another request may change on the shared pipeline between two steps of this call, to put back before
    the next one: the scheduler (each call steps its own copy, made here) and the attributes the family declares
    its `__call__` keeps on the pipeline (`Family.call_state`: `_guidance_scale`, `_num_timesteps` ...). A family
    that declares none cannot be resumed after another call: `can_hand_over` is False and it runs in one turn."""

    def __init__(self, pipe, scheduler, names: tuple[str, ...] | None):
        import copy

        self.pipe = pipe
        self.scheduler = copy.deepcopy(scheduler)
        self.names = names
        self._attributes: dict = {}

    @property
    def can_hand_over(self) -> bool:
        return self.names is not None

    def save(self) -> None:
        pipe_vars = vars(self.pipe)
        self._attributes = {name: pipe_vars[name] for name in self.names or () if name in pipe_vars}

    def restore(self) -> None:
        self.pipe.scheduler = self.scheduler
        for name, value in self._attributes.items():
            setattr(self.pipe, name, value)


def run(pipe, scheduler, request, after_step, family=families.GENERIC):
    """One PIL image for `request` (a checked ImageRequest), with the adapters already applied.

    Args:
        family: the pipeline's (families.py): which call arguments the request's fields become.
        scheduler: the pipeline's scheduler as loaded; this call steps a copy of it.
        after_step: `after_step(step, call)` after each denoising step (0-based), with this call's CallState: the
            studio hands its lock over there when `call.can_hand_over`, saving and restoring what others may
            change through `call`.
    """
    import torch

    call = CallState(pipe, scheduler, family.call_state)
    pipe.scheduler = call.scheduler

    def callback(pipe, step, timestep, kwargs):
        after_step(step, call)
        return kwargs

    generator = torch.Generator(device="cpu").manual_seed(request.seed)
    arguments = families.call_arguments(pipe, family, request)
    if "callback_on_step_end" in families.call_parameters(pipe):  # a pipeline without it runs in one turn
        arguments["callback_on_step_end"] = callback
    with torch.inference_mode():
        result = pipe(**arguments, generator=generator)
    return result.images[0]
