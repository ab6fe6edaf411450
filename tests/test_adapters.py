"""LoRA files: broken or foreign files are refused with the reason, before the pipeline sees them."""

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from peft_core.errors import AdapterError
from peft_core.image.lora_files import detect_layout, read_lora_file, trigger_words

A = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


def lora(rank=4):
    return {f"{A}.lora_A.weight": torch.randn(rank, 8), f"{A}.lora_B.weight": torch.randn(8, rank)}


def write(tmp_path, state, name="lora.safetensors"):
    path = tmp_path / name
    save_file(state, path)
    return path


def test_good_file_facts(tmp_path):
    te = {"text_encoder.encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(8, 4),
          "text_encoder.encoder.layers.0.self_attn.q_proj.lora_B.weight": torch.randn(4, 8)}  # fmt: skip
    info = read_lora_file(write(tmp_path, lora(4) | te))
    assert (info.layout, info.rank, info.components, info.num_layers) == ("peft", 8, ["text_encoder", "unet"], 2)


def test_empty_file(tmp_path):
    (tmp_path / "e.safetensors").write_bytes(b"")
    with pytest.raises(AdapterError, match="0 bytes long"):
        read_lora_file(tmp_path / "e.safetensors")


def test_truncated_file(tmp_path):
    path = write(tmp_path, lora())
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(AdapterError, match="truncated or corrupt"):
        read_lora_file(path)


def test_header_claiming_a_huge_size(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(AdapterError, match="header claims 1,099,511,627,776 bytes"):
        read_lora_file(path)


def test_header_not_json(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{[")
    with pytest.raises(AdapterError, match="header is not JSON"):
        read_lora_file(path)


def test_offsets_outside_the_file(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1600]}}).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(AdapterError, match="'w' lies outside"):
        read_lora_file(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_values(tmp_path, value):
    state = lora()
    state[f"{A}.lora_B.weight"][0, 0] = value
    with pytest.raises(AdapterError, match="NaN or infinite values in .*lora_B"):
        read_lora_file(write(tmp_path, state))


def test_full_model_weights(tmp_path):
    state = {"unet.conv_in.weight": torch.randn(4, 4, 3, 3), "unet.conv_in.bias": torch.randn(4)}
    with pytest.raises(AdapterError, match="holds no LoRA weights .* full model"):
        read_lora_file(write(tmp_path, state))


def test_lycoris_is_named(tmp_path):
    state = {"lora_unet_x.hada_w1_a": torch.randn(4, 8), "lora_unet_x.hada_w1_b": torch.randn(4, 8)}
    with pytest.raises(AdapterError, match="LyCORIS"):
        read_lora_file(write(tmp_path, state))


@pytest.mark.parametrize(
    "key, layout",
    [
        (f"{A}.lora_A.weight", "peft"),
        (f"{A}.lora.down.weight", "old-diffusers"),
        ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight", "attn-procs"),
        ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "kohya"),
        ("text_encoder.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight", "old-text-encoder"),
    ],
)
def test_layouts(key, layout):
    assert detect_layout([key]) == layout


def test_trigger_words_from_common_fields():
    card = {"instance_prompt": "sks dog", "trigger_words": ["3D Render", "sks dog"], "license": "mit"}
    assert trigger_words(card) == ["sks dog", "3D Render"]
    assert trigger_words({}) == []
