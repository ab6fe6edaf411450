"""LyCORIS files on the tiny FLUX pipeline, keyed as real ones are: BFL names from LyCORIS' kohya network on
sd-scripts' FLUX trainer (`lora_unet_double_blocks_0_img_attn_qkv.hada_w1_a`) and diffusers names from LyCORIS'
wrapper (`lycoris_transformer_blocks_0_attn_to_q.lokr_w1`). A LoHa on BFL's fused layers (qkv, linear1) is split
by rows into diffusers' modules, exactly; a LoKr there cannot be, and is refused, leaving everything as it was.
"""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from peft_core.errors import AdapterError
from tests.conftest import family_studio, gen
from tests.layout_keys import (
    FLUX_DOUBLE,
    FLUX_FUSED,
    FLUX_SINGLE,
    FLUX_SINGLE_ALL,
    flux_bfl_layers,
    flux_kohya,
    flux_lycoris,
    loha_layer,
    lokr,
    lokr_layer,
)

pytestmark = pytest.mark.usefixtures("one_thread")
ONE_TO_ONE = {k: v for k, v in FLUX_DOUBLE.items() if k not in FLUX_FUSED}


@pytest.fixture(scope="module")
def flux(tiny_family):
    return tiny_family("flux")


@pytest.fixture
def flux_studio(flux, monkeypatch, tmp_path):
    return family_studio(flux, monkeypatch, tmp_path)


def _write(folder, state):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "lycoris.safetensors")
    return str(folder)


def _expected(transformer, double, single) -> list[str]:
    """The diffusers modules a file on these BFL layers is, every block."""
    return sorted(f"{blocks}.{i}.{t}" for blocks, table in (("transformer_blocks", double),
                                                           ("single_transformer_blocks", single))
                  for i in range(len(getattr(transformer, blocks))) for targets in table.values()
                  for t in targets)  # fmt: skip


def _delta(t: dict) -> torch.Tensor:
    """LyCORIS' own formulas (lycoris/modules/loha.py, lokr.py) for one layer's tensors: the oracle."""
    if "hada_w1_a" in t:
        scale = float(t["alpha"]) / t["hada_w1_b"].shape[0]
        return (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"]) * scale
    w2 = t["lokr_w2"] if "lokr_w2" in t else t["lokr_w2_a"] @ t["lokr_w2_b"]
    scale = 1.0 if "lokr_w2" in t else float(t["alpha"]) / t["lokr_w2_b"].shape[0]
    return torch.kron(t["lokr_w1"], w2) * scale


def _layer(path, key: str) -> dict:
    return {k.rpartition(".")[2]: v for k, v in load_file(f"{path}/lycoris.safetensors").items()
            if k.startswith(f"{key}.")}  # fmt: skip


def _check_loads_fuses_and_disables(studio, folder, expected, fused_checks):
    """Every module expected registered in the transformer and nothing else; the image changes; fused at 0.7 each
    checked module's weight is the base + 0.7 x LyCORIS' delta (rows of it for a split layer); disabled: the base."""
    from peft_core.image import pipeline

    transformer = studio.pipe.transformer
    weights = {m: transformer.get_submodule(m).weight.detach().clone() for m, _ in fused_checks}
    base = gen(studio)
    info = studio.load_adapter(folder, adapter_name="ly")[0]
    registered = pipeline.registered_modules(studio.pipe, studio.slots.slot_of("ly"))
    assert list(registered) == ["transformer"] and sorted(registered["transformer"]) == expected
    image = gen(studio, {"ly": 0.7})
    assert not np.array_equal(image, base) and studio.slots.fused
    for module, delta in fused_checks:
        merged = transformer.get_submodule(module).get_base_layer().weight.detach()
        torch.testing.assert_close(merged, weights[module] + 0.7 * delta, rtol=1e-5, atol=1e-5)
    assert np.array_equal(gen(studio, {"ly": 0.7}, use_adapters=False), base)
    for module, _ in fused_checks:
        assert torch.equal(transformer.get_submodule(module).get_base_layer().weight, weights[module])
    return info, base, image


def test_loha_in_bfl_names_splits_fused_layers_exactly(flux_studio, flux, tmp_path):
    """LoHa on every BFL layer, qkv and linear1 included: each fused layer lands as its diffusers modules, whose
    merged weights are the rows of LyCORIS' delta; it mixes with a FLUX LoRA."""
    transformer = flux[1].transformer
    folder = _write(tmp_path / "loha", flux_lycoris(transformer, loha_layer, seed=1, single=FLUX_SINGLE_ALL))
    qkv = _delta(_layer(folder, "lora_unet_double_blocks_0_img_attn_qkv"))
    inner = transformer.transformer_blocks[0].attn.to_q.out_features
    linear1 = _delta(_layer(folder, "lora_unet_single_blocks_0_linear1"))
    checks = [
        ("transformer_blocks.0.attn.to_k", qkv[inner : 2 * inner]),  # the middle third: k
        ("single_transformer_blocks.0.proj_mlp", linear1[3 * inner :]),  # after q, k, v: the MLP
        ("transformer_blocks.0.ff.net.2", _delta(_layer(folder, "lora_unet_double_blocks_0_img_mlp_2"))),
    ]
    info, base, image = _check_loads_fuses_and_disables(
        flux_studio, folder, _expected(transformer, FLUX_DOUBLE, FLUX_SINGLE_ALL), checks
    )
    assert info["report"]["algorithm"] == "LoHa" and info["report"]["made_for"].startswith("FLUX")
    blocks = len(transformer.transformer_blocks), len(transformer.single_transformer_blocks)
    named = len(FLUX_DOUBLE) * blocks[0] + len(FLUX_SINGLE_ALL) * blocks[1]  # BFL layers, not diffusers modules
    assert info["report"]["named"] == {"transformer": named} and info["report"]["unmatched"] == []
    lora = _write(tmp_path / "lora", flux_kohya(flux_bfl_layers(transformer, seed=2)))
    flux_studio.load_adapter(lora, adapter_name="a")
    a, mix = gen(flux_studio, {"a": 1.0}), gen(flux_studio, {"a": 1.0, "ly": 0.7})
    assert not np.array_equal(mix, a) and not np.array_equal(mix, image) and not np.array_equal(a, base)
    assert np.array_equal(gen(flux_studio, {"a": 1.0, "ly": 0.7}, use_adapters=False), base)


@pytest.mark.parametrize("form", ["bfl", "diffusers"])
def test_lokr_on_one_to_one_flux_layers_loads(flux_studio, flux, tmp_path, form):
    """LoKr in BFL names on the layers that are one diffusers module each (attention out, MLPs, modulations,
    linear2), and in LyCORIS' wrapper's diffusers names on every attention projection."""
    transformer = flux[1].transformer
    if form == "bfl":
        single = FLUX_SINGLE
        state = flux_lycoris(transformer, lokr_layer, seed=3, double=ONE_TO_ONE, single=single)
        expected = _expected(transformer, ONE_TO_ONE, single)
        key, module = "lora_unet_double_blocks_0_txt_mlp_0", "transformer_blocks.0.ff_context.net.0.proj"
    else:
        expected = sorted(n for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)
                          and n.startswith("transformer_blocks.") and ".attn." in n)  # fmt: skip
        state = lokr(transformer, expected, seed=4, prefix="lycoris")
        key, module = "lycoris_transformer_blocks_0_attn_add_k_proj", "transformer_blocks.0.attn.add_k_proj"
    folder = _write(tmp_path / form, state)
    checks = [(module, _delta(_layer(folder, key)))]
    info, _, _ = _check_loads_fuses_and_disables(flux_studio, folder, expected, checks)
    assert info["report"]["algorithm"] == "LoKr" and info["report"]["named"] == {"transformer": len(expected)}


