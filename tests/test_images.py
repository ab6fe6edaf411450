"""The image studio on a tiny pipeline: mixing, disabling, deleting, and refusing without losing state."""

import threading

import numpy as np
import pytest

from peft_core.errors import AdapterError, HubError, InputError
from peft_core.image.studio import ImageRequest
from tests.conftest import gen, pixels

PROMPT = "a red circle"


@pytest.fixture
def two(studio, allow_assets):
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    studio.load_adapter(str(allow_assets["lora_b"]), adapter_name="b")
    return studio


def test_pipeline_info(studio, allow_assets):
    info = studio.base_info()
    assert info.pipeline_class == "StableDiffusionPipeline"
    assert info.device == "cpu" and info.dtype == "float32"
    assert info.model_id == str(allow_assets["pipeline"].resolve())


def test_disabled_equals_base_and_adapters_differ(studio, allow_assets):
    base = gen(studio)
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    studio.load_adapter(str(allow_assets["lora_b"]), adapter_name="b")
    a, b = gen(studio, {"a": 1.0}), gen(studio, {"b": 1.0})
    mix = gen(studio, {"a": 1.0, "b": 1.0})
    assert not np.array_equal(a, base) and not np.array_equal(b, base)
    assert not np.array_equal(a, b) and not np.array_equal(mix, a) and not np.array_equal(mix, b)
    assert np.array_equal(gen(studio, {"a": 1.0, "b": 1.0}, use_adapters=False), base)
    assert np.array_equal(gen(studio, {}), base)  # an empty mix is the base too
    assert np.array_equal(gen(studio, {"a": 1.0}), a)  # re-enabled equals before


def test_weights_change_the_output(two):
    half, full = gen(two, {"a": 0.5}), gen(two, {"a": 1.0})
    assert not np.array_equal(half, full)
    assert np.array_equal(gen(two, {"a": 0.0}), gen(two, use_adapters=False))
    assert not np.array_equal(gen(two, {"a": -1.0}), full)


def test_mix_is_per_request_not_sticky(two, allow_assets):
    """A request naming only b must not keep a active in the text encoder (a touches it, b does not)."""
    only_b_after_a = (gen(two, {"a": 1.0}), gen(two, {"b": 1.0}))[1]
    from peft_core.image.studio import ImageStudio

    fresh = ImageStudio(device="cpu")
    fresh.load_base(str(allow_assets["pipeline"]))
    fresh.load_adapter(str(allow_assets["lora_b"]), adapter_name="b")
    assert np.array_equal(only_b_after_a, gen(fresh, {"b": 1.0}))


def test_compare_gives_base_then_adapted(two):
    request = ImageRequest(PROMPT, {"a": 1.0}, True, 3, steps=4, guidance_scale=5.0, width=32, height=32)
    base, adapted = two.compare(request)
    assert np.array_equal(pixels(base), gen(two, use_adapters=False, seed=3))
    assert np.array_equal(pixels(adapted), gen(two, {"a": 1.0}, seed=3))


def test_delete_keeps_the_others(two):
    b = gen(two, {"b": 1.0})
    names = [a["adapter_name"] for a in two.delete_adapter("a")]
    assert names == ["b"]
    assert np.array_equal(gen(two, {"b": 1.0}), b)
    with pytest.raises(InputError, match="'a' not loaded; loaded: b"):
        gen(two, {"a": 1.0})


def test_adapter_facts(two):
    a, b = two.list_adapters()
    assert a["adapter_name"] == "a" and a["rank"] == 4 and a["components"] == ["text_encoder", "unet"]
    assert a["trigger_words"] == ["sks style"] and a["weight_name"] == "pytorch_lora_weights.safetensors"
    assert a["layout"] == "peft" and a["num_layers"] == 40 and a["size_mb"] > 0
    assert b["components"] == ["unet"] and b["trigger_words"] == []


