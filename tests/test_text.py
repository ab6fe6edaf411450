"""The text studio on a tiny LM: active sets, disabling, add / train / merge / export, and refusing without losing
state. Everything is offline: the LM and its adapters are built from configs into a folder the tests allow."""

import json
import subprocess
import sys
import threading
import zipfile

import pytest
import torch

from peft_core.errors import AdapterError, HubError, InputError, StudioError
from peft_core.text.studio import TextRequest, TextStudio
from tests.conftest import ALL

PROMPT = "the pirate"
TEXT = "the pirate sails the sea to the island and the captain is good . " * 3


@pytest.fixture
def studio(allow_lm):
    """A fresh text studio holding the tiny LM and no adapters (in this module it stands for conftest's image
    `studio`)."""
    s = TextStudio(device="cpu")
    s.load_base(str(allow_lm["lm"]))
    return s


@pytest.fixture
def two(studio, allow_lm):
    studio.load_adapter(str(allow_lm["lora_a"]), adapter_name="a")
    studio.load_adapter(str(allow_lm["lora_b"]), adapter_name="b")
    return studio


def gen(studio, adapters=(), use_adapters=True, prompt=PROMPT, **kwargs):
    adapters = adapters if isinstance(adapters, str) else list(adapters)
    max_new_tokens = kwargs.pop("max_new_tokens", 10)
    return studio.generate(TextRequest(prompt, adapters, use_adapters, max_new_tokens=max_new_tokens, **kwargs))


def logits(studio, adapters=()):
    """Next-token logits for PROMPT with exactly `adapters` active (none: the disable toggle), set as generate sets
    a request's active set when it cannot share a batch (set_adapter)."""
    with studio._lock, torch.no_grad():
        ids = studio.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
        keys = studio.pool.keys(tuple(adapters))
        studio.pool.touch(keys)
        studio.lm.set_active(keys, any_loaded=len(studio.pool) > 0)
        return studio.model(ids).logits[0, -1].clone()


def snapshot(studio):
    """What a failed call must leave unchanged: the adapter list, and the base's and each adapter's greedy text
    and next-token logits (bit for bit: a leftover from a failed load would show there first)."""
    sets = [[]] + [[a["adapter_name"]] for a in studio.list_adapters()]
    outputs = [(gen(studio, names, max_new_tokens=5), logits(studio, names).tolist()) for names in sets]
    return studio.list_adapters(), outputs


# --- model ---------------------------------------------------------------------------------------------------------


