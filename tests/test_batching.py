"""Concurrent text requests share one generate (peft_core/text/batching.py, mixed.py): each row's text equals its
solo run, a bad row fails alone, a lone LoRA runs merged and leaves the base bit for bit."""


import pytest
import torch
from peft import LoraConfig

from peft_core.errors import InputError
from peft_core.text.requests import TextRequest
from peft_core.text.studio import TextStudio
from tests.conftest import ALL, together, write_adapter
from tiny_models.text import build_tiny_lm

NAMES = ["a", "b", "c", "d", "e", "f", "g", "h"]
# Prompts of different lengths (the batch is left-padded) and rows with their own max_new_tokens.
PROMPTS = ["the pirate", "a cat sat on", "hello good morning sir", "the ship", "gold map",
           "the captain sails the sea", "ahoy", "yes"]  # fmt: skip
TOKENS = [12, 5, 12, 9, 12, 3, 12, 7]


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    """The tiny LM and eight LoRAs for it (seeds 1..8), under one root the tests allow."""
    root = tmp_path_factory.mktemp("batching")
    model = build_tiny_lm(root / "lm")
    for i, name in enumerate(NAMES):
        config = LoraConfig(r=4, lora_alpha=8, target_modules=ALL, init_lora_weights=False)
        write_adapter(model, root / name, config, i + 1, str(root / "lm"))
    dora = LoraConfig(r=4, lora_alpha=8, target_modules=ALL, init_lora_weights=False, use_dora=True)
    write_adapter(model, root / "dora", dora, 9, str(root / "lm"))
    small = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    write_adapter(model, root / "r2", small, 10, str(root / "lm"))
    embedding = LoraConfig(r=4, lora_alpha=8, target_modules=[*ALL, "embed_tokens"], init_lora_weights=False)
    write_adapter(model, root / "emb", embedding, 11, str(root / "lm"))
    return root


@pytest.fixture
def studio(eight, monkeypatch):
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", str(eight))
    s = TextStudio(device="cpu")
    s.load_base(str(eight / "lm"))
    for name in NAMES:
        s.load_adapter(str(eight / name), adapter_name=name)
    return s


def solo(studio, i, adapters=None, **kwargs):
    names = [NAMES[i]] if adapters is None else adapters
    tokens = kwargs.pop("max_new_tokens", TOKENS[i])
    return studio.generate(TextRequest(PROMPTS[i], names, max_new_tokens=tokens, **kwargs))


def test_eight_adapters_in_one_batch_equal_their_solo_runs(studio):
    before = {k: v.clone() for k, v in studio.model.state_dict().items()}
    alone = [solo(studio, i) for i in range(8)]
    assert len(set(alone)) == 8  # eight adapters, eight texts
    assert studio.batcher.batches[-8:] == [1] * 8
    assert together([lambda i=i: solo(studio, i) for i in range(8)]) == alone
    assert studio.batcher.batches[-1] > 1  # they did share a generate (how many depends on the threads' timing)
    after = studio.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no hook, merge or swap left behind
    assert solo(studio, 0, []) == studio.generate(TextRequest(PROMPTS[0], ["a"], False, max_new_tokens=TOKENS[0]))


def test_base_rows_and_adapter_rows_mix(studio):
    calls = [lambda i=i: solo(studio, i, [] if i % 2 else None) for i in range(8)]
    alone = [c() for c in calls]
    assert together(calls) == alone
    base = TextRequest(PROMPTS[1], [NAMES[1]], use_adapters=False, max_new_tokens=TOKENS[1])
    assert alone[1] == studio.generate(base)


def test_one_bad_request_fails_alone(studio):
    alone = [solo(studio, i) for i in range(8)]
    # Passes validation, fails once the prompt is encoded in the batch: 60 tokens + 12 pass the context of 64.
    long_prompt = " ".join(["the"] * 60)
    calls = [lambda i=i: solo(studio, i) for i in range(8)]
    calls[3] = lambda: studio.generate(TextRequest(long_prompt, ["d"], max_new_tokens=12))
    results = together(calls)
    assert isinstance(results[3], InputError) and "passes the model's context of 64 tokens" in str(results[3])
    assert [r for i, r in enumerate(results) if i != 3] == [t for i, t in enumerate(alone) if i != 3]


