"""The Text tab's own parsing and defaults, without a browser: the merge line and the training example."""

import gradio as gr
import pytest

from ui.text_handlers import TRAIN_EXAMPLE, merge_note, parse_weights


def test_merge_line_without_a_colon_says_the_expected_form():
    assert parse_weights("pirate: 0.7, formal: 0.3") == {"pirate": 0.7, "formal": 0.3}
    assert parse_weights("pirate") == {"pirate": 1.0}
    for bad in ("pirate 0.7", "pirate: 0.7 formal: 0.3", "pirate: lots"):
        with pytest.raises(gr.Error, match="is not `name: weight`; write the adapters and weights like"):
            parse_weights(bad)


def test_merge_note_names_what_was_made():
    note = merge_note({"pirate": 0.7, "formal": 0.3}, "linear", {"adapter_name": "both", "r": 8})
    assert note.startswith("Made **both** = 0.7 × pirate + 0.3 × formal (linear, rank 8)")


def test_the_training_example_is_in_the_bundled_models_vocabulary():
    """The prefilled text trains on real tokens: none of it becomes <unk> in the word-level tokenizer of the LM the
    page loads by default (assets/hub/adapter-studio/tiny-shapes-lm; the suite's own tiny LM has other words)."""
    from transformers import AutoTokenizer

    from peft_core import bundled

    tokenizer = AutoTokenizer.from_pretrained(bundled.bundled_path(bundled.BUNDLED_TEXT_MODEL))
    ids = tokenizer(TRAIN_EXAMPLE)["input_ids"]
    assert len(ids) > 20 and tokenizer.unk_token_id not in ids


@pytest.fixture(scope="module")
def text_studio(lm_assets):
    from peft_core.text.studio import TextStudio
    from tests.conftest import EnvPatch

    with EnvPatch.context() as env:
        env.setenv("STUDIO_LOCAL_DIRS", str(lm_assets["root"]))
        studio = TextStudio(device="cpu")
        studio.load_base(str(lm_assets["lm"]))
        yield studio


def note_for(studio, text: str) -> str:
    from types import SimpleNamespace

    from ui.text_handlers import TextHandlers

    return TextHandlers(studio, SimpleNamespace()).ui_train_note(to_learn=text)


def test_unknown_words_are_counted_and_named_before_training(text_studio):
    """Words outside the tiny LM's vocabulary become <unk>: the note says how many tokens and which words, before
    Train is pressed; the prefilled example has none."""
    note = note_for(text_studio, "the captain zorblax sails the ship qwfp zorblax")
    assert "**3 tokens are outside the model's vocabulary** and become `<unk>`" in note
    assert "(words: `zorblax`, `qwfp`)" in note
    assert note.startswith("**")
    known = "the captain sails the pirate ship to the island . arr , the gold map ! "  # the suite's LM's words
    assert "every word is in the model's vocabulary" in note_for(text_studio, known)
    assert "<unk>" not in note_for(text_studio, known)


@pytest.fixture(scope="module")
def bundled_studio():
    """A text studio holding the LM the page loads by default (the bundled one, read offline from assets/hub/)."""
    from peft_core import bundled
    from peft_core.text.studio import TextStudio

    studio = TextStudio(device="cpu")
    studio.load_base(bundled.BUNDLED_TEXT_MODEL)
    return studio


def test_the_prefilled_text_draws_no_warning_and_trains_on_the_bundled_lm(bundled_studio):
    """What a visitor sees on the Text tab as it opens: the note under the prefilled text names no unknown word,
    and Train at the page's defaults (r 8, alpha 16, 60 steps, rate 0.01) lowers the loss on it."""
    note = note_for(bundled_studio, TRAIN_EXAMPLE)
    assert "every word is in the model's vocabulary" in note and "<unk>" not in note
    assert "outside the model's vocabulary" in note_for(bundled_studio, "the captain sails the pirate ship")
    bundled_studio.add_adapter("mine", r=8, lora_alpha=16)
    result = bundled_studio.train_adapter("mine", TRAIN_EXAMPLE, 60, 0.01)
    assert result["loss_end"] < 0.5 * result["loss_start"], result


