"""Weight sweeps and trigger words: each sweep cell equals the same request made alone."""

import numpy as np
import pytest

from peft_core.errors import InputError
from peft_core.image.prompts import with_trigger_words
from peft_core.image.studio import ImageRequest
from peft_core.image.sweep import MAX_CELLS, parse_values, sweep
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
