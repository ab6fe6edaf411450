"""Hub faults, through a real olah server behind a misbehaving proxy on loopback (tests/faultproxy.py): a server that
stops mid-download, one that answers too slowly, and a corrupted file in the local cache.

Each ends in a clear HubError or heals itself; the studio keeps what it had, the cache holds no half-written or
broken file afterwards, and the same call succeeds once the server is back.

huggingface_hub resumes a broken download up to 5 times with a 1 s pause in between: the tests shorten the
pause (not the attempts) so they run in seconds.
"""

import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from peft_core import hub as studio_hub
from peft_core.errors import HubError
from peft_core.image.studio import ImageStudio
from peft_core.text.studio import TextRequest, TextStudio
from tests.conftest import EnvPatch, gen
from tests.faultproxy import FaultProxy
from tests.hubserver import running_hub, use_endpoint

pytestmark = [pytest.mark.hub, pytest.mark.slow]

LORA = "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, assets, lm_assets):
    """olah with the test repos, a FaultProxy in front of it, and huggingface_hub pointed at the proxy with a 1 s
    timeout."""
    root = tmp_path_factory.mktemp("faults")
    with running_hub(root) as server:
        server.add_repo("test-org/lora", assets["lora_a"])
        server.add_repo("test-org/lm-adapter", lm_assets["lora_a"])
        with FaultProxy(server.endpoint) as proxy, use_endpoint(proxy.endpoint, root / "hf_home", timeout=1):
            yield proxy


@pytest.fixture(autouse=True)
def fresh(proxy, monkeypatch):
    """Every test starts with a working proxy and an empty cache, and resumes without the 1 s pause."""
    import shutil

    import huggingface_hub.file_download as file_download

    monkeypatch.setattr(file_download, "time", types.SimpleNamespace(sleep=lambda s: time.sleep(min(s, 0.05))))
    proxy.mode = "pass"
    proxy.start()
    shutil.rmtree(Path(studio_hub_cache()), ignore_errors=True)
    yield
    proxy.mode = "pass"
    proxy.start()


def studio_hub_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


@pytest.fixture(scope="module")
def reference(assets, lm_assets):
    """The image and text the Hub adapters must give, from the same files loaded by local path."""
    with EnvPatch.context() as mp:
        mp.setenv("STUDIO_LOCAL_DIRS", f"{assets['root']}:{lm_assets['root']}")
        images = ImageStudio(device="cpu")
        images.load_base(str(assets["pipeline"]))
        images.load_adapter(str(assets["lora_a"]), adapter_name="hub")
        text = TextStudio(device="cpu")
        text.load_base(str(lm_assets["lm"]))
        text.load_adapter(str(lm_assets["lora_a"]), adapter_name="hub")
        return gen(images, {"hub": 1.0}), text.generate(TextRequest("the pirate", ["hub"], max_new_tokens=8))


@pytest.fixture
def images(assets, monkeypatch):
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", str(assets["root"]))
    studio = ImageStudio(device="cpu")
    studio.load_base(str(assets["pipeline"]))
    return studio


def lora_repo():
    return studio_hub.Repo("test-org/lora", "main", None)


def cached_blobs(repo_id: str) -> list[Path]:
    folder = Path(studio_hub_cache()) / f"models--{repo_id.replace('/', '--')}" / "blobs"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_server_stopped_mid_download(images, proxy, reference):
    base = gen(images)
    proxy.mode = "cut"  # half the weights, then the server goes away
    with pytest.raises(HubError) as refused:
        images.load_adapter("test-org/lora", adapter_name="hub")
    # The resume attempt is refused (ConnectError), or reset (ReadError) when it comes in before the proxy's
    # listening socket has closed: a race between the proxy's stop thread and huggingface_hub's retry.
    assert refused.match(
        rf"'test-org/lora' \(revision 'main'\): the Hub is unreachable while downloading '{LORA}' "
        r"\((ConnectError|ReadError): "
    )
    assert images.list_adapters() == [] and np.array_equal(gen(images), base)
    assert not lora_repo().in_cache(LORA) and not cached_blobs("test-org/lora")  # no half file kept as the file
    proxy.mode = "pass"
    proxy.start()  # the server is back
    assert [a["adapter_name"] for a in images.load_adapter("test-org/lora", adapter_name="hub")] == ["hub"]
    assert np.array_equal(gen(images, {"hub": 1.0}), reference[0])