def test_length_blocks_and_the_token_limit_are_shown_before_training(text_studio):
    """The note gives the token count against the run's limit, says when the text is cut into context-sized blocks,
    and warns when Train would refuse the text, naming how many tokens too many."""
    from peft_core import limits

    context = text_studio.info.context_length
    short = note_for(text_studio, "the pirate ship")
    assert f"(a run trains on at most {limits.TRAIN_MAX_TOKENS:,})" in short and "blocks" not in short
    long_text = "the pirate ship " * context  # 3 tokens a repeat: three contexts and more
    assert f"blocks of at most {min(256, context)} tokens, the model's context" in note_for(text_studio, long_text)
    too_long = ". " * (limits.TRAIN_MAX_TOKENS + 10)
    assert "too many**, Train will refuse it" in note_for(text_studio, too_long)
    assert "at most" in note_for(text_studio, "x" * (limits.TRAIN_TEXT_MAX_CHARS + 1))  # said, not raised
    assert note_for(text_studio, "") == "Paste a few sentences in the style to learn."


def test_the_note_follows_what_training_refuses(text_studio):
    """What the note says is what Train does: the text it counts as over the limit is the one training refuses."""
    from peft_core import InputError, limits

    text_studio.add_adapter("note_check", 2, 4, 0.0, ["q_proj"])
    with pytest.raises(InputError, match="at most 4,096 tokens can be trained on"):
        text_studio.train_adapter("note_check", ". " * (limits.TRAIN_MAX_TOKENS + 10), 1, 1e-3)
    text_studio.delete_adapter("note_check")


def test_card_facts_say_where_each_adapter_came_from():
    """A card's facts line: repo @ revision, added here (trained N steps), merged from its parts; the method, r,
    lora_alpha and targets; the names escaped, so a name with Markdown in it shows as written."""
    from ui.text_cards import facts_markdown

    base = {"peft_type": "LORA", "r": 4, "lora_alpha": 8.0, "target_modules": ["q_proj", "v_proj"], "steps_trained": 0}
    loaded = facts_markdown(base | {"source": "hub", "repo_id": "org/pirate", "revision": "v1"})
    assert loaded == "org/pirate @ v1 · LORA · r 4 · lora\\_alpha 8 · targets q\\_proj, v\\_proj"
    assert facts_markdown(base | {"source": "added", "repo_id": None}).startswith("added here, not trained yet · ")
    assert facts_markdown(base | {"source": "added", "repo_id": None, "steps_trained": 60}).startswith(
        "added here, trained 60 steps · "
    )
    merged = base | {"source": "merged", "repo_id": None, "merged_from": {"a_1": 0.7, "b": 0.3},
                     "combination_type": "linear"}  # fmt: skip
    assert facts_markdown(merged).startswith("merged from 0\\.7 × a\\_1 \\+ 0\\.3 × b \\(linear\\) · ")
    assert "r " not in facts_markdown(base | {"source": "hub", "repo_id": "o/ia3", "r": None, "lora_alpha": None})


def test_ticks_are_kept_for_the_adapters_still_there():
    from ui.text_cards import kept_ticks

    adapters = [{"adapter_name": n} for n in ("a", "b", "c")]
    assert kept_ticks(adapters, ["c", "gone", "a"]) == ["c", "a"]  # as the page had them, the deleted one out
    assert kept_ticks(adapters, []) == []  # nothing ticked stays nothing ticked
    assert kept_ticks(adapters, None) == ["a"]  # a new base or a first page: the first one, to show an effect
    assert kept_ticks([], None) == []


def test_generate_and_compare_take_the_pages_settings_as_one_set(text_studio):
    """As on the Images tab: the handlers get one {component: value} set and build a TextRequest from it, so they
    give what the studio gives for that request; the disable toggle gives the base, and compare ignores it."""
    from types import SimpleNamespace

    from peft_core.text.requests import TextRequest
    from ui.text_handlers import TextHandlers

    text_studio.add_adapter("page_t", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    text_studio.train_adapter("page_t", "the captain sails the pirate ship . " * 3, 3, 0.05)
    names = ("prompt", "ticks", "disabled", "max_new_tokens", "do_sample", "seed", "temperature", "base_out",
             "adapted_out")  # fmt: skip
    on = TextHandlers(text_studio, SimpleNamespace(**{n: n for n in names}))
    values = {"prompt": "the captain", "ticks": ["page_t"], "disabled": False, "max_new_tokens": 8.0,
              "do_sample": False, "seed": 0.0, "temperature": 1.0}  # fmt: skip
    try:
        adapted = text_studio.generate(TextRequest("the captain", ["page_t"], max_new_tokens=8))
        base = text_studio.generate(TextRequest("the captain", [], max_new_tokens=8))
        assert adapted != base  # what the checks below tell apart
        assert on.request(values) == TextRequest("the captain", ["page_t"], True, 8, False, 0, 1.0)
        assert on.ui_generate(values) == adapted
        assert on.ui_generate(values | {"disabled": True}) == base
        assert on.ui_compare(values | {"disabled": True}) == {"base_out": base, "adapted_out": adapted}
    finally:
        text_studio.delete_adapter("page_t")
