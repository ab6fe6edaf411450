"""Property tests (hypothesis) over names, ids and numbers, on top of the fixed catalogue in test_bad_inputs.py.

Each property has the same shape: any value is either accepted, and then works end to end, or refused with the
project's own error naming it; never another exception. Example counts are small (the whole file runs in well
under a minute); the values that once broke something are pinned with @example.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from peft_core import hub, limits
from peft_core.errors import HubError, InputError, StudioError
from peft_core.image.studio import ImageRequest, ImageStudio
from peft_core.text.studio import TextRequest, TextStudio
from tests.conftest import EnvPatch

FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHEAP = settings(max_examples=200, deadline=None)

# Names that look like the libraries' own: module and attribute names of peft, diffusers, transformers and torch.
LIBRARY_WORDS = ["training", "_modules", "_parameters", "half", "to", "keys", "q", "mlp", "layers", "self_attn",
                 "to_q", "unet", "text_encoder", "lora", "lora_A", "lora_up", "base_model", "model", "default",
                 "scaling", "alpha", "modules_to_save", "peft_config", "active_adapter", "A", "_", "a-b"]  # fmt: skip
NAMES = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,70}", fullmatch=True),
    st.sampled_from(LIBRARY_WORDS),
    st.builds(lambda w, s: w + s, st.sampled_from(LIBRARY_WORDS), st.sampled_from(["", "_2", "-x", ".y", "/z", " "])),
)
WEIGHTS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-3, max_value=3),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([True, None, "1", "", [1.0]]),
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def env(assets, lm_assets):
    with EnvPatch.context() as mp:
        mp.setenv("STUDIO_LOCAL_DIRS", f"{assets['root']}:{lm_assets['root']}")
        for name in ("STUDIO_ALLOWED_ORGS", "STUDIO_LOCK_BASE", "STUDIO_MAX_ADAPTER_MB", "STUDIO_MAX_MODEL_MB"):
            mp.delenv(name, raising=False)
        yield


def fast(adapters, **change) -> ImageRequest:
    return ImageRequest("a red circle", adapters, True, 0, **({"steps": 2, "width": 16, "height": 16} | change))


@pytest.fixture(scope="module")
def images(env, assets):
    """The tiny pipeline with lora_b as "ref", and the image it makes at weight 1."""
    studio = ImageStudio(device="cpu")
    studio.load_base(str(assets["pipeline"]))
    studio.load_adapter(str(assets["lora_b"]), adapter_name="ref")
    return studio, studio.generate(fast({"ref": 1.0})).tobytes()


@pytest.fixture(scope="module")
def text(env, lm_assets):
    """The tiny LM with lora_b as "ref" (and lora_a as "a", to merge), and the text "ref" makes."""
    studio = TextStudio(device="cpu")
    studio.load_base(str(lm_assets["lm"]))
    studio.load_adapter(str(lm_assets["lora_b"]), adapter_name="ref")
    studio.load_adapter(str(lm_assets["lora_a"]), adapter_name="a")
    return studio, studio.generate(TextRequest("the pirate", ["ref"], max_new_tokens=8))


# --- names ---------------------------------------------------------------------------------------------------------


def shown(name) -> str:
    """How a refusal names the value: its repr, stripped, and cut to 80 characters like the messages do."""
    stripped = name.strip() if isinstance(name, str) else ""
    if not stripped:
        return repr(name)
    return repr(stripped if len(stripped) <= 80 else stripped[:77] + "...")


@FEW
@given(name=NAMES)
@example(name="training")  # instance attributes of torch's ModuleDict: accepted once, then failed inside peft
@example(name="_modules")
@example(name="q")  # a prefix of "q_proj": must not be confused with module names
@example(name=" padded ")
@example(name="x" * 64)
def test_any_name_is_refused_or_works_end_to_end(name, images, text, assets, lm_assets):
    try:
        checked = limits.check_adapter_name(name)
    except InputError as exc:
        assert shown(name) in str(exc)
        return
    image_studio, image_ref = images
    text_studio, text_ref = text
    taken = {a["adapter_name"] for a in image_studio.list_adapters()} | {"a"}
    if checked in taken:
        return
    image_studio.load_adapter(str(assets["lora_b"]), adapter_name=name)
    assert image_studio.generate(fast({checked: 1.0})).tobytes() == image_ref
    assert [a["adapter_name"] for a in image_studio.delete_adapter(checked)] == ["ref"]
    text_studio.load_adapter(str(lm_assets["lora_b"]), adapter_name=name)
    assert text_studio.generate(TextRequest("the pirate", [checked], max_new_tokens=8)) == text_ref
    assert [a["adapter_name"] for a in text_studio.delete_adapter(checked)] == ["ref", "a"]


# What a Hub id looks like, for drawing ones that mostly pass hub.check_repo_id (which asks huggingface_hub)
HUB_ID_SHAPE = r"^(?:[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?/)?[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$"


@CHEAP
@given(repo_id=st.from_regex(HUB_ID_SHAPE, fullmatch=True), taken=st.sets(st.sampled_from(LIBRARY_WORDS)))
@example(repo_id="org/training", taken=set())
@example(repo_id="org/1-x", taken=set())
def test_derived_names_are_valid_names(repo_id, taken):
    try:
        hub.check_repo_id(repo_id)
    except HubError:
        return
    try:
        name = limits.derive_adapter_name(repo_id, taken)
    except InputError as exc:
        assert "please give adapter_name" in str(exc)
        return
    assert limits.check_adapter_name(name) == name and name not in taken


# --- ids -----------------------------------------------------------------------------------------------------------


@CHEAP
@given(value=st.one_of(st.text(max_size=200), st.builds(lambda s: "/" + s, st.text()), st.none(), st.integers()))
@example(value="/tmp/a\x00b")  # a NUL byte made Path.resolve raise a bare ValueError
@example(value="~nosuchuser/x")
@example(value="./" + "a" * 5000)
@example(value="org/name/")
def test_any_repo_id_opens_or_is_refused(value, env):
    try:
        repo = hub.open_repo(value)
    except HubError as exc:
        assert str(exc)
        return
    assert isinstance(repo, hub.Repo)


@CHEAP
@given(revision=st.one_of(st.text(max_size=200), st.none(), st.integers(), st.floats()))
def test_any_revision_is_checked_or_refused(revision):
    try:
        assert hub.check_revision(revision)
    except HubError as exc:
        assert repr(revision) in str(exc)


@CHEAP
@given(weight_name=st.text(max_size=100))
@example(weight_name="..")
@example(weight_name="a\\b.safetensors")
def test_any_weight_name_picks_a_listed_file_or_is_refused(weight_name):
    listed = ["README.md", "lora.safetensors", "extra.safetensors", "old.bin", "sub/deep.safetensors"]

    class Listed(hub.Repo):
        def list_files(self):
            return listed

    try:
        picked = hub.pick_weight_name(Listed("org/name", "main", None), weight_name)
    except HubError:
        return
    assert picked in listed and picked.endswith(".safetensors") and "/" not in picked


# --- numbers -------------------------------------------------------------------------------------------------------


def _finite_in_range(value) -> bool:
    if isinstance(value, (bool, str, bytes)):  # "0.5" and True are a caller's mistakes, refused (limits.check_number)
        return False
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return math.isfinite(number) and limits.WEIGHT_MIN <= number <= limits.WEIGHT_MAX


@settings(max_examples=30, deadline=None)
@given(weight=WEIGHTS)
@example(weight=float("nan"))
@example(weight=10**400)  # too big for a float: float() raised OverflowError
@example(weight=-2.0)
@example(weight=5e-324)
def test_any_weight_generates_or_is_refused_naming_it(weight, images):
    studio, _ = images
    try:
        image = studio.generate(fast({"ref": weight}))
    except InputError as exc:
        assert not _finite_in_range(weight)
        assert "weight of adapter 'ref'" in str(exc) and repr(weight)[:20] in str(exc)
        return
    assert _finite_in_range(weight) and image.size == (16, 16)


@settings(max_examples=20, deadline=None)
@given(weight=WEIGHTS)
@example(weight=float("-inf"))
@example(weight=10**400)
def test_any_merge_weight_merges_or_is_refused_naming_it(weight, text):
    studio, _ = text
    try:
        merged = studio.merge_adapters({"a": 1.0, "ref": weight}, "m")[-1]
    except InputError as exc:
        assert not _finite_in_range(weight)
        assert "weight of adapter 'ref'" in str(exc) and repr(weight)[:20] in str(exc)
        return
    assert _finite_in_range(weight) and merged["merged_from"] == {"a": 1.0, "ref": float(weight)}
    studio.delete_adapter("m")


SETTING = st.one_of(st.none(), st.integers(-(2**40), 2**40), st.floats(), st.sampled_from(["8", True, [8]]))


@CHEAP
@given(steps=SETTING, width=SETTING, height=SETTING, seed=SETTING, guidance=SETTING, prompt=st.text(max_size=3000))
def test_any_request_is_normalised_or_refused(images, steps, width, height, seed, guidance, prompt):
    """check_request alone (nothing is generated): every field is accepted and normalised, or refused."""
    studio, _ = images
    request = ImageRequest(prompt, {"ref": 1.0}, True, seed, steps, guidance, width, height)
    try:
        checked = studio.check_request(request)
    except StudioError as exc:
        assert type(exc) is InputError and str(exc)
        return
    assert isinstance(checked.steps, int) and checked.width % 8 == 0 and checked.height % 8 == 0
    assert isinstance(checked.seed, int) and math.isfinite(checked.guidance_scale)
