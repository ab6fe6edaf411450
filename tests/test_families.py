"""Every pipeline family (SD, SDXL, SD3, FLUX.1, Qwen-Image) through the studio and the olah Hub server: each
loads by Hub id with its own defaults and ranges, and the same LoRA behaviour holds on each (A != B != mix, the
disable toggle bit for bit, delete keeps the others, fused within rounding of unfused, export round-trips, sweep,
compare); plus the family rules that need no pipeline (dtype by family, call arguments, admin settings)."""

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from peft_core.errors import HubError, InputError
from peft_core.image import families
from peft_core.image.studio import ImageRequest, ImageStudio
from peft_core.image.sweep import sweep
from tests.conftest import pixels, wait_for_the_others
from tests.hubserver import running_hub
from tiny_models.families import FAMILIES, build_tiny_family, family_lora_state_dict
from tiny_models.image import write_repo

pytestmark = [pytest.mark.hub, pytest.mark.slow]

# What each family's pipeline says about itself (its __call__ defaults; SD: the studio's own choice), and the size
# its tiny pipeline makes by default: default_sample_size x vae_scale_factor (8 for all but the tiny SD's 2).
EXPECTED = {
    "sd": dict(pipeline_class="StableDiffusionPipeline", default_steps=25, default_guidance_scale=7.0,
               default_width=32, size_multiple=8),
    "sdxl": dict(pipeline_class="StableDiffusionXLPipeline", default_steps=50, default_guidance_scale=5.0,
                 default_width=256, size_multiple=8),
    "sd3": dict(pipeline_class="StableDiffusion3Pipeline", default_steps=28, default_guidance_scale=7.0,
                default_width=256, size_multiple=8, guidance_max=20.0),
    "flux": dict(pipeline_class="FluxPipeline", default_steps=28, default_guidance_scale=3.5, default_width=1024,
                 size_multiple=16, steps_max=50, guidance_max=10.0),
    "qwenimage": dict(pipeline_class="QwenImagePipeline", default_steps=50, default_guidance_scale=4.0,
                      default_width=1024, size_multiple=16, guidance_max=10.0),
}  # fmt: skip
# A fused image differs from the unfused one by floating-point rounding only (as tests/test_slots.py states).
FUSED_TOLERANCE = 2


@pytest.fixture(scope="module")
def family_hub(tmp_path_factory, one_thread):
    """An olah Hub serving each family's tiny pipeline (test-org/tiny-<family>) and two LoRAs for it
    (test-org/<family>-a touching the text encoders too where the family's loader takes them, test-org/<family>-b)."""
    root = tmp_path_factory.mktemp("families")
    with running_hub(tmp_path_factory.mktemp("families-hub")) as server:
        for family in FAMILIES:
            pipe = build_tiny_family(family, root / family)
            a = family_lora_state_dict(pipe, family, seed=1, text_encoders=True)
            b = family_lora_state_dict(pipe, family, seed=2)
            server.add_repo(f"test-org/tiny-{family}", root / family)
            for name, state in (("a", a), ("b", b)):
                repo = write_repo(root / f"{family}-{name}", {"pytorch_lora_weights.safetensors": state})
                server.add_repo(f"test-org/{family}-{name}", repo)
        yield server


@pytest.fixture(scope="module")
def studios(family_hub):
    """One studio per family, loaded by Hub id on first use, with adapters "a" and "b" loaded by Hub id."""
    made = {}

    def get(family):
        if family not in made:
            studio = ImageStudio(device="cpu")
            studio.load_base(f"test-org/tiny-{family}")
            for name in ("a", "b"):
                studio.load_adapter(f"test-org/{family}-{name}", adapter_name=name)
            made[family] = studio
        return made[family]

    return get


def request(mix=None, use_adapters=True, **fields) -> ImageRequest:
    """A fast request: 2 steps at 32x32 (a multiple of every family's size multiple)."""
    fields = {"seed": 0, "steps": 2, "guidance_scale": 3.0, "width": 32, "height": 32} | fields
    return ImageRequest("a red circle", mix or {}, use_adapters, **fields)


