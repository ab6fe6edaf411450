"""Many visitors at once (#18): each gradio_client Client is a session with its own adapter names; the admin's are
shared and read-only; the same Hub file is downloaded and resident once; quotas refuse and change nothing; a
session's adapters go when it ends; public mode keeps the base. Through the real app and the olah Hub server, and
at the core with sessions bound by hand."""

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from peft_core import sessions
from peft_core.errors import HubError, InputError
from peft_core.text.requests import TextRequest
from tests.conftest import ALL, EnvPatch, gen
from tests.faultproxy import FaultProxy
from tests.hubserver import running_hub, use_endpoint

pytestmark = [pytest.mark.slow, pytest.mark.hub]

LORA, LORA_B = "test-org/lora", "test-org/lora-b"


@contextlib.contextmanager
def served(assets, lm_assets):
    """The real app around studios we can look into: the tiny pipeline with the admin's `lora_a` (shared), the tiny
    LM with the admin's text `lora_a`; yields (url, image studio, text studio, the session tracker)."""
    import app
    from peft_core.image.studio import ImageStudio
    from peft_core.text.studio import TextStudio

    quotas = sessions.Quotas()  # as app.main: one for both sides
    images, text = ImageStudio(device="cpu", quotas=quotas), TextStudio(device="cpu", quotas=quotas)
    images.load_base(str(assets["pipeline"]))
    images.load_adapter(str(assets["lora_a"]), adapter_name="shared_a")
    text.load_base(str(lm_assets["lm"]))
    text.load_adapter(str(lm_assets["lora_a"]), adapter_name="shared_t")
    tracker = sessions.Tracker([images, text])
    demo = app.build_demo(images, text, tracker)
    demo.queue(default_concurrency_limit=4).launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        yield demo.local_url, images, text, tracker
    finally:
        demo.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory, assets, lm_assets, one_thread):
    """The app, with the Hub (olah) behind a proxy that records every file download."""
    with EnvPatch.context() as env:
        env.setenv("STUDIO_LOCAL_DIRS", os.pathsep.join(str(a["root"]) for a in (assets, lm_assets)))
        with running_hub(tmp_path_factory.mktemp("hub")) as hub:
            hub.add_repo(LORA, assets["lora_a"])
            hub.add_repo(LORA_B, assets["lora_b"])
            with (
                FaultProxy(hub.endpoint) as proxy,
                use_endpoint(proxy.endpoint, tmp_path_factory.mktemp("hf_home"), timeout=10),
                served(assets, lm_assets) as (url, images, text, tracker),
            ):
                yield {"url": url, "images": images, "text": text, "tracker": tracker, "proxy": proxy}


def client(world):
    from gradio_client import Client

    return Client(world["url"], verbose=False)


def names(adapters) -> list[str]:
    return [a["adapter_name"] for a in adapters]


def image(c, mix, seed=0) -> np.ndarray:
    path = c.predict("a red circle", mix, True, seed, 4, 5.0, 32, 32, "", api_name="/generate")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def load(c, repo_id, name):
    return c.predict(repo_id=repo_id, adapter_name=name, api_name="/load_adapter")


# --- through the app: two clients ------------------------------------------------------------------------------------


def test_two_clients_neither_sees_uses_nor_deletes_the_others_adapters(world):
    from gradio_client.exceptions import AppError

    one, two = client(world), client(world)
    listed = load(one, LORA, "style")
    assert names(listed) == ["shared_a", "style"] and [a["shared"] for a in listed] == [True, False]
    assert names(load(two, LORA_B, "style")) == ["shared_a", "style"]  # the same name, in another session
    assert one.predict(api_name="/list_adapters")[1]["repo_id"] == LORA
    assert two.predict(api_name="/list_adapters")[1]["repo_id"] == LORA_B
    assert not np.array_equal(image(one, {"style": 1.0}), image(two, {"style": 1.0}))

    stranger = client(world)
    mine_before = image(one, {"style": 1.0})
    assert names(stranger.predict(api_name="/list_adapters")) == ["shared_a"]
    with pytest.raises(AppError, match=r"'style' not loaded in this session; loaded: shared_a$"):
        image(stranger, {"style": 1.0})
    with pytest.raises(AppError, match=r"no adapter named 'style' in this session; loaded: shared_a$"):
        stranger.predict(adapter_name="style", api_name="/delete_adapter")
    with pytest.raises(AppError, match="'shared_a' is shared by this Space .* only its own adapters"):
        stranger.predict(adapter_name="shared_a", api_name="/delete_adapter")
    # two deletes its own "style": one's stays, with its weights
    assert names(two.predict(adapter_name="style", api_name="/delete_adapter")) == ["shared_a"]
    assert names(one.predict(api_name="/list_adapters")) == ["shared_a", "style"]
    assert np.array_equal(image(one, {"style": 1.0}), mine_before)
    one.predict(adapter_name="style", api_name="/delete_adapter")


