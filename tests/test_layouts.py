"""Every LoRA layout people publish, per pipeline family: it loads (every layer it names registered, per component,
and the image of the same weights in peft layout) or it is refused for the right reason, leaving everything as it
was. Each row here is a row of docs/LAYOUTS.md; the files are keyed by tests/layout_keys.py's rules.
"""

import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from peft_core.errors import AdapterError
from peft_core.image import pipeline
from peft_core.image.lora_report import made_for
from tests.conftest import family_studio, gen
from tests.layout_keys import (
    ATTENTION,
    CLIP_ATTENTION,
    KOHYA_LOCON,
    KOHYA_SDXL_PREFIX,
    KOHYA_TE,
    KOHYA_UNET,
    PROJECTIONS,
    XLABS_DOUBLE,
    attn_procs,
    flat,
    flux_bfl_layers,
    flux_kohya,
    flux_xlabs,
    kohya,
    lora_layers,
    old_diffusers,
    old_text_encoder,
    only,
    peft,
    scaled,
    sgm_name,
)

pytestmark = pytest.mark.usefixtures("one_thread")
RANK = 4
SD_METADATA = {"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora", "ss_network_dim": "4",
               "ss_network_alpha": "2.0", "modelspec.architecture": "stable-diffusion-v1/lora"}  # fmt: skip

# Which layers each kind of file adapts (the rules in layout_keys.py).
RULES = {
    "attention": {"unet": (ATTENTION, False, PROJECTIONS)},
    "attention+te": {"unet": (ATTENTION, False, PROJECTIONS), "text_encoder": (CLIP_ATTENTION, False, ())},
    "kohya": {"unet": KOHYA_UNET, "text_encoder": KOHYA_TE},
    "locon": {"unet": (KOHYA_LOCON, True, ())},
}
# row -> (the layers it adapts, the file's state dict from those layers, the layout detected, alpha / rank)
SD_ROWS = {
    "peft (diffusers >= 0.22, unet. + text_encoder.)": ("attention+te", peft, "peft", 1.0),
    "kohya, alpha keys (= rank)": ("kohya", lambda L: kohya(L, alpha=RANK), "kohya", 1.0),
    "kohya, alpha keys (= rank / 2)": ("kohya", lambda L: kohya(L, alpha=RANK / 2), "kohya", 0.5),
    "kohya, no alpha keys": ("kohya", kohya, "kohya", 1.0),
    "kohya LoCon (3x3 convolutions)": ("locon", lambda L: kohya(L, alpha=RANK), "kohya", 1.0),
    "attention processors, unet. prefix": ("attention", attn_procs, "attn-procs", 1.0),
    "attention processors, no prefix": ("attention", lambda L: attn_procs(L, prefix=""), "attn-procs", 1.0),
    "old diffusers (LoRACompatibleLinear)": ("attention", old_diffusers, "old-diffusers", 1.0),
    "old text encoder (lora_linear_layer) + attention processors": (
        "attention+te",
        lambda L: attn_procs(L) | old_text_encoder(L),
        "attn-procs",
        1.0,
    ),
}


def _write(folder, state, metadata=None):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "lora.safetensors", metadata=metadata)
    return str(folder)


@pytest.fixture(scope="module")
def sd_pipe(assets):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(assets["pipeline"])


def _loaded(studio, name):
    info = next(a for a in studio.list_adapters() if a["adapter_name"] == name)
    return info, pipeline.registered_modules(studio.pipe, studio.slots.slot_of(name))


@pytest.mark.parametrize("row", list(SD_ROWS))
def test_sd_layout_loads_every_layer_like_peft(studio, sd_pipe, tmp_path, monkeypatch, row):
    """Each SD 1.x layout: every layer it names is registered in the component it names, and the image is the one
    the same weights give in peft layout (alpha / rank applied as kohya and diffusers do)."""
    rules, write, layout, factor = SD_ROWS[row]
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{studio.info.model_id}:{tmp_path}")
    layers = lora_layers(sd_pipe, RULES[rules], seed=3)
    metadata = SD_METADATA if "kohya" in row else None
    base = gen(studio)
    studio.load_adapter(_write(tmp_path / "ref", peft(scaled(layers, factor))), adapter_name="ref")
    expected = gen(studio, {"ref": 1.0})
    studio.load_adapter(_write(tmp_path / "row", write(layers), metadata), adapter_name="row")
    info, registered = _loaded(studio, "row")
    assert info["layout"] == layout
    report = info["report"]
    assert report["matched"] == report["named"] == {c: len(m) for c, m in sorted(layers.items())}
    assert {c: sorted(m) for c, m in registered.items()} == flat(layers, sd_pipe)
    assert report["unmatched"] == []
    if "no alpha" in row or layout != "kohya":
        assert report["alpha"].startswith("no alpha keys: alpha = rank")
    else:
        assert report["alpha"] == f"alpha keys on every layer ({RANK * factor:g}); scaling alpha / rank"
    if metadata:
        assert report["metadata"]["ss_base_model_version"] == "sd_v1"
    image = gen(studio, {"row": 1.0})
    assert not np.array_equal(image, base)
    assert np.abs(image - expected).max() <= 1  # the same weights: at most float rounding apart


