"""Pipeline families: what differs between SD 1.x/2.x, SDXL, SD 3/3.5, FLUX.1 and Qwen-Image, one room each.

A `Family` says, for the pipeline classes diffusers ships for it:

- the dtype on CUDA (FLUX.1, SD 3.5 and Qwen-Image are published and run in bfloat16: FLUX in float16 overflows
  into black images; SD, SDXL and SD 3 medium in float16), float32 on a CPU, `STUDIO_DTYPE` over both;
- the defaults a request starts from: the model card's `studio_defaults` when it gives them, else the pipeline's
  own `__call__` defaults (read with inspect.signature) and `default_sample_size x vae_scale_factor` (SD alone
  keeps the studio's 25 steps / guidance 7: its `__call__` says 50 / 7.5, tuned for the old DDIM/PNDM schedulers);
- the call arguments: only those the pipeline's `__call__` accepts, the studio's guidance going to the argument
  that does guidance for the family (Qwen-Image: `true_cfg_scale`), FLUX's `true_cfg_scale` when a negative
  prompt is given (else FLUX ignores the negative prompt);
- the size multiple (the VAE's downsampling x the latent patch: SD/SDXL 8, SD3/FLUX/Qwen-Image 16) and the step
  and guidance ranges a request (and the page's sliders, through /load_pipeline's answer) may use.

Any other pipeline class diffusers ships with a LoRA loader takes GENERIC: its own defaults, the global ranges of
limits.py, float16 on CUDA. A pipeline class without one is refused before its weights are downloaded
(checks.check_model_index). Nothing here imports diffusers: it reads the pipeline object it is given.
"""

import inspect
import math
from dataclasses import dataclass, field

from peft_core import limits
from peft_core.errors import InputError

# FLUX.1 only does classifier-free guidance when true_cfg_scale > 1 and a negative prompt is given; the studio
# has one guidance field (FLUX's distilled guidance), so a negative prompt turns true CFG on at this scale,
# Qwen-Image's default true_cfg_scale (diffusers' FLUX docs use 1.5-4).
TRUE_CFG_WITH_NEGATIVE = 4.0
# Used only when neither the card nor the pipeline's __call__ gives a number (SD 1.x-like).
FALLBACK_STEPS, FALLBACK_GUIDANCE, FALLBACK_SIZE = 25, 7.0, 512


@dataclass(frozen=True)
class Family:
    name: str  # what /load_pipeline answers as `family`
    label: str  # for messages and docs
    classes: tuple[str, ...]  # the diffusers text-to-image pipeline classes of the family
    cuda_dtype: str = "float16"
    # (component, config field): when the field is set, the checkpoint is the family's bfloat16 generation
    # (SD 3.5's transformer has qk_norm, SD 3 medium's has none)
    bfloat16_if: tuple[str, str] | None = None
    steps: tuple[int, int] = (limits.STEPS_MIN, limits.STEPS_MAX)
    guidance: tuple[float, float] = (limits.GUIDANCE_MIN, limits.GUIDANCE_MAX)
    guidance_arg: str = "guidance_scale"  # the __call__ argument the studio's guidance_scale is sent as
    latent_patch: int | None = 1  # the size multiple is vae_scale_factor x this; None: the transformer's patch_size
    true_cfg_with_negative: bool = False  # FLUX: send true_cfg_scale when a negative prompt is given
    studio_defaults: dict = field(default_factory=dict)  # where the studio chooses over the pipeline's __call__
    # What one call of the family's `__call__` keeps on the pipeline object and reads again in its denoising loop
    # (`self._guidance_scale = ...`, read by `do_classifier_free_guidance` at every step): what another visitor's
    # call overwrites when it runs between this call's steps, so pipeline.CallState saves and puts back exactly
    # these (the scheduler too, always). None: not declared, and a call runs in one turn, steps checked only for a
    # visitor who left. tests/test_families.py reads each class's `__call__` and fails when diffusers sets another.
    call_state: tuple[str, ...] | None = None


# Per-call attributes every family's __call__ sets (Family.call_state), and SD 1.x's own on top of them.
_COMMON_STATE = ("_guidance_scale", "_interrupt", "_num_timesteps")
_SD_STATE = (*_COMMON_STATE, "_guidance_rescale", "_clip_skip", "_cross_attention_kwargs")