def gen(studio, mix=None, use_adapters=True, **fields) -> np.ndarray:
    return pixels(studio.generate(request(mix, use_adapters, **fields)))


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_by_hub_id_with_the_familys_defaults(studios, family):
    info = studios(family).base_info().to_dict()  # as /load_pipeline answers it
    expected = EXPECTED[family]
    assert info["family"] == family and info["model_id"] == f"test-org/tiny-{family}"
    assert {key: info[key] for key in expected} == expected
    assert info["default_height"] == info["default_width"]
    assert info["dtype"] == "float32" and info["offload"] == "none"  # a CPU, whatever the family
    assert info["negative_prompt"] is True  # every family here takes one (FLUX: with true CFG)
    adapters = {a["adapter_name"]: a for a in studios(family).list_adapters()}
    denoiser = "unet" if family in ("sd", "sdxl") else "transformer"
    assert denoiser in adapters["a"]["components"] and adapters["b"]["components"] == [denoiser]
    both = ["text_encoder", "text_encoder_2"]
    text_encoders = {"sd": both[:1], "sdxl": both, "sd3": both, "flux": both[:1], "qwenimage": []}[family]
    assert sorted(adapters["a"]["components"]) == sorted([denoiser, *text_encoders])


@pytest.mark.parametrize("family", FAMILIES)
def test_a_b_and_mix_differ_and_disable_is_the_base_bit_for_bit(studios, family):
    studio = studios(family)
    base = gen(studio)
    a, b, mix = gen(studio, {"a": 1.0}), gen(studio, {"b": 1.0}), gen(studio, {"a": 1.0, "b": 1.0})
    assert not np.array_equal(a, base) and not np.array_equal(b, base) and not np.array_equal(a, b)
    assert not np.array_equal(mix, a) and not np.array_equal(mix, b)
    assert np.array_equal(gen(studio, {"a": 1.0, "b": 1.0}, use_adapters=False), base)
    assert np.array_equal(gen(studio, {}), base)
    assert np.array_equal(gen(studio, {"a": 1.0}), a)  # back to a: the same bits
    base_image, adapted = studio.compare(request({"a": 1.0}))
    assert np.array_equal(pixels(base_image), base) and np.array_equal(pixels(adapted), a)


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_is_within_rounding_of_unfused(studios, family, monkeypatch):
    monkeypatch.setenv("STUDIO_FUSE", "0")
    plain = ImageStudio(device="cpu")
    plain.load_base(f"test-org/tiny-{family}")
    for name in ("a", "b"):
        plain.load_adapter(f"test-org/{family}-{name}", adapter_name=name)
    fused = studios(family)
    mix = {"a": 0.8, "b": -0.5}
    fused_image, plain_image = gen(fused, mix), gen(plain, mix)
    assert fused.slots.fused and not plain.slots.fused
    assert np.abs(fused_image - plain_image).max() <= FUSED_TOLERANCE
    assert not np.array_equal(fused_image, gen(fused, use_adapters=False))


@pytest.mark.parametrize("family", FAMILIES)
def test_export_round_trips_sweep_and_delete(studios, family, tmp_path, monkeypatch):
    studio = studios(family)
    mix = {"a": 0.7, "b": -0.4}
    path = studio.export_mix(mix, tmp_path / "out")
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", str(tmp_path))
    studio.load_adapter(str(path.parent), adapter_name="mixed")
    # the exported file is the mix exactly in real numbers; fused, its sums round in another order. Exported after
    # other mixes ran at other weights (the earlier tests): the file must not carry their weights.
    assert np.abs(gen(studio, mix) - gen(studio, {"mixed": 1.0})).max() <= FUSED_TOLERANCE
    cells = sweep(studio, request({"b": 0.5}), "a", [0.0, 1.0])
    assert [label for _, label in cells] == ["a=0", "a=1"]
    for (image, _), weight in zip(cells, (0.0, 1.0), strict=True):
        assert np.array_equal(pixels(image), gen(studio, {"a": weight, "b": 0.5}))
    b = gen(studio, {"b": 1.0})
    studio.delete_adapter("mixed")
    studio.delete_adapter("a")
    assert [a["adapter_name"] for a in studio.list_adapters()] == ["b"]
    assert np.array_equal(gen(studio, {"b": 1.0}), b)
    studio.load_adapter(f"test-org/{family}-a", adapter_name="a")  # as the other tests expect it


