"""SD3 LoRA layouts on the tiny SD3 pipeline (rows of docs/LAYOUTS.md): kohya sd-scripts' MMDiT names, which
diffusers 0.42's SD3 loader reads as nothing, load as the diffusers modules they are and give the image of the same
weights in diffusers' own format; a file naming layers the transformer lacks is refused naming them.
"""

import numpy as np
import pytest
from safetensors.torch import save_file

from peft_core.errors import AdapterError
from peft_core.image import pipeline
from tests.conftest import family_studio, gen
from tests.layout_keys import sd3_kohya, sd3_layers, sd3_peft

pytestmark = pytest.mark.usefixtures("one_thread")
RANK = 4


@pytest.fixture(scope="module")
def sd3(tiny_family):
    return tiny_family("sd3")


@pytest.fixture
def sd3_studio(sd3, monkeypatch, tmp_path):
    return family_studio(sd3, monkeypatch, tmp_path)


def _write(folder, state):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.clone().contiguous() for k, v in state.items()}, folder / "lora.safetensors")
    return str(folder)


@pytest.mark.parametrize("alpha", [RANK / 2, None], ids=["alpha = rank / 2", "no alpha keys"])
def test_sd3_kohya_layout_loads_like_peft(sd3_studio, sd3, tmp_path, alpha):
    """Every MMDiT layer of a kohya SD3 file registered as its diffusers modules (a qkv is three; the pre_only
    context block's adaLN swapped as diffusers swaps it), the image that of the same weights in peft layout."""
    transformer = sd3[1].transformer
    layers = sd3_layers(transformer, seed=1)
    base = gen(sd3_studio)
    factor = 1.0 if alpha is None else alpha / RANK
    sd3_studio.load_adapter(_write(tmp_path / "ref", sd3_peft(layers, transformer, factor)), adapter_name="ref")
    expected = gen(sd3_studio, {"ref": 1.0})
    sd3_studio.load_adapter(_write(tmp_path / "row", sd3_kohya(layers, alpha)), adapter_name="row")
    info = next(a for a in sd3_studio.list_adapters() if a["adapter_name"] == "row")
    assert info["layout"] == "kohya" and info["report"]["made_for"].startswith("SD3")
    registered = pipeline.registered_modules(sd3_studio.pipe, sd3_studio.slots.slot_of("row"))
    assert list(registered) == ["transformer"]
    assert sorted(registered["transformer"]) == sorted(m for layer in layers.values() for m in layer[2])
    image = gen(sd3_studio, {"row": 1.0})
    assert not np.array_equal(image, base) and not np.array_equal(expected, base)
    assert np.abs(image - expected).max() <= 1  # the same weights: at most float rounding apart
    assert np.array_equal(gen(sd3_studio, {"row": 1.0}, use_adapters=False), base)


def test_sd3_kohya_file_naming_missing_layers_is_refused(sd3_studio, sd3, tmp_path):
    transformer = sd3[1].transformer
    layers = sd3_layers(transformer, seed=1)
    extra = f"lora_unet_joint_blocks_{len(transformer.transformer_blocks)}_x_block_mlp_fc1"
    layers[extra] = layers["lora_unet_joint_blocks_0_x_block_mlp_fc1"]
    sd3_studio.load_adapter(_write(tmp_path / "good", sd3_peft(sd3_layers(transformer, seed=2), transformer)),
                            adapter_name="good")  # fmt: skip
    before = sd3_studio.list_adapters(), gen(sd3_studio, {"good": 1.0})
    with pytest.raises(AdapterError, match=rf"1 of its {len(layers)} SD3 layers name no module of this transformer "
                       rf".*\['{extra}'\]"):  # fmt: skip
        sd3_studio.load_adapter(_write(tmp_path / "half", sd3_kohya(layers, RANK)), adapter_name="partly")
    assert sd3_studio.list_adapters() == before[0] and np.array_equal(gen(sd3_studio, {"good": 1.0}), before[1])