SD = Family(
    "sd",
    "SD 1.x/2.x",
    ("StableDiffusionPipeline",),
    studio_defaults={"steps": FALLBACK_STEPS, "guidance_scale": FALLBACK_GUIDANCE},
    call_state=_SD_STATE,
)
SDXL = Family("sdxl", "SDXL", ("StableDiffusionXLPipeline",), call_state=(*_SD_STATE, "_denoising_end"))
SD3 = Family(
    "sd3",
    "SD 3/3.5",
    ("StableDiffusion3Pipeline",),
    bfloat16_if=("transformer", "qk_norm"),
    guidance=(limits.GUIDANCE_MIN, 20.0),  # rectified flow: past ~10 colours burn out
    call_state=(*_COMMON_STATE, "_skip_layer_guidance_scale", "_clip_skip", "_joint_attention_kwargs"),
)
FLUX = Family(
    "flux",
    "FLUX.1",
    ("FluxPipeline",),
    cuda_dtype="bfloat16",
    steps=(1, 50),  # dev converges by ~50 steps, schnell in 1-4: more only holds the pipeline
    guidance=(limits.GUIDANCE_MIN, 10.0),  # an embedded (distilled) guidance, trained around 1-5
    latent_patch=2,  # latents are packed 2x2 into tokens
    true_cfg_with_negative=True,
    call_state=(*_COMMON_STATE, "_joint_attention_kwargs", "_current_timestep"),
)
QWENIMAGE = Family(
    "qwenimage",
    "Qwen-Image",
    ("QwenImagePipeline",),
    cuda_dtype="bfloat16",
    guidance=(limits.GUIDANCE_MIN, 10.0),
    guidance_arg="true_cfg_scale",  # its guidance_scale is for guidance-distilled checkpoints only
    latent_patch=2,
    call_state=(*_COMMON_STATE, "_attention_kwargs", "_current_timestep"),
)
GENERIC = Family("generic", "other diffusers pipeline", ())
FAMILIES = {family.name: family for family in (SD, SDXL, SD3, FLUX, QWENIMAGE)}
_BY_CLASS = {cls: family for family in FAMILIES.values() for cls in family.classes}


def family_of(pipeline_class: str) -> Family:
    """The family of a diffusers pipeline class name ("FluxPipeline" -> FLUX); GENERIC for any other."""
    return _BY_CLASS.get(pipeline_class, GENERIC)


# --- dtype and offload -----------------------------------------------------------------------------------------------


def dtype_name(family: Family, device: str, configs: dict, card_dtype: str | None = None) -> str:
    """The dtype to load a pipeline of `family` in on `device`: STUDIO_DTYPE when set, else float32 on a CPU, else
    the model card's `studio_defaults.dtype`, else the family's (its bfloat16 generation when `configs`, the
    component configs by "component/config.json", say so)."""
    from peft_core import settings

    chosen = settings.current().dtype
    if chosen != "auto":
        return chosen
    if not device.startswith("cuda"):
        return "float32"  # CPU half-precision kernels are slow or missing
    if card_dtype:
        return card_dtype
    if family.bfloat16_if is not None:
        component, key = family.bfloat16_if
        config = configs.get(f"{component}/config.json")
        if isinstance(config, dict) and config.get(key):
            return "bfloat16"
    return family.cuda_dtype


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def offload_mode(device: str) -> str:
    """STUDIO_OFFLOAD on CUDA ("model", "group" or "none"); always "none" on a CPU, where there is nothing to
    offload to."""
    from peft_core import settings

    return settings.current().offload if device.startswith("cuda") else "none"


# --- what a pipeline says about itself -------------------------------------------------------------------------------


def call_parameters(pipe) -> dict:
    """The parameters of the pipeline's `__call__`, by name."""
    return dict(inspect.signature(type(pipe).__call__).parameters)


def call_default(pipe, name: str):
    """The default of `__call__`'s parameter `name`, or None when it has none (or no such parameter)."""
    parameter = call_parameters(pipe).get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def vae_scale_factor(pipe) -> int:
    factor = getattr(pipe, "vae_scale_factor", None)
    return factor if type(factor) is int and factor > 0 else 8  # noqa: E721 - bool is an int subclass


def size_multiple(pipe, family: Family) -> int:
    """What width and height must be a multiple of: the VAE's downsampling x the latent patch, at least 8."""
    patch = family.latent_patch
    if patch is None:
        patch = getattr(getattr(getattr(pipe, "transformer", None), "config", None), "patch_size", 1)
        patch = patch if type(patch) is int and patch > 0 else 1  # noqa: E721
    return math.lcm(vae_scale_factor(pipe) * patch, limits.SIZE_MULTIPLE)


def native_size(pipe) -> int:
    """`default_sample_size x vae_scale_factor`, as the pipeline's `__call__` computes it when no size is given
    (pipelines without default_sample_size: the denoiser's config sample_size); FALLBACK_SIZE if neither."""
    sample_size = getattr(pipe, "default_sample_size", None)
    if sample_size is None:
        for part in ("unet", "transformer"):
            sample_size = getattr(getattr(getattr(pipe, part, None), "config", None), "sample_size", None)
            if sample_size is not None:
                break
    if isinstance(sample_size, (list, tuple)) and sample_size:  # (height, width) in some configs
        sample_size = sample_size[0]
    if type(sample_size) is int and sample_size > 0:  # noqa: E721
        return sample_size * vae_scale_factor(pipe)
    return FALLBACK_SIZE