@pytest.mark.parametrize(
    "family, fields, message",
    [
        ("flux", {"width": 40}, r"width must be a multiple of 16 in \[16, 1024\], got 40 \(FLUX\.1's range\)"),
        ("flux", {"steps": 60}, r"steps must be an integer in \[1, 50\], got 60 \(FLUX\.1's range\)"),
        ("qwenimage", {"height": 8}, r"height must be an integer in \[16, 1024\], got 8 \(Qwen-Image's range\)"),
        ("sd3", {"guidance_scale": 25}, r"guidance_scale must be a finite number in \[0\.0, 20\.0\], got 25 \(SD 3"),
        ("sdxl", {"width": 36}, r"width must be a multiple of 8 in \[8, 1024\], got 36 \(SDXL's range\)"),
    ],
)
def test_a_request_outside_the_familys_range_is_refused_naming_it(studios, family, fields, message):
    studio = studios(family)
    before = studio.list_adapters(), gen(studio, {"a": 1.0})
    with pytest.raises(InputError, match=message):
        studio.generate(request({"a": 1.0}, **fields))
    assert studio.list_adapters() == before[0] and np.array_equal(gen(studio, {"a": 1.0}), before[1])


def test_negative_prompt_reaches_each_family(studios):
    """SD3 and SDXL take it as they are; FLUX only with true CFG (sent with it); Qwen-Image's guidance is true CFG."""
    for family in ("sdxl", "sd3", "flux", "qwenimage"):
        studio = studios(family)
        assert not np.array_equal(gen(studio, negative_prompt="blurry"), gen(studio)), family


def test_a_pipeline_without_a_lora_loader_is_refused_before_the_download(studios, family_hub, tmp_path):
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    blocks = {"down_block_types": ("DownBlock2D",) * 2, "up_block_types": ("UpBlock2D",) * 2}
    unet = UNet2DModel(block_out_channels=(4, 8), layers_per_block=1, sample_size=8, norm_num_groups=2, **blocks)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "ddpm", safe_serialization=True)
    family_hub.add_repo("test-org/tiny-ddpm", tmp_path / "ddpm")
    studio = studios("flux")
    before = studio.base_info(), studio.list_adapters()
    with pytest.raises(HubError, match="'test-org/tiny-ddpm' is a DDPMPipeline, which diffusers gives no LoRA loader"):
        studio.load_base("test-org/tiny-ddpm")
    assert (studio.base_info(), studio.list_adapters()) == before