def test_half_matching_file_is_refused_with_its_report(studio, sd_pipe, tmp_path, monkeypatch):
    """A kohya file of which two layers name modules the base lacks: refused, saying which, nothing changed."""
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{studio.info.model_id}:{tmp_path}")
    layers = lora_layers(sd_pipe, RULES["kohya"], seed=3)
    state = kohya(layers, alpha=RANK)
    moved = sorted(k for k in state if "attn1_to_q" in k and k.startswith("lora_unet_up_blocks_0_attentions_"))
    state |= {k.replace("attn1_to_q", "attn9_to_q"): state.pop(k) for k in moved}
    studio.load_adapter(_write(tmp_path / "good", peft(layers)), adapter_name="good")
    before = studio.list_adapters(), gen(studio, {"good": 1.0})
    named = len(layers["unet"])
    with pytest.raises(AdapterError) as refused:
        studio.load_adapter(_write(tmp_path / "half", state), adapter_name="partly")
    message = str(refused.value)
    assert ("it names 1 layer under up_blocks.0.attentions.0.transformer_blocks.0 that it has no module for (such "
            "as attn9_to_q)") in message
    assert " (kohya layout; layers registered/named: " in message
    te = len(layers["text_encoder"])
    assert f"layers registered/named: text_encoder {te}/{te}, unet {named - 2}/{named}; " in message
    assert "lora_unet_up_blocks_0_attentions_0_transformer_blocks_0_attn9_to_q.lora_down.weight" in message
    assert studio.list_adapters() == before[0] and np.array_equal(gen(studio, {"good": 1.0}), before[1])


@pytest.mark.parametrize(
    "width, family",
    [
        (768, "SD 1.x (cross-attention 768)"),
        (1024, "SD 2.x (cross-attention 1024)"),
        (2048, "SDXL (cross-attention 2048)"),
    ],  # fmt: skip
)
def test_family_from_the_cross_attention_width(width, family):
    """Real files' attn2 key/value down matrices take the text encoder's width (sd-scripts, diffusers)."""
    from peft_core.image.lora_report import cross_attention_width

    header = {
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": {"shape": [4, width]}
    }
    assert made_for(list(header), cross_attention_width(header)) == family


def test_flux_and_sd3_keys_name_their_family():
    assert made_for(["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"], None).startswith("FLUX")
    assert made_for(["transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight"], None).startswith("FLUX")
    assert made_for(["lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight"], None).startswith("SD3")


# --- SDXL ---------------------------------------------------------------------------------------------------------

SDXL_RULES = {
    "attention+te": {
        "unet": (ATTENTION, False, PROJECTIONS),
        "text_encoder": (CLIP_ATTENTION, False, ()),
        "text_encoder_2": (CLIP_ATTENTION, False, ()),
    },  # fmt: skip
    "kohya": {"unet": KOHYA_UNET, "text_encoder": KOHYA_TE, "text_encoder_2": KOHYA_TE},
}
SDXL_ROWS = {
    "peft (unet. + text_encoder. + text_encoder_2.)": ("attention+te", lambda L, u: peft(L), "peft", 1.0),
    "kohya sgm names (kohya SDXL trainer, A1111/Civitai), te1/te2, alpha": (
        "kohya",
        lambda L, u: kohya(L, alpha=RANK / 2, prefix=KOHYA_SDXL_PREFIX, unet_name=sgm_name(u)),
        "kohya",
        0.5,
    ),
    "kohya sgm names, no alpha keys": (
        "kohya",
        lambda L, u: kohya(L, prefix=KOHYA_SDXL_PREFIX, unet_name=sgm_name(u)),
        "kohya",
        1.0,
    ),
    "kohya diffusers names (diffusers' convert_state_dict_to_kohya), te1/te2, alpha": (
        "kohya",
        lambda L, u: kohya(L, alpha=RANK, prefix=KOHYA_SDXL_PREFIX),
        "kohya",
        1.0,
    ),
}


@pytest.fixture(scope="module")
def sdxl(tiny_family):
    return tiny_family("sdxl")


@pytest.fixture
def sdxl_studio(sdxl, monkeypatch, tmp_path):
    return family_studio(sdxl, monkeypatch, tmp_path)