@dataclass(frozen=True)
class Ranges:
    """The ranges a request's fields may take on one pipeline; PipelineInfo (image/requests.py) carries them too,
    by the same names, so check_ranges reads either."""

    size_multiple: int
    size_min: int
    size_max: int
    steps_min: int
    steps_max: int
    guidance_min: float
    guidance_max: float
    negative_prompt: bool  # whether the pipeline takes one


def ranges(pipe, family: Family) -> Ranges:
    """The ranges a request's fields may take on this pipeline, as /load_pipeline answers them."""
    multiple = size_multiple(pipe, family)
    return Ranges(
        size_multiple=multiple,
        size_min=max(multiple, limits.SIZE_MIN),
        size_max=limits.SIZE_MAX - limits.SIZE_MAX % multiple,
        steps_min=family.steps[0],
        steps_max=family.steps[1],
        guidance_min=family.guidance[0],
        guidance_max=family.guidance[1],
        negative_prompt="negative_prompt" in call_parameters(pipe),
    )


def defaults(pipe, family: Family, card: dict) -> dict:
    """Steps, guidance and size when a request leaves them out: the card's (`card`: checked studio_defaults),
    else the family's studio choice, else the pipeline's `__call__` defaults and native size; each kept inside
    the family's ranges, so the defaults always make a valid request."""
    limits_ = ranges(pipe, family)
    steps = card.get("steps", family.studio_defaults.get("steps", call_default(pipe, "num_inference_steps")))
    guidance = card.get(
        "guidance_scale", family.studio_defaults.get("guidance_scale", call_default(pipe, family.guidance_arg))
    )
    steps = steps if type(steps) is int else FALLBACK_STEPS  # noqa: E721
    guidance = float(guidance) if isinstance(guidance, (int, float)) and not isinstance(guidance, bool) else None
    guidance = FALLBACK_GUIDANCE if guidance is None else guidance
    multiple = limits_.size_multiple
    size = native_size(pipe)
    size = min(max(size - size % multiple, limits_.size_min), limits_.size_max)
    return {
        "default_steps": min(max(steps, family.steps[0]), family.steps[1]),
        "default_guidance_scale": min(max(guidance, family.guidance[0]), family.guidance[1]),
        "default_width": card.get("width", size),
        "default_height": card.get("height", size),
    }


def check_card_defaults(card: dict, pipe, family: Family, repo_id: str) -> None:
    """Refuse model-card defaults that this family's ranges would refuse in a request (checks.py has already held
    them to the global ranges before the download)."""
    from peft_core.errors import HubError

    try:
        check_ranges(family, ranges(pipe, family), card.get("steps"), card.get("guidance_scale"),
                     card.get("width"), card.get("height"), prefix="studio_defaults.")  # fmt: skip
    except InputError as exc:
        raise HubError(f"{repo_id!r}: its model card's {exc}") from None


def check_ranges(family: Family, info, steps, guidance, width, height, prefix: str = "") -> tuple:
    """(steps, guidance, width, height) checked against the family's ranges (`info`: the loaded PipelineInfo, or
    the `Ranges` of a pipeline being loaded); None passes through. A refusal names the value, the range and the
    family."""
    where = family.label if family is not GENERIC else ""
    suffix = f" ({where}'s range)" if where else ""
    try:
        if steps is not None:
            steps = limits.check_int(f"{prefix}steps", steps, info.steps_min, info.steps_max)
        if guidance is not None:
            lo, hi = info.guidance_min, info.guidance_max
            guidance = limits.check_number(f"{prefix}guidance_scale", guidance, lo, hi)
    except InputError as exc:
        raise InputError(f"{exc}{suffix}") from None
    sizes = []
    for name, value in (("width", width), ("height", height)):
        if value is not None:
            value = limits.check_size(f"{prefix}{name}", value, info.size_multiple, info.size_min, info.size_max,
                                      where)  # fmt: skip
        sizes.append(value)
    return steps, guidance, *sizes


def call_arguments(pipe, family: Family, request) -> dict:
    """The keyword arguments of `pipe(...)` for a checked ImageRequest: only those its `__call__` accepts."""
    accepted = call_parameters(pipe)
    wanted = {
        "prompt": request.prompt,
        "num_inference_steps": request.steps,
        "width": request.width,
        "height": request.height,
    }
    # Qwen-Image's guidance is true CFG, which only runs with a negative prompt (diffusers warns on every call
    # given one without it)
    if family.guidance_arg == "guidance_scale" or request.negative_prompt:
        wanted[family.guidance_arg] = request.guidance_scale
    if request.negative_prompt:
        wanted["negative_prompt"] = request.negative_prompt
        if family.true_cfg_with_negative:
            wanted["true_cfg_scale"] = TRUE_CFG_WITH_NEGATIVE
    return {name: value for name, value in wanted.items() if name in accepted}
