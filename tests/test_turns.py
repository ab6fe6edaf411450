"""Visitors take turns on the shared models (peft_core/turns.py): a long request steps aside between its steps for
whoever waits, gets exactly the output it would have got alone, and stops when its visitor leaves. On the image side
what makes "exactly" hold is the per-call state the pipeline's family declares (families.Family.call_state); a family
that declares none runs each request in one turn (docs/DEVELOPMENT.md#turns)."""

import dataclasses
import threading
import time

import numpy as np
import pytest

from peft_core import turns
from peft_core.errors import InputError
from peft_core.image.studio import ImageRequest
from peft_core.text.studio import TextRequest, TextStudio
from peft_core.turns import Cancelled, TurnLock
from tests.conftest import ALL, launch_app, pixels, wait_for_the_others

LONG = 40  # steps of the long image: 1.6x the tiny pipeline's default request, inside the CPU budget of 2


def test_turn_lock_serves_in_arrival_order_and_hands_over():
    lock, order, started = TurnLock(), [], []
    lock.acquire()
    lock.acquire()  # re-entrant

    def visitor(name):
        started.append(name)
        with lock:
            order.append(name)

    threads = []
    for name in ("first", "second", "third"):
        threads.append(threading.Thread(target=visitor, args=(name,)))
        threads[-1].start()
        while len(started) < len(threads) or len(lock._waiting) < len(threads):  # queued, in this order
            time.sleep(0.001)
    assert lock.contended
    assert lock.hand_over()  # everyone who waited runs, then the holder has the lock back, at the same depth
    assert order == ["first", "second", "third"] and not lock.contended
    assert not lock.hand_over()  # nobody waits: nothing to do
    lock.release()
    lock.release()
    for thread in threads:
        thread.join()
    with pytest.raises(RuntimeError, match="not held by this thread"):
        lock.release()


def _image(studio, mix, steps, progress=None, seed=0, guidance=5.0):
    request = ImageRequest("a red circle", mix, True, seed, steps=steps, guidance_scale=guidance, width=32, height=32)
    return pixels(studio.generate(request, progress))


