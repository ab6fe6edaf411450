"""Hostile requests through the named API: wrong types and values a script can send and a form cannot.

gradio hands a client's JSON to the function as it is. Each entry here used to reach a library as the wrong type
and come back as gradio's generic "has not enabled verbose error reporting", or to be taken for something else
(`use_adapters="false"` read as True, `adapters="a,b"` split into characters). Each must now be refused in the
studio's own words, naming the argument and what it must be, and leave the app answering as before.
"""

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.conftest import launch_app

pytestmark = [pytest.mark.slow]

MIX = {"lora_a": 0.5}
# (endpoint, arguments, the message must contain)
CASES = [
    ("/generate", {"prompt": "a", "adapters": "lora_a"},
     "argument 'adapters' of /generate must be a mapping of adapter names to numbers"),
    ("/generate", {"prompt": "a", "adapters": {"lora_a": True}}, "must be a mapping of adapter names to numbers"),
    ("/generate", {"prompt": "a", "adapters": {"lora_a": "0.5"}}, "must be a mapping of adapter names to numbers"),
    ("/generate", {"prompt": "a", "use_adapters": "false"},
     "argument 'use_adapters' of /generate must be true or false, got str 'false'"),
    ("/generate", {"prompt": "a", "steps": 3.5}, "argument 'steps' of /generate must be an integer, got float 3.5"),
    ("/generate", {"prompt": "a", "seed": True}, "argument 'seed' of /generate must be an integer, got bool True"),
    ("/generate", {"prompt": ["a"]}, "argument 'prompt' of /generate must be text, got list ['a']"),
    ("/generate", {"prompt": "a", "width": "32"}, "argument 'width' of /generate must be an integer, got str '32'"),
    ("/generate", {"prompt": "a", "width": 512, "height": 512, "steps": 100},
     "x the work of this pipeline's default image (25 steps at 32x32); this Space allows 2x per image"),
    ("/compare", {"prompt": "a", "guidance_scale": "7"},
     "argument 'guidance_scale' of /compare must be a number, got str '7'"),
    ("/load_adapter", {"repo_id": "org/x", "adapter_name": ["x"]},
     "argument 'adapter_name' of /load_adapter must be text, got list ['x']"),
    ("/load_adapter", {"repo_id": "org/x", "weight_name": 123},
     "argument 'weight_name' of /load_adapter must be text, got int 123"),
    ("/load_pipeline", {"model_id": {"id": "x"}}, "argument 'model_id' of /load_pipeline must be text, got dict"),
    ("/delete_adapter", {"adapter_name": None}, "argument 'adapter_name' of /delete_adapter must be text"),
    ("/generate_text", {"prompt": "the", "adapters": [1, 2]},
     "argument 'adapters' of /generate_text must be a list of names (or one comma-separated string)"),
    ("/generate_text", {"prompt": "the", "do_sample": "yes"}, "argument 'do_sample' of /generate_text must be true"),
    ("/generate_text", {"prompt": "the", "do_sample": True, "temperature": 1e-300},
     "temperature must be a finite number in [0.01, 5.0], got 1e-300"),
    ("/generate_text", {"prompt": "the", "max_new_tokens": "8"},
     "argument 'max_new_tokens' of /generate_text must be an integer, got str '8'"),
    ("/merge_text_adapters", {"adapters": ["lora_a"], "new_adapter_name": "m"},
     "argument 'adapters' of /merge_text_adapters must be a mapping of adapter names to numbers"),
    ("/train_text_adapter", {"adapter_name": "t", "text": "the sea", "steps": "5", "learning_rate": 0.01},
     "argument 'steps' of /train_text_adapter must be an integer, got str '5'"),
]  # fmt: skip


@pytest.fixture(scope="module")
def client(assets, lm_assets):
    with launch_app(assets, ("lora_a",), lm_assets, ("lora_a", "lora_b")) as url:
        yield Client(url, verbose=False)


@pytest.mark.parametrize("endpoint, arguments, message", CASES, ids=[f"{c[0]} {sorted(c[1])}" for c in CASES])
def test_wrong_types_are_refused_in_the_studios_words(client, endpoint, arguments, message):
    with pytest.raises(AppError) as refused:
        client.predict(**arguments, api_name=endpoint)
    text = str(refused.value)
    assert message in text, text
    assert "verbose error reporting" not in text
    # ... and the app answers the next request as before
    assert client.predict("a red circle", MIX, True, 0, 2, 5.0, 16, 16, api_name="/generate")


def test_a_comma_separated_active_set_is_a_list_of_names(client):
    """`adapters="lora_a,lora_b"` on the text side is two adapters, not eleven characters."""
    listed = client.predict("the pirate", ["lora_a", "lora_b"], True, 8, api_name="/generate_text")
    assert client.predict("the pirate", "lora_a, lora_b", True, 8, api_name="/generate_text") == listed
    assert listed != client.predict("the pirate", ["lora_a"], True, 8, api_name="/generate_text")
