"""Hostile text repos, a catalogue (issue 14): what peft and transformers would do with a stranger's config fields.

Every entry is a copy of the tiny LM's adapter `lora_a` (or of the tiny LM) with one field of its config, or one
tensor, changed as a stranger could change it. Each must be refused with its error type and a message naming the
field, before the model is touched: the test fails if transformers' `load_adapter` or `from_pretrained` is called,
or if the stranger's pattern reaches any function of `re` (a code path, not a timing). After each, the module's
studio must be exactly as before (text_state of test_bad_inputs: every tensor's bytes, and the greedy texts of four
active sets), which is also the next request answered.

The tests below the catalogue hold what is accepted on purpose (a regex target_modules becomes the modules the
file has weights for; init_lora_weights that would rewrite the base is replaced by a plain init) and the real
adapters of every supported method, which must load exactly as peft itself loads them.
"""

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from peft_core.errors import AdapterError, HubError
from peft_core.text.studio import TextRequest, TextStudio
from tests.conftest import ALL, EnvPatch
from tests.hubserver import running_hub
from tests.test_bad_inputs import E, _refused, fingerprint, text_state
from tiny_models.text import write_adapter

pytestmark = [pytest.mark.hub]

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
EVIL = "(.+)+Z"  # backtracks for minutes in re.fullmatch against a module path without a Z
INITS = ["pissa_niter_2", "olora", "eva", "corda", "gaussian"]  # init_lora_weights; the first two rewrite the base
PROMPT_IDS = torch.tensor([[6, 7, 8, 9, 10]])  # "pirate ship sails sat on" in the tiny LM's vocabulary


def load(name: str):
    return lambda s, w: s.load_adapter(w[name], adapter_name="x")


def load_model(name: str):
    return lambda s, w: s.load_base(w[name])