def test_a_small_image_does_not_wait_for_a_long_one_and_both_are_as_alone(studio, assets):
    studio.load_adapter(str(assets["lora_a"]), adapter_name="a")
    studio.load_adapter(str(assets["lora_b"]), adapter_name="b")
    alone_long = _image(studio, {"a": 1.0}, LONG)
    alone_short = _image(studio, {"b": -1.0}, 4, seed=7)

    long_steps, results, short_may_start = [], {}, threading.Event()

    def long_progress(step, total):
        long_steps.append(step)
        if step == 2:
            short_may_start.set()

    def long_request():
        results["long"] = _image(studio, {"a": 1.0}, LONG, long_progress)

    def short_request():
        short_may_start.wait()
        results["short"] = _image(studio, {"b": -1.0}, 4, seed=7)
        results["long steps when short was done"] = len(long_steps)

    threads = [threading.Thread(target=long_request), threading.Thread(target=short_request)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # The short one ran between the long one's steps (each applying its own mix, its own scheduler) ...
    assert 2 <= results["long steps when short was done"] < LONG
    # ... and neither image changed for it: bit for bit what each gives alone.
    np.testing.assert_array_equal(results["short"], alone_short)
    np.testing.assert_array_equal(results["long"], alone_long)
    assert studio._lock._owner is None and not studio._lock.contended


def _alternate(studio, requests: dict) -> tuple[dict, list]:
    """Run each visitor's (mix, steps, seed, guidance) in its own thread, the second sent once the first has done a
    step; returns their images and the order their steps ran in, e.g. [("A", 1), ("B", 1), ("A", 2) ...]."""
    order, results, first_stepped = [], {}, threading.Event()

    def visitor(name, mix, steps, seed, guidance):
        if name != "A":
            first_stepped.wait()

        def progress(step, total):
            order.append((name, step))
            if name == "A" and not first_stepped.is_set():
                first_stepped.set()
                wait_for_the_others(studio)

        results[name] = _image(studio, mix, steps, progress, seed=seed, guidance=guidance)

    threads = [threading.Thread(target=visitor, args=(name, *r)) for name, r in requests.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results, order


def _took_turns(order: list) -> bool:
    """After B's first step, A still had steps to take."""
    names = [name for name, _ in order]
    return names.index("B") < len(names) - 1 - names[::-1].index("A")


# Two visitors: other adapters, another seed and another guidance, so that each reads per-call state of its own
# (the pipeline's `_guidance_scale` drives classifier-free guidance at every step).
VISITORS = {"A": ({"a": 1.0}, 6, 0, 7.0), "B": ({"b": -1.0}, 6, 3, 2.0)}


def _visitors_alone(studio, assets) -> dict:
    studio.load_adapter(str(assets["lora_a"]), adapter_name="a")
    studio.load_adapter(str(assets["lora_b"]), adapter_name="b")
    return {
        name: _image(studio, *visitor[:2], seed=visitor[2], guidance=visitor[3]) for name, visitor in VISITORS.items()
    }


def test_two_visitors_alternating_step_by_step_get_exactly_their_own_images(studio, assets):
    alone = _visitors_alone(studio, assets)
    results, order = _alternate(studio, VISITORS)
    assert _took_turns(order)
    for name in VISITORS:
        np.testing.assert_array_equal(results[name], alone[name])


def test_the_declared_call_state_is_what_keeps_alternating_images_right(studio, assets):
    """With nothing declared but handing over all the same, B's guidance stays on the pipeline when A resumes, and
    A's image is no longer its own: the declaration is what the test above relies on."""
    studio.load_adapter(str(assets["lora_a"]), adapter_name="a")
    studio.load_adapter(str(assets["lora_b"]), adapter_name="b")
    alone = _image(studio, {"a": 1.0}, 6, seed=0, guidance=7.0)
    studio.family = dataclasses.replace(studio.family, call_state=())
    results, order = _alternate(studio, VISITORS)
    assert _took_turns(order)
    assert not np.array_equal(results["A"], alone)


def test_a_family_that_declares_no_call_state_runs_each_request_in_one_turn(studio, assets):
    alone = _visitors_alone(studio, assets)
    studio.family = dataclasses.replace(studio.family, call_state=None)  # as families.GENERIC
    results, order = _alternate(studio, VISITORS)
    assert [name for name, _ in order] == ["A"] * 6 + ["B"] * 6  # B waited for A's last step
    for name in VISITORS:
        np.testing.assert_array_equal(results[name], alone[name])
    steps = []  # and a visitor who left still stops it between two steps
    with turns.watch(lambda: len(steps) < 3), pytest.raises(Cancelled, match="the visitor who asked for it has left"):
        _image(studio, {}, LONG, lambda step, total: steps.append(step))
    assert len(steps) == 3 and studio._lock._owner is None


def test_an_image_whose_visitor_left_stops_at_its_next_step(studio):
    steps = []
    with turns.watch(lambda: len(steps) < 3), pytest.raises(Cancelled, match="the visitor who asked for it has left"):
        _image(studio, {}, LONG, lambda step, total: steps.append(step))
    assert len(steps) == 3
    np.testing.assert_array_equal(_image(studio, {}, 4), _image(studio, {}, 4))  # the studio works as before


def test_the_image_budget_is_counted_in_default_images(studio, monkeypatch):
    info = studio.base_info()
    default = (info.default_steps, info.default_width, info.default_height)
    assert default == (25, 32, 32)  # what the numbers below are about
    monkeypatch.setenv("STUDIO_MAX_IMAGE_COST", "2")
    with pytest.raises(InputError, match=r"3 steps at 256x256 is 213.9x the work of this pipeline's default image "
                       r"\(25 steps at 32x32\); this Space allows 2x per image \(STUDIO_MAX_IMAGE_COST\): 256x256 is "
                       "too large"):  # fmt: skip
        _image_at(studio, 3, 256)
    with pytest.raises(InputError, match=r"at most 4 steps fit at 64x64"):
        _image_at(studio, 20, 64)  # 4x the pixels: ~12x the work per step
    assert _image_at(studio, 4, 64).shape == (64, 64, 3)
    assert _image_at(studio, 50, 32).shape == (32, 32, 3)


def _image_at(studio, steps, side):
    request = ImageRequest("a red circle", {}, True, 0, steps=steps, guidance_scale=5.0, width=side, height=side)
    return pixels(studio.generate(request))


@pytest.fixture
def lm(allow_lm):
    studio = TextStudio(device="cpu")
    studio.load_base(str(allow_lm["lm"]))
    studio.load_adapter(str(allow_lm["lora_a"]), adapter_name="a")
    return studio


def test_generation_runs_between_training_steps_and_neither_changes(lm, allow_lm):
    text = "the pirate sails the sea and the captain is good . arr matey ! " * 4
    alone_text = lm.generate(TextRequest("the pirate", ["a"], max_new_tokens=8))
    alone = TextStudio(device="cpu")
    alone.load_base(str(allow_lm["lm"]))
    alone.add_adapter("t", r=4, lora_alpha=8, target_modules=ALL)
    alone_losses = alone.train_adapter("t", text, 60, 0.01)["losses"]

    lm.add_adapter("t", r=4, lora_alpha=8, target_modules=ALL)
    steps, results, may_generate = [], {}, threading.Event()

    def progress(step, total, loss):
        steps.append(step)
        if step == 2:
            may_generate.set()

    def train():
        results["losses"] = lm.train_adapter("t", text, 60, 0.01, progress)["losses"]

    def generate():
        may_generate.wait()
        results["text"] = lm.generate(TextRequest("the pirate", ["a"], max_new_tokens=8))
        results["training steps when text was done"] = len(steps)

    threads = [threading.Thread(target=train), threading.Thread(target=generate)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert 2 <= results["training steps when text was done"] < 60
    assert results["text"] == alone_text  # eval mode and its adapters, though training had the model in train mode
    assert results["losses"] == alone_losses  # the training resumed exactly where it was


def test_training_is_bounded_in_tokens_times_steps(lm):
    lm.add_adapter("t", r=4, lora_alpha=8, target_modules=ALL)
    long_text = " ".join(["the pirate sails the sea"] * 160)  # 800 words
    with pytest.raises(InputError, match=r"training 500 steps on [\d,]+ tokens is [\d,]+ token-steps; this Space "
                       r"allows 200,000 per run: \d+ steps at most here"):  # fmt: skip
        lm.train_adapter("t", long_text, 500, 0.01)
    assert lm.list_adapters()[-1]["steps_trained"] == 0


def record_checks(monkeypatch) -> list:
    """What turns.check_wanted says at each step, as it says it: "step" while the visitor is there, then the
    Cancelled it raises."""
    seen, check = [], turns.check_wanted

    def spy(what):
        try:
            check(what)
        except Cancelled as exc:
            seen.append(exc)
            raise
        seen.append("step")

    monkeypatch.setattr(turns, "check_wanted", spy)
    return seen


def test_a_cancelled_client_job_stops_the_generation(assets, monkeypatch):
    """gradio_client's Job.cancel() (and a closed browser tab) marks the job dead; the studio sees it at its next
    step and frees the pipeline, instead of finishing an image nobody will see."""
    from gradio_client import Client

    seen = record_checks(monkeypatch)
    monkeypatch.setenv("STUDIO_MAX_IMAGE_COST", "100")
    with launch_app(assets) as url:
        client = Client(url, verbose=False)
        job = client.submit("a red circle", {}, True, 0, 100, 5.0, 32, 32, api_name="/generate")
        while "step" not in seen:
            time.sleep(0.01)
        job.cancel()
        for _ in range(600):
            if any(isinstance(s, Cancelled) for s in seen):
                break
            time.sleep(0.05)
    assert isinstance(seen[-1], Cancelled) and seen.count("step") < 100
