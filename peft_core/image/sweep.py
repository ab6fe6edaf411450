"""Weight sweeps: a labelled grid of images over one adapter's weight, or two adapters against each other (X/Y),
like the X/Y plot of A1111. Every cell is one ordinary request, so each cell equals what /generate gives for it;
`composite` lays the cells out as one image with the weights as column and row headers."""

import dataclasses

from PIL import Image, ImageDraw, ImageFont

from peft_core import limits
from peft_core.errors import InputError
from peft_core.image.studio import ImageRequest, ImageStudio

MAX_CELLS = 36  # a grid is one request: keep its cost bounded on a shared Space
MAX_VALUES = 12


def parse_values(name: str, text: str) -> list[float]:
    """'-1, 0, 0.5, 1.5' or '-1:1.5:6' (start:stop:count, evenly spaced) -> weights, each checked."""
    text = (text or "").strip()
    if not text:
        raise InputError(f"{name} must list weights like '-1, 0, 0.5, 1' or a range like '-1:1.5:6'")
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise InputError(f"{name} range {text!r} must be start:stop:count, like '-1:1.5:6'")
        start = limits.parse_number(f"{name} start", parts[0], limits.WEIGHT_MIN, limits.WEIGHT_MAX)
        stop = limits.parse_number(f"{name} stop", parts[1], limits.WEIGHT_MIN, limits.WEIGHT_MAX)
        count = limits.check_int(f"{name} count", _int(parts[2]), 2, MAX_VALUES)
        return [round(start + (stop - start) * i / (count - 1), 4) for i in range(count)]
    values = [limits.parse_number(f"{name} weight", v, limits.WEIGHT_MIN, limits.WEIGHT_MAX)
              for v in text.split(",") if v.strip()]  # fmt: skip
    if len(values) > MAX_VALUES:
        raise InputError(f"{name} has {len(values)} weights; at most {MAX_VALUES} are allowed")
    return values


def _int(text: str):
    try:
        return int(text.strip())
    except ValueError:
        return text.strip()


def sweep(studio: ImageStudio, request: ImageRequest, x_adapter: str, x_values: list[float],
          y_adapter: str = "", y_values: list[float] | None = None, progress=None) -> list[tuple]:  # fmt: skip
    """[(image, label)] row by row: `x_adapter` at each x value (and `y_adapter` at each y value), on top of the
    rest of the request's mix. Checked whole before the first image is made."""
    y_values = y_values if y_adapter else [None]
    if y_adapter and y_adapter == x_adapter:
        raise InputError(f"the X and Y adapters must differ, both are {x_adapter!r}")
    if len(x_values) * len(y_values) > MAX_CELLS:
        raise InputError(f"a sweep of {len(x_values)} × {len(y_values)} images is too large; at most {MAX_CELLS}")
    cells = []
    for y in y_values:
        for x in x_values:
            mix = dict(request.adapters) | {x_adapter: x} | ({y_adapter: y} if y_adapter else {})
            label = f"{x_adapter}={x:g}" + (f", {y_adapter}={y:g}" if y_adapter else "")
            cells.append((dataclasses.replace(request, adapters=mix, use_adapters=True), label))
    for cell, _ in cells:  # validate every cell (names, weights, sizes) before spending time on any
        studio.check_request(cell)
    images = []
    for i, (cell, label) in enumerate(cells):
        if progress is not None:  # before each cell: "cell 3 of 9" is the one being made
            progress(i, len(cells))
        images.append((studio.generate(cell), label))
    if progress is not None:
        progress(len(cells), len(cells))
    return images


# A composite's cells are enlarged (by a whole factor, pixels kept crisp) to at least this size, so that a header
# fits over each column even for the 32-px demo pipeline.
CELL_MIN_PX = 128
HEADER_PX = 14  # the headers' font size
PAD = 6


def composite(images: list, x_adapter: str, x_values: list[float], y_adapter: str = "",
              y_values: list[float] | None = None) -> Image.Image:  # fmt: skip
    """One image of the sweep: `images` (row by row, as `sweep` returns them, or bare images) under column
    headers "x_adapter=x" and beside row headers "y_adapter=y" (none without a Y adapter)."""
    cells = [c[0] if isinstance(c, tuple) else c for c in images]
    rows = y_values if y_adapter and y_values else [None]
    if len(cells) != len(x_values) * len(rows):
        raise ValueError(f"{len(cells)} images for a {len(x_values)} × {len(rows)} sweep")
    w, h = cells[0].size
    scale = max(1, -(-CELL_MIN_PX // min(w, h)))
    cw, ch = w * scale, h * scale
    font = _font()
    col_labels = [f"{x_adapter}={x:g}" for x in x_values]
    row_labels = [f"{y_adapter}={y:g}" for y in rows] if rows[0] is not None else []
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [measure.textlength(t, font=font) for t in col_labels + row_labels]
    cw = max(cw, int(max(widths[: len(col_labels)])) + 2 * PAD)  # a column is at least as wide as its header
    left = int(max(widths[len(col_labels) :], default=0)) + 2 * PAD if row_labels else 0
    top = HEADER_PX + 2 * PAD
    sheet = Image.new("RGB", (left + cw * len(x_values), top + ch * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, label in enumerate(col_labels):
        draw.text((left + j * cw + cw / 2, top / 2), label, fill="black", font=font, anchor="mm")
    for i, label in enumerate(row_labels):
        draw.text((left / 2, top + i * ch + ch / 2), label, fill="black", font=font, anchor="mm")
    for k, cell in enumerate(cells):
        i, j = divmod(k, len(x_values))
        big = cell.convert("RGB").resize((w * scale, h * scale), Image.NEAREST)
        sheet.paste(big, (left + j * cw + (cw - big.width) // 2, top + i * ch + (ch - big.height) // 2))
    return sheet


def _font():
    try:
        return ImageFont.load_default(size=HEADER_PX)  # Pillow's own font: renders offline, no system font needed
    except (TypeError, OSError):  # a Pillow without FreeType: its small bitmap font
        return ImageFont.load_default()
