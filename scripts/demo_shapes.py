"""The procedural shapes the demo models learn from, and the measurements that check what they draw.

One picture is one coloured shape (circle, square or triangle) on a plain background, 32x32 RGB. A *style*
changes how it is drawn but never what: the same caption, position and size in every style, so a LoRA trained
on one style learns the style and nothing else. The measurements work on any RGB float array in [0, 1], so
the training script and the tests judge generated images with the same numbers.
"""

import numpy as np
from PIL import Image, ImageDraw

SIZE = 32  # pixels per side of a picture
SUPERSAMPLE = 4  # draw 4x larger, then average down: anti-aliased edges are easier for the tiny VAE
SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (0.86, 0.12, 0.12),
    "green": (0.13, 0.62, 0.20),
    "blue": (0.15, 0.30, 0.90),
    "yellow": (0.96, 0.82, 0.10),
    "purple": (0.55, 0.20, 0.75),
    "orange": (0.98, 0.50, 0.05),
}
BACKGROUND = (0.93, 0.93, 0.90)  # light paper
NIGHT_BACKGROUND = (0.06, 0.06, 0.10)
STYLES = ("base", "night", "outline", "stripes", "pastel")
OUTLINE_WIDTH = 3  # pixels at 32x32; the tiny VAE (2x downsampling) blurs anything thinner
STRIPE_PERIOD = 6  # pixels: 3 in the shape's colour, 3 darker; 2 latent pixels per band survive the VAE
PASTEL_WHITE = 0.55  # share of white mixed into a pastel colour
# each shape's inscribed-circle radius as a share of r, as render() draws it (a triangle of base 2r, height 1.85r)
INRADIUS = {"circle": 1.0, "square": 0.85, "triangle": 0.596}
SHAPE_THRESHOLD = 0.2  # a pixel belongs to the shape when a channel differs this much from the background


def captions() -> list[str]:
    """Every caption the image models know, e.g. "a red circle"."""
    return [f"a {colour} {shape}" for shape in SHAPES for colour in COLOURS]


