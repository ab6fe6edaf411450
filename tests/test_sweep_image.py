"""The sweep as one labelled image (peft_core/image/sweep.py, composite): every cell where it belongs, enlarged
with crisp pixels, under its column's header and beside its row's."""

import numpy as np
import pytest
from PIL import Image

from peft_core.image.sweep import CELL_MIN_PX, HEADER_PX, PAD, composite


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
