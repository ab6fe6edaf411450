"""Sweeps: a labelled grid of images over one axis, or two against each other (X/Y), like the X/Y plot of A1111.

An axis is an adapter's weight, the seed, the steps, the guidance or a prompt search-and-replace (A1111's "Prompt
S/R": the first value is the text searched for in the prompt, each value replaces it, so the first cell is the
prompt as it is). Every cell is one ordinary request, so each cell equals what /generate gives for it; `composite`
lays the cells out as one image with the axes' values as column and row headers ("night=0.5", "seed=3",
"prompt: cat").
"""

import csv
import dataclasses

from PIL import Image, ImageDraw, ImageFont

from peft_core import limits
from peft_core.errors import InputError, shown
from peft_core.image.studio import ImageRequest, ImageStudio

MAX_CELLS = 36  # a grid is one request: keep its cost bounded on a shared Space
MAX_VALUES = 12
AXIS_KINDS = ("weight", "seed", "steps", "guidance", "prompt")
AXIS_TEXT_MAX_CHARS = limits.PROMPT_MAX_CHARS  # what one axis's values may be typed as
LABEL_MAX_CHARS = 32  # a prompt S/R header longer than this is cut, so one long value does not widen every column


@dataclasses.dataclass(frozen=True)
class Axis:
    """What one axis of a sweep varies, and its values (parsed and range-checked by `parse_axis`)."""

    kind: str  # one of AXIS_KINDS
    values: tuple  # weight, guidance: floats; seed, steps: ints; prompt: texts, the first one the text searched for
    adapter_name: str = ""  # the adapter whose weight varies (kind "weight" only)

    @property
    def title(self) -> str:
        """The axis in a message: the adapter's name for a weight, else its kind."""
        return repr(self.adapter_name) if self.kind == "weight" else self.kind

    def label(self, value) -> str:
        """A header: "night=0.5", "seed=3", "steps=8", "guidance=7.5", "prompt: cat"."""
        if self.kind == "prompt":
            text = value if len(value) <= LABEL_MAX_CHARS else value[: LABEL_MAX_CHARS - 3] + "..."
            return f"prompt: {text}"
        if self.kind in ("seed", "steps"):
            return f"{self.kind}={value}"  # an integer in full: "seed=4294967295", not 4.29497e+09
        return f"{self.adapter_name if self.kind == 'weight' else self.kind}={value:g}"

    def check(self, request: ImageRequest) -> None:
        """What only the request can tell: a prompt S/R's search text is in its prompt."""
        if self.kind == "prompt" and self.values[0] not in request.prompt:
            raise InputError(f"prompt S/R: the search text {shown(self.values[0])} (the first value) is not in the "
                             f"prompt {shown(request.prompt)}")  # fmt: skip

    def apply(self, request: ImageRequest, value) -> ImageRequest:
        """`request` with this axis at `value`; the rest of it (the mix, the other settings) as it was."""
        if self.kind == "weight":  # on top of the request's mix, adapters on: a weight that is off shows nothing
            return dataclasses.replace(request, adapters=dict(request.adapters) | {self.adapter_name: value},
                                       use_adapters=True)  # fmt: skip
        if self.kind == "prompt":
            return dataclasses.replace(request, prompt=request.prompt.replace(self.values[0], value))
        field = {"seed": "seed", "steps": "steps", "guidance": "guidance_scale"}[self.kind]
        return dataclasses.replace(request, **{field: value})


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