def test_compare_is_two_rows_of_one_batch_equal_to_two_solo_calls(studio):
    base, adapted = solo(studio, 0, []), solo(studio, 0)
    assert studio.compare(TextRequest(PROMPTS[0], ["a"], max_new_tokens=TOKENS[0])) == (base, adapted)
    assert studio.batcher.batches[-1] == 2


def test_what_a_mixed_batch_cannot_serve_runs_alone_with_the_same_text(studio, eight):
    studio.load_adapter(str(eight / "dora"), adapter_name="dora")
    two = ["a", "b"]
    calls = [lambda: solo(studio, 0, two), lambda: solo(studio, 1, ["dora"]),
             lambda: solo(studio, 2, do_sample=True, seed=5, temperature=1.3), lambda: solo(studio, 3),
             lambda: solo(studio, 4)]  # fmt: skip
    alone = [c() for c in calls]
    assert len(set(alone)) == 5
    assert together(calls) == alone
    assert sorted(studio.batcher.batches[-4:]) == [1, 1, 1, 2]  # only the last two shared a generate


def test_a_lone_adapter_runs_merged_and_leaves_the_base_bit_for_bit(studio, monkeypatch):
    before = {k: v.clone() for k, v in studio.model.state_dict().items()}
    merged = solo(studio, 0)
    assert studio.lm._merged._cache  # it was merged (and the merged weights kept for the next request)
    monkeypatch.setenv("STUDIO_FUSE", "0")  # the unmerged LoRA layers
    assert solo(studio, 0) == merged
    after = studio.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # base and every adapter, bit for bit
    assert solo(studio, 0, []) == studio.generate(TextRequest(PROMPTS[0], ["a"], False, max_new_tokens=TOKENS[0]))


def test_training_drops_the_merged_weights_of_the_adapter_it_changes(studio):
    studio.add_adapter("t", r=4, lora_alpha=8, target_modules=ALL)
    first = studio.generate(TextRequest("the pirate", ["t"], max_new_tokens=8))
    studio.train_adapter("t", "the captain sails the sea to the island . " * 4, 30, 0.05)
    trained = studio.generate(TextRequest("the pirate", ["t"], max_new_tokens=8))
    assert trained != first
    studio.lm._merged.forget()
    assert studio.generate(TextRequest("the pirate", ["t"], max_new_tokens=8)) == trained  # not the stale merge


def test_a_deleted_adapter_is_refused_in_the_batch(studio):
    studio.delete_adapter("h")
    results = together([lambda i=i: solo(studio, i) for i in range(8)])
    assert isinstance(results[7], InputError) and "'h'" in str(results[7])
    assert all(isinstance(r, str) for r in results[:7])


def test_a_row_whose_visitor_left_stops_and_the_others_go_on(studio):
    from peft_core.turns import Cancelled, watch

    alone = [solo(studio, i) for i in range(4)]

    def gone():
        with watch(lambda: False):  # the visitor has left (what gradio's cancellation tells the core)
            return solo(studio, 0)

    results = together([gone] + [lambda i=i: solo(studio, i) for i in range(1, 4)])
    assert isinstance(results[0], Cancelled)
    assert results[1:] == alone[1:]


@pytest.mark.parametrize("other", ["r2", "emb"])
def test_other_ranks_and_embedding_loras_share_a_batch_with_their_solo_texts(studio, eight, other):
    """Rank 2 next to rank 4, or a LoRA on the embeddings, in one batch through peft's adapter_names: each row
    equals its solo run."""
    studio.load_adapter(str(eight / other), adapter_name=other)
    assert type(studio.lm.forward_for([("a",), (other,), ()])).__name__ == "MixedRows"
    calls = [lambda: solo(studio, 0), lambda: solo(studio, 1, [other]), lambda: solo(studio, 2, []),
             lambda: solo(studio, 3, [other])]  # fmt: skip
    alone = [c() for c in calls]
    assert len(set(alone)) == 4
    assert together(calls) == alone
    assert studio.batcher.batches[-1] > 1


def test_a_compare_among_eight_other_requests_equals_two_solo_calls(studio):
    base, adapted = solo(studio, 1, []), solo(studio, 1)
    calls = [lambda i=i: solo(studio, i) for i in range(8)]  # eight rows ahead of it fill a batch
    calls.append(lambda: studio.compare(TextRequest(PROMPTS[1], ["b"], max_new_tokens=TOKENS[1])))
    results = together(calls)
    assert results[8] == (base, adapted)
    assert max(studio.batcher.batches) <= 9  # MAX_ROWS, plus a compare's second row that is never split off
