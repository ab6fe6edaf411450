"""Draw the Images tab's presets gallery thumbnails into assets/presets/ (run once after the bundled assets change).

Bundled image presets get a real image from the bundled pipeline; Hub presets (which cannot be run offline) get a
card with their name and note drawn with PIL. The Text tab's presets are captioned buttons drawn by the page
(ui/text_tab.py): no pictures.

    python scripts/make_preset_thumbnails.py
"""

import sys
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peft_core import presets  # noqa: E402
from peft_core.image.studio import ImageRequest, ImageStudio  # noqa: E402

SIZE = 128


def card(preset: presets.Preset) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), (36, 38, 48) if not preset.offline else (240, 240, 236))
    draw = ImageDraw.Draw(image)
    ink = (235, 235, 235) if not preset.offline else (40, 40, 40)
    y = 10
    for line in [*_wrap(preset.name, 18), "", *_wrap(preset.note, 20)]:
        draw.text((8, y), line, fill=ink)
        y += 14
    return image


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if len(line) + len(word) + 1 > width and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line] if line else lines


def main() -> None:
    presets.THUMBNAILS.mkdir(parents=True, exist_ok=True)
    studio = ImageStudio(device="cpu")
    for preset in presets.presets("images"):
        if preset.side == "images" and preset.offline:
            mix = presets.apply(preset, studio)
            image = studio.generate(ImageRequest(preset.prompt, mix, seed=0)).resize((SIZE, SIZE), Image.NEAREST)
        else:
            image = card(preset)
        image.save(preset.thumbnail)
        print("wrote", preset.thumbnail)


if __name__ == "__main__":
    main()