@pytest.mark.parametrize("row", list(SDXL_ROWS))
def test_sdxl_layout_loads_every_layer_like_peft(sdxl_studio, sdxl, tmp_path, row):
    rules, write, layout, factor = SDXL_ROWS[row]
    pipe = sdxl[1]
    layers = lora_layers(pipe, SDXL_RULES[rules], seed=5, scale=0.5)
    base = gen(sdxl_studio)
    sdxl_studio.load_adapter(_write(tmp_path / "ref", peft(scaled(layers, factor))), adapter_name="ref")
    expected = gen(sdxl_studio, {"ref": 1.0})
    sdxl_studio.load_adapter(_write(tmp_path / "row", write(layers, pipe.unet)), adapter_name="row")
    info, registered = _loaded(sdxl_studio, "row")
    assert info["layout"] == layout and info["components"] == ["text_encoder", "text_encoder_2", "unet"]
    assert info["report"]["matched"] == info["report"]["named"] == {c: len(m) for c, m in sorted(layers.items())}
    assert {c: sorted(m) for c, m in registered.items()} == flat(layers, pipe)
    image = gen(sdxl_studio, {"row": 1.0})
    assert not np.array_equal(image, base)
    assert np.abs(image - expected).max() <= 1


def test_sdxl_file_on_sd_base_and_back_are_refused_naming_both(studio, sdxl_studio, sd_pipe, sdxl, tmp_path):
    """A file made for the other family is refused before the load, with both families' widths named."""
    xl = _write(tmp_path / "xl", kohya(only(lora_layers(sdxl[1], SDXL_RULES["kohya"], seed=1), "unet"), alpha=4))
    sd = _write(tmp_path / "sd", kohya(only(lora_layers(sd_pipe, RULES["kohya"], seed=1), "unet"), alpha=4))
    with pytest.raises(AdapterError, match=r"was made for a UNet \(cross-attention 64\); the loaded base .* is "
                       r"StableDiffusionPipeline \(cross-attention 32\)"):  # fmt: skip
        studio.load_adapter(xl, adapter_name="xl")
    with pytest.raises(AdapterError, match=r"made for a UNet \(cross-attention 32\); .* is StableDiffusionXLPipeline"):
        sdxl_studio.load_adapter(sd, adapter_name="sd")
    assert studio.list_adapters() == [] and sdxl_studio.list_adapters() == []


# --- FLUX ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flux(tiny_family):
    return tiny_family("flux")


@pytest.fixture
def flux_studio(flux, monkeypatch, tmp_path):
    return family_studio(flux, monkeypatch, tmp_path)


FLUX_ROWS = {
    "peft / diffusers / ai-toolkit (transformer.)": ("peft", None),
    "kohya / BFL names (lora_unet_double_blocks_...), alpha": ("kohya", lambda L: flux_kohya(L, alpha=RANK)),
    "kohya / BFL names, no alpha keys": ("kohya", flux_kohya),
    "XLabs (double_blocks.0.processor.qkv_lora1)": ("xlabs", flux_xlabs),
}


@pytest.mark.parametrize("row", list(FLUX_ROWS))
def test_flux_layout_registers_the_modules_it_names(flux_studio, flux, tmp_path, row):
    """Each FLUX layout: the registered modules are exactly those the file's layers are (a qkv layer is three), all
    in the transformer; the output changes; disabled is the base."""
    from tiny_models.families import family_lora_state_dict

    layout, write = FLUX_ROWS[row]
    transformer = flux[1].transformer
    if layout == "peft":
        state = family_lora_state_dict(flux[1], "flux", seed=2)
        expected = sorted({k.removeprefix("transformer.").rpartition(".lora_")[0] for k in state})
    else:
        layers = flux_bfl_layers(transformer, seed=2)
        state = write(layers)
        kept = [k for k in layers if layout != "xlabs" or (k[0] == "double" and k[2] in XLABS_DOUBLE.values())]
        expected = sorted(m for key in kept for m in layers[key][2])
    base = gen(flux_studio)
    info = flux_studio.load_adapter(_write(tmp_path / "row", state), adapter_name="row")[0]
    assert info["layout"] == layout and info["components"] in (["transformer"], ["unet"])
    assert info["report"]["made_for"].startswith("FLUX")
    registered = pipeline.registered_modules(flux_studio.pipe, flux_studio.slots.slot_of("row"))
    assert list(registered) == ["transformer"] and sorted(registered["transformer"]) == expected
    image = gen(flux_studio, {"row": 1.0})
    assert not np.array_equal(image, base)
    assert np.array_equal(gen(flux_studio, {"row": 1.0}, use_adapters=False), base)