def test_the_same_file_is_downloaded_once_and_resident_once(world):
    images, proxy = world["images"], world["proxy"]
    one, two = client(world), client(world)
    load(one, LORA_B, "b")
    residents, downloads = len(images.slots.residents), list(proxy.file_requests)
    assert names(load(two, LORA_B, "mine")) == ["shared_a", "mine"]
    assert proxy.file_requests == downloads  # no request for any file: not the weights, not the model card
    assert len(images.slots.residents) == residents
    want = image(one, {"b": 0.7})
    assert np.array_equal(image(two, {"mine": 0.7}), want)
    one.predict(adapter_name="b", api_name="/delete_adapter")  # two still holds the weights
    assert len(images.slots.residents) == residents
    assert np.array_equal(image(two, {"mine": 0.7}), want)
    two.predict(adapter_name="mine", api_name="/delete_adapter")  # nobody holds them: freed
    assert len(images.slots.residents) == residents - 1


def test_quotas_refuse_with_their_name_and_value_and_change_nothing(world, monkeypatch):
    from gradio_client.exceptions import AppError

    c = client(world)
    load(c, LORA, "first")
    before = c.predict(api_name="/list_adapters"), len(world["images"].slots.residents)
    monkeypatch.setenv("STUDIO_SESSION_MAX_ADAPTERS", "1")
    with pytest.raises(AppError, match=r"holds 1 adapters, its quota \(STUDIO_SESSION_MAX_ADAPTERS=1\)"):
        load(c, LORA_B, "second")
    monkeypatch.setenv("STUDIO_SESSION_MAX_ADAPTERS", "8")
    monkeypatch.setenv("STUDIO_SESSION_MAX_MB", "0.000001")
    with pytest.raises(AppError, match=r"over its quota \(STUDIO_SESSION_MAX_MB=1e-06\)"):
        load(c, LORA_B, "second")
    assert (c.predict(api_name="/list_adapters"), len(world["images"].slots.residents)) == before
    c.predict(adapter_name="first", api_name="/delete_adapter")


def test_ending_a_session_frees_its_adapters(world, monkeypatch):
    images, text, tracker = world["images"], world["text"], world["tracker"]
    before = len(images.slots.residents), len(text.pool)
    leaving, idle, staying = client(world), client(world), client(world)
    for c in (leaving, idle, staying):
        load(c, LORA_B, "b")
    leaving.predict("mine", 4, 8, 0.0, "q_proj", api_name="/add_text_adapter")
    assert (len(images.slots.residents), len(text.pool)) == (before[0] + 1, before[1] + 1)
    tracker.end(leaving.session_hash)  # what gradio's unload does when the tab closes (browser test: tab closed)
    assert len(text.pool) == before[1] and len(images.slots.residents) == before[0] + 1  # the others hold b
    # idle: a session unseen for STUDIO_SESSION_IDLE_S goes at the next call of anyone
    monkeypatch.setenv("STUDIO_SESSION_IDLE_S", "0.5")
    monkeypatch.setattr(sessions.Tracker, "IDLE_SWEEP_S", 0.0)
    time.sleep(1.0)
    staying.predict(api_name="/list_adapters")  # idle's last call was over 0.5 s ago; staying's is now
    assert idle.session_hash not in tracker.sessions() and staying.session_hash in tracker.sessions()
    assert names(idle.predict(api_name="/list_adapters")) == ["shared_a"]
    assert names(staying.predict(api_name="/list_adapters")) == ["shared_a", "b"]
    staying.predict(adapter_name="b", api_name="/delete_adapter")
    assert len(images.slots.residents) == before[0]


