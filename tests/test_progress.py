"""Download progress through a real Hub server (olah on loopback): `hub.report_downloads` sees the bytes of each
adapter and model download grow to the files' size, for the image and the text side, and only where asked."""

import pytest

from peft_core import hub
from tests.hubserver import running_hub

pytestmark = [pytest.mark.hub, pytest.mark.slow]

WEIGHTS = "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def server(tmp_path_factory, assets, lm_assets):
    with running_hub(tmp_path_factory.mktemp("hub")) as server:
        server.add_repo("test-org/tiny-sd", assets["pipeline"])
        server.add_repo("test-org/lora", assets["lora_a"])
        server.add_repo("test-org/lora-b", assets["lora_b"])
        server.add_repo("test-org/tiny-lm", lm_assets["lm"])
        yield server


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 4 kB instead of 10 MB, so that the tiny test files arrive in many steps."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)


def check_growing(reports: list[hub.DownloadProgress], size: int) -> None:
    """Byte counts that only grow, out of a total that is the size, ending finished at the size."""
    done = [r.done for r in reports]
    assert done == sorted(done) and len(set(done)) > 2, done
    assert all(r.total == size for r in reports if r.done), [(r.done, r.total) for r in reports]
    assert reports[-1] == hub.DownloadProgress(reports[-1].repo_id, reports[-1].filename, size, size, True)
    assert not any(r.finished for r in reports[:-1])


def test_adapter_download_reports_bytes_up_to_the_file_size(server, assets, small_chunks):
    from peft_core.image.studio import ImageStudio

    studio = ImageStudio(device="cpu")
    studio.load_base("test-org/tiny-sd")
    reports = []
    with hub.report_downloads(reports.append):
        studio.load_adapter("test-org/lora", adapter_name="a")
    weights = [r for r in reports if r.filename == WEIGHTS]
    check_growing(weights, (assets["lora_a"] / WEIGHTS).stat().st_size)
    assert {r.repo_id for r in reports} == {"test-org/lora"} and weights[-1].what == f"test-org/lora/{WEIGHTS}"
    assert [r.filename for r in reports if r.finished] == [WEIGHTS, "README.md"]  # the card, for trigger words

    # From the cache: nothing to download, one report that it is there.
    studio.delete_adapter("a")
    reports.clear()
    with hub.report_downloads(reports.append):
        studio.load_adapter("test-org/lora", adapter_name="a")
    assert [(r.filename, r.done, r.total, r.finished) for r in reports] == [(WEIGHTS, 0, 0, True),
                                                                           ("README.md", 0, 0, True)]  # fmt: skip


def test_snapshot_adds_up_every_file(server, lm_assets, small_chunks):
    """A model is several files fetched in parallel: one bar over all of them, ending at their sum."""
    from peft_core.text.studio import TextStudio

    reports = []
    with hub.report_downloads(reports.append):
        TextStudio(device="cpu").load_base("test-org/tiny-lm")
    snapshot = [r for r in reports if r.filename is None]
    fetched = [p for p in lm_assets["lm"].rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in fetched)
    assert snapshot and snapshot[-1].finished and snapshot[-1].repo_id == "test-org/tiny-lm"
    done = [r.done for r in snapshot]
    assert done == sorted(done) and len(set(done)) > 2
    assert snapshot[-1].done == snapshot[-1].total <= size and snapshot[-1].total > size // 2


def test_nothing_is_reported_outside_the_block_and_errors_end_without_finished(server, small_chunks):
    from peft_core.errors import HubError

    repo = hub.open_repo("test-org/lora-b")
    outside = []
    with hub.report_downloads(outside.append):
        pass
    repo.file_path("README.md")  # no sink: huggingface_hub's own bars, nothing sent anywhere
    assert outside == []
    reports = []
    with hub.report_downloads(reports.append), pytest.raises(HubError):
        repo.file_path("missing.safetensors")
    assert not any(r.finished for r in reports)


def test_page_bar_shows_megabytes_and_the_load_between_downloads(server, small_chunks):
    """ui.common.hub_progress: what gr.Progress receives while a file downloads, then while it loads."""
    from ui.common import hub_progress

    calls = []
    with hub_progress(lambda value, desc: calls.append((value, desc)), "loading test-org/lora-b"):
        hub.open_repo("test-org/lora-b").file_path(WEIGHTS)
    assert calls[0] == calls[-1] == (None, "loading test-org/lora-b")
    bars = calls[1:-1]
    assert bars and all(desc.startswith(f"downloading test-org/lora-b/{WEIGHTS}: ") for _, desc in bars)
    assert bars[-1][0] == 1.0 and bars[-1][1].endswith(" MB") and " / " in bars[-1][1]
    assert [value for value, _ in bars] == sorted(value for value, _ in bars)