def parse_axis(name: str, kind: str, text: str, adapter_name: str = "", ranges=None) -> Axis:
    """The axis `kind` with the values typed as `text`, each checked; `name` ("X", "Y") starts each message.

    Weights, seeds, steps and guidance are a list ('1, 2, 5') or start:stop:count ('0:7:8'); a prompt S/R is a
    comma-separated list ('cat, dog, "a fox, red"', quotes around a value holding a comma).

    Args:
        adapter_name: the adapter whose weight varies (kind "weight").
        ranges: the loaded pipeline's ranges (its PipelineInfo, or a families.Ranges: steps_min ... guidance_max,
            its family's); without, the studio-wide ones (peft_core/limits.py). The work cap is checked per cell,
            by the studio.
    """
    if kind not in AXIS_KINDS:
        raise InputError(f"{name} axis {shown(kind)} is not one of: {', '.join(AXIS_KINDS)}")
    text = limits.check_text(f"{name} values", text or "", AXIS_TEXT_MAX_CHARS).strip()
    if kind == "weight":
        return Axis(kind, tuple(parse_values(name, text)), adapter_name)
    if kind == "prompt":
        return Axis(kind, _texts(name, text))
    if kind == "guidance":
        lo, hi = (ranges.guidance_min, ranges.guidance_max) if ranges else (limits.GUIDANCE_MIN, limits.GUIDANCE_MAX)
        return Axis(kind, tuple(_numbers(f"{name} guidance", text, lo, hi, integer=False)))
    steps = (ranges.steps_min, ranges.steps_max) if ranges else (limits.STEPS_MIN, limits.STEPS_MAX)
    lo, hi = {"seed": (limits.SEED_MIN, limits.SEED_MAX), "steps": steps}[kind]
    return Axis(kind, tuple(_numbers(f"{name} {kind}", text, lo, hi, integer=True)))


def _numbers(name: str, text: str, lo, hi, integer: bool) -> list:
    """A list or start:stop:count of numbers in [lo, hi] (integers when `integer`), at most MAX_VALUES."""
    def one(what: str, v: str):
        return limits.check_int(what, _int(v), lo, hi) if integer else limits.parse_number(what, v, lo, hi)

    example = "'1, 2, 3' or a range like '1:8:4'" if integer else "'3, 5, 7.5' or a range like '1:9:5'"
    if not text:
        raise InputError(f"{name} must list values like {example}")
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise InputError(f"{name} range {shown(text)} must be start:stop:count, like {example.split()[-1]}")
        start, stop = one(f"{name} start", parts[0]), one(f"{name} stop", parts[1])
        count = limits.check_int(f"{name} count", _int(parts[2]), 2, MAX_VALUES)
        spaced = [start + (stop - start) * i / (count - 1) for i in range(count)]
        return [round(v) for v in spaced] if integer else [round(v, 4) for v in spaced]
    values = [one(name, v) for v in text.split(",") if v.strip()]
    if len(values) > MAX_VALUES:
        raise InputError(f"{name} has {len(values)} values; at most {MAX_VALUES} are allowed")
    return values


def _texts(name: str, text: str) -> tuple:
    """A prompt S/R's values: comma-separated, each stripped, quotes around one that holds a comma (csv's rules)."""
    try:
        values = [v.strip() for v in next(csv.reader([text], skipinitialspace=True, strict=True), [])]
    except csv.Error as exc:
        raise InputError(f"{name} prompt S/R values {shown(text)} cannot be read: {exc}") from None
    values = [v for v in values if v]
    if not values:
        raise InputError(f"{name} prompt S/R must list the text to search for, then what replaces it, like "
                         "'cat, dog, fox'")  # fmt: skip
    if len(values) > MAX_VALUES:
        raise InputError(f"{name} has {len(values)} values; at most {MAX_VALUES} are allowed")
    return tuple(values)


def _int(text: str):
    try:
        return int(text.strip())
    except ValueError:
        return text.strip()


def sweep(studio: ImageStudio, request: ImageRequest, x_adapter: str, x_values: list[float],
          y_adapter: str = "", y_values: list[float] | None = None, progress=None) -> list[tuple]:  # fmt: skip
    """[(image, label)] row by row: `x_adapter` at each x value (and `y_adapter` at each y value), on top of the
    rest of the request's mix. Checked whole before the first image is made. (A weight sweep: `sweep_axes` takes
    any axis.)"""
    x = Axis("weight", tuple(x_values), x_adapter)
    y = Axis("weight", tuple(y_values or ()), y_adapter) if y_adapter else None
    return sweep_axes(studio, request, x, y, progress)