def test_eight_parallel_clients_get_their_solo_images_on_flux(studios):
    studio = studios("flux")
    mixes = [{"a": 1.0}, {"b": 1.0}, {"a": 0.5, "b": 0.5}, {}, {"a": -1.0}, {"b": 0.3}, {"a": 1.0, "b": -1.0}, {}]
    solo = [gen(studio, mix, seed=i) for i, mix in enumerate(mixes)]
    results, errors = [None] * len(mixes), []

    def client(i):
        try:
            results[i] = gen(studio, mixes[i], seed=i)
        except Exception as exc:  # reported below, with the client's number
            errors.append((i, exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(mixes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors
    assert all(np.array_equal(r, s) for r, s in zip(results, solo, strict=True))


@pytest.mark.parametrize("family", FAMILIES)
def test_two_visitors_alternating_step_by_step_get_their_solo_images(studios, family):
    """Each family's declared call state (families.Family.call_state) at work: two visitors with other adapters,
    seeds and guidance hand the pipeline to each other between steps and still get what each gets alone."""
    studio = studios(family)
    visitors = {"A": dict(mix={"a": 1.0}, seed=0, guidance_scale=4.0), "B": dict(mix={"b": 1.0}, seed=5,
                guidance_scale=1.5)}  # fmt: skip
    solo = {name: gen(studio, steps=4, **v) for name, v in visitors.items()}
    order, results, first_stepped = [], {}, threading.Event()

    def visitor(name):
        if name == "B":
            first_stepped.wait()
        v = dict(visitors[name])
        req = request(v.pop("mix"), steps=4, **v)

        def progress(step, total):
            order.append(name)
            if name == "A" and not first_stepped.is_set():
                first_stepped.set()
                wait_for_the_others(studio)  # else A may take every step before B asks for the lock

        results[name] = pixels(studio.generate(req, progress))

    threads = [threading.Thread(target=visitor, args=(name,)) for name in visitors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert order.index("B") < len(order) - 1 - order[::-1].index("A")  # A stepped again after B's first step
    for name in visitors:
        np.testing.assert_array_equal(results[name], solo[name])


# --- the family rules that need no pipeline ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "family, configs, card, expected",
    [
        ("flux", {}, None, "bfloat16"),
        ("qwenimage", {}, None, "bfloat16"),
        ("sdxl", {}, None, "float16"),
        ("sd", {}, None, "float16"),
        ("sd3", {"transformer/config.json": {"qk_norm": None}}, None, "float16"),  # SD 3 medium
        ("sd3", {"transformer/config.json": {"qk_norm": "rms_norm"}}, None, "bfloat16"),  # SD 3.5
        ("sdxl", {}, "bfloat16", "bfloat16"),  # the model card's studio_defaults.dtype
    ],
)
def test_dtype_on_cuda_follows_the_family(family, configs, card, expected, monkeypatch):
    monkeypatch.delenv("STUDIO_DTYPE", raising=False)
    assert families.dtype_name(families.FAMILIES[family], "cuda", configs, card) == expected
    assert families.dtype_name(families.FAMILIES[family], "cpu", configs, card) == "float32"
    monkeypatch.setenv("STUDIO_DTYPE", "float16")  # the admin's choice wins everywhere
    assert families.dtype_name(families.FAMILIES[family], "cuda", configs, card) == "float16"
    assert families.dtype_name(families.FAMILIES[family], "cpu", configs, card) == "float16"


# What a family's __call__ assigns on the pipeline object and does not read again between two steps, so it is no
# call state: SDXL upcasts its VAE for decoding, after the last step, and casts it back in the same turn.
ASSIGNED_OUTSIDE_THE_LOOP = {"vae"}


def _assigned_on_self(function) -> set[str]:
    """The attributes `function` assigns on `self` (`self._guidance_scale = ...`), read from its source."""
    import ast
    import inspect
    import textwrap

    names = set()
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(function)))):
        targets = node.targets if isinstance(node, ast.Assign) else getattr(node, "target", None)
        for target in targets if isinstance(targets, list) else [targets] if targets is not None else []:
            for part in ast.walk(target):
                if isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name) and part.value.id == "self":
                    names.add(part.attr)
    return names


@pytest.mark.parametrize("family", sorted(families.FAMILIES))
def test_each_family_declares_exactly_the_state_its_call_keeps_on_the_pipeline(family):
    """A visitor's call resumed after another's gets its own images only if every attribute its `__call__` keeps on
    the shared pipeline is saved and put back (tests/test_turns.py): the day diffusers sets another one, or stops
    setting one, this fails naming it."""
    import diffusers

    declared = families.FAMILIES[family].call_state
    assert declared is not None and len(set(declared)) == len(declared)
    for cls in families.FAMILIES[family].classes:
        assigned = _assigned_on_self(getattr(diffusers, cls).__call__) - ASSIGNED_OUTSIDE_THE_LOOP
        assert assigned == set(declared), f"{cls}: assigns {sorted(assigned)}, declared {sorted(declared)}"