def test_import_is_cheap():
    code = (
        "import sys, peft_core.text.studio; print([m for m in ('torch', 'transformers', 'peft') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_model_info(studio, allow_lm):
    info = studio.base_info()
    assert info.model_id == str(allow_lm["lm"].resolve()) and info.revision == "main"
    assert info.model_class == "LlamaForCausalLM" and info.model_type == "llama"
    assert info.device == "cpu" and info.dtype == "float32"
    assert info.num_parameters > 0 and info.context_length == 64
    assert info.default_target_modules == ["q_proj", "v_proj"] and studio.list_adapters() == []
    json.dumps(info.to_dict())  # the API returns it as is


def test_load_model_refusals_keep_the_old_model(studio, allow_lm, tmp_path):
    before = gen(studio)
    with pytest.raises(HubError, match="not allowed"):
        studio.load_base(str(tmp_path))  # outside STUDIO_LOCAL_DIRS
    (allow_lm["root"] / "empty").mkdir(exist_ok=True)
    with pytest.raises(HubError, match="no config.json"):
        studio.load_base(str(allow_lm["root"] / "empty"))
    assert gen(studio) == before and studio.base_info().model_id == str(allow_lm["lm"].resolve())


def test_locked_base_cannot_be_replaced_nor_wiped(studio, allow_lm, monkeypatch):
    """STUDIO_LOCK_BASE refuses another base; the same base again keeps the model and every adapter, trained ones
    included (a reload would drop them: a wipe any visitor could do), and an adapter repo made for it adds just
    its adapter."""
    studio.add_adapter("t", r=4, lora_alpha=8, target_modules=["q_proj"])
    studio.train_adapter("t", "the pirate sails the sea", 3, 0.01)
    before = gen(studio, ["t"])
    monkeypatch.setenv("STUDIO_LOCK_BASE", "1")
    with pytest.raises(InputError, match="locked to the base"):
        studio.load_base(str(allow_lm["lm_copy"]))
    model = studio.model
    studio.load_base(str(allow_lm["lm"]))
    assert studio.model is model and gen(studio, ["t"]) == before
    studio.load_base(str(allow_lm["lora_a"]))
    names = [a["adapter_name"] for a in studio.list_adapters()]
    assert studio.model is model and names == ["t", "lora_a"]


def test_adapter_repo_loads_its_base(allow_lm):
    """Like AutoModelForCausalLM.from_pretrained("ybelkada/opt-350m-lora"): the base named in the config, then it."""
    s = TextStudio(device="cpu")
    info = s.load_base(str(allow_lm["lora_a"]))
    assert info.model_id == str(allow_lm["lm"])  # as written in adapter_config.json
    assert [(a["adapter_name"], a["source"]) for a in s.list_adapters()] == [("lora_a", "hub")]
    reference = TextStudio(device="cpu")
    reference.load_base(str(allow_lm["lm"]))
    reference.load_adapter(str(allow_lm["lora_a"]), adapter_name="lora_a")
    assert gen(s, ["lora_a"]) == gen(reference, ["lora_a"]) and gen(s) == gen(reference)


# --- active sets ---------------------------------------------------------------------------------------------------


def test_disabled_equals_base_and_adapters_differ(studio, allow_lm):
    base, base_logits = gen(studio), logits(studio)
    studio.load_adapter(str(allow_lm["lora_a"]), adapter_name="a")
    studio.load_adapter(str(allow_lm["lora_b"]), adapter_name="b")
    a, b, ab = gen(studio, ["a"]), gen(studio, ["b"]), gen(studio, ["a", "b"])
    assert len({base, a, b, ab}) == 4  # A != B != A+B, none is the base
    assert gen(studio, ["a", "b"], use_adapters=False) == base  # the toggle
    assert gen(studio, []) == base  # an empty set is the base too
    assert torch.equal(logits(studio, ()), base_logits)  # bit for bit, not just the same tokens
    assert gen(studio, ["a"]) == a and gen(studio, "a, b") == ab  # re-enabled equals before; a text box works


def test_active_set_is_per_request(two, allow_lm):
    """A request naming only b must not keep a active from the request before."""
    only_b_after_ab = (gen(two, ["a", "b"]), gen(two, ["b"]))[1]
    fresh = TextStudio(device="cpu")
    fresh.load_base(str(allow_lm["lm"]))
    fresh.load_adapter(str(allow_lm["lora_b"]), adapter_name="b")
    assert only_b_after_ab == gen(fresh, ["b"])


def test_concurrent_requests_keep_their_own_active_sets(two):
    expected = {names: gen(two, list(names), max_new_tokens=5) for names in [(), ("a",), ("b",), ("a", "b")]}
    results, errors = [], []

    def worker(names):
        try:
            for _ in range(3):
                results.append((names, gen(two, list(names), max_new_tokens=5)))
        except Exception as exc:  # pragma: no cover - shown by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(names,)) for names in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12
    assert all(text == expected[names] for names, text in results)


def test_compare_gives_base_then_adapted(two):
    base, adapted = two.compare(TextRequest(PROMPT, ["a"], max_new_tokens=10))
    assert base == gen(two) and adapted == gen(two, ["a"])


def test_progress_counts_the_new_tokens_and_changes_nothing(two):
    """generate(request, progress) and compare(request, progress), as on the image side: progress(token, total)
    after each new token, total the request's max_new_tokens; the text is the same as without it."""
    calls = []
    request = TextRequest(PROMPT, ["a"], max_new_tokens=10)
    text = two.generate(request, lambda token, total: calls.append((token, total)))
    assert text == gen(two, ["a"])
    assert calls and calls == [(i, 10) for i in range(1, len(calls) + 1)] and len(calls) <= 10
    calls.clear()
    assert two.compare(request, lambda token, total: calls.append(token)) == (gen(two), text)
    assert calls[0] == 1 and 1 in calls[1:]  # counted from 1 again for the adapted text


def test_sampling_is_seeded(two):
    one = gen(two, ["a"], do_sample=True, seed=7, temperature=1.5, max_new_tokens=16)
    assert gen(two, ["a"], do_sample=True, seed=7, temperature=1.5, max_new_tokens=16) == one
    others = {gen(two, ["a"], do_sample=True, seed=s, temperature=1.5, max_new_tokens=16) for s in range(4)}
    assert len(others) > 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": ""}, "prompt must not be empty"),
        ({"max_new_tokens": 0}, r"max_new_tokens must be an integer in \[1, 256\], got 0"),
        ({"max_new_tokens": 63}, "passes the model's context of 64 tokens"),
        ({"temperature": 0}, r"temperature must be a finite number in \[0.01, 5.0\], got 0"),
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"adapters": ["a", "nope"]}, "'nope' not loaded; loaded: a, b"),
        ({"seed": -1}, "seed must be an integer"),
    ],
)
def test_generation_refusals(two, kwargs, message):
    request = {"prompt": PROMPT, "adapters": ["a"], "max_new_tokens": 10} | kwargs
    with pytest.raises(InputError, match=message):
        two.generate(TextRequest(**request))