def test_lokr_on_a_fused_flux_layer_is_refused_with_the_reason(flux_studio, flux, tmp_path):
    transformer = flux[1].transformer
    lora = _write(tmp_path / "lora", flux_kohya(flux_bfl_layers(transformer, seed=2)))
    flux_studio.load_adapter(lora, adapter_name="a")
    before = flux_studio.list_adapters(), gen(flux_studio, {"a": 1.0})
    folder = _write(tmp_path / "lokr", flux_lycoris(transformer, lokr_layer, seed=5))
    with pytest.raises(AdapterError, match=r"'lora_unet_double_blocks_0_img_attn_qkv' is a LoKr on BFL's fused FLUX "
                       r"layer, which diffusers' FLUX transformer has as separate modules"):  # fmt: skip
        flux_studio.load_adapter(folder, adapter_name="k")
    assert flux_studio.list_adapters() == before[0] and np.array_equal(gen(flux_studio, {"a": 1.0}), before[1])


def test_half_matching_loha_in_bfl_names_is_refused(flux_studio, flux, tmp_path):
    """Two layers of a block the tiny FLUX lacks: a split layer registers several modules, so the count alone
    would not tell; the refusal names the layers, and nothing stays."""
    transformer = flux[1].transformer
    state = flux_lycoris(transformer, loha_layer, seed=6)
    extra = len(transformer.transformer_blocks)
    state |= loha_layer(f"lora_unet_double_blocks_{extra}_img_mlp_2", *state[
        "lora_unet_double_blocks_0_img_mlp_2.hada_w1_a"].shape[:1], state[
        "lora_unet_double_blocks_0_img_mlp_2.hada_w1_b"].shape[1])  # fmt: skip
    before = flux_studio.list_adapters(), gen(flux_studio)
    with pytest.raises(AdapterError, match=rf"1 of its \d+ layers name no module here: \['lora_unet_double_blocks_"
                       rf"{extra}_img_mlp_2'\]"):  # fmt: skip
        flux_studio.load_adapter(_write(tmp_path / "half", state), adapter_name="h")
    assert flux_studio.list_adapters() == before[0] and np.array_equal(gen(flux_studio), before[1])


def test_loha_on_a_fused_layer_at_other_sizes_is_refused(flux_studio, flux, tmp_path):
    """A qkv LoHa with more rows than q, k and v together (a file for wider FLUX): it cannot be cut into them, so
    the load is refused saying both sizes, and nothing stays."""
    transformer = flux[1].transformer
    state = flux_lycoris(transformer, loha_layer, seed=7)
    key = "lora_unet_double_blocks_0_img_attn_qkv"
    rows = state[f"{key}.hada_w1_a"].shape[0]
    state |= loha_layer(key, rows + 3, state[f"{key}.hada_w1_b"].shape[1])
    before = flux_studio.list_adapters(), gen(flux_studio)
    with pytest.raises(AdapterError, match=rf"{key} has {rows + 3} output rows; the modules it is here have {rows}"):
        flux_studio.load_adapter(_write(tmp_path / "wide", state), adapter_name="wide")
    assert flux_studio.list_adapters() == before[0] and np.array_equal(gen(flux_studio), before[1])