HOSTILE = [
    # --- regular expressions from the repo (peft matches module names with them) -------------------------------
    E("Regex", "exclude_modules a pattern", load("exclude-regex"), AdapterError,
      r"field 'exclude_modules' must be a list of at most \d+ module names .*a string is a regular expression to "
      r"peft, and patterns from repos are never run here, got '\(\.\+\)\+Z'"),
    E("Regex", "a pattern inside target_modules' list", load("targets-list-regex"), AdapterError,
      r"field 'target_modules' must be a module name such as 'q_proj' .*got \['q_proj', '\(\.\+\)\+Z'\]"),
    E("Regex", "rank_pattern key a pattern", load("rank-pattern-regex"), AdapterError,
      r"field 'rank_pattern' must be a module name .*got \{'\(\.\+\)\+Z': 8\}"),
    E("Regex", "alpha_pattern key a pattern", load("alpha-pattern-regex"), AdapterError,
      r"field 'alpha_pattern' must be a module name .*got \{'\(\.\+\)\+Z': 16\}"),
    E("Regex", "layers_pattern a pattern", load("layers-pattern-regex"), AdapterError,
      r"field 'layers_pattern' must be a module name .*got '\(\.\+\)\+Z'"),
    E("Regex", "IA³ feedforward_modules a pattern", load("ia3-feedforward-regex"), AdapterError,
      r"field 'feedforward_modules' must be a list of at most \d+ module names .*got '\(\.\+\)\+Z'"),
    # --- fields that rewrite the base model --------------------------------------------------------------------
    E("Base", "layer_replication", load("layer-replication"), AdapterError,
      r"sets layer_replication=\[\[0, 2\], \[0, 2\]\]: it duplicates base layers, changing the base model for every "
      r"adapter; this Space loads adapters without it"),
    E("Base", "bias 'all' (loads base biases)", load("bias-all"), AdapterError,
      r"sets bias='all': it loads the biases of base layers from the file"),
    E("Base", "LoftQ init", load("loftq"), AdapterError, r"sets loftq_config=\{'loftq_bits': 4.*LoftQ rewrites"),
    E("Base", "pissa init, weights file partial", load("pissa-partial"), AdapterError,
      r"does not fit .*: 1 of its layers got no weights from the file \(for example '.*layers.1.mlp.down_proj"),
    E("Base", "adapter file holding a base weight", load("base-weight-inside"), AdapterError,
      r"adapter_model.safetensors holds 'base_model.model.model.norm.weight', which is not a weight of this LoRA "
      r"adapter .*never the base model's"),
    E("Base", "adapter file holding a wrapped layer's base weight", load("base-layer-inside"), AdapterError,
      r"holds 'base_model.model.model.layers.0.mlp.down_proj.base_layer.weight', which is not a weight"),
    E("Base", "megatron_core naming a module", load("megatron-core"), AdapterError,
      r"sets megatron_core='os': it names a module to import"),
    # --- fields that change the other adapters -----------------------------------------------------------------
    E("Other adapters", "modules_to_save", load("modules-to-save"), AdapterError,
      r"sets modules_to_save=\['embed_tokens'\]: it makes full trainable copies of base layers"),
    E("Other adapters", "trainable_token_indices", load("trainable-tokens"), AdapterError,
      r"sets trainable_token_indices=\[0, 1, 2\]: it retrains rows of the base embeddings"),
    E("Other adapters", "target_parameters", load("target-parameters"), AdapterError,
      r"sets target_parameters=\['model.layers.0.mlp.down_proj.weight'\]: it wraps base parameters"),
    # --- declared sizes --------------------------------------------------------------------------------------
    E("Size", "r = 1,000,000 in a small file", load("r-million"), AdapterError,
      r"field 'r' must be an integer in \[1, 4096\], got 1000000"),
    E("Size", "rank_pattern value 1,000,000", load("rank-pattern-million"), AdapterError,
      r"field 'rank_pattern' must be an integer in \[1, 4096\], got \{'q_proj': 1000000\}"),
    E("Size", "r larger than the file's tensors", load("r-64"), AdapterError,
      r"holds 'base_model.model.model.layers.0.*lora_[AB].weight' of shape \[\d+, \d+\], but its config \(r=64\) "
      r"on '.*tiny-lm' makes it \[\d+, \d+\]"),
    E("Size", "declared size over STUDIO_MAX_ADAPTER_MB (fp16 file)", load("half-precision"), AdapterError,
      r"declares 0.01 MB of adapter weights \(r=4 on 12 layers of '.*tiny-lm'\); this Space accepts adapters of at "
      r"most 0.012 MB \(STUDIO_MAX_ADAPTER_MB\)", STUDIO_MAX_ADAPTER_MB="0.012"),
    # --- the file itself -------------------------------------------------------------------------------------
    E("Config file", "a field this Space does not know", load("unknown-field"), AdapterError,
      r"sets field\(s\) this Space does not know: evil_hook='run'; LoRA adapters may carry only fields it can check "
      r"\(.*target_modules.*\), and unknown ones only when null, false or empty"),
    E("Config file", "nested 10,000 levels", load("deep-config"), AdapterError,
      r"adapter_config.json is not a valid peft config: it nests 10,001 levels deep; at most 8 are read"),
    E("Config file", "100 KB config", load("big-config"), HubError,
      r"'adapter_config.json' in '.*big-config' is 0.1 MB; this Space accepts at most 0.0625 MB"),
    E("Config file", "a JSON list", load("list-config"), AdapterError,
      r"adapter_config.json is not a valid peft config: it must hold a JSON object, got list"),
    E("Config file", "NaN lora_alpha", load("nan-alpha"), AdapterError,
      r"adapter_config.json is not a valid peft config \(not JSON: NaN is not a JSON number"),
    E("Config file", "r as text", load("r-text"), AdapterError,
      r"field 'r' must be an integer in \[1, 4096\], got '4'"),
    E("Config file", "an unsupported method (OFT)", load("oft"), AdapterError,
      r"its peft_type is OFT; this Space loads LoRA, LoHa, LoKr, IA³ adapters"),
    E("Config file", "a made-up peft_type", load("made-up-type"), AdapterError,
      r"has peft_type 'EVIL', which is not a peft method; this Space loads LoRA, LoHa, LoKr, IA³ adapters"),
    E("Config file", "integer tensors", load("int-tensors"), AdapterError,
      r"holds '.*lora_A.weight' as int32; adapter weights are one of float32, float16, bfloat16, float64"),
    # --- a base model's config.json --------------------------------------------------------------------------
    E("Model config", "vocab_size 4,000,000 in a 0.1 MB repo", load_model("lm-big-vocab"), HubError,
      r"declares 256,0[\d,]+ parameters in its config.json \([\d,.]+ MB as float32\); this Space loads models of at "
      r"most 20 MB \(STUDIO_MAX_MODEL_MB\)", STUDIO_MAX_MODEL_MB="20"),
    E("Model config", "a million layers", load_model("lm-many-layers"), HubError,
      r"config.json declares num_hidden_layers=1,000,000; this Space loads at most 1,024"),
    E("Model config", "auto_map on a known model type", load_model("lm-auto-map"), HubError,
      r"could not be loaded as a causal LM: its config.json sets auto_map \(AutoModelForCausalLM\), i.e. it contains "
      r"custom code which must be executed; code from repos is never run here"),
    E("Model config", "quantization_config", load_model("lm-quantized"), HubError,
      r"config.json sets quantization_config \('bitsandbytes'\): quantized models are not supported here"),
    E("Model config", "attn_implementation from the Hub", load_model("lm-hub-kernel"), HubError,
      r"config.json sets attn_implementation='kernels-community/flash-attn'; this Space runs 'eager' or 'sdpa' "
      r"attention"),
    E("Model config", "_attn_implementation in a sub-config", load_model("lm-nested-kernel"), HubError,
      r"config.json sets text_config._attn_implementation='kernels-community/evil'"),
    E("Model config", "model_type transformers does not ship", load_model("lm-unknown-type"), HubError,
      r"config.json has model_type 'evil', which is not a model type transformers ships"),
    E("Model config", "nested 10,000 levels", load_model("lm-deep-config"), HubError,
      r"config.json is not a valid model config: it nests 10,001 levels deep"),
]  # fmt: skip


