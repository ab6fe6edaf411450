"""The text side's named endpoints through gradio_client against the app launched on a free loopback port."""

import pytest

from tests.conftest import launch_app

pytestmark = pytest.mark.slow
PROMPT = "the pirate"


@pytest.fixture(scope="module")
def client(assets, lm_assets):
    from gradio_client import Client

    with launch_app(assets, lm_assets=lm_assets, text_adapters=("lora_a", "lora_b")) as url:
        yield Client(url, verbose=False)


def generate(client, adapters, use_adapters=True, **kwargs):
    return client.predict(PROMPT, adapters, use_adapters, 12, api_name="/generate_text", **kwargs)


def test_text_endpoints_exist(client):
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/load_text_model", "/load_text_adapter", "/add_text_adapter", "/train_text_adapter",
            "/merge_text_adapters", "/list_text_adapters", "/delete_text_adapter", "/generate_text",
            "/compare_text"} <= named  # fmt: skip


def test_list_shape(client):
    adapters = client.predict(api_name="/list_text_adapters")
    assert [a["adapter_name"] for a in adapters] == ["lora_a", "lora_b"]
    for key in ("adapter_name", "repo_id", "peft_type", "r", "lora_alpha", "target_modules", "trainable"):
        assert key in adapters[0]
    assert adapters[0]["peft_type"] == "LORA" and adapters[0]["r"] == 4 and adapters[0]["trainable"] is False


def test_active_sets_and_disable(client):
    base = generate(client, [])
    a, b, both = generate(client, ["lora_a"]), generate(client, ["lora_b"]), generate(client, ["lora_a", "lora_b"])
    assert len({base, a, b, both}) == 4
    assert generate(client, ["lora_a", "lora_b"], use_adapters=False) == base
    assert client.predict(PROMPT, ["lora_a"], 12, api_name="/compare_text") == (base, a)
    assert generate(client, ["lora_a"], do_sample=True, seed=3, temperature=1.5) == generate(
        client, ["lora_a"], do_sample=True, seed=3, temperature=1.5
    )


def test_add_train_merge_delete(client):
    from gradio_client.exceptions import AppError

    adapters = client.predict("mine", 4, 8, 0.0, "q_proj, v_proj", api_name="/add_text_adapter")
    assert adapters[-1]["adapter_name"] == "mine" and adapters[-1]["target_modules"] == ["q_proj", "v_proj"]
    text = "the captain sails the sea to the island . " * 4
    result = client.predict("mine", text, 30, 0.05, api_name="/train_text_adapter")
    assert result["adapter_name"] == "mine" and result["steps"] == 30
    assert result["loss_end"] < result["loss_start"]
    merged = client.predict({"lora_a": 1.0, "lora_b": 0.0}, "merged", "linear", api_name="/merge_text_adapters")
    assert merged[-1]["adapter_name"] == "merged"
    assert generate(client, ["merged"]) == generate(client, ["lora_a"])
    with pytest.raises(AppError, match="r must be an integer"):
        client.predict("zero", 0, api_name="/add_text_adapter")
    with pytest.raises(AppError, match="'nope'"):
        client.predict({"nope": 1.0}, "m2", api_name="/merge_text_adapters")
    names = [a["adapter_name"] for a in client.predict("merged", api_name="/delete_text_adapter")]
    assert names == ["lora_a", "lora_b", "mine"]


def test_adapter_repo_brings_its_base(client, lm_assets):
    info = client.predict(str(lm_assets["lora_a"]), "main", api_name="/load_text_model")
    assert info["model_class"] == "LlamaForCausalLM" and info["adapters"]
    assert {"model_id", "revision", "device", "dtype", "num_parameters"} <= set(info)
    client.predict(str(lm_assets["lora_b"]), "lora_b", api_name="/load_text_adapter")
    client.predict(str(lm_assets["lm"]), api_name="/load_text_model")
    assert client.predict(api_name="/list_text_adapters") == []


def test_the_text_snippet_says_which_adapters_a_client_cannot_see():
    """A gradio_client Client is a session of its own: the page's snippet names the adapters the visitor made in
    the page (which the Client cannot use) and how to bring them along, and says nothing of shared ones."""
    from peft_core.text.requests import TextRequest
    from ui.snippets import text_snippet

    def request(adapters):
        return TextRequest("hi", adapters, True, max_new_tokens=8, do_sample=False, seed=0, temperature=1.0)

    code = text_snippet("http://x", request(["mine", "demo"]), own=["mine"])
    assert "# 'mine': made in your browser session" in code and "'demo':" not in code
    compile(code, "snippet", "exec")  # still a runnable script
    assert "browser session" not in text_snippet("http://x", request(["demo"]), own=["mine"])
