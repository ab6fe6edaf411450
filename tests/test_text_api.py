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


def test_eight_sessions_with_their_own_adapters_share_batches_and_equal_their_solo_runs(assets, lm_assets,
                                                                                         monkeypatch):
    """Eight gradio_client sessions, each with an adapter of its own under the same name, greedy: their
    concurrent calls (batched by the studio) equal their solo calls token for token; one bad request among them
    fails alone; a concurrent compare equals two solo calls."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from peft_core.text.batching import TextBatcher
    from tests.conftest import ALL, together
    from tiny_models.text import write_adapter

    batch_sizes, run_group = [], TextBatcher._generate

    def counted(self, lm, pool, group):
        batch_sizes.append(len(group))
        return run_group(self, lm, pool, group)

    monkeypatch.setattr(TextBatcher, "_generate", counted)

    model = AutoModelForCausalLM.from_pretrained(lm_assets["lm"])
    folders = []
    for seed in range(8):
        folder = lm_assets["root"] / f"session-{seed}"
        if not folder.exists():
            config = LoraConfig(r=4, lora_alpha=8, target_modules=ALL, init_lora_weights=False)
            write_adapter(model, folder, config, 20 + seed, str(lm_assets["lm"]))
        folders.append(folder)
    prompts = ["the pirate", "a cat sat on", "hello good morning sir", "the ship", "gold map",
               "the captain sails the sea", "ahoy", "yes"]  # fmt: skip
    with launch_app(assets, lm_assets=lm_assets) as url:
        clients = [Client(url, verbose=False) for _ in range(8)]
        for client, folder in zip(clients, folders, strict=True):
            assert [a["adapter_name"] for a in client.predict(str(folder), "mine", api_name="/load_text_adapter")] \
                == ["mine"]  # fmt: skip

        def call(i):
            return clients[i].predict(prompts[i], ["mine"], True, 12, api_name="/generate_text")

        alone = [call(i) for i in range(8)]
        assert len(set(alone)) == 8 and batch_sizes == [1] * 8
        compare_alone = (clients[0].predict(prompts[0], [], True, 12, api_name="/generate_text"), alone[0])

        calls = [lambda i=i: call(i) for i in range(8)]
        calls[5] = lambda: clients[5].predict(" ".join(["the"] * 60), ["mine"], True, 12, api_name="/generate_text")
        calls.append(lambda: clients[0].predict(prompts[0], ["mine"], 12, api_name="/compare_text"))
        results = together(calls, timeout_s=300)
    assert isinstance(results[5], AppError) and "passes the model's context of 64 tokens" in str(results[5])
    assert [r for i, r in enumerate(results[:8]) if i != 5] == [t for i, t in enumerate(alone) if i != 5]
    assert tuple(results[8]) == compare_alone
    assert max(batch_sizes) > 1  # the concurrent calls shared a generate (how many: the threads' timing)