# --- loading adapters ----------------------------------------------------------------------------------------------


def test_adapter_facts(two):
    a = two.list_adapters()[0]
    assert a["adapter_name"] == "a" and a["source"] == "hub" and a["peft_type"] == "LORA"
    assert (a["r"], a["lora_alpha"], a["trainable"]) == (4, 8.0, False)
    assert a["target_modules"] == sorted(ALL) and a["num_layers"] == 12 and a["num_parameters"] > 0
    json.dumps(two.list_adapters())


def test_derived_names_and_duplicates(studio, allow_lm):
    studio.load_adapter(str(allow_lm["lora_a"]))
    studio.load_adapter(str(allow_lm["lora_a"]))
    assert [a["adapter_name"] for a in studio.list_adapters()] == ["lora_a", "lora_a_2"]
    with pytest.raises(InputError, match="'lora_a' is already loaded"):
        studio.load_adapter(str(allow_lm["lora_b"]), adapter_name="lora_a")


@pytest.mark.parametrize(
    ("folder", "error", "message"),
    [
        ("truncated", AdapterError, "'adapter_model.safetensors' is truncated or corrupt"),
        ("other_arch", AdapterError, "does not fit .* 'transformer.h.0.mlp.down_proj'"),
        ("half_fits", AdapterError, "layers got no weights from the file .*layers.1."),
        ("lm", HubError, "is not a peft adapter"),
    ],
)
def test_failed_load_leaves_everything_as_before(two, allow_lm, folder, error, message):
    before = snapshot(two)
    with pytest.raises(error, match=message):
        two.load_adapter(str(allow_lm[folder]), adapter_name="bad")
    assert snapshot(two) == before
    assert "bad" not in two.model.peft_config


def test_loha_next_to_lora_is_refused(two, allow_lm):
    before = snapshot(two)
    with pytest.raises(AdapterError, match="cannot mix a LoRA and a LoHa in one model"):
        two.load_adapter(str(allow_lm["loha"]))
    assert snapshot(two) == before


def test_lora_next_to_loha_is_refused(studio, allow_lm):
    base = gen(studio)
    studio.load_adapter(str(allow_lm["loha"]), adapter_name="h")
    assert studio.list_adapters()[0]["peft_type"] == "LOHA" and gen(studio, ["h"]) != base
    before = snapshot(studio)
    with pytest.raises(AdapterError, match="cannot mix a LoHa and a LoRA in one model"):
        studio.load_adapter(str(allow_lm["lora_a"]))
    with pytest.raises(AdapterError, match="cannot mix a LoHa and a LoRA"):
        studio.add_adapter("fresh")
    assert snapshot(studio) == before


def test_delete_keeps_the_others(two):
    b = gen(two, ["b"])
    assert [a["adapter_name"] for a in two.delete_adapter("a")] == ["b"]
    assert gen(two, ["b"]) == b
    with pytest.raises(InputError, match="no adapter named 'a'; loaded: b"):
        two.delete_adapter("a")
    two.delete_adapter("b")
    assert two.list_adapters() == [] and gen(two) == gen(two, use_adapters=False)


def test_resident_cap_evicts_the_least_recently_used_hub_adapter(two, allow_lm, monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_RESIDENT_ADAPTERS", "2")
    gen(two, ["a"])  # b is now the least recently used
    two.load_adapter(str(allow_lm["lora_c_r2"]), adapter_name="c")
    assert [a["adapter_name"] for a in two.list_adapters()] == ["a", "c"]


# --- adding and training -------------------------------------------------------------------------------------------


def test_add_adapter_defaults(studio):
    base = gen(studio)
    [fresh] = studio.add_adapter("fresh")
    assert fresh["target_modules"] == ["q_proj", "v_proj"] and fresh["source"] == "added" and fresh["trainable"]
    assert (fresh["r"], fresh["lora_alpha"]) == (8, 16.0)
    assert gen(studio, ["fresh"]) == base  # a new LoRA starts at zero (B = 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 0}, r"r must be an integer in \[1, 256\], got 0"),
        ({"r": 2.5}, "r must be an integer"),
        ({"lora_alpha": 0}, r"lora_alpha must be a number in \(0, 1024\], got 0"),
        ({"lora_dropout": 1.0}, r"lora_dropout must be a number in \[0, 1\), got 1.0"),
        ({"target_modules": "q_proj, qproj"}, "target module.* 'qproj' not found .* valid names: .*q_proj"),
        ({"target_modules": "all-linear, q_proj"}, "cannot be combined"),
        ({"adapter_name": "a"}, "'a' is already loaded"),
        ({"adapter_name": "bad.name"}, "'bad.name' is not valid"),
        ({"adapter_name": "half"}, "'half' is the name of a torch module method"),  # peft's ModuleDicts need it
    ],
)
def test_add_adapter_refusals_leave_everything_as_before(two, kwargs, message):
    before = snapshot(two)
    with pytest.raises(StudioError, match=message):
        two.add_adapter(**({"adapter_name": "new"} | kwargs))
    assert snapshot(two) == before


