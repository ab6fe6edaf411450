"""The presets as the page shows them, greyed with the reason when this machine cannot run them (no Hub, no GPU).

The Images tab shows its presets as gallery items (`gallery_items`, a picture each), the Text tab as captioned
button cards (`card_caption`: the name and the one-line note, drawn by the page in the theme's colours). Both
refuse an unavailable one through `check_available`, so a click on a greyed preset answers at once with the same
reason its caption gives, instead of starting a multi-GB download that cannot finish (or would take an hour on a
CPU).
"""

from functools import lru_cache

from PIL import Image, ImageEnhance, ImageOps

from peft_core import hub
from peft_core.errors import HubError
from peft_core.presets import Preset


def unavailable(preset: Preset, device: str) -> str | None:
    """Why `preset` cannot run here ("the Hub is unreachable: …; no GPU: this app runs on cpu"), or None."""
    if preset.offline:
        return None
    reasons = []
    if preset.needs_gpu and not str(device).startswith("cuda"):
        reasons.append(f"it needs a GPU and this app runs on {device}")
    why = hub.unreachable_reason()
    if why:
        reasons.append(f"the Hub is unreachable ({why})")
    return "; ".join(reasons) or None


def check_available(preset: Preset, device: str) -> None:
    """Refuse `preset` at once, with the reason, when it cannot run here."""
    why = unavailable(preset, device)
    if why:
        raise HubError(
            f"preset {preset.name!r} is not available here: {why}. The bundled demos work offline; a Hub model can "
            "still be loaded by id from 'Load from the Hub'"
        )


@lru_cache(maxsize=64)
def _greyed(path: str) -> Image.Image:
    with Image.open(path) as image:
        grey = ImageOps.grayscale(image.convert("RGB")).convert("RGB")
    return ImageEnhance.Brightness(grey).enhance(0.55)


def gallery_items(presets: list[Preset], device: str) -> list[tuple]:
    """(thumbnail, caption) per preset: the picture as drawn and its note, or greyed with "unavailable here: why"."""
    items = []
    for preset in presets:
        why = unavailable(preset, device)
        if why:
            items.append((_greyed(str(preset.thumbnail)), f"{preset.name}: unavailable here: {why}"))
        else:
            items.append((str(preset.thumbnail), f"{preset.name}: {preset.note}"))
    return items


def card_caption(preset: Preset, device: str) -> tuple[str, str | None]:
    """(the card's two lines: name, then its note or "unavailable here: why"; why, or None when it can run here)."""
    why = unavailable(preset, device)
    return (f"{preset.name}\nunavailable here: {why}" if why else f"{preset.name}\n{preset.note}"), why
