"""The image side through a real Hub server (olah on loopback): pipeline and adapters by Hub id and revision,
and the errors users see for repos, files and revisions that are not there."""

import numpy as np
import pytest

from peft_core.errors import HubError
from peft_core.image.studio import ImageStudio
from tests.conftest import gen
from tests.hubserver import running_hub
from tiny_models.text import write_adapter

pytestmark = [pytest.mark.hub, pytest.mark.slow]


@pytest.fixture(scope="module")
def hub(tmp_path_factory, assets, lm_assets):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    # A text adapter whose config names its base by Hub id, as adapters published on the Hub do.
    model = AutoModelForCausalLM.from_pretrained(lm_assets["lm"])
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    text_adapter = write_adapter(model, tmp_path_factory.mktemp("text-adapter"), config, 5, "test-org/tiny-lm")
    with running_hub(tmp_path_factory.mktemp("hub")) as server:
        server.add_repo("test-org/tiny-lm", lm_assets["lm"])
        server.add_repo("test-org/lm-adapter", text_adapter)
        server.add_repo("test-org/tiny-sd", assets["pipeline"])
        lora_b = assets["lora_b"]
        server.add_repo("test-org/lora", assets["lora_a"], revisions={"v2": lora_b})
        server.add_repo("test-org/two-files", assets["two_files"])
        server.add_repo("test-org/pickle-only", assets["pickle_only"])
        yield server


@pytest.fixture(scope="module")
def studio(hub):
    s = ImageStudio(device="cpu")
    s.load_base("test-org/tiny-sd", "main")
    return s


def test_pipeline_by_hub_id(studio, hub):
    info = studio.base_info()
    assert info.model_id == "test-org/tiny-sd" and info.revision == "main"
    assert info.pipeline_class == "StableDiffusionPipeline"


def test_adapters_by_hub_id_and_revision(studio, hub):
    base = gen(studio)
    adapters = studio.load_adapter("test-org/lora", adapter_name="main_rev")
    adapters = studio.load_adapter("test-org/lora", adapter_name="v2_rev", revision="v2")
    main_rev, v2_rev = adapters[-2:]
    assert main_rev["revision"] == "main" and v2_rev["revision"] == "v2"
    assert main_rev["trigger_words"] == ["sks style"] and v2_rev["trigger_words"] == []  # each revision's card
    a, b = gen(studio, {"main_rev": 1.0}), gen(studio, {"v2_rev": 1.0})
    assert not np.array_equal(a, b) and not np.array_equal(a, base)
    assert np.array_equal(gen(studio, {"main_rev": 1.0}, use_adapters=False), base)
    studio.delete_adapter("main_rev")
    studio.delete_adapter("v2_rev")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.load_adapter("test-org/missing"), "repository 'test-org/missing' .* not found"),
        (lambda s: s.load_adapter("test-org/lora", revision="nope"), "revision 'nope' not found"),
        (lambda s: s.load_adapter("test-org/lora", weight_name="other.safetensors"), "'other.safetensors' is not in"),
        (lambda s: s.load_adapter("test-org/two-files"), "choose one as weight_name: one.safetensors, two.safe"),
        (lambda s: s.load_adapter("test-org/pickle-only"), "only pickle weights .*pytorch_lora_weights.bin"),
        (lambda s: s.load_base("test-org/missing"), "repository 'test-org/missing' .* not found"),
        (lambda s: s.load_base("test-org/lora"), "not a diffusers pipeline"),
    ],
)
def test_hub_errors_are_clear_and_change_nothing(studio, call, message):
    before = studio.list_adapters(), studio.base_info(), gen(studio)
    with pytest.raises(HubError, match=message):
        call(studio)
    assert (studio.list_adapters(), studio.base_info()) == before[:2]
    assert np.array_equal(gen(studio), before[2])


def test_size_cap_is_checked_before_download(studio, monkeypatch, hub):
    monkeypatch.setenv("STUDIO_MAX_ADAPTER_MB", "0.001")
    with pytest.raises(HubError, match="this Space accepts at most 0.001 MB"):
        studio.load_adapter("test-org/lora")
    assert studio.list_adapters() == []


def test_allowed_orgs(studio, monkeypatch):
    monkeypatch.setenv("STUDIO_ALLOWED_ORGS", "trusted,other")
    with pytest.raises(HubError, match="not from an allowed organisation .* allowed: other, trusted"):
        studio.load_adapter("test-org/lora")


def test_text_adapter_repo_brings_its_base_from_the_hub(hub):
    from peft_core.text.studio import TextRequest, TextStudio

    text = TextStudio(device="cpu")
    info = text.load_base("test-org/lm-adapter", "main")
    assert info.model_class == "LlamaForCausalLM"
    (adapter,) = text.list_adapters()
    assert adapter["repo_id"] == "test-org/lm-adapter" and adapter["r"] == 4
    base = text.generate(TextRequest("the pirate", [], max_new_tokens=8))
    assert text.generate(TextRequest("the pirate", [adapter["adapter_name"]], max_new_tokens=8)) != base
    text.load_adapter("test-org/lm-adapter", adapter_name="again", revision="main")
    with pytest.raises(HubError, match="revision 'nope' not found"):
        text.load_adapter("test-org/lm-adapter", adapter_name="x", revision="nope")
    assert [a["adapter_name"] for a in text.list_adapters()] == [adapter["adapter_name"], "again"]