# --- the repos -------------------------------------------------------------------------------------------------------


def _adapter(root: Path, src: Path, name: str, change=None, weights=None, raw: str | None = None) -> Path:
    """A copy of adapter folder `src` with `change(config)` applied (or the config text `raw`), and `weights(state)`
    as its tensors."""
    folder = shutil.copytree(src, root / name)
    if raw is not None:
        (folder / CONFIG).write_text(raw)
    elif change is not None:
        config = json.loads((folder / CONFIG).read_text())
        change(config)
        (folder / CONFIG).write_text(json.dumps(config, indent=2))
    if weights is not None:
        save_file(weights(load_file(src / WEIGHTS)), folder / WEIGHTS)
    return folder


def _model(root: Path, src: Path, name: str, change=None, raw: str | None = None) -> Path:
    folder = shutil.copytree(src, root / name)
    if raw is not None:
        (folder / "config.json").write_text(raw)
    else:
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def _set(**fields):
    return lambda config: config.update(fields)



@pytest.fixture(scope="module")
def methods(tmp_path_factory, lm_assets):
    """Adapters of every supported method for the tiny LM, made by peft: {name: folder}."""
    from peft import IA3Config, LoKrConfig, LoraConfig

    root = tmp_path_factory.mktemp("methods")
    base = str(lm_assets["lm"])
    model = transformers.AutoModelForCausalLM.from_pretrained(base)
    made = {
        "dora": LoraConfig(r=4, lora_alpha=8, target_modules=ALL, init_lora_weights=False, use_dora=True),
        "lokr": LoKrConfig(r=4, alpha=8, target_modules=ALL, init_weights=False),
        "ia3": IA3Config(target_modules=ALL, feedforward_modules=["down_proj"], init_ia3_weights=False),
        # peft saves the base embeddings and output head beside such an adapter: the studio leaves them out
        "embeddings": LoraConfig(r=4, lora_alpha=8, target_modules=["embed_tokens", "lm_head", "q_proj"],
                                 init_lora_weights=False),
    }
    folders = {name: write_adapter(model, root / name, config, 7, base, scale=3.0) for name, config in made.items()}
    return folders | {name: lm_assets[name] for name in ("lora_a", "lora_b", "loha")}