def test_a_tab_ends_when_it_closes_a_client_when_idle(monkeypatch):
    """A browser tab says goodbye (app.py: gradio's load opens its session, unload ends it), so it is never ended for
    going without a call; a gradio_client Client never does, so it is ended once idle."""
    from types import SimpleNamespace

    released = []
    tracker = sessions.Tracker([SimpleNamespace(release_session=released.append)])
    monkeypatch.setenv("STUDIO_SESSION_IDLE_S", "0.2")
    monkeypatch.setattr(sessions.Tracker, "IDLE_SWEEP_S", 0.0)
    tracker.opened("tab")
    tracker.seen("client")
    time.sleep(0.4)
    tracker.seen("another client")  # any call looks for idle sessions
    assert released == ["client"] and sorted(tracker.sessions()) == ["another client", "tab"]
    tracker.end("tab")  # the tab closed
    assert released == ["client", "tab"] and tracker.sessions() == ["another client"]


def test_ending_a_session_gives_its_memory_back(assets, tmp_path):
    """RSS, not only the count: a session holding two ~19 MB LoRAs (in RAM, in slots, fused into its mix) ends the
    way a closed tab or the idle timeout ends it (sessions.Tracker.end), and the process's RSS comes back to where
    it was. Measured in a fresh process (tests/session_memory.py says why, and why malloc_trim)."""
    from diffusers import StableDiffusionPipeline

    from tiny_models.image import lora_state_dict, write_repo

    pipe = StableDiffusionPipeline.from_pretrained(assets["pipeline"])
    big = {}
    for name, seed in (("big_a", 11), ("big_b", 12)):
        state = lora_state_dict(pipe, seed=seed, rank=4096, text_encoder=True)
        big[name] = write_repo(tmp_path / name, {"pytorch_lora_weights.safetensors": state})
    file_mb = sum(f.stat().st_size for f in tmp_path.glob("big_*/*.safetensors")) / 2**20
    assert file_mb > 30
    env = {**os.environ, "STUDIO_LOCAL_DIRS": os.pathsep.join([str(assets["root"]), str(tmp_path)])}
    args = [assets["pipeline"], assets["lora_a"], assets["lora_b"], big["big_a"], big["big_b"]]
    done = subprocess.run(
        [sys.executable, "-m", "tests.session_memory", *map(str, args)],
        env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    assert (rss["resident_held"], rss["resident_after"]) == (2, 0), rss
    # held: each file's tensors at least once (in RAM; the slots hold a second copy), so the measure can see them
    assert rss["held"] - rss["baseline"] > file_mb, rss
    # after: back within 10% of what the session held (allocator rounding, pages touched once), else a leak
    assert rss["after"] - rss["baseline"] < 0.1 * (rss["held"] - rss["baseline"]), rss


def test_public_mode_keeps_the_base(world, monkeypatch, assets, lm_assets):
    from gradio_client.exceptions import AppError

    c = client(world)
    monkeypatch.setenv("STUDIO_PUBLIC", "1")
    for api_name, what, other in (
        ("/load_pipeline", "base pipeline", str(assets["lora_a"])),
        ("/load_text_model", "text model", str(lm_assets["lm_copy"])),
    ):
        with pytest.raises(AppError, match=f"this Space is public: visitors cannot replace the {what}"):
            c.predict(other, "main", api_name=api_name)
    # the same base again is no change, and every adapter stays
    info = c.predict(str(assets["pipeline"]), "main", api_name="/load_pipeline")
    assert info["model_id"] == world["images"].info.model_id
    assert names(c.predict(api_name="/list_adapters")) == ["shared_a"]
    # on a Space, SPACE_ID alone turns it on
    monkeypatch.delenv("STUDIO_PUBLIC")
    monkeypatch.setenv("SPACE_ID", "someone/adapter-studio")
    with pytest.raises(AppError, match="visitors cannot replace the base pipeline"):
        c.predict(str(assets["lora_a"]), "main", api_name="/load_pipeline")


def test_a_refusal_is_one_log_line_without_a_traceback(world, caplog, capfd):
    from gradio_client.exceptions import AppError

    c = client(world)
    with caplog.at_level("WARNING", logger="adapter_studio"), pytest.raises(AppError):
        image(c, {"nope": 1.0})
    lines = [r.getMessage() for r in caplog.records if r.name == "adapter_studio"]
    assert lines == [f"/generate [{c.session_hash[:6]}] refused: adapter(s) 'nope' not loaded in this session; "
                     "loaded: shared_a"]  # fmt: skip
    assert "Traceback" not in capfd.readouterr().err


def test_eight_clients_in_eight_sessions_equal_their_solo_runs(world):
    """Each of 8 sessions loads the two Hub LoRAs under its own names (shared weights) and generates its own mix
    in parallel; every image equals the same request made alone."""
    mixes = [({}, 1), ({"x": 1.0}, 2), ({"y": 1.0}, 3), ({"x": 0.5, "y": 0.5}, 4), ({"x": -1.0}, 5),
             ({"y": 2.0, "x": 0.3}, 6), ({"shared_a": 0.6, "y": -0.7}, 7), ({"x": 1.5}, 8)]  # fmt: skip
    solo_client = client(world)
    load(solo_client, LORA, "x")
    load(solo_client, LORA_B, "y")
    solo = [image(solo_client, mix, seed) for mix, seed in mixes]
    results, errors = [None] * len(mixes), []

    def user(i):
        try:
            c = client(world)
            # each names them differently: the mix is by this session's names
            load(c, LORA, "x")
            load(c, LORA_B, "y")
            results[i] = [image(c, *mixes[i]) for _ in range(2)]
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(mixes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for got, want, mix in zip(results, solo, mixes, strict=True):
        assert got is not None and all(np.array_equal(g, want) for g in got), mix


# --- at the core: sessions bound by hand -----------------------------------------------------------------------------


def test_outside_the_app_everything_is_the_admins_and_shared(studio, allow_assets):
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    with sessions.bound("visitor"):
        assert [(a["adapter_name"], a["shared"]) for a in studio.list_adapters()] == [("a", True)]
        studio.load_adapter(str(allow_assets["lora_b"]), adapter_name="b")
        with pytest.raises(InputError, match="'a' is shared by this Space"):
            studio.delete_adapter("a")
        mixed = gen(studio, {"a": 0.5, "b": 1.0})
    assert names(studio.list_adapters()) == ["a"]  # the admin sees the shared ones only
    with pytest.raises(InputError, match=r"adapter\(s\) 'b' not loaded; loaded: a$"):
        gen(studio, {"b": 1.0})
    studio.release_session("visitor")
    assert list(studio.slots.residents) == ["a"]
    with sessions.bound("visitor"):
        assert names(studio.list_adapters()) == ["a"]
        studio.load_adapter(str(allow_assets["lora_b"]), adapter_name="b")
        assert np.array_equal(gen(studio, {"a": 0.5, "b": 1.0}), mixed)


def test_one_name_twice_for_one_file_adds_the_weights(studio, allow_assets):
    """Loaded twice, one file is resident once; a mix of both names is that file at the sum of the weights."""
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="again")
    assert len(studio.slots.residents) == 1
    assert np.array_equal(gen(studio, {"a": 0.25, "again": 0.5}), gen(studio, {"a": 0.75}))


def test_downloads_per_minute_quota(studio, allow_assets, monkeypatch):
    monkeypatch.setenv("STUDIO_SESSION_DOWNLOADS_PER_MINUTE", "1")
    with sessions.bound("busy"):
        studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
        before = studio.list_adapters()
        with pytest.raises(InputError, match=r"1 downloads in the last minute, its quota \(STUDIO_SESSION_DOWNLOADS"):
            studio.load_adapter(str(allow_assets["lora_b"]), adapter_name="b")
        assert studio.list_adapters() == before
        studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a2")  # resident already: no download
    with sessions.bound("other"):
        studio.load_adapter(str(allow_assets["lora_b"]), adapter_name="b")  # another session's own minute


@pytest.fixture
def lm(allow_lm):
    from peft_core.text.studio import TextStudio

    studio = TextStudio(device="cpu")
    studio.load_base(str(allow_lm["lm"]))
    studio.load_adapter(str(allow_lm["lora_a"]), adapter_name="shared")
    return studio


def test_text_adapters_belong_to_their_session(lm, allow_lm, tmp_path, monkeypatch):
    text = "the captain sails the sea . " * 3
    with sessions.bound("one"):
        lm.add_adapter("t", r=4, lora_alpha=8, target_modules=ALL)
        assert lm.train_adapter("t", text, 3, 0.05)["adapter_name"] == "t"
        ones = lm.generate(TextRequest("the captain", ["t"], max_new_tokens=8))
        assert lm.export_adapter("t", tmp_path).exists()
        with pytest.raises(InputError, match=r"'shared' is shared by this Space .*: a session may export only"):
            lm.export_adapter("shared", tmp_path)
        with pytest.raises(InputError, match="may train only its own"):
            lm.train_adapter("shared", text, 1, 0.05)
        lm.merge_adapters({"t": 1.0, "shared": 0.5}, "m")
        assert names(lm.list_adapters()) == ["shared", "t", "m"]
    with sessions.bound("two"):
        assert names(lm.list_adapters()) == ["shared"]
        for call in (lambda: lm.train_adapter("t", text, 1, 0.05), lambda: lm.export_adapter("t", tmp_path),
                     lambda: lm.delete_adapter("m"),
                     lambda: lm.generate(TextRequest("the captain", ["t"]))):  # fmt: skip
            with pytest.raises(InputError, match="'[tm]'.* in this session; loaded: shared$"):
                call()
        lm.add_adapter("t", r=4, lora_alpha=8, target_modules=ALL)  # its own "t"
        monkeypatch.setenv("STUDIO_SESSION_TRAIN_STEPS", "2")
        with pytest.raises(InputError, match=r"quota is 2 \(STUDIO_SESSION_TRAIN_STEPS\): 2 steps are left"):
            lm.train_adapter("t", text, 3, 0.05)
    with sessions.bound("one"):
        assert lm.generate(TextRequest("the captain", ["t"], max_new_tokens=8)) == ones  # two's "t" is another adapter
    lm.release_session("one")
    lm.release_session("two")
    assert names(lm.list_adapters()) == ["shared"] and len(lm.pool) == 1


def test_public_mode_at_the_core(studio, allow_assets, monkeypatch):
    monkeypatch.setenv("STUDIO_PUBLIC", "1")
    monkeypatch.setenv("STUDIO_BASES", str(allow_assets["pipeline"].resolve()))
    with pytest.raises(InputError, match=r"is not one of the bases this Space allows \(STUDIO_BASES\)"):
        studio.load_base(str(allow_assets["lora_a"]))  # the admin, outside the list
    with sessions.bound("visitor"), pytest.raises(InputError, match="the admin chooses it among STUDIO_BASES"):
        studio.load_base(str(allow_assets["lora_a"]))
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    studio.load_base(str(allow_assets["pipeline"]))  # the admin, the same base: nothing to do
    assert names(studio.list_adapters()) == ["a"]


def test_a_shared_file_still_meets_the_size_cap(studio, allow_assets, monkeypatch):
    """Sharing skips the download, not the admin's checks: a resident file over a lowered cap is refused too."""
    studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="a")
    monkeypatch.setenv("STUDIO_MAX_ADAPTER_MB", "0.001")
    with sessions.bound("visitor"), pytest.raises(HubError, match=r"is [\d.]+ MB; this Space accepts at most 0.001"):
        studio.load_adapter(str(allow_assets["lora_a"]), adapter_name="mine")
    with sessions.bound("visitor"):
        assert names(studio.list_adapters()) == ["a"]


