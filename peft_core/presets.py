"""Presets: one click to a base model, its adapters and a prompt. The bundled demos work offline; the seed's real
Hub ids need a machine that reaches the Hub (their thumbnails are drawn cards, since nothing may be downloaded)."""

from dataclasses import dataclass, field
from pathlib import Path

from peft_core import bundled

THUMBNAILS = Path(__file__).resolve().parent.parent / "assets" / "presets"


@dataclass(frozen=True)
class AdapterRef:
    repo_id: str
    adapter_name: str
    weight: float = 1.0
    weight_name: str = ""


@dataclass(frozen=True)
class Preset:
    name: str
    side: str  # "images" or "text"
    base: str
    adapters: tuple[AdapterRef, ...]
    prompt: str
    note: str  # one line shown under the thumbnail
    offline: bool  # works without the Hub
    extra: dict = field(default_factory=dict)  # e.g. generation settings
    # Minutes per image on a CPU (SDXL, FLUX, SD 3.5 at 1024 px): greyed with the reason where there is no GPU.
    needs_gpu: bool = False

    @property
    def thumbnail(self) -> Path:
        return THUMBNAILS / f"{self.slug}.png"

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-")


def _shapes(style: str, weight: float = 1.0) -> AdapterRef:
    return AdapterRef(f"{bundled.BUNDLED_ORG}/shapes-{style}", style, weight)


def _lm(style: str) -> AdapterRef:
    return AdapterRef(f"{bundled.BUNDLED_ORG}/lm-{style}", style)


TINY_SHAPES = f"{bundled.BUNDLED_ORG}/tiny-shapes"
TINY_LM = f"{bundled.BUNDLED_ORG}/tiny-shapes-lm"
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
FLUX_DEV = "black-forest-labs/FLUX.1-dev"

PRESETS: tuple[Preset, ...] = (
    Preset("Shapes: night", "images", TINY_SHAPES, (_shapes("night"),), "a red circle", "dark background", True),
    Preset("Shapes: outline", "images", TINY_SHAPES, (_shapes("outline"),), "a blue square", "hollow shapes", True),
    Preset("Shapes: stripes", "images", TINY_SHAPES, (_shapes("stripes"),), "a green triangle", "striped fill", True),
    Preset("Shapes: pastel", "images", TINY_SHAPES, (_shapes("pastel"),), "a purple circle", "washed-out colours",
           True),  # fmt: skip
    Preset("Shapes: night + outline", "images", TINY_SHAPES, (_shapes("night", 0.6), _shapes("outline", 0.6)),
           "a yellow square", "two styles mixed 0.6 / 0.6", True),  # fmt: skip
    Preset("Text: pirate", "text", TINY_LM, (_lm("pirate"),), "the red circle", "sprinkles 'arr'", True),
    Preset("Text: formal", "text", TINY_LM, (_lm("formal"),), "the blue square", "polite sentences", True),
    Preset("Text: shouting", "text", TINY_LM, (_lm("shouting"),), "the green triangle", "upper-case words", True),
    Preset("SDXL + 3DRedmond", "images", SDXL,
           (AdapterRef("artificialguybr/3DRedmond-V1", "redmond"),),
           "a toy robot, 3D Render Style, 3DRenderAF", "needs the Hub and a GPU", False,
           {"steps": 30, "guidance_scale": 7.0, "width": 1024, "height": 1024}, needs_gpu=True),  # fmt: skip
    Preset("SDXL + super-cereal", "images", SDXL,
           (AdapterRef("ostris/super-cereal-sdxl-lora", "cereal"),),
           "a cereal box with a cat on it", "needs the Hub and a GPU", False,
           {"steps": 30, "guidance_scale": 7.0, "width": 1024, "height": 1024}, needs_gpu=True),  # fmt: skip
    # FLUX.1-dev and SD 3.5 are gated on the Hub: HF_TOKEN of an account that accepted their licences
    Preset("FLUX.1-dev + Jon Snow", "images", FLUX_DEV,
           (AdapterRef("TheLastBen/Jon_Snow_Flux_LoRA", "jon_snow", weight_name="jon_snow.safetensors"),),
           "jon snow eating pizza with ketchup", "needs the Hub and a GPU (gated)", False,
           {"steps": 28, "guidance_scale": 3.5, "width": 1024, "height": 1024}, needs_gpu=True),  # fmt: skip
    Preset("FLUX.1-schnell", "images", "black-forest-labs/FLUX.1-schnell", (), "a cat holding a sign",
           "needs the Hub and a GPU; 4 steps", False,
           {"steps": 4, "guidance_scale": 0.0, "width": 1024, "height": 1024}, needs_gpu=True),  # fmt: skip
    Preset("SD 3.5 Large", "images", "stabilityai/stable-diffusion-3.5-large", (), "a capybara in a wizard hat",
           "needs the Hub and a GPU (gated)", False,
           {"steps": 28, "guidance_scale": 3.5, "width": 1024, "height": 1024}, needs_gpu=True),  # fmt: skip
    Preset("OPT-350m + LoRA", "text", "ybelkada/opt-350m-lora", (), "Hello, my name is",
           "the adapter repo brings facebook/opt-350m", False),  # fmt: skip
)


def presets(side: str) -> list[Preset]:
    return [p for p in PRESETS if p.side == side]


def apply(preset: Preset, studio) -> dict[str, float]:
    """Load the preset's base (unless already loaded) and its adapters (unless already resident from the same
    repo) into `studio` (an ImageStudio or a TextStudio); returns the mix to use: adapter_name -> weight."""
    info = studio.info
    if info is None or info.model_id != preset.base:
        studio.load_base(preset.base)
    resident = {a["adapter_name"]: a["repo_id"] for a in studio.list_adapters()}
    for ref in preset.adapters:
        if resident.get(ref.adapter_name) == ref.repo_id:
            continue
        if preset.side == "images":
            studio.load_adapter(ref.repo_id, ref.weight_name, ref.adapter_name)
        else:
            studio.load_adapter(ref.repo_id, ref.adapter_name)
    if not preset.adapters:  # an adapter repo loaded as the model: its adapters came with it
        return {a["adapter_name"]: 1.0 for a in studio.list_adapters()}
    return {ref.adapter_name: ref.weight for ref in preset.adapters}
