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


def test_the_training_example_is_in_the_bundled_models_vocabulary(lm_assets):
    """The prefilled text trains on real tokens: none of it becomes <unk> in the tiny LM's word-level tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(lm_assets["lm"])
    ids = tokenizer(TRAIN_EXAMPLE)["input_ids"]
    assert len(ids) > 20 and tokenizer.unk_token_id not in ids
