"""What the image side takes and tells: one generation's request, and the loaded pipeline's facts.

`ImageRequest` is everything that decides one image; `PipelineInfo` is what `ImageStudio.load_base` and
`base_info` answer, read by the studio's checks (families.check_ranges), the thumbnails and the page. Both are
plain dataclasses every field of which after the first has a default, so a new optional field is one line here;
callers name the fields they set. The text side's twins are in peft_core/text/requests.py.
"""

from dataclasses import dataclass, field

from peft_core import limits


@dataclass(frozen=True)
class ImageRequest:
    """One generation: everything that decides the image, so equal requests give equal images."""

    prompt: str
    adapters: dict = field(default_factory=dict)  # this request's mix: adapter_name -> weight
    use_adapters: bool = True  # False is the disable toggle: exactly the base output
    seed: int = 0
    steps: int | None = None  # None: the pipeline's default
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    negative_prompt: str = ""


@dataclass(frozen=True)
class PipelineInfo:
    """The loaded base pipeline, as shown to users and API clients (/load_pipeline answers `to_dict()`)."""

    model_id: str
    revision: str
    pipeline_class: str
    device: str
    dtype: str
    default_steps: int
    default_guidance_scale: float
    default_width: int
    default_height: int
    # The pipeline's family (image/families.py) and the ranges a request may use on it: the page's sliders follow
    # them. The defaults are those of a pipeline of no known family.
    family: str = "generic"
    size_multiple: int = limits.SIZE_MULTIPLE
    size_min: int = limits.SIZE_MIN
    size_max: int = limits.SIZE_MAX
    steps_min: int = limits.STEPS_MIN
    steps_max: int = limits.STEPS_MAX
    guidance_min: float = limits.GUIDANCE_MIN
    guidance_max: float = limits.GUIDANCE_MAX
    negative_prompt: bool = True  # whether the pipeline takes one
    offload: str = "none"  # STUDIO_OFFLOAD as applied ("none" on a CPU)

    def to_dict(self) -> dict:
        return dict(self.__dict__)