def test_flux_file_on_sd_base_is_refused_naming_both(studio, flux, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{studio.info.model_id}:{tmp_path}")
    state = flux_kohya(flux_bfl_layers(flux[1].transformer, seed=2), alpha=RANK)
    with pytest.raises(AdapterError, match=r"but none match .*made for FLUX \(double/single blocks\); the loaded base "
                       r"is StableDiffusionPipeline"):  # fmt: skip
        studio.load_adapter(_write(tmp_path / "flux", state), adapter_name="flux")
    assert studio.list_adapters() == []


# --- the refusals' reasons ---------------------------------------------------------------------------------------


def _families_said(message: str) -> tuple[bool, bool]:
    """(the message claims the file was made for another family, the families it names are the same)."""
    said = re.findall(r"made for (.+?)[;)] the loaded base (?:.* )?is (.+?)(?:\)|;|$)", message)
    claims = "it was made for " in message or " was made for " in message.split(" (")[0]
    same = any(a.split(" (")[-1] == b.split(" (")[-1] for a, b in said)
    return claims, same


def _refusal_cases(sd_pipe, flux_transformer):
    """{row: (studio kind, state dict, a regex the reason must match)}: each refusal row of docs/LAYOUTS.md."""
    layers = lora_layers(sd_pipe, RULES["kohya"], seed=3)
    half = kohya(layers, alpha=RANK)
    moved = sorted(k for k in half if "attn1_to_q" in k and k.startswith("lora_unet_up_blocks_0_attentions_"))
    half |= {k.replace("attn1_to_q", "attn9_to_q"): half.pop(k) for k in moved}
    attention = peft(lora_layers(sd_pipe, RULES["attention"], seed=4))
    blocks = len(sd_pipe.unet.down_blocks)
    deeper = {k.replace("unet.down_blocks.1.", f"unet.down_blocks.{blocks + 3}."): v.clone()
              for k, v in attention.items()}  # fmt: skip
    second = {k.replace("unet.", "text_encoder_2.", 1): v.clone() for k, v in attention.items() if "attn1.to_q" in k}
    singles = len(flux_transformer.single_transformer_blocks)
    flux = {f"transformer.single_transformer_blocks.{singles + 10}.attn.to_q.lora_{h}.weight": torch.randn(*shape)
            for h, shape in (("A", (4, flux_transformer.config.num_attention_heads *
                                      flux_transformer.config.attention_head_dim)), ("B", (4, 4)))}  # fmt: skip
    return {
        "half-matching kohya file": ("sd", half, r"it names 1 layer under up_blocks\.0\.attentions\.0\."
                                     r"transformer_blocks\.0 that it has no module for \(such as attn9_to_q\)"),
        "blocks past the base's depth": ("sd", attention | deeper, rf"it names down_blocks\.{blocks + 3} but this "
                                         rf"SD 1\.x/2\.x has {blocks}"),
        "a part the base lacks": ("sd", attention | second, r"it names layers of text_encoder_2, which this SD "
                                  r"1\.x/2\.x pipeline does not have"),
        "FLUX blocks past the base's depth": ("flux", flux, rf"it names single_transformer_blocks\.{singles + 10} "
                                              rf"but this FLUX\.1 has {singles}"),
        "a FLUX file on an SD base": ("sd", flux_kohya(flux_bfl_layers(flux_transformer, seed=2), alpha=RANK),
                                      r"it was made for FLUX \(double/single blocks\); the loaded base is "
                                      r"StableDiffusionPipeline"),
        "an SDXL-wide file on an SD base": ("sd", {k: torch.randn(v.shape[0], 64) if "attn2.to_k.lora_A" in k else v
                                                   for k, v in attention.items()},  # fmt: skip
                                            r"was made for a UNet \(cross-attention 64\); the loaded base .* is "
                                            r"StableDiffusionPipeline \(cross-attention 32\)"),
    }


def test_refusals_say_why_and_never_contradict_the_family(studio, flux_studio, sd_pipe, flux, tmp_path,
                                                          monkeypatch):  # fmt: skip
    """Every refusal row: the reason names what did not match (a block past the base's depth, a part it lacks, a
    module it has no such name for), or both families when they differ; no message says a family matches and that
    the file was made for another at once."""
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{studio.info.model_id}:{flux[0]}:{tmp_path}")
    studio.load_adapter(_write(tmp_path / "good", peft(lora_layers(sd_pipe, RULES["attention"], seed=1))),
                        adapter_name="good")  # fmt: skip
    before = studio.list_adapters(), gen(studio, {"good": 1.0})
    for i, (row, (kind, state, reason)) in enumerate(_refusal_cases(sd_pipe, flux[1].transformer).items()):
        target = studio if kind == "sd" else flux_studio
        with pytest.raises(AdapterError) as refused:
            target.load_adapter(_write(tmp_path / f"case{i}", state), adapter_name=f"case{i}")
        message = str(refused.value)
        assert re.search(reason, message), (row, message)
        assert "probably made for another" not in message, (row, message)
        claims, same = _families_said(message)
        assert not (claims and same), (row, message)
    assert studio.list_adapters() == before[0] and np.array_equal(gen(studio, {"good": 1.0}), before[1])
    assert flux_studio.list_adapters() == []