def test_training_learns_the_text_and_leaves_the_others(two):
    a, base = gen(two, ["a"]), gen(two)
    two.add_adapter("t", r=8, lora_alpha=16)
    calls = []
    result = two.train_adapter("t", TEXT, steps=30, learning_rate=0.02, progress=lambda *c: calls.append(c))
    assert result["adapter_name"] == "t" and result["steps"] == 30 and len(result["losses"]) == 30
    assert result["loss_end"] < result["loss_start"] and result["losses"][-1] < result["losses"][0]
    assert [c[:2] for c in calls] == [(i, 30) for i in range(1, 31)] and calls[0][2] == result["losses"][0]
    assert gen(two, ["t"], max_new_tokens=12).startswith("sails the sea to the island")  # the text goes on
    assert gen(two, ["a"]) == a and gen(two) == base  # other adapters and the base are untouched
    assert not two.model.training and not any(p.requires_grad for p in two.model.parameters())
    assert two.list_adapters()[-1]["steps_trained"] == 30
    json.dumps(result)


def test_an_adapter_named_like_a_layer_trains_only_itself(studio):
    """ "mlp" is also part of base weight names ("model.layers.0.mlp.up_proj.weight"): those must stay frozen."""
    base = logits(studio)
    studio.add_adapter("mlp", r=4, lora_alpha=8, target_modules="all-linear")
    studio.train_adapter("mlp", TEXT, 3, 0.05)
    assert torch.equal(logits(studio, ()), base) and not torch.equal(logits(studio, ["mlp"]), base)


def test_training_is_deterministic(allow_lm):
    runs = []
    for _ in range(2):
        s = TextStudio(device="cpu")
        s.load_base(str(allow_lm["lm"]))
        s.add_adapter("t", r=4, lora_alpha=8, lora_dropout=0.1)  # dropout draws from the seeded RNG
        runs.append((s.train_adapter("t", TEXT, 5, 0.05)["losses"], logits(s, ["t"])))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


def test_failed_training_restores_the_adapter(studio):
    studio.add_adapter("t", r=4, lora_alpha=8)
    studio.train_adapter("t", TEXT, 5, 0.05)
    before = logits(studio, ["t"])

    def stop(step, total, loss):
        if step == 3:
            raise KeyboardInterrupt  # what a cancelled UI request looks like from here

    with pytest.raises(KeyboardInterrupt):
        studio.train_adapter("t", TEXT, 10, 0.05, progress=stop)
    assert torch.equal(logits(studio, ["t"]), before)
    assert studio.list_adapters()[0]["steps_trained"] == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"adapter_name": "a"}, "'a' was loaded from .* add a new adapter"),
        ({"adapter_name": "zz"}, "no adapter named 'zz'"),
        ({"steps": 0}, r"steps must be an integer in \[1, 500\], got 0"),
        ({"steps": 501}, "got 501"),
        ({"learning_rate": 0}, r"learning_rate must be a number in \(0, 1\]"),
        ({"learning_rate": float("inf")}, "learning_rate must be a finite number"),
        ({"text": "  "}, "must not be empty"),
        ({"text": "the " * 6000}, "at most 20,000 are allowed"),
    ],
)
def test_training_refusals(two, kwargs, message):
    two.add_adapter("t", r=4, lora_alpha=8)
    before = snapshot(two)
    with pytest.raises(InputError, match=message):
        two.train_adapter(**({"adapter_name": "t", "text": TEXT, "steps": 3, "learning_rate": 0.01} | kwargs))
    assert snapshot(two) == before


# --- merging -------------------------------------------------------------------------------------------------------