def test_a_pipeline_of_no_known_family_declares_nothing_so_runs_in_one_turn():
    assert families.GENERIC.call_state is None
    assert families.family_of("StableDiffusionUpscalePipeline") is families.GENERIC


def test_call_arguments_are_the_ones_each_pipeline_takes():
    def fake(name, **parameters):
        exec(f"def __call__(self, {', '.join(f'{k}={v!r}' for k, v in parameters.items())}): pass", ns := {})
        return type(name, (), {"__call__": ns["__call__"]})()

    checked = request(negative_prompt="blurry")
    flux = fake("FluxPipeline", prompt=None, negative_prompt=None, true_cfg_scale=1.0, guidance_scale=3.5,
                num_inference_steps=28, width=None, height=None)  # fmt: skip
    assert families.call_arguments(flux, families.FLUX, checked)["true_cfg_scale"] == families.TRUE_CFG_WITH_NEGATIVE
    assert "true_cfg_scale" not in families.call_arguments(flux, families.FLUX, request())
    qwen = fake("QwenImagePipeline", prompt=None, negative_prompt=None, true_cfg_scale=4.0, guidance_scale=None,
                num_inference_steps=50, width=None, height=None)  # fmt: skip
    assert families.call_arguments(qwen, families.QWENIMAGE, checked) == {
        "prompt": "a red circle", "negative_prompt": "blurry", "true_cfg_scale": 3.0, "num_inference_steps": 2,
        "width": 32, "height": 32,
    }  # fmt: skip
    # a generic pipeline without negative_prompt or guidance: neither is sent
    plain = fake("SomePipeline", prompt=None, num_inference_steps=10, width=None, height=None)
    assert families.call_arguments(plain, families.GENERIC, checked) == {
        "prompt": "a red circle", "num_inference_steps": 2, "width": 32, "height": 32
    }  # fmt: skip
    assert families.family_of("StableDiffusionXLPipeline") is families.SDXL
    assert families.family_of("KandinskyPipeline") is families.GENERIC
    assert families.call_default(plain, "num_inference_steps") == 10
    assert families.native_size(SimpleNamespace(default_sample_size=128, vae_scale_factor=8)) == 1024


@pytest.mark.parametrize("name, value", [("STUDIO_DTYPE", "half"), ("STUDIO_OFFLOAD", "sequential")])
def test_bad_dtype_or_offload_setting_is_refused_by_name(monkeypatch, name, value):
    from peft_core import settings

    monkeypatch.setenv(name, value)
    with pytest.raises(InputError, match=rf"admin setting {name}='{value}' must be one of"):
        settings.current()


def test_offload_applies_on_cuda_only(monkeypatch):
    monkeypatch.setenv("STUDIO_OFFLOAD", "model")
    assert families.offload_mode("cpu") == "none" and families.offload_mode("cuda") == "model"
    monkeypatch.setenv("STUDIO_OFFLOAD", "group")
    assert families.offload_mode("cuda:0") == "group"


def test_model_card_defaults_win_and_must_fit_the_family(studios, family_hub, tmp_path):
    import shutil

    source = studios("flux").pipe.config._name_or_path  # the snapshot the flux studio loaded
    for name, card in (("good", "steps: 4\n  width: 64\n  height: 48\n  dtype: bfloat16"), ("bad", "width: 40")):
        folder = shutil.copytree(source, tmp_path / name)
        (folder / "README.md").write_text(f"---\nstudio_defaults:\n  {card}\n---\n# a FLUX.1 card\n")
        family_hub.add_repo(f"test-org/flux-card-{name}", folder)
    studio = ImageStudio(device="cpu")
    info = studio.load_base("test-org/flux-card-good")
    assert (info.default_steps, info.default_width, info.default_height) == (4, 64, 48)
    assert info.default_guidance_scale == 3.5 and info.dtype == "float32"  # the card's dtype is for CUDA
    with pytest.raises(HubError, match=r"studio_defaults\.width must be a multiple of 16 in \[16, 1024\], got 40"):
        studio.load_base("test-org/flux-card-bad")
    assert studio.base_info() == info