def test_the_pool_keeps_names_per_session_over_one_resident():
    """The AdapterPool alone: names per session, one resident per source, freed when no name references it."""
    from dataclasses import asdict, dataclass

    from peft_core.pool import AdapterPool

    @dataclass
    class Info:
        adapter_name: str

        def to_dict(self):
            return asdict(self)

    pool, source = AdapterPool(), ("org/style", "main", "style.safetensors")
    pool.add("demo", Info("demo"), reloadable=False)  # the admin's: shared
    with sessions.bound("one"):
        pool.add("style", Info("style"), True, key=pool.new_key("style"), source=source)
    with sessions.bound("two"):
        key = pool.find(source)
        assert key == "style" and pool.find((*source[:2], "")) is None  # named, not picked: no "" alias
        pool.check_free("style")  # one's name is free here
        pool.add("style", None, False, key=key)
        assert pool.list() == [{"adapter_name": "demo", "shared": True}, {"adapter_name": "style", "shared": False}]
        with pytest.raises(InputError, match="'demo' is shared by this Space"):
            pool.remove("demo")
        assert pool.remove("style") is None  # one still holds it
    assert len(pool) == 2 and pool.names() == ["demo"]  # the admin sees the shared ones only
    assert pool.release("one") == ["style"] and pool.find(source) is None and len(pool) == 1
    with sessions.bound("one"), pytest.raises(InputError, match=r"'style' not loaded in this session; loaded: demo"):
        pool.check_loaded(["style"])