@pytest.fixture(scope="module")
def where(tmp_path_factory, lm_assets, methods):
    root = tmp_path_factory.mktemp("hostile")
    lora, lm = lm_assets["lora_a"], lm_assets["lm"]

    def adapter(name, *args, **kwargs):
        return _adapter(root, lora, name, *args, **kwargs)

    adapter("exclude-regex", _set(exclude_modules=EVIL))
    adapter("targets-list-regex", _set(target_modules=["q_proj", EVIL]))
    adapter("rank-pattern-regex", _set(rank_pattern={EVIL: 8}))
    adapter("alpha-pattern-regex", _set(alpha_pattern={EVIL: 16}))
    adapter("layers-pattern-regex", _set(layers_pattern=EVIL, layers_to_transform=[0]))
    _adapter(root, methods["ia3"], "ia3-feedforward-regex", _set(feedforward_modules=EVIL))
    adapter("layer-replication", _set(layer_replication=[[0, 2], [0, 2]]))
    adapter("bias-all", _set(bias="all"))
    adapter("loftq", _set(init_lora_weights="loftq", loftq_config={"loftq_bits": 4, "loftq_iter": 1}))
    adapter("pissa-partial", _set(init_lora_weights="pissa_niter_2"), weights=_without("layers.1.mlp.down_proj"))
    adapter("base-weight-inside", weights=lambda s: s | {"base_model.model.model.norm.weight": torch.full((32,), 7.0)})
    down = "base_model.model.model.layers.0.mlp.down_proj.base_layer.weight"
    adapter("base-layer-inside", weights=lambda s: s | {down: torch.zeros(32, 64)})
    adapter("megatron-core", _set(megatron_core="os"))
    adapter("modules-to-save", _set(modules_to_save=["embed_tokens"]))
    adapter("trainable-tokens", _set(trainable_token_indices=[0, 1, 2]))
    adapter("target-parameters", _set(target_parameters=["model.layers.0.mlp.down_proj.weight"]))
    adapter("r-million", _set(r=1_000_000))
    adapter("rank-pattern-million", _set(rank_pattern={"q_proj": 1_000_000}))
    adapter("r-64", _set(r=64))
    half = adapter("half-precision", weights=lambda s: {k: v.half() for k, v in s.items()})
    declared = sum(v.numel() * 4 for v in load_file(lora / WEIGHTS).values())  # peft makes float32 matrices
    assert (half / WEIGHTS).stat().st_size < 0.012 * 2**20 < declared  # the cap of that entry lies in between
    adapter("unknown-field", _set(evil_hook="run"))
    adapter("deep-config", raw='{"peft_type": "LORA", "x": ' + "[" * 10_000 + "]" * 10_000 + "}")
    adapter("big-config", _set(notes="x" * 100_000))
    adapter("list-config", raw="[1, 2, 3]")
    adapter("nan-alpha", raw=(lora / CONFIG).read_text().replace('"lora_alpha": 8', '"lora_alpha": NaN'))
    adapter("r-text", _set(r="4"))
    adapter("oft", _set(peft_type="OFT"))
    adapter("made-up-type", _set(peft_type="EVIL"))
    adapter("int-tensors", weights=lambda s: {k: v.to(torch.int32) for k, v in s.items()})
    # accepted on purpose (the tests below the catalogue)
    adapter("regex-targets", _set(target_modules=EVIL))
    for init in INITS:
        adapter(f"init-{init}", _set(init_lora_weights=init))
    newer = _set(future_config=None, use_future_trick=False, future_list=[], future_map={}, future_name="")
    adapter("newer-peft", newer)  # a config from a newer peft, its new fields at their defaults

    def model(name, *args, **kwargs):
        return _model(root, lm, name, *args, **kwargs)

    model("lm-big-vocab", _set(vocab_size=4_000_000))
    model("lm-many-layers", _set(num_hidden_layers=1_000_000))
    model("lm-auto-map", _set(auto_map={"AutoModelForCausalLM": "evil.Evil"}))
    model("lm-quantized", _set(quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True}))
    model("lm-hub-kernel", _set(attn_implementation="kernels-community/flash-attn"))
    model("lm-nested-kernel", _set(text_config={"_attn_implementation": "kernels-community/evil"}))
    model("lm-unknown-type", _set(model_type="evil"))
    model("lm-deep-config", raw='{"model_type": "llama", "x": ' + "[" * 10_000 + "]" * 10_000 + "}")
    beams = shutil.copytree(lm, root / "lm-beams")  # accepted on purpose, see its test
    generation = json.loads((beams / "generation_config.json").read_text())
    generation.update(num_beams=16, num_return_sequences=16, penalty_alpha=0.6, top_k=7)
    (beams / "generation_config.json").write_text(json.dumps(generation))
    with EnvPatch.context() as mp:
        mp.setenv("STUDIO_LOCAL_DIRS", ":".join(str(p) for p in (lm_assets["root"], root, *methods.values())))
        for name in ("STUDIO_ALLOWED_ORGS", "STUDIO_LOCK_BASE", "STUDIO_MAX_ADAPTER_MB", "STUDIO_MAX_MODEL_MB"):
            mp.delenv(name, raising=False)
        yield {p.name: str(p) for p in root.iterdir()} | {name: str(p) for name, p in methods.items()}