def test_adapter_name_is_derived_and_deduplicated(studio, allow_assets):
    studio.load_adapter(str(allow_assets["lora_a"]))
    names = [a["adapter_name"] for a in studio.load_adapter(str(allow_assets["lora_a"]))]
    assert names == ["lora_a", "lora_a_2"]


@pytest.mark.parametrize("layout", ["old_diffusers", "attn_procs", "attn_procs_no_prefix", "kohya"])
def test_published_layouts_load_like_peft(studio, allow_assets, layout):
    """Each layout people publish gives the same image as the same weights in peft layout."""
    studio.load_adapter(str(allow_assets["unet_only_a"]), adapter_name="peft")
    other = studio.load_adapter(str(allow_assets[layout]), adapter_name="other")[1]
    assert other["layout"] == layout.removesuffix("_no_prefix").replace("_", "-")
    assert other["num_layers"] == studio.list_adapters()[0]["num_layers"] and other["components"] == ["unet"]
    expected = gen(studio, {"peft": 1.0})
    assert np.array_equal(gen(studio, {"other": 1.0}), expected)


def _state(studio):
    return studio.list_adapters(), gen(studio, {"a": 1.0}), gen(studio, {"a": 0.5, "b": 1.0})


def _assert_unchanged(studio, before):
    adapters, a, mix = before
    assert studio.list_adapters() == adapters
    assert np.array_equal(gen(studio, {"a": 1.0}), a)
    assert np.array_equal(gen(studio, {"a": 0.5, "b": 1.0}), mix)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"repo_id": "two_files"},
            HubError,
            "several safetensors files; choose one as weight_name: one.safetensors, two.safetensors",
        ),
        ({"repo_id": "pickle_only"}, HubError, "only pickle weights"),
        ({"repo_id": "lora_a", "weight_name": "missing.safetensors"}, HubError, "'missing.safetensors' is not in"),
        ({"repo_id": "lora_a", "adapter_name": "a"}, InputError, "'a' is already loaded"),
        ({"repo_id": "lora_a", "adapter_name": "bad.name"}, InputError, "'bad.name' is not valid"),
        ({"repo_id": "lora_a", "revision": "v2"}, HubError, "only revision 'main'"),
        ({"repo_id": "/etc"}, HubError, "local path '/etc' is not allowed"),
        ({"repo_id": "org/name/extra"}, HubError, "too many '/'"),
    ],
)
def test_bad_load_leaves_state(two, allow_assets, kwargs, error, message):
    before = _state(two)
    repo = kwargs.pop("repo_id")
    repo_id = str(allow_assets[repo]) if repo in allow_assets else repo
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        two.load_adapter(repo_id, **kwargs)
    _assert_unchanged(two, before)


def test_lora_for_another_model_is_refused_and_undone(two, tmp_path, monkeypatch, allow_assets):
    """Keys that match nothing, or only part of the model, are refused instead of silently ignored."""
    from safetensors.torch import load_file, save_file

    state = load_file(allow_assets["lora_b"] / "pytorch_lora_weights.safetensors")
    partial = dict(state) | {k.replace("attentions", "other"): v.clone() for k, v in state.items()}
    nothing = {k.replace("attentions", "other"): v for k, v in state.items()}
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{allow_assets['root']}:{tmp_path}")
    before = _state(two)
    for name, sd in (("partial", partial), ("nothing", nothing)):
        (tmp_path / name).mkdir()
        save_file(sd, tmp_path / name / "lora.safetensors")
        with pytest.raises(AdapterError, match="that it has no module for|does not fit"):
            two.load_adapter(str(tmp_path / name), adapter_name=name)
        _assert_unchanged(two, before)
    # The names are free again: nothing half-registered was left behind.
    two.load_adapter(str(allow_assets["lora_b"]), adapter_name="partial")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"adapters": {"a": float("nan")}}, "weight of adapter 'a' must be a finite number"),
        ({"adapters": {"a": 2.5}}, r"in \[-2.0, 2.0\], got 2.5"),
        ({"adapters": {"nope": 1.0}}, "'nope' not loaded; loaded: a, b"),
        ({"steps": 0}, r"steps must be an integer in \[1, 100\], got 0"),
        ({"width": 33}, "width must be a multiple of 8"),
        ({"height": 4096}, "height must be an integer"),
        ({"prompt": "x" * 100_000}, "100,000 characters long"),
        ({"seed": -1}, "seed must be an integer"),
    ],
)
def test_bad_request_is_refused(two, change, message):
    before = _state(two)
    fields = {"prompt": PROMPT, "adapters": {}, "steps": 4, "width": 32, "height": 32} | change
    with pytest.raises(InputError, match=message):
        two.generate(ImageRequest(**fields))
    _assert_unchanged(two, before)


