"""The sweep as one labelled image (peft_core/image/sweep.py, composite): every cell where it belongs, enlarged
with crisp pixels, under its column's header and beside its row's."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from peft_core.image.sweep import CELL_MIN_PX, HEADER_PX, PAD, _font, composite, composite_axes, parse_axis


def cells(n: int, size: int = 32) -> list:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def ink(region: Image.Image) -> int:
    """How many pixels of a header region are not white: drawn text."""
    return int((np.asarray(region.convert("L")) < 200).sum())


def test_an_xy_sweep_is_one_image_with_headers():
    images = cells(6)
    sheet = composite([(im, "label") for im in images], "a", [0.0, 0.5, 1.0], "b", [-1.0, 1.0])
    top = HEADER_PX + 2 * PAD
    cw = ch = CELL_MIN_PX  # 32 px enlarged 4 times; "a=0.5" is narrower than that
    left = sheet.width - 3 * cw
    assert sheet.height == top + 2 * ch and left > 0
    for k, im in enumerate(images):  # row by row, each cell exactly the enlarged image
        i, j = divmod(k, 3)
        crop = sheet.crop((left + j * cw, top + i * ch, left + (j + 1) * cw, top + (i + 1) * ch))
        assert np.array_equal(np.asarray(crop), np.asarray(im.resize((cw, ch), Image.NEAREST)))
    for j in range(3):  # a header over every column, a header beside every row, an empty corner
        assert ink(sheet.crop((left + j * cw, 0, left + (j + 1) * cw, top))) > 10
    for i in range(2):
        assert ink(sheet.crop((0, top + i * ch, left, top + (i + 1) * ch))) > 10
    assert ink(sheet.crop((0, 0, left, top))) == 0


def test_an_x_sweep_has_no_row_headers_and_wide_labels_widen_columns():
    sheet = composite(cells(2, 8), "a_long_adapter_name", [-1.25, 1.5])
    assert sheet.height == HEADER_PX + 2 * PAD + CELL_MIN_PX
    assert sheet.width > 2 * CELL_MIN_PX  # each column as wide as its header
    with pytest.raises(ValueError, match="3 images for a 2 × 1 sweep"):
        composite(cells(3), "a", [0.0, 1.0])


def header(text: str, width: int, height: int) -> np.ndarray:
    """`text` drawn as composite draws a header, centred on a white box of the header's size."""
    box = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(box).text((width / 2, height / 2), text, fill="black", font=_font(), anchor="mm")
    return np.asarray(box)


def test_headers_name_the_axis_and_the_value():
    """A seed on X and a prompt S/R on Y: each column's header reads "seed=N", each row's "prompt: word", drawn
    exactly where composite puts a header; an adapter's weight on Y reads "night=0.5"."""
    x, y = parse_axis("X", "seed", "3, 4294967295"), parse_axis("Y", "prompt", "circle, square")
    sheet = composite_axes(cells(4), x, y)
    top = HEADER_PX + 2 * PAD
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    cw = max(CELL_MIN_PX, int(max(measure.textlength(t, font=_font()) for t in ("seed=3", "seed=4294967295")))
             + 2 * PAD)  # fmt: skip
    left = sheet.width - 2 * cw
    assert left > 0 and sheet.height == top + 2 * CELL_MIN_PX
    for j, text in enumerate(["seed=3", "seed=4294967295"]):
        crop = np.asarray(sheet.crop((left + j * cw, 0, left + (j + 1) * cw, top)))
        assert np.array_equal(crop, header(text, cw, top)), text
    for i, text in enumerate(["prompt: circle", "prompt: square"]):
        crop = np.asarray(sheet.crop((0, top + i * CELL_MIN_PX, left, top + (i + 1) * CELL_MIN_PX)))
        assert np.array_equal(crop, header(text, left, CELL_MIN_PX)), text
    weights = composite_axes(cells(2), x, parse_axis("Y", "weight", "0.5", adapter_name="night"))
    crop = np.asarray(weights.crop((0, top, weights.width - 2 * cw, top + CELL_MIN_PX)))
    assert np.array_equal(crop, header("night=0.5", weights.width - 2 * cw, CELL_MIN_PX))
