"""Weight sweeps: a labelled grid of images over one adapter's weight, or two adapters against each other (X/Y),
like the X/Y plot of A1111. Every cell is one ordinary request, so each cell equals what /generate gives for it."""

import dataclasses

from peft_core import limits
from peft_core.errors import InputError
from peft_core.image.studio import ImageRequest, ImageStudio

MAX_CELLS = 36  # a grid is one request: keep its cost bounded on a shared Space
MAX_VALUES = 12


def parse_values(name: str, text: str) -> list[float]:
    """"-1, 0, 0.5, 1.5" or "-1:1.5:6" (start:stop:count, evenly spaced) -> weights, each checked."""
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
        images.append((studio.generate(cell), label))
        if progress is not None:
            progress(i + 1, len(cells))
    return images