def test_failed_pipeline_load_keeps_the_old_one(two, allow_assets):
    before = _state(two)
    with pytest.raises(HubError, match="not a diffusers pipeline"):
        two.load_base(str(allow_assets["lora_a"]))
    _assert_unchanged(two, before)


def test_parallel_requests_get_their_own_mix(two):
    solo = {w: gen(two, {"a": w, "b": 1 - w}, seed=int(w * 10)) for w in (0.0, 0.3, 0.6, 1.0)}
    results, errors = {}, []

    def worker(w):
        try:
            for _ in range(2):
                results.setdefault(w, []).append(gen(two, {"a": w, "b": 1 - w}, seed=int(w * 10)))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in solo]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for w, images in results.items():
        assert all(np.array_equal(img, solo[w]) for img in images)


def test_resident_cap_evicts_the_least_recently_used(studio, allow_assets, monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_RESIDENT_ADAPTERS", "2")
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    studio.load_adapter(str(allow_assets["lora_b"]), adapter_name="b")
    gen(studio, {"b": 1.0})
    gen(studio, {"a": 1.0})  # a is now the most recent, and the applied mix: b goes
    # another file: lora_b again would be one more name for b's weights, resident once (docs/SESSIONS.md)
    names = [x["adapter_name"] for x in studio.load_adapter(str(allow_assets["unet_only_a"]), adapter_name="c")]
    assert names == ["a", "c"]
    assert np.array_equal(gen(studio, {"c": 1.0}), gen(studio, {"a": 0.0, "c": 1.0}))


def test_locked_base_cannot_be_replaced_nor_wiped(studio, allow_assets, monkeypatch):
    """STUDIO_LOCK_BASE refuses another base; the same base again is a no-op that keeps every adapter (a reload
    would drop them all: a wipe any visitor could do)."""
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    before = gen(studio, {"a": 1.0})
    monkeypatch.setenv("STUDIO_LOCK_BASE", "1")
    with pytest.raises(InputError, match="locked to the base"):
        studio.load_base(str(allow_assets["lora_a"]))
    pipe = studio.pipe
    assert studio.load_base(str(allow_assets["pipeline"])).model_id == studio.info.model_id
    assert studio.pipe is pipe and [a["adapter_name"] for a in studio.list_adapters()] == ["a"]
    assert np.array_equal(gen(studio, {"a": 1.0}), before)


def test_exported_mix_reproduces_the_mix(two, tmp_path, monkeypatch, allow_assets):
    """The concatenated file, loaded as one adapter at weight 1, gives the mix's image (to float rounding)."""
    path = two.export_mix({"a": 0.7, "b": -0.4}, tmp_path / "out")
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{allow_assets['root']}:{tmp_path}")
    info = two.load_adapter(str(path.parent), adapter_name="mixed")[-1]
    assert info["rank"] == 8 and info["components"] == ["text_encoder", "unet"]
    mixed, exported = gen(two, {"a": 0.7, "b": -0.4}), gen(two, {"mixed": 1.0})
    assert np.abs(mixed - exported).max() <= 1  # uint8 pixels: at most one step of rounding apart
    assert not np.array_equal(exported, gen(two, {"a": 0.7}))
    with pytest.raises(InputError, match="nothing to export"):
        two.export_mix({"a": 0.0}, tmp_path)