# --- ZeroGPU: the session crosses into the process spaces.GPU lends --------------------------------------------------


def _fake_spaces():
    """A `spaces` module whose GPU runs the function as ZeroGPU may: in another process (forked), in a thread there
    with a context of its own, so nothing bound in the caller's context variables arrives; only the arguments do."""
    import contextvars
    import multiprocessing
    import types

    def GPU(fn):  # noqa: N802 (spaces' own name)
        def lent(*args, **kwargs):
            here, there = multiprocessing.get_context("fork").Pipe()

            def worker():
                result = []
                thread = threading.Thread(target=lambda: result.append(contextvars.Context().run(fn, *args, **kwargs)))
                thread.start()
                thread.join()
                there.send(result[0])

            process = multiprocessing.get_context("fork").Process(target=worker)
            process.start()
            process.join(timeout=30)
            assert process.exitcode == 0 and here.poll(), "the fake ZeroGPU worker failed"
            return here.recv()

        return lent

    return types.SimpleNamespace(GPU=GPU)


def test_on_zerogpu_a_handler_runs_as_its_visitor(monkeypatch):
    """Page handlers are user_errors(gpu(fn)): the session is bound outside what spaces.GPU lends, so gpu() carries
    it across as an argument (ui/common.py). Without that, a visitor's click ran as the admin on ZeroGPU."""
    from types import SimpleNamespace

    import gradio as gr

    from ui.common import api_endpoint, gpu, user_errors

    monkeypatch.setitem(sys.modules, "spaces", _fake_spaces())

    def whose(x: int, request: gr.Request = None) -> str:
        return f"{sessions.current()}:{x}"

    visitor = SimpleNamespace(session_hash="visitor-1")
    assert user_errors(gpu(whose))(1, request=visitor) == "visitor-1:1"  # a page handler
    assert api_endpoint(whose)(2, request=visitor) == "visitor-1:2"  # a named endpoint: gpu(binding wrapper)
    assert gpu(whose)(3) == "None:3"  # a call without gradio is the admin's, there too