@pytest.mark.parametrize("mode", ["model", "group"])
def test_offload_setting_reaches_diffusers(studios, monkeypatch, mode):
    """What a CPU can check of STUDIO_OFFLOAD: on CUDA the build hands the pipeline to diffusers' offloading (which
    then owns device placement) instead of moving it; the offloaded runs themselves need a GPU."""
    import torch
    from diffusers import FluxPipeline

    from peft_core.image import pipeline

    folder = studios("flux").pipe.config._name_or_path
    calls = []
    monkeypatch.setattr(FluxPipeline, "enable_model_cpu_offload", lambda self, device=None: calls.append(device))
    monkeypatch.setattr(
        FluxPipeline, "enable_group_offload", lambda self, onload_device, **kw: calls.append(str(onload_device))
    )
    monkeypatch.setattr(FluxPipeline, "to", lambda self, *a, **kw: pytest.fail("an offloaded pipeline is not moved"))
    assert type(pipeline.build("test-org/tiny-flux", folder, "cuda", torch.float32, mode)) is FluxPipeline
    assert calls == ["cuda"]


def test_fusion_budget_follows_the_gpu(monkeypatch):
    """On CUDA the fusion copies live in the GPU's memory: their budget defaults to a share of it."""
    import torch

    from peft_core import settings

    monkeypatch.delenv("STUDIO_FUSE_MAX_MB", raising=False)
    monkeypatch.setenv("STUDIO_DEVICE", "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=140 * 2**30))
    assert settings.current().fuse_max_mb == 140 * 1024 * settings.FUSE_GPU_SHARE
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=8 * 2**30))
    settings.reload()  # another GPU: the settings are read again (an env change does it by itself, conftest.py)
    assert settings.current().fuse_max_mb == 4096  # never below the CPU's default
    monkeypatch.setenv("STUDIO_FUSE_MAX_MB", "1000")  # the admin's number wins
    assert settings.current().fuse_max_mb == 1000
    monkeypatch.setenv("STUDIO_DEVICE", "cpu")
    monkeypatch.delenv("STUDIO_FUSE_MAX_MB")
    assert settings.current().fuse_max_mb == 4096


@pytest.mark.parametrize("family", FAMILIES)
def test_the_pages_sliders_offer_exactly_the_familys_range(studios, family, monkeypatch):
    """The Images tab's sliders take their ranges from /load_pipeline's answer: their ends are requests the studio
    accepts, and one step past an end is refused (a slider never offers a refused value, nor hides a valid one)."""
    from ui.image_handlers import ranges

    monkeypatch.setenv("STUDIO_MAX_IMAGE_COST", "1000000")  # the ranges alone, not the admin's work budget
    studio = studios(family)
    info = studio.base_info()
    r = ranges(info, {"width": info.default_width, "height": info.default_height})
    assert r["width"]["step"] == info.size_multiple and r["width"]["minimum"] == info.size_min
    for edge in ("minimum", "maximum"):
        studio.check_request(request(steps=r["steps"][edge], guidance_scale=r["guidance_scale"][edge],
                                     width=r["width"][edge], height=r["height"][edge]))  # fmt: skip
    past = {"steps": 1, "guidance_scale": 0.5, "width": r["width"]["step"]}
    for name, delta in past.items():
        for edge, sign in (("minimum", -1), ("maximum", 1)):
            if name in ("width", "height") and edge == "maximum" and r[name][edge] < info.size_max:
                continue  # the size sliders stop at 4x the default, below the family's own maximum
            with pytest.raises(InputError):
                studio.check_request(request(**{name: r[name][edge] + sign * delta}))