def sweep_axes(studio: ImageStudio, request: ImageRequest, x: Axis, y: Axis | None = None,
               progress=None) -> list[tuple]:  # fmt: skip
    """[(image, label)] row by row: the request with axis `x` at each of its values (and `y` at each of its), the
    rest of the request (its mix, its settings) as it is. Checked whole before the first image is made: every
    cell as the studio checks one /generate (names, weights, the family's ranges, the work cap)."""
    if y is not None and y.kind == x.kind and (x.kind != "weight" or y.adapter_name == x.adapter_name):
        what = "adapters" if x.kind == "weight" else "axes"
        raise InputError(f"the X and Y {what} must differ, both are {x.title}")
    rows = y.values if y is not None else (None,)
    if len(x.values) * len(rows) > MAX_CELLS:
        raise InputError(f"a sweep of {len(x.values)} × {len(rows)} images is too large; at most {MAX_CELLS}")
    for axis in (x, y) if y is not None else (x,):
        axis.check(request)
    cells = []
    for yv in rows:
        for xv in x.values:
            cell, label = x.apply(request, xv), x.label(xv)
            if y is not None:
                cell, label = y.apply(cell, yv), f"{label}, {y.label(yv)}"
            cells.append((cell, label))
    for cell, label in cells:  # validate every cell (names, weights, sizes) before spending time on any
        try:
            studio.check_request(cell)
        except InputError as exc:
            raise InputError(f"sweep cell {label}: {exc}") from None
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
    """One image of a weight sweep: `images` (row by row, as `sweep` returns them, or bare images) under column
    headers "x_adapter=x" and beside row headers "y_adapter=y" (none without a Y adapter)."""
    x = Axis("weight", tuple(x_values), x_adapter)
    y = Axis("weight", tuple(y_values), y_adapter) if y_adapter and y_values else None
    return composite_axes(images, x, y)


def composite_axes(images: list, x: Axis, y: Axis | None = None) -> Image.Image:
    """One image of the sweep: `images` (row by row, as `sweep_axes` returns them, or bare images) under a header
    per column naming X's value ("seed=3") and beside a header per row naming Y's (none without Y)."""
    cells = [c[0] if isinstance(c, tuple) else c for c in images]
    rows = y.values if y is not None else (None,)
    if len(cells) != len(x.values) * len(rows):
        raise ValueError(f"{len(cells)} images for a {len(x.values)} × {len(rows)} sweep")
    w, h = cells[0].size
    scale = max(1, -(-CELL_MIN_PX // min(w, h)))
    cw, ch = w * scale, h * scale
    font = _font()
    col_labels = [x.label(v) for v in x.values]
    row_labels = [y.label(v) for v in y.values] if y is not None else []
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [measure.textlength(t, font=font) for t in col_labels + row_labels]
    cw = max(cw, int(max(widths[: len(col_labels)])) + 2 * PAD)  # a column is at least as wide as its header
    left = int(max(widths[len(col_labels) :], default=0)) + 2 * PAD if row_labels else 0
    top = HEADER_PX + 2 * PAD
    sheet = Image.new("RGB", (left + cw * len(x.values), top + ch * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, label in enumerate(col_labels):
        draw.text((left + j * cw + cw / 2, top / 2), label, fill="black", font=font, anchor="mm")
    for i, label in enumerate(row_labels):
        draw.text((left / 2, top + i * ch + ch / 2), label, fill="black", font=font, anchor="mm")
    for k, cell in enumerate(cells):
        i, j = divmod(k, len(x.values))
        big = cell.convert("RGB").resize((w * scale, h * scale), Image.NEAREST)
        sheet.paste(big, (left + j * cw + (cw - big.width) // 2, top + i * ch + (ch - big.height) // 2))
    return sheet


def _font():
    try:
        return ImageFont.load_default(size=HEADER_PX)  # Pillow's own font: renders offline, no system font needed
    except (TypeError, OSError):  # a Pillow without FreeType: its small bitmap font
        return ImageFont.load_default()
