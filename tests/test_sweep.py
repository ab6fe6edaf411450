"""Sweeps (adapter weights, seed, steps, guidance, prompt S/R) and trigger words: each sweep cell equals the same
request made alone."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from peft_core import limits
from peft_core.errors import InputError
from peft_core.image import families
from peft_core.image.prompts import with_trigger_words
from peft_core.image.studio import ImageRequest
from peft_core.image.sweep import MAX_CELLS, parse_axis, parse_values, sweep, sweep_axes
from tests.conftest import gen, pixels


def test_parse_values():
    assert parse_values("X", "-1, 0, 0.5") == [-1.0, 0.0, 0.5]
    assert parse_values("X", "-1:1.5:6") == [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]


@pytest.mark.parametrize(
    "text, message",
    [("", "must list weights"), ("1:2", "start:stop:count"), ("0, 3", r"in \[-2.0, 2.0\], got '3'"),
     ("0:1:40", "count must be an integer in"), ("a, b", "must be a number")],
)  # fmt: skip
def test_bad_values(text, message):
    with pytest.raises(InputError, match=message):
        parse_values("X", text)


def test_sweep_cells_equal_single_requests(studio, allow_assets):
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    studio.load_adapter(str(allow_assets["lora_b"]), adapter_name="b")
    request = ImageRequest("a red circle", {}, True, 0, steps=4, guidance_scale=5.0, width=32, height=32)
    cells = sweep(studio, request, "a", [0.0, 1.0], "b", [0.5, 1.0])
    assert [label for _, label in cells] == ["a=0, b=0.5", "a=1, b=0.5", "a=0, b=1", "a=1, b=1"]
    assert np.array_equal(pixels(cells[3][0]), gen(studio, {"a": 1.0, "b": 1.0}))
    assert np.array_equal(pixels(cells[0][0]), gen(studio, {"a": 0.0, "b": 0.5}))
    with pytest.raises(InputError, match="too large"):
        sweep(studio, request, "a", [0.0] * 12, "b", [0.0] * (MAX_CELLS // 12 + 1))
    with pytest.raises(InputError, match="'nope' not loaded"):
        sweep(studio, request, "nope", [0.0, 1.0])


def test_trigger_words_only_for_active_adapters():
    adapters = [{"adapter_name": "a", "trigger_words": ["sks style"]}, {"adapter_name": "b", "trigger_words": ["3D"]}]
    assert with_trigger_words("a red circle", adapters, {"a": 1.0, "b": 0.0}) == "a red circle, sks style"
    assert with_trigger_words("a red circle in sks style", adapters, {"a": 1.0}) == "a red circle in sks style"
    assert with_trigger_words("x", adapters, {}) == "x"


# --- axes other than a weight: seed, steps, guidance, prompt S/R (peft_core/image/sweep.py, Axis) -----------------


def test_parse_axis_reads_each_kind_and_labels_its_values():
    seeds = parse_axis("X", "seed", "0:7:8")
    assert seeds.values == tuple(range(8)) and seeds.label(3) == "seed=3"
    assert parse_axis("X", "seed", str(limits.SEED_MAX)).label(limits.SEED_MAX) == f"seed={limits.SEED_MAX}"
    steps = parse_axis("Y", "steps", "2, 4, 8")
    assert steps.values == (2, 4, 8) and steps.label(8) == "steps=8"
    guidance = parse_axis("X", "guidance", "1:9:5")
    assert guidance.values == (1.0, 3.0, 5.0, 7.0, 9.0) and guidance.label(7.5) == "guidance=7.5"
    prompt = parse_axis("X", "prompt", 'circle, square, "triangle, big"')
    assert prompt.values == ("circle", "square", "triangle, big") and prompt.label("square") == "prompt: square"
    weight = parse_axis("X", "weight", "-1, 0.5", adapter_name="night")
    assert weight.values == (-1.0, 0.5) and weight.label(0.5) == "night=0.5"


FAMILY = SimpleNamespace(steps_min=1, steps_max=50, guidance_min=0.0, guidance_max=20.0)  # a family's ranges


@pytest.mark.parametrize(
    "kind, text, ranges, message",
    [("seed", "-5", None, r"X seed must be an integer in \[0, 4294967295\], got -5"),
     ("seed", "1, 1.5", None, r"X seed must be an integer in \[0, 4294967295\], got '1.5'"),
     ("seed", f"0, {2**32}", None, rf"X seed must be an integer in \[0, 4294967295\], got {2**32}"),
     ("steps", "0, 4", None, r"X steps must be an integer in \[1, 100\], got 0"),
     ("steps", "4, 60", FAMILY, r"X steps must be an integer in \[1, 50\], got 60"),
     ("steps", "2:80:3", FAMILY, r"X steps stop must be an integer in \[1, 50\], got 80"),
     ("guidance", "5, 31", None, r"X guidance must be a finite number in \[0.0, 30.0\], got '31'"),
     ("guidance", "25", FAMILY, r"X guidance must be a finite number in \[0.0, 20.0\], got '25'"),
     ("guidance", "nan", None, r"X guidance must be a finite number in \[0.0, 30.0\], got 'nan'"),
     ("seed", ", ".join(["1"] * 13), None, "X seed has 13 values; at most 12 are allowed"),
     ("seed", "1:2", None, "must be start:stop:count"),
     ("seed", "", None, "X seed must list values like '1, 2, 3'"),
     ("prompt", " , ", None, "must list the text to search for, then what replaces it"),
     ("prompt", 'cat, "dog', None, "cannot be read"),
     ("prompt", "x" * 2001, None, "X values is 2,001 characters long; at most 2,000"),
     ("sampler", "1", None, "X axis 'sampler' is not one of: weight, seed, steps, guidance, prompt")],
)  # fmt: skip
def test_bad_axis_values_are_refused_naming_the_value_and_the_valid_set(kind, text, ranges, message):
    with pytest.raises(InputError, match=message):
        parse_axis("X", kind, text, ranges=ranges)


def cell_request(request, **changes):
    return dataclasses.replace(request, **changes)


def test_every_axis_gives_cells_equal_to_single_requests(studio, allow_assets):
    """Each cell of a sweep over any axis is exactly the image /generate gives for that cell's request, and the
    values matter (no two cells alike)."""
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    studio.load_adapter(str(allow_assets["lora_b"]), adapter_name="b")
    request = ImageRequest("a red circle", {"b": 0.5}, True, 0, steps=4, guidance_scale=5.0, width=32, height=32)
    grids = {
        "weight × seed": (parse_axis("X", "weight", "0, 1", "a"), parse_axis("Y", "seed", "3, 7"),
                          lambda a, seed: cell_request(request, adapters={"b": 0.5, "a": a}, seed=seed),
                          ["a=0, seed=3", "a=1, seed=3", "a=0, seed=7", "a=1, seed=7"]),
        "steps × guidance": (parse_axis("X", "steps", "2, 4"), parse_axis("Y", "guidance", "1, 9"),
                             lambda s, g: cell_request(request, steps=s, guidance_scale=g),
                             ["steps=2, guidance=1", "steps=4, guidance=1", "steps=2, guidance=9",
                              "steps=4, guidance=9"]),
        "prompt S/R": (parse_axis("X", "prompt", "red, blue, green"), None,
                       lambda p, _: cell_request(request, prompt=f"a {p} circle"),
                       ["prompt: red", "prompt: blue", "prompt: green"]),
    }  # fmt: skip
    for grid, (x, y, alone, labels) in grids.items():
        cells = sweep_axes(studio, request, x, y)
        assert [label for _, label in cells] == labels, grid
        pairs = [(xv, yv) for yv in (y.values if y else [None]) for xv in x.values]
        for (image, label), (xv, yv) in zip(cells, pairs, strict=True):
            assert np.array_equal(pixels(image), pixels(studio.generate(alone(xv, yv)))), (grid, label)
        assert len({pixels(image).tobytes() for image, _ in cells}) == len(cells), grid
    # the first prompt value is the prompt itself: its cell is the request unchanged
    first = sweep_axes(studio, request, parse_axis("X", "prompt", "red, blue"))[0][0]
    assert np.array_equal(pixels(first), pixels(studio.generate(request)))


def test_refused_sweeps_name_the_value_and_make_nothing(studio, allow_assets, monkeypatch):
    """A search text not in the prompt, a steps value past the work cap, a cell outside the family's range and one
    kind on both axes are refused before any image is made, naming what is wrong; the adapters stay as they were."""
    monkeypatch.setenv("STUDIO_MAX_IMAGE_COST", "2")
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    before = studio.list_adapters()
    request = ImageRequest("a red circle", {"a": 1.0}, True, 0, steps=4, guidance_scale=5.0, width=32, height=32)
    default_steps = studio.info.default_steps
    over = int(default_steps * 2) + 1  # past 2 default images at the default size
    made = []
    cases = [
        (parse_axis("X", "prompt", "green, blue"), None,
         r"prompt S/R: the search text 'green' \(the first value\) is not in the prompt 'a red circle'"),
        (parse_axis("X", "steps", f"4, {over}"), None,
         rf"sweep cell steps={over}: {over} steps at 32x32 is .*STUDIO_MAX_IMAGE_COST"),
        (parse_axis("X", "seed", "1, 2"), parse_axis("Y", "seed", "3"), "the X and Y axes must differ, both are seed"),
        (parse_axis("X", "weight", "0, 1", "a"), parse_axis("Y", "weight", "1", "a"),
         "the X and Y adapters must differ, both are 'a'"),
        (parse_axis("X", "seed", "1, 2"), parse_axis("Y", "weight", "0, 1", "nope"),
         r"sweep cell seed=1, nope=0: adapter\(s\) 'nope' not loaded"),
        (parse_axis("X", "seed", ", ".join(["1"] * 12)), parse_axis("Y", "steps", "1, 2, 3, 4"), "too large"),
    ]  # fmt: skip
    for x, y, message in cases:
        with pytest.raises(InputError, match=message):
            sweep_axes(studio, request, x, y, progress=lambda i, n: made.append(i))
    assert made == [] and studio.list_adapters() == before


def test_the_pages_axis_pickers_and_the_loaded_familys_ranges(studio):
    """The page's X/Y pickers: each adapter's weight, then the settings (values no adapter name can take); a picked
    setting's values are checked against the loaded pipeline's family ranges, as /load_pipeline answers them."""
    from ui.image_handlers import sweep_axis, x_choices, y_choices

    assert x_choices(["night"]) == [("weight of night", "night"), ("seed", ":seed"), ("steps", ":steps"),
                                    ("guidance", ":guidance"), ("prompt S/R", ":prompt")]  # fmt: skip
    assert y_choices(["night"])[0] == ("none (X only)", "") and y_choices(["night"])[1:] == x_choices(["night"])
    for _, value in x_choices([]):
        with pytest.raises(InputError):
            limits.check_adapter_name(value)
    info = studio.info
    assert sweep_axis("Y", "night", "0, 1", info) == parse_axis("Y", "weight", "0, 1", "night")
    assert sweep_axis("X", ":prompt", "red, blue", info).values == ("red", "blue")
    low, top = info.steps_min, info.steps_max
    with pytest.raises(InputError, match=rf"X steps must be an integer in \[{low}, {top}\], got {top + 1}"):
        sweep_axis("X", ":steps", f"4, {top + 1}", info)
    with pytest.raises(InputError, match=rf"Y guidance must be a finite number in \[.*{info.guidance_max}\]"):
        sweep_axis("Y", ":guidance", str(info.guidance_max + 1), info)


@pytest.mark.parametrize("name", sorted(families.FAMILIES))
def test_each_familys_ranges_bound_the_steps_and_guidance_axes(name):
    """The steps and guidance axes take a family's own ranges (as /load_pipeline answers them for its pipelines):
    its ends are accepted, one past each refused naming the family's range."""
    from ui.image_handlers import sweep_axis

    family = families.FAMILIES[name]
    info = SimpleNamespace(steps_min=family.steps[0], steps_max=family.steps[1], guidance_min=family.guidance[0],
                           guidance_max=family.guidance[1])  # fmt: skip
    (lo, hi), (g_lo, g_hi) = family.steps, family.guidance
    assert sweep_axis("X", ":steps", f"{lo}, {hi}", info).values == (lo, hi)
    assert sweep_axis("Y", ":guidance", f"{g_lo}, {g_hi}", info).values == (g_lo, g_hi)
    with pytest.raises(InputError, match=rf"X steps must be an integer in \[{lo}, {hi}\], got {hi + 1}"):
        sweep_axis("X", ":steps", f"{lo}, {hi + 1}", info)
    past = g_hi + 1
    with pytest.raises(InputError, match=rf"Y guidance must be a finite number in \[{g_lo}, {g_hi}\], got '{past}'"):
        sweep_axis("Y", ":guidance", f"{past}", info)