def _without(module: str):
    """Weights of all modules but `module` (e.g. "layers.1.mlp.down_proj"): a partial file."""
    return lambda state: {k: v for k, v in state.items() if f".{module}." not in k}


@pytest.fixture(scope="module")
def text(where, lm_assets, one_thread):
    """The bad-input catalogue's studio: the tiny LM with LoRAs a and b from files and a trainable t."""
    studio = TextStudio(device="cpu")
    studio.load_base(str(lm_assets["lm"]))
    studio.load_adapter(str(lm_assets["lora_a"]), adapter_name="a")
    studio.load_adapter(str(lm_assets["lora_b"]), adapter_name="b")
    studio.add_adapter("t", r=4, lora_alpha=8, target_modules=ALL)
    return studio, text_state(studio)


@pytest.fixture
def no_stranger_regex(monkeypatch):
    """Fail the test if EVIL reaches any function of `re` as a pattern (peft's tuners call them through the module,
    so this sees every call they make). Returns the patterns seen, to show the guard was live."""
    seen: list[str] = []

    def guarded(name, real):
        def call(pattern, *args, **kwargs):
            text = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
            if isinstance(text, str) and EVIL in text:
                pytest.fail(f"re.{name} was given the repo's pattern {text!r}")
            seen.append(text)
            return real(pattern, *args, **kwargs)

        return call

    for name in ("compile", "match", "fullmatch", "search", "sub", "subn", "split", "findall", "finditer"):
        monkeypatch.setattr(re, name, guarded(name, getattr(re, name)))
    return seen