def test_slow_server_gives_a_timeout_error(images, proxy, reference):
    proxy.mode, proxy.delay = "slow", 3.0  # longer than the 1 s timeout, on every attempt
    started = time.monotonic()
    with pytest.raises(HubError) as refused:
        images.load_adapter("test-org/lora", adapter_name="hub")
    assert refused.match(
        rf"'test-org/lora' \(revision 'main'\): the Hub did not answer within 1 s while downloading '{LORA}' "
        r"\(ReadTimeout\); try again later, or raise HF_HUB_DOWNLOAD_TIMEOUT"
    )
    assert time.monotonic() - started < 30
    assert images.list_adapters() == [] and not lora_repo().in_cache(LORA)
    proxy.mode = "pass"
    images.load_adapter("test-org/lora", adapter_name="hub")
    assert np.array_equal(gen(images, {"hub": 1.0}), reference[0])


def _corrupt(path: Path) -> None:
    """Overwrite the blob behind a cached file (the snapshot entry is a link to it) with a truncated copy."""
    blob = path.resolve()
    blob.write_bytes(blob.read_bytes()[:-64])


def test_corrupted_file_in_the_cache_heals_itself(images, proxy, reference):
    images.load_adapter("test-org/lora", adapter_name="hub")
    images.delete_adapter("hub")
    _corrupt(lora_repo().file_path(LORA))
    downloads = len([r for r in proxy.file_requests if r.startswith("GET") and r.endswith(LORA)])
    images.load_adapter("test-org/lora", adapter_name="hub")  # the checks fail on the cached copy: fetched again
    assert len([r for r in proxy.file_requests if r.startswith("GET") and r.endswith(LORA)]) == downloads + 1
    assert np.array_equal(gen(images, {"hub": 1.0}), reference[0])
    from peft_core.image.lora_files import read_lora_file

    assert read_lora_file(lora_repo().file_path(LORA)).num_layers == 40  # the cache holds the good file again


def test_corrupted_cache_and_no_server_is_a_clear_error(images, proxy, reference):
    images.load_adapter("test-org/lora", adapter_name="hub")
    images.delete_adapter("hub")
    _corrupt(lora_repo().file_path(LORA))
    proxy.mode, proxy.delay = "hang", 3.0  # no file answer within the timeout: the broken copy cannot be replaced
    base = gen(images)
    with pytest.raises(HubError) as refused:
        images.load_adapter("test-org/lora", adapter_name="hub")
    assert refused.match(
        rf"the cached copy is broken \('{LORA}' is truncated or corrupt: .*\) and downloading it again failed: "
        rf"'test-org/lora' \(revision 'main'\): the Hub did not answer within 1 s while downloading '{LORA}'"
    )
    assert images.list_adapters() == [] and np.array_equal(gen(images), base)
    proxy.mode = "pass"
    images.load_adapter("test-org/lora", adapter_name="hub")
    assert np.array_equal(gen(images, {"hub": 1.0}), reference[0])


def test_corrupted_text_adapter_in_the_cache_heals_itself(proxy, lm_assets, reference, monkeypatch):
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", str(lm_assets["root"]))
    text = TextStudio(device="cpu")
    text.load_base(str(lm_assets["lm"]))
    text.load_adapter("test-org/lm-adapter", adapter_name="hub")
    text.delete_adapter("hub")
    repo = studio_hub.Repo("test-org/lm-adapter", "main", None)
    _corrupt(repo.file_path("adapter_model.safetensors"))
    text.load_adapter("test-org/lm-adapter", adapter_name="hub")
    assert text.generate(TextRequest("the pirate", ["hub"], max_new_tokens=8)) == reference[1]
