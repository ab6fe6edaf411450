"""docs/switch_latency.png: switch latency against resident adapters, from bench/results/resident.json.

Drawn with PIL (matplotlib is not a dependency): one panel per pipeline, N on a log2 axis, milliseconds on a log10
axis, one line per way of switching, and a dotted line at 1 % of one generation (the goal).
"""

import json
import math

from bench.common import ROOT, BenchConfig

SERIES = [  # (key in per_n times, label, colour, dashed)
    ("switch_unload_load_disk", "unload + load from disk (Spaces)", "#7f7f7f", False),
    ("switch_unload_load_ram", "unload + load from RAM", "#bcbd22", False),
    ("switch_hotswap", "load_lora_weights(hotswap=True)", "#9467bd", False),
    ("switch_bare", "bare set_adapters, all N injected", "#ff7f0e", False),
    ("switch_ours_miss", "ours, miss (slot filled by copy)", "#1f77b4", True),
    ("switch_ours", "ours, hit (fused)", "#2ca02c", True),
    ("switch_ours_unfused", "ours, hit (unfused)", "#17becf", True),
]
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 560, 400, 70, 16, 40, 56
SCALE = 2  # drawn at twice the size, for crisp text


def _dashed(draw, points, fill, width, dash=(10, 6)) -> None:
    for (x1, y1), (x2, y2) in zip(points, points[1:], strict=False):
        length = math.hypot(x2 - x1, y2 - y1)
        pos, on = 0.0, True
        while pos < length:
            step = min(dash[0] if on else dash[1], length - pos)
            if on:
                a, b = pos / length, (pos + step) / length
                draw.line([(x1 + (x2 - x1) * a, y1 + (y2 - y1) * a), (x1 + (x2 - x1) * b, y1 + (y2 - y1) * b)],
                          fill=fill, width=width)  # fmt: skip
            pos, on = pos + step, not on


def _panel(draw, font, name: str, data: dict, x0: int) -> None:
    s = SCALE
    ns = data["ns"]
    per_n = {int(k): v for k, v in data["per_n"].items()}
    values = [per_n[n]["times"][key]["median_s"] * 1e3 for key, *_ in SERIES for n in ns]
    goal = [per_n[n]["gen_ref_s"] * 10 for n in ns]  # 1 % of a generation, in ms
    lo = 10 ** math.floor(math.log10(max(min(values + goal), 1e-3)))
    hi = 10 ** math.ceil(math.log10(max(values + goal)))
    left, right, top, bottom = (x0 + PAD_L) * s, (x0 + W - PAD_R) * s, PAD_T * s, (H - PAD_B) * s

    def x(n):
        span = math.log2(ns[-1]) - math.log2(ns[0]) or 1
        return left + (math.log2(n) - math.log2(ns[0])) / span * (right - left)

    def y(v):
        return bottom - (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (bottom - top)

    pipe = data["pipeline"]
    label = pipe.get("name", name)
    title = f"{label}: {pipe['steps']} steps, {pipe['size']}x{pipe['size']}, one generation ~ {goal[-1] / 10:.2f} s"
    draw.text(((left + right) / 2, 18 * s), title, fill="black", font=font, anchor="mm")
    decade = lo
    while decade <= hi * 1.0001:
        draw.line([(left, y(decade)), (right, y(decade))], fill="#dddddd", width=s)
        draw.text((left - 6 * s, y(decade)), f"{decade:g}", fill="black", font=font, anchor="rm")
        decade *= 10
    draw.rectangle([left, top, right, bottom], outline="#333333", width=s)
    for n in ns:
        draw.text((x(n), bottom + 14 * s), str(n), fill="black", font=font, anchor="mm")
    draw.text(((left + right) / 2, bottom + 36 * s), "adapters resident (N)", fill="black", font=font, anchor="mm")
    draw.text((x0 * s + 8 * s, top - 14 * s), "ms per switch (log)", fill="black", font=font, anchor="lm")
    _dashed(draw, [(x(n), y(g)) for n, g in zip(ns, goal, strict=True)], "black", s, (3 * s, 4 * s))
    draw.text((right - 4 * s, y(goal[-1]) + 10 * s), "1 % of a generation", fill="black", font=font, anchor="rm")
    for key, _, colour, dashed in SERIES:
        pts = [(x(n), y(per_n[n]["times"][key]["median_s"] * 1e3)) for n in ns]
        if dashed:
            _dashed(draw, pts, colour, 2 * s)
        else:
            draw.line(pts, fill=colour, width=2 * s)
        for a, b in pts:
            draw.ellipse([a - 3 * s, b - 3 * s, a + 3 * s, b + 3 * s], fill=colour)


def render(results: dict):
    """The chart as a PIL image."""
    from PIL import Image, ImageDraw, ImageFont

    s = SCALE
    pipelines = list(results["pipelines"].items())
    width, rows = W * len(pipelines), math.ceil(len(SERIES) / 2)
    image = Image.new("RGB", (width * s, (H + 20 * rows + 16) * s), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=11 * s)
    for i, (name, data) in enumerate(pipelines):
        _panel(draw, font, name, data, i * W)
    for i, (_, label, colour, dashed) in enumerate(SERIES):
        lx, ly = (20 + (i % 2) * width / 2) * s, (H + 20 * (i // 2) + 6) * s
        if dashed:
            _dashed(draw, [(lx, ly), (lx + 30 * s, ly)], colour, 2 * s)
        else:
            draw.line([(lx, ly), (lx + 30 * s, ly)], fill=colour, width=2 * s)
        draw.text((lx + 38 * s, ly), label, fill="black", font=font, anchor="lm")
    return image


def run(cfg: BenchConfig) -> dict:
    source = cfg.out / "resident.json"
    if not source.exists():
        from bench import resident

        resident.run(cfg)
    target = (cfg.out if cfg.quick else ROOT / "docs") / "switch_latency.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    render(json.loads(source.read_text())).save(target, optimize=True)
    print(f"\nwrote {target}", flush=True)
    return {}