@pytest.fixture
def nothing_loads(monkeypatch, text):
    """Fail the test if a refused repo reaches transformers' loaders: refusals come before any allocation."""
    studio, _ = text

    def refuse(*args, **kwargs):
        pytest.fail("a loader was called: the refusal must come before anything is allocated")

    monkeypatch.setattr(type(studio.model), "load_adapter", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


# --- the catalogue ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", HOSTILE, ids=[f"{b.kind}: {b.what}" for b in HOSTILE])
def test_hostile_repo_is_refused_before_the_model_is_touched(
    bad, text, where, monkeypatch, no_stranger_regex, nothing_loads
):
    studio, before = text
    _refused(bad, studio, where, monkeypatch)
    monkeypatch.undo()  # the guards off again: text_state generates, and it must be the very studio of before
    assert text_state(studio) == before


def test_the_catalogue_covers_the_issue():
    assert len({(b.kind, b.what) for b in HOSTILE}) == len(HOSTILE)
    assert {b.kind for b in HOSTILE} == {"Regex", "Base", "Other adapters", "Size", "Config file", "Model config"}


def test_the_regex_guard_catches_peft_matching_a_repo_pattern(no_stranger_regex):
    """The guard is live: peft's own matching, handed the pattern as the file has it, trips it at once."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    with pytest.raises(pytest.fail.Exception, match=r"re.fullmatch was given the repo's pattern '\(\.\+\)\+Z'"):
        check_target_module_exists(LoraConfig(target_modules=EVIL), "model.layers.0.self_attn.q_proj")


def test_the_vocab_bomb_is_refused_before_its_weights_are_downloaded(tmp_path, lm_assets, where, monkeypatch):
    """Through the Hub: only config.json is fetched before the refusal, never the weights."""
    import os

    monkeypatch.setenv("STUDIO_MAX_MODEL_MB", "20")
    with running_hub(tmp_path) as server:
        server.add_repo("hostile/big-vocab", Path(where["lm-big-vocab"]))
        studio = TextStudio(device="cpu")
        with pytest.raises(HubError, match=r"'hostile/big-vocab' declares 256,0[\d,]+ parameters"):
            studio.load_base("hostile/big-vocab")
        fetched = [p.name for p in Path(os.environ["HF_HOME"]).rglob("*") if "big-vocab" in str(p) and p.is_file()]
    assert "config.json" in fetched and "model.safetensors" not in fetched
    assert studio.model is None


# --- accepted on purpose, without the harm ---------------------------------------------------------------------------


def adapter_logits(studio: TextStudio, name: str) -> torch.Tensor:
    with studio._lock, torch.no_grad():
        studio.model.enable_adapters()
        studio.model.set_adapter(name)
        return studio.model(PROMPT_IDS).logits[0].clone()


def test_a_regex_target_modules_loads_as_the_modules_its_file_names(text, where, no_stranger_regex):
    """peft would fullmatch the string against every module path; the studio targets exactly the modules the file
    has weights for instead, which is the adapter its author saved."""
    studio, before = text
    studio.load_adapter(where["regex-targets"], adapter_name="regex")
    try:
        record = next(a for a in studio.list_adapters() if a["adapter_name"] == "regex")
        assert record["num_layers"] == 12 and all(t.startswith("model.layers.") for t in record["target_modules"])
        assert torch.equal(adapter_logits(studio, "regex"), adapter_logits(studio, "a"))  # a is lora_a itself
        assert no_stranger_regex  # peft did match module names with its own patterns meanwhile
    finally:
        studio.delete_adapter("regex")
    assert text_state(studio) == before


@pytest.mark.parametrize("init", INITS)
def test_an_init_that_rewrites_the_base_is_replaced(text, where, init):
    """PiSSA and OLoRA rewrite the base weights when the adapter is made; the file's weights replace any init, so
    the studio makes it plainly and loads the same adapter, and the base stays as it was."""
    studio, before = text
    base = fingerprint({k: v for k, v in studio.model.named_modules() if k.endswith("base_layer")})
    studio.load_adapter(where[f"init-{init}"], adapter_name="init")
    try:
        assert fingerprint({k: v for k, v in studio.model.named_modules() if k.endswith("base_layer")}) == base
        assert torch.equal(adapter_logits(studio, "init"), adapter_logits(studio, "a"))
    finally:
        studio.delete_adapter("init")
    assert text_state(studio) == before


def test_unknown_fields_at_their_empty_defaults_are_dropped(text, where):
    """Configs written by a newer peft carry fields this one does not know, set to null, false or empty."""
    studio, before = text
    studio.load_adapter(where["newer-peft"], adapter_name="newer")
    try:
        assert torch.equal(adapter_logits(studio, "newer"), adapter_logits(studio, "a"))
    finally:
        studio.delete_adapter("newer")
    assert text_state(studio) == before


def test_a_generation_config_cannot_multiply_the_cost_of_every_generation(where, lm_assets):
    """num_beams / num_return_sequences / contrastive search from generation_config.json would be every request's
    default; only the token ids and the sampling knobs stay."""
    studio, plain = TextStudio(device="cpu"), TextStudio(device="cpu")
    studio.load_base(where["lm-beams"])
    plain.load_base(str(lm_assets["lm"]))
    kept = studio.model.generation_config
    assert {kept.num_beams, kept.num_return_sequences} <= {None, 1}  # transformers 5 leaves defaults at None
    assert kept.penalty_alpha is None and kept.top_k == 7
    assert (kept.eos_token_id, kept.pad_token_id) == (plain.model.generation_config.eos_token_id, 0)
    request = TextRequest("the pirate", max_new_tokens=8)
    assert studio.generate(request) == plain.generate(request)


# --- real adapters of every method still load, exactly as peft loads them --------------------------------------------


@pytest.mark.parametrize("name", ["lora_a", "lora_b", "dora", "loha", "lokr", "ia3", "embeddings"])
def test_real_adapters_load_as_peft_loads_them(name, methods, lm_assets, monkeypatch, no_stranger_regex):
    from peft import PeftModel

    monkeypatch.setenv("STUDIO_LOCAL_DIRS", ":".join(str(p) for p in (lm_assets["root"], *methods.values())))
    studio = TextStudio(device="cpu")
    studio.load_base(str(lm_assets["lm"]))
    studio.load_adapter(str(methods[name]), adapter_name="x")
    base = transformers.AutoModelForCausalLM.from_pretrained(str(lm_assets["lm"]))
    with torch.no_grad():
        reference = PeftModel.from_pretrained(copy.deepcopy(base), str(methods[name])).eval()(PROMPT_IDS).logits[0]
        plain = base(PROMPT_IDS).logits[0]
    got = adapter_logits(studio, "x")
    assert torch.equal(got, reference) and not torch.equal(got, plain)  # the adapter's own change, bit for bit
    base = studio.generate(TextRequest("the pirate", max_new_tokens=6))
    assert studio.generate(TextRequest("the pirate", ["x"], max_new_tokens=6)) != base