def render(shape: str, colour: str, style: str = "base", cx: float = 16.0, cy: float = 16.0, r: float = 10.0,
           strength: float = 1.0):
    """One picture as float32 HxWx3 in [0, 1]: a `colour` `shape` centred at (cx, cy), half-size `r` pixels.

    `strength` in [0, 1] draws the style part way: 0 is the base picture, 1 the full style, 0.5 half of it (half
    as dark a background, a ring whose hollow is half the full style's area, ...). A LoRA trained on several
    strengths at the matching weights then behaves at weight 0.5 as a person expects, also inside a mix.
    """
    if strength <= 0:
        style = "base"  # exactly: a ring as thick as the shape is not quite the filled shape
    s = SUPERSAMPLE
    box = [(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s]
    # outline-only shapes are drawn as a ring of the shape's colour; the interior stays background. The hollow's
    # area scales with strength: its inradius is sqrt(strength) times the full style's
    inradius = r * INRADIUS.get(shape, 1.0)
    ring = inradius - np.sqrt(strength) * (inradius - OUTLINE_WIDTH)
    fill, outline, width = (None, 255, max(1, round(ring * s))) if style == "outline" else (255, None, 1)
    mask = Image.new("L", (SIZE * s, SIZE * s), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    elif shape == "square":
        h = 0.85 * r * s  # a square of the same "size" as a circle looks bigger; shrink it a little
        draw.rectangle([cx * s - h, cy * s - h, cx * s + h, cy * s + h], fill=fill, outline=outline, width=width)
    elif shape == "triangle":
        top, bottom = (cy - r) * s, (cy + 0.85 * r) * s
        points = [(cx * s, top), ((cx + r) * s, bottom), ((cx - r) * s, bottom)]
        draw.polygon(points, fill=fill, outline=outline, width=width)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")

    m = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    rgb = np.array(COLOURS[colour], dtype=np.float32)
    bg = np.array(BACKGROUND, dtype=np.float32)
    if style == "night":
        bg = (1 - strength) * bg + strength * np.array(NIGHT_BACKGROUND, dtype=np.float32)
    fg = np.broadcast_to(rgb, m.shape[:2] + (3,)).copy()
    if style == "pastel":
        white = strength * PASTEL_WHITE
        fg = (1 - white) * fg + white
    elif style == "stripes":
        rows = np.arange(SIZE * s) // (STRIPE_PERIOD // 2 * s)
        fg[rows % 2 == 1] *= 1 - 0.7 * strength  # horizontal bands: the colour, then a dark version of it
    img = bg * (1 - m) + fg * m
    return img.reshape(SIZE, s, SIZE, s, 3).mean(axis=(1, 3))


def make_dataset(style: str, per_caption: int, seed: int = 0, strength: float = 1.0) -> tuple[np.ndarray, list[str]]:
    """`per_caption` pictures of every caption in `style` at `strength`, as (N, 32, 32, 3) float32 and N captions.

    The same seed gives the same positions and sizes in every style and strength: only the style differs.
    """
    rng = np.random.default_rng(seed)
    images, texts = [], []
    for _ in range(per_caption):
        for shape in SHAPES:
            for colour in COLOURS:
                # a little jitter, so the model learns "a red circle" and not one picture of it
                cx, cy = rng.uniform(14.0, 18.0, size=2)
                r = rng.uniform(8.0, 11.0)
                images.append(render(shape, colour, style, cx, cy, r, strength))
                texts.append(f"a {colour} {shape}")
    return np.stack(images), texts


# ---------------------------------------------------------------------------------------------------------
# measurements: each takes an image as float HxWx3 in [0, 1] (np.asarray(pil_image) / 255 works)


def background(img: np.ndarray) -> np.ndarray:
    """The background colour: the median of the outermost pixel frame, which shapes never reach."""
    frame = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    return np.median(frame, axis=0)


def shape_mask(img: np.ndarray) -> np.ndarray:
    """Pixels that differ clearly from the background colour."""
    return np.abs(img - background(img)).max(axis=-1) > SHAPE_THRESHOLD


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """`mask` plus every pixel the border cannot reach without crossing it (the inside of an outline)."""
    outside = np.zeros_like(mask)
    outside[0, :], outside[-1, :], outside[:, 0], outside[:, -1] = ~mask[0, :], ~mask[-1, :], ~mask[:, 0], ~mask[:, -1]
    while True:  # flood fill from the border through non-shape pixels, 4-connected
        grown = outside.copy()
        grown[1:] |= outside[:-1]
        grown[:-1] |= outside[1:]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= ~mask
        if (grown == outside).all():
            return ~outside
        outside = grown


def fill_ratio(img: np.ndarray) -> float:
    """Shape area over its bounding box area: circle ~0.785, square ~1.0, triangle ~0.5."""
    filled = fill_holes(shape_mask(img))
    ys, xs = np.nonzero(filled)
    if len(ys) == 0:
        return 0.0
    return float(filled.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of the filled shape masks of two images."""
    ma, mb = fill_holes(shape_mask(a)), fill_holes(shape_mask(b))
    return float((ma & mb).sum() / max((ma | mb).sum(), 1))


def colour_share(img: np.ndarray, colour: str) -> float:
    """Share of shape pixels whose nearest palette colour is `colour`."""
    pixels = img[shape_mask(img)]
    if len(pixels) == 0:
        return 0.0
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names])
    nearest = np.linalg.norm(pixels[:, None, :] - palette[None], axis=-1).argmin(axis=1)
    return float((nearest == names.index(colour)).mean())


def brightness(img: np.ndarray) -> float:
    """Mean brightness of the background colour (night drops it)."""
    return float(background(img).mean())


def hollowness(img: np.ndarray) -> float:
    """Share of the filled shape that looks like background (outline raises it; a filled shape is ~0)."""
    mask = shape_mask(img)
    filled = fill_holes(mask)
    return float((filled & ~mask).sum() / max(filled.sum(), 1))


def stripiness(img: np.ndarray) -> float:
    """Mean change between vertically neighbouring pixels inside the shape (stripes raise it)."""
    filled = fill_holes(shape_mask(img))
    inside = filled[1:] & filled[:-1]  # both pixels of a vertical pair inside the shape
    # trim the shape's own top and bottom edge, which every style has
    inside &= np.roll(filled, 1, axis=0)[1:] & np.roll(filled, -1, axis=0)[:-1]
    if not inside.any():
        return 0.0
    step = np.abs(img[1:] - img[:-1]).max(axis=-1)
    return float(step[inside].mean())


def saturation(img: np.ndarray) -> float:
    """Mean HSV saturation of the shape pixels (pastel lowers it)."""
    pixels = img[shape_mask(img)]
    if len(pixels) == 0:
        return 0.0
    hi, lo = pixels.max(axis=-1), pixels.min(axis=-1)
    return float(((hi - lo) / np.maximum(hi, 1e-6)).mean())


MEASURES = {"brightness": brightness, "hollowness": hollowness, "stripiness": stripiness, "saturation": saturation}
# the measure each style moves, and which way
STYLE_MEASURE = {"night": ("brightness", -1), "outline": ("hollowness", +1), "stripes": ("stripiness", +1),
                 "pastel": ("saturation", -1)}  # fmt: skip


def measure(img: np.ndarray) -> dict[str, float]:
    """Every style measure of one image."""
    return {name: fn(img) for name, fn in MEASURES.items()}