def test_one_quotas_counts_a_session_on_both_sides(studio, assets, lm_assets, monkeypatch):
    """The studios get their Quotas when built: given the same one (as app.main does, and build_demo for a text
    studio it makes), a download on the Images tab counts on the Text tab; a session's end forgets its counts."""
    from peft_core.text.studio import TextStudio

    monkeypatch.setenv("STUDIO_LOCAL_DIRS", os.pathsep.join(str(a["root"]) for a in (assets, lm_assets)))
    monkeypatch.setenv("STUDIO_SESSION_DOWNLOADS_PER_MINUTE", "1")
    text = TextStudio(device="cpu", quotas=studio.quotas)
    text.load_base(str(lm_assets["lm"]))
    with sessions.bound("both"):
        studio.load_adapter(str(assets["lora_a"]), adapter_name="a")
        with pytest.raises(InputError, match=r"1 downloads in the last minute, its quota"):
            text.load_adapter(str(lm_assets["lora_a"]), adapter_name="t")
        assert names(text.list_adapters()) == []
    with sessions.bound("apart"):  # a studio with quotas of its own counts only its own side
        studio.load_adapter(str(assets["lora_b"]), adapter_name="b")
        TextStudio(device="cpu").quotas.check_download("apart")
    studio.release_session("both")  # (sessions.Tracker.end calls it for each studio)
    with sessions.bound("both"):
        text.load_adapter(str(lm_assets["lora_a"]), adapter_name="t")
        assert names(text.list_adapters()) == ["t"]
