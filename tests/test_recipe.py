"""Every PNG carries its recipe (peft_core/image/recipe.py): written by the studio, read back through /recipe with
gradio_client, restored (loading what is missing) so that /generate remakes the image bit for bit."""

import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from peft_core.image.recipe import RECIPE_KEY
from tests.conftest import launch_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(assets):
    from gradio_client import Client

    with launch_app(assets) as url:
        c = Client(url, verbose=False)
        c.predict(repo_id=str(assets["lora_a"]), adapter_name="a", api_name="/load_adapter")
        c.predict(repo_id=str(assets["lora_b"]), adapter_name="b", api_name="/load_adapter")
        yield c


def read_png(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")), json.loads(im.text[RECIPE_KEY])


def test_a_png_round_trips_through_its_recipe(client, assets):
    from gradio_client import handle_file

    path = client.predict("a red circle", {"a": 0.7, "b": -0.4}, True, 11, 4, 6.5, 32, 32, "blurry",
                          api_name="/generate")  # fmt: skip
    pixels, made = read_png(path)
    assert made["base"] == {"model_id": str(assets["pipeline"]), "revision": "main"}
    assert [(a["adapter_name"], a["weight"], a["weight_name"]) for a in made["adapters"]] == [
        ("a", 0.7, "pytorch_lora_weights.safetensors"), ("b", -0.4, "pytorch_lora_weights.safetensors")]  # fmt: skip
    assert made["adapters"][0]["repo_id"] == str(assets["lora_a"].resolve())
    assert {k: made[k] for k in ("prompt", "negative_prompt", "seed", "steps", "guidance_scale", "width", "height")} \
        == {"prompt": "a red circle", "negative_prompt": "blurry", "seed": 11, "steps": 4, "guidance_scale": 6.5,
            "width": 32, "height": 32}  # fmt: skip

    # The adapters are gone and the page moved on: /recipe loads them again and answers the request.
    client.predict("b", api_name="/delete_adapter")
    client.predict("a", api_name="/delete_adapter")
    restored = client.predict(handle_file(path), api_name="/recipe")
    assert restored["not_restored"] == [] and restored["recipe"] == made
    assert sorted(restored["request"]["adapters"].values()) == [-0.4, 0.7]
    again, _ = read_png(client.predict(**restored["request"], api_name="/generate"))
    assert np.array_equal(again, pixels)  # bit for bit


def test_what_cannot_be_restored_is_said(client, tmp_path):
    from gradio_client import handle_file

    path = client.predict("a red circle", {}, True, 0, 4, 5.0, 32, 32, "", api_name="/generate")
    _, made = read_png(path)
    made["adapters"] = [{"adapter_name": "gone", "repo_id": "test-org/not-here", "revision": "main",
                         "weight_name": "x.safetensors", "weight": 1.0}]  # fmt: skip
    edited = tmp_path / "edited.png"
    info = PngImagePlugin.PngInfo()
    info.add_itxt(RECIPE_KEY, json.dumps(made))
    Image.open(path).save(edited, pnginfo=info)
    restored = client.predict(handle_file(str(edited)), api_name="/recipe")
    assert len(restored["not_restored"]) == 1 and "adapter gone (test-org/not-here @ main)" in \
        restored["not_restored"][0]  # fmt: skip
    assert restored["request"]["adapters"] == {}  # the rest of the recipe still comes back

    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    with pytest.raises(Exception, match="carries no Adapter Studio recipe"):
        client.predict(handle_file(str(plain)), api_name="/recipe")
    made["seed"] = "zero"
    info = PngImagePlugin.PngInfo()
    info.add_itxt(RECIPE_KEY, json.dumps(made))
    Image.open(path).save(edited, pnginfo=info)
    with pytest.raises(Exception, match="has seed='zero', which is not an integer"):
        client.predict(handle_file(str(edited)), api_name="/recipe")
