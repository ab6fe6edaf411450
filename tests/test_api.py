"""Every named endpoint through gradio_client against the app launched on a free loopback port."""

import threading

import numpy as np
import pytest
from PIL import Image

from tests.conftest import launch_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(assets):
    with launch_app(assets) as url:
        yield url


@pytest.fixture(scope="module")
def client(server, assets):
    from gradio_client import Client

    c = Client(server, verbose=False)
    c.predict(str(assets["lora_a"]), "", "a", "main", api_name="/load_adapter")
    c.predict(repo_id=str(assets["lora_b"]), adapter_name="b", api_name="/load_adapter")
    return c


def image(path) -> np.ndarray:
    assert str(path).endswith(".png")
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB")).astype(np.int16)


def generate(client, adapters, use_adapters=True, seed=0):
    path = client.predict("a red circle", adapters, use_adapters, seed, 4, 5.0, 32, 32, "", api_name="/generate")
    return image(path)


def test_named_endpoints(client):
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/load_pipeline", "/load_adapter", "/list_adapters", "/delete_adapter", "/generate", "/compare"} <= named


def test_list_adapters_shape(client, assets):
    adapters = client.predict(api_name="/list_adapters")
    assert [a["adapter_name"] for a in adapters] == ["a", "b"]
    keys = {"adapter_name", "repo_id", "weight_name", "revision", "rank", "components", "size_mb", "trigger_words"}
    assert keys <= set(adapters[0])
    assert adapters[0]["trigger_words"] == ["sks style"] and adapters[0]["repo_id"] == str(assets["lora_a"].resolve())


def test_generate_mix_disable_and_compare(client):
    base = generate(client, {}, use_adapters=True)
    a, mix = generate(client, {"a": 1.0}), generate(client, {"a": 0.5, "b": 1.0})
    assert not np.array_equal(a, base) and not np.array_equal(mix, a)
    assert np.array_equal(generate(client, {"a": 1.0}, use_adapters=False), base)
    left, right = client.predict("a red circle", {"a": 1.0}, 0, 4, 5.0, 32, 32, "", api_name="/compare")
    assert np.array_equal(image(left), base) and np.array_equal(image(right), a)


def test_use_via_api_snippet_runs_and_gives_the_same_image(server, client, capsys):
    """The snippet the page offers runs as shown and gets what the test's own client gets."""
    from peft_core.image.requests import ImageRequest
    from ui.snippets import image_snippet

    # the snippet's Client is a session of its own: it loads the page session's adapters first (docs/SESSIONS.md)
    loads = client.predict(api_name="/list_adapters")
    request = ImageRequest("a red circle", {"a": 0.5, "b": 1.0}, seed=0, steps=4, guidance_scale=5.0, width=32,
                           height=32, negative_prompt="")  # fmt: skip
    code = image_snippet(server, request, loads)
    # it reads first: a plain Client (the faster one-TLS-context form is the README's performance note)
    assert code.startswith(f"from gradio_client import Client\n\nclient = Client({server!r})\n")
    exec(compile(code, "snippet", "exec"), {})
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert np.array_equal(image(path), generate(client, {"a": 0.5, "b": 1.0}))


def test_defaults_come_from_the_pipeline(client):
    path = client.predict(prompt="a red circle", adapters={"b": 0.7}, api_name="/generate")
    assert image(path).shape == (32, 32, 3)


def test_errors_reach_the_client_and_change_nothing(client):
    from gradio_client.exceptions import AppError

    before = client.predict(api_name="/list_adapters"), generate(client, {"a": 1.0})
    for call, message in (
        (lambda: generate(client, {"zzz": 1.0}), "'zzz' not loaded"),
        # NaN and inf cannot travel in JSON; the core's own tests cover them.
        (lambda: generate(client, {"a": 5.0}), r"must be a finite number in \[-2.0, 2.0\], got 5.0"),
        (lambda: client.predict(repo_id="not a repo", api_name="/load_adapter"), "not a valid Hub id"),
        (lambda: client.predict(adapter_name="nope", api_name="/delete_adapter"), "no adapter named 'nope'"),
    ):
        with pytest.raises(AppError, match=message):
            call()
    assert client.predict(api_name="/list_adapters") == before[0]
    assert np.array_equal(generate(client, {"a": 1.0}), before[1])


def test_parallel_clients_get_their_own_images(server, client, assets):
    from gradio_client import Client

    mixes = [({"a": 1.0}, 1), ({"b": 1.0}, 2), ({"a": 0.3, "b": 0.6}, 3), ({}, 4)]
    solo = [generate(client, mix, seed=seed) for mix, seed in mixes]
    results, errors = [None] * len(mixes), []

    def run(i):
        try:
            c = Client(server, verbose=False)
            # a Client is a session of its own (docs/SESSIONS.md): it names its adapters; the weights are shared
            c.predict(str(assets["lora_a"]), "", "a", "main", api_name="/load_adapter")
            c.predict(repo_id=str(assets["lora_b"]), adapter_name="b", api_name="/load_adapter")
            results[i] = [generate(c, mixes[i][0], seed=mixes[i][1]) for _ in range(2)]
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(mixes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, solo, strict=True):
        assert all(np.array_equal(g, want) for g in got)


def test_delete_then_load_pipeline(client, assets):
    assert [a["adapter_name"] for a in client.predict(adapter_name="b", api_name="/delete_adapter")] == ["a"]
    info = client.predict(str(assets["pipeline"]), "main", api_name="/load_pipeline")
    assert info["pipeline_class"] == "StableDiffusionPipeline" and info["dtype"] == "float32"
    assert {"model_id", "revision", "device"} <= set(info)
    assert client.predict(api_name="/list_adapters") == []