def test_linear_merge_at_1_0_is_the_first_adapter(two):
    [*_, merged] = two.merge_adapters({"a": 1.0, "b": 0.0}, "m")
    assert merged["source"] == "merged" and merged["merged_from"] == {"a": 1.0, "b": 0.0}
    assert merged["combination_type"] == "linear" and merged["r"] == 4
    assert gen(two, ["m"]) == gen(two, ["a"])
    torch.testing.assert_close(logits(two, ["m"]), logits(two, ["a"]), atol=1e-5, rtol=1e-5)
    mix = two.merge_adapters({"a": 0.5, "b": 0.5}, "mix")[-1]
    assert mix["adapter_name"] == "mix" and gen(two, ["mix"]) not in (gen(two, ["a"]), gen(two, ["b"]))


@pytest.mark.parametrize(
    ("kind", "density", "rank"),
    [("cat", None, 8), ("svd", None, 4), ("ties", 0.5, 4), ("dare_linear", 0.5, 4), ("dare_ties", 0.5, 4),
     ("magnitude_prune", 0.5, 4)],
)  # fmt: skip
def test_every_merge_type_makes_a_working_adapter(two, kind, density, rank):
    [*_, merged] = two.merge_adapters({"a": 1.0, "b": 0.5}, "m", combination_type=kind, density=density)
    assert merged["combination_type"] == kind and merged["r"] == rank
    assert gen(two, ["m"]) != gen(two)


def test_cat_merges_different_ranks_linear_does_not(two, allow_lm):
    two.load_adapter(str(allow_lm["lora_c_r2"]), adapter_name="c")
    before = snapshot(two)
    with pytest.raises(AdapterError, match=r"'linear' needs adapters of one rank, got 'a' \(r=4\), 'c' \(r=2\)"):
        two.merge_adapters({"a": 1.0, "c": 1.0}, "m")
    assert snapshot(two) == before
    assert two.merge_adapters({"a": 1.0, "c": 1.0}, "m", combination_type="cat")[-1]["r"] == 6


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (({"a": 1.0, "nope": 1.0}, "m"), InputError, "adapter.*'nope' not loaded; loaded: a, b"),
        (({"a": float("nan"), "b": 1.0}, "m"), InputError, "weight of adapter 'a' must be a finite number"),
        (({"a": 1.0, "b": 1.0}, "b"), InputError, "'b' is already loaded"),
        (({"a": 1.0, "b": 1.0}, "m", "avg"), InputError, "combination_type must be one of linear, cat, svd"),
        (({"a": 1.0, "b": 1.0}, "m", "ties"), InputError, "'ties' needs density"),
        (({"a": 1.0, "b": 1.0}, "m", "ties", 0.0), InputError, r"density must be a number in \(0, 1\]"),
        (({}, "m"), InputError, "adapters must map adapter names to weights"),
    ],
)
def test_merge_refusals_leave_everything_as_before(two, args, error, message):
    before = snapshot(two)
    with pytest.raises(error, match=message):
        two.merge_adapters(*args)
    assert snapshot(two) == before and set(two.model.peft_config) == {"a", "b"}


def test_merge_of_a_loha_is_refused(studio, allow_lm):
    studio.load_adapter(str(allow_lm["loha"]), adapter_name="h")
    with pytest.raises(AdapterError, match=r"only LoRA adapters can be merged; not 'h' \(LoHa\)"):
        studio.merge_adapters({"h": 1.0}, "m")


# --- export --------------------------------------------------------------------------------------------------------


def test_export_loads_back_in_peft_and_in_the_studio(two, allow_lm):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    two.add_adapter("t", r=8, lora_alpha=16)
    two.train_adapter("t", TEXT, 20, 0.05)
    out = allow_lm["root"] / "exports"
    archive = two.export_adapter("t", out)
    assert archive == out / "t.zip"
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["t/adapter_config.json", "t/adapter_model.safetensors"]
    config = json.loads((out / "t" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == two.info.model_id and config["peft_type"] == "LORA"

    base = AutoModelForCausalLM.from_pretrained(allow_lm["lm"]).eval()
    peft_model = PeftModel.from_pretrained(base, out / "t").eval()
    ids = two.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits[0, -1], logits(two, ["t"]), atol=1e-5, rtol=1e-5)
        greedy = peft_model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert two.tokenizer.decode(greedy[0, ids.shape[1] :], skip_special_tokens=True) == gen(two, ["t"])

    two.load_adapter(str(out / "t"), adapter_name="t_again")  # and the studio loads its own export
    assert gen(two, ["t_again"]) == gen(two, ["t"])
    assert two.list_adapters()[-1]["trainable"] is False
