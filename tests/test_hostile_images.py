"""Hostile repos, image side: a catalogue beside the bad-input one (tests/test_bad_inputs.py), issue 14.

Each entry is a copy of a tiny asset (the LoRA "b", the tiny pipeline) with one field changed the way a stranger
would change it: a key name that is a regex, a malformed safetensors header, a model card whose defaults break
every request, a link out of an allowed folder, a component config that declares billions of parameters or asks for
quantization, kernels or code. For each, the call is refused with the error type and a message naming the key or
field and what would be valid, and:

- it is refused before the pipeline is touched: `from_pretrained` and `load_lora_weights` are never called;
- no stranger's pattern reaches `re` inside peft or diffusers (their `re` is replaced by a guard that records it);
- the studio is exactly as before (tensor fingerprint, resident adapters, base and mix images bit for bit), and
  answers the next requests.

Where the danger is time (a regex that backtracks, a config declaring millions of layers), the tests assert the
code path, never a duration.
"""

import contextlib
import json
import logging
import re
import shutil
import struct
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from peft_core.errors import AdapterError, HubError
from peft_core.image.studio import ImageStudio
from tests.conftest import EnvPatch, gen
from tests.test_bad_inputs import LORA, E, _refused, image_state, request
from tiny_models.image import write_repo

pytestmark = [pytest.mark.usefixtures("one_thread")]  # conftest.py: one torch thread for this module

HOSTILE_KEY = "unet.(.+)+Z"  # a module "name" that is a catastrophically backtracking pattern
HOSTILE_PATTERN = "(.+)+Z"
CARD = "---\nlicense: mit\n{yaml}\n---\n# hostile\n"


def _header(path: Path) -> tuple[dict, bytes]:
    """A safetensors file's header (parsed) and data bytes."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _raw(folder: Path, header: dict | bytes, data: bytes = b"", name: str = LORA) -> Path:
    """A repo folder holding one safetensors file with exactly this header (a dict, or the JSON bytes)."""
    folder.mkdir(parents=True)
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    (folder / name).write_bytes(struct.pack("<Q", len(text)) + text + data)
    return folder


def _pipeline(root: Path, assets, name: str, component: str | None = None, change: dict | None = None,
              card: str | None = None) -> Path:  # fmt: skip
    """A copy of the tiny pipeline with `change` merged into `<component>/config.json` (or model_index.json)."""
    folder = shutil.copytree(assets["pipeline"], root / name)
    if change is not None:
        path = folder / (f"{component}/config.json" if component else "model_index.json")
        path.write_text(json.dumps(json.loads(path.read_text()) | change))
    if card is not None:
        (folder / "README.md").write_text(CARD.format(yaml=card))
    return folder


def _hostile_files(root: Path, outside: Path, assets) -> None:
    state = load_file(assets["lora_b"] / LORA)
    a_keys = sorted(k for k in state if ".lora_A." in k)
    b_keys = sorted(k for k in state if ".lora_B." in k)
    header, data = _header(assets["lora_b"] / LORA)
    first = sorted(k for k in header if k != "__metadata__")[0]

    def changed(name: str, **entry) -> None:  # lora_b's file with one header entry changed
        _raw(root / name, header | {first: header[first] | entry}, data)

    # --- LoRA files
    write_repo(root / "regex-key", {LORA: state | {f"{HOSTILE_KEY}.lora_A.weight": torch.randn(8, 8),
                                                   f"{HOSTILE_KEY}.lora_B.weight": torch.randn(8, 8)}})  # fmt: skip
    write_repo(root / "long-key", {LORA: state | {f"unet.{'a' * 300}.lora_A.weight": torch.randn(4, 8)}})
    changed("string-offsets", data_offsets=[str(n) for n in header[first]["data_offsets"]])
    changed("null-offsets", data_offsets=None)
    changed("shape-lies", shape=[n * 2 for n in header[first]["shape"]])
    changed("unknown-dtype", dtype="F4")
    _raw(root / "nested-header", b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    _raw(root / "metadata-not-text", header | {"__metadata__": {"format": "pt", "r": 4}}, data)
    entries = ",".join(f'"unet.x{i}.lora_A.weight":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
                       for i in range(20_001))  # fmt: skip
    _raw(root / "many-tensors", ("{" + entries + "}").encode())
    twice = json.dumps({first: header[first]})[1:-1]
    _raw(root / "named-twice", ("{" + twice + "," + twice + "}").encode(), data)
    write_repo(root / "float8", {LORA: state | {b_keys[0]: state[b_keys[0]].to(torch.float8_e4m3fn)}})
    write_repo(root / "zero-dim", {LORA: state | {a_keys[0]: torch.tensor(0.5)}})
    rank0 = {a_keys[0]: torch.zeros(0, state[a_keys[0]].shape[1]),
             b_keys[0]: torch.zeros(state[b_keys[0]].shape[0], 0)}  # fmt: skip
    write_repo(root / "rank-0", {LORA: state | rank0})
    write_repo(root / "ranks-differ", {LORA: state | {a_keys[0]: state[a_keys[0]][:2].clone()}})
    bogus = {f"unet.bogus_{i}.lora_{ab}.weight": torch.zeros(1, 1) for i in range(2000) for ab in "AB"}
    write_repo(root / "many-layers-lora", {LORA: state | bogus})
    kohya = load_file(assets["kohya"] / "lora.safetensors")
    alpha = sorted(k for k in kohya if k.endswith(".alpha"))[0]
    write_repo(root / "alpha-not-scalar", {LORA: kohya | {alpha: torch.full((4,), 4.0)}})

    # --- model cards (of a pipeline: its studio_defaults)
    for name, yaml in (
        ("steps-0", "studio_defaults:\n  steps: 0"),
        ("width-7", "studio_defaults:\n  width: 7"),
        ("guidance-nan", "studio_defaults:\n  guidance_scale: .nan"),
        ("defaults-list", "studio_defaults: [20, 5.0]"),
        ("defaults-unknown", "studio_defaults:\n  sampler: euler"),
    ):
        _pipeline(root, assets, f"card-{name}", card=yaml)

    # --- local folders: links out of the allowed folders
    shutil.copy(assets["lora_b"] / LORA, outside / LORA)
    (outside / "secret.md").write_text("---\ntrigger_words: [the admin's secret]\n---\n")
    shutil.copytree(assets["pipeline"] / "unet", outside / "unet")
    linked = root / "linked-weights"
    linked.mkdir()
    (linked / LORA).symlink_to(outside / LORA)
    linked_card = shutil.copytree(assets["lora_b"], root / "linked-card")
    (linked_card / "README.md").unlink()
    (linked_card / "README.md").symlink_to(outside / "secret.md")
    linked_unet = shutil.copytree(assets["pipeline"], root / "linked-unet")
    shutil.rmtree(linked_unet / "unet")
    (linked_unet / "unet").symlink_to(outside / "unet", target_is_directory=True)

    # --- pipeline configs
    _pipeline(root, assets, "huge-vocab", "text_encoder", {"vocab_size": 4_000_000})
    _pipeline(root, assets, "huge-unet", "unet", {"cross_attention_dim": 10_000_000})
    _pipeline(root, assets, "many-layers", "text_encoder", {"num_hidden_layers": 10_000_000})
    _pipeline(root, assets, "quantized", "text_encoder",
              {"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}})  # fmt: skip
    _pipeline(root, assets, "attn-kernel", "text_encoder", {"_attn_implementation": "kernels-community/flash-attn"})
    _pipeline(root, assets, "auto-map", "unet", {"auto_map": {"AutoModel": "evil.EvilUNet"}})
    scheduler = _pipeline(root, assets, "scheduler-auto-map")
    path = scheduler / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"auto_map": {"AutoScheduler": "evil.Evil"}}))
    _pipeline(root, assets, "component-path", None, {"../outside": ["diffusers", "AutoencoderKL"]})
    nested = _pipeline(root, assets, "nested-config")
    (nested / "unet" / "config.json").write_text('{"a":' + "[" * 100_000 + "]" * 100_000 + "}")


HOSTILE_IMAGES = [
    # --- LoRA files: keys, headers and shapes ----------------------------------------------------------------------
    E("LoRA file", "a key that is a regex (rank_pattern)", lambda s, w: s.load_adapter(w["regex-key"]), AdapterError,
      r"has a tensor named 'unet\.\(\.\+\)\+Z\.lora_[AB]\.weight'; tensor names must be module paths of 1 to 256 "
      r"letters, digits, '_' and '\.'"),
    E("LoRA file", "a key of 300 characters", lambda s, w: s.load_adapter(w["long-key"]), AdapterError,
      r"has a tensor named 'unet\.a{70}.*\.\.\.'; tensor names must be module paths of 1 to 256"),
    E("LoRA file", "20,001 tensors", lambda s, w: s.load_adapter(w["many-tensors"]), AdapterError,
      r"holds 20,001 tensors; an adapter file holds at most 20,000"),
    E("LoRA file", "header nested 100,000 deep", lambda s, w: s.load_adapter(w["nested-header"]), AdapterError,
      rf"'{LORA}' is not a safetensors file: its header nests too deep"),
    E("LoRA file", "string data_offsets", lambda s, w: s.load_adapter(w["string-offsets"]), AdapterError,
      r"tensor 'unet\..*' has data_offsets \['0', '\d+'\]; they must be two integers \[begin, end\]"),
    E("LoRA file", "null data_offsets", lambda s, w: s.load_adapter(w["null-offsets"]), AdapterError,
      r"tensor 'unet\..*' has data_offsets None; they must be two integers"),
    E("LoRA file", "shape larger than its bytes", lambda s, w: s.load_adapter(w["shape-lies"]), AdapterError,
      r"tensor 'unet\..*' \(F32, shape \[\d+, \d+\]\) needs [\d,]+ bytes but its data_offsets span [\d,]+"),
    E("LoRA file", "a dtype safetensors may add", lambda s, w: s.load_adapter(w["unknown-dtype"]), AdapterError,
      r"tensor 'unet\..*' has dtype 'F4'; adapter weights must be one of F64, F32, F16, BF16, I64"),
    E("LoRA file", "float8 tensor", lambda s, w: s.load_adapter(w["float8"]), AdapterError,
      r"tensor 'unet\..*lora_B\.weight' has dtype 'F8_E4M3'; adapter weights must be one of F64, F32"),
    E("LoRA file", "__metadata__ that is not text", lambda s, w: s.load_adapter(w["metadata-not-text"]),
      AdapterError, r"its __metadata__ must map names to text"),
    E("LoRA file", "a tensor named twice", lambda s, w: s.load_adapter(w["named-twice"]), AdapterError,
      r"is corrupt: its header names 'unet\..*' twice"),
    E("LoRA file", "0-dim lora_A", lambda s, w: s.load_adapter(w["zero-dim"]), AdapterError,
      r"'unet\..*lora_A\.weight' has shape \[\]; a LoRA down/up matrix is 2-D \(linear\) or 4-D \(conv\)"),
    E("LoRA file", "rank 0", lambda s, w: s.load_adapter(w["rank-0"]), AdapterError,
      r"'unet\..*lora_[AB]\.weight' has shape \[\d*,? ?\d*\]; .*every size at least 1"),
    E("LoRA file", "ranks of A and B differ", lambda s, w: s.load_adapter(w["ranks-differ"]), AdapterError,
      r"'unet\..*lora_A\.weight' has rank 2 but its up matrix has rank 4; the two halves of a LoRA layer share"),
    E("LoRA file", "more LoRA layers than the pipeline has", lambda s, w: s.load_adapter(w["many-layers-lora"]),
      AdapterError, r"\(peft layout\) names 2,032 LoRA layers but '.*tiny-sd' has only [\d,]+ layers a LoRA can "
      r"wrap: the file names layers this base does not have"),
    E("LoRA file", "alpha that is not a number", lambda s, w: s.load_adapter(w["alpha-not-scalar"]), AdapterError,
      r"'lora_unet_.*\.alpha' has shape \[4\] \(F32\); an alpha is one float \(shape \[\] or \[1\]\)"),
    # --- model cards ---------------------------------------------------------------------------------------------
    E("Model card", "studio_defaults steps 0", lambda s, w: s.load_base(w["card-steps-0"]), HubError,
      r"its model card's studio_defaults\.steps must be an integer in \[1, 100\], got 0"),
    E("Model card", "studio_defaults width 7", lambda s, w: s.load_base(w["card-width-7"]), HubError,
      r"its model card's studio_defaults\.width must be an integer in \[8, 1024\], got 7"),
    E("Model card", "studio_defaults guidance NaN", lambda s, w: s.load_base(w["card-guidance-nan"]),
      HubError, r"studio_defaults\.guidance_scale must be a finite number in \[0\.0, 30\.0\], got nan"),
    E("Model card", "studio_defaults a list", lambda s, w: s.load_base(w["card-defaults-list"]), HubError,
      r"studio_defaults must map steps, guidance_scale, width, height to values, got \[20, 5\.0\]"),
    E("Model card", "studio_defaults with an unknown field", lambda s, w: s.load_base(w["card-defaults-unknown"]),
      HubError, r"studio_defaults\.sampler is not a field it can set; the fields are steps, guidance_scale"),
    # --- local folders -------------------------------------------------------------------------------------------
    E("Local folder", "weights linked outside", lambda s, w: s.load_adapter(w["linked-weights"]), HubError,
      rf"local folder '.*linked-weights': '{LORA}' is a link that leads outside the allowed folders; links may only "
      r"point inside "),
    E("Local folder", "model card linked outside", lambda s, w: s.load_adapter(w["linked-card"]), HubError,
      r"'README\.md' is a link that leads outside the allowed folders"),
    E("Local folder", "pipeline component linked outside", lambda s, w: s.load_base(w["linked-unet"]),
      HubError, r"local folder '.*linked-unet': 'unet' is a link that leads outside the allowed folders"),
    # --- pipeline configs ------------------------------------------------------------------------------------------
    E("Pipeline config", "text encoder declaring 4,000,000 tokens", lambda s, w: s.load_base(w["huge-vocab"]),
      HubError, r"its component 'text_encoder' \(CLIPTextModel\) declares more than [\d,]+ parameters in "
      r"text_encoder/config\.json \(more than [\d.,]+ MB as float32; .*\); this Space loads models of at most 20 MB "
      r"\(STUDIO_MAX_MODEL_MB\)", STUDIO_MAX_MODEL_MB="20"),
    E("Pipeline config", "UNet declaring a 10,000,000-wide cross-attention", lambda s, w: s.load_base(
      w["huge-unet"]), HubError, r"its component 'unet' \(UNet2DConditionModel\) declares more than [\d,]+ "
      r"parameters in unet/config\.json .*at most 20 MB \(STUDIO_MAX_MODEL_MB\)", STUDIO_MAX_MODEL_MB="20"),
    E("Pipeline config", "text encoder with 10,000,000 layers", lambda s, w: s.load_base(w["many-layers"]),
      HubError, r"its component 'text_encoder' \(CLIPTextModel\) declares more than 10,000 layers \(modules\) in "
      r"text_encoder/config\.json"),
    E("Pipeline config", "quantization_config", lambda s, w: s.load_base(w["quantized"]), HubError,
      r"text_encoder/config\.json sets 'quantization_config'; quantized components are not loaded here"),
    E("Pipeline config", "_attn_implementation from the Hub", lambda s, w: s.load_base(w["attn-kernel"]),
      HubError, r"text_encoder/config\.json sets '_attn_implementation' to 'kernels-community/flash-attn'; it must "
      r"be one of eager, sdpa, "),
    E("Pipeline config", "auto_map in a model config", lambda s, w: s.load_base(w["auto-map"]), HubError,
      r"unet/config\.json sets 'auto_map', which asks for code from the repo; code from a repo is never run here"),
    E("Pipeline config", "auto_map in a scheduler config", lambda s, w: s.load_base(w["scheduler-auto-map"]),
      HubError, r"scheduler/scheduler_config\.json sets 'auto_map'"),
    E("Pipeline config", "a component named with a path", lambda s, w: s.load_base(w["component-path"]),
      HubError, r"model_index\.json names a component '\.\./outside'; components are folder and attribute names"),
    E("Pipeline config", "config nested 100,000 deep", lambda s, w: s.load_base(w["nested-config"]), HubError,
      r"unet/config\.json is not valid JSON \(maximum recursion depth exceeded"),
]  # fmt: skip


# --- fixtures ----------------------------------------------------------------------------------------------------



@pytest.fixture(scope="module")
def where(tmp_path_factory, assets):
    root, outside = tmp_path_factory.mktemp("hostile"), tmp_path_factory.mktemp("outside")
    _hostile_files(root, outside, assets)
    where = {name: str(path) for name, path in assets.items()} | {p.name: str(p) for p in root.iterdir()}
    where.update(root=root, outside=outside)
    with EnvPatch.context() as mp:
        mp.setenv("STUDIO_LOCAL_DIRS", ":".join(str(p) for p in (assets["root"], root)))
        for name in ("STUDIO_ALLOWED_ORGS", "STUDIO_LOCK_BASE", "STUDIO_MAX_ADAPTER_MB", "STUDIO_MAX_MODEL_MB"):
            mp.delenv(name, raising=False)
        yield where


@pytest.fixture(scope="module")
def images(where):
    """The tiny pipeline with LoRAs "a" and "b", shared by every entry, and its state to compare with."""
    studio = ImageStudio(device="cpu")
    studio.load_base(where["pipeline"])
    studio.load_adapter(where["lora_a"], adapter_name="a")
    studio.load_adapter(where["lora_b"], adapter_name="b")
    return studio, image_state(studio)


class _GuardedRe:
    """Stands in for the `re` module inside peft and diffusers: a call whose pattern holds the stranger's pattern
    is recorded and fails at once, before the regex engine could backtrack on it."""

    CALLS = ("compile", "match", "fullmatch", "search", "sub", "subn", "split", "findall", "finditer")

    def __init__(self, hits: list):
        self._hits = hits

    def __getattr__(self, name):
        real = getattr(re, name)
        if name not in self.CALLS:
            return real

        def guarded(pattern, *args, **kwargs):
            text = getattr(pattern, "pattern", pattern)
            if isinstance(text, str) and HOSTILE_PATTERN in text:
                self._hits.append((name, text))
                raise AssertionError(f"a stranger's pattern reached re.{name}: {text!r}")
            return real(pattern, *args, **kwargs)

        return guarded


@pytest.fixture
def regex_guard(monkeypatch, images):
    """The stranger's patterns that reached `re` in any loaded peft or diffusers module (a list, empty is good)."""
    hits: list = []
    guard = _GuardedRe(hits)
    patched = []
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("peft", "diffusers") and getattr(module, "re", None) is re:
            monkeypatch.setattr(module, "re", guard)
            patched.append(name)
    # Where diffusers' rank_pattern and alpha_pattern meet `re`: peft's pattern lookup and target matching.
    assert {"peft.utils.other", "peft.tuners.tuners_utils", "peft.tuners.lora.model"} <= set(patched)
    return hits


@pytest.fixture
def touched(monkeypatch, images):
    """The calls that would touch the pipeline: building one (from_pretrained) or loading a LoRA into it."""
    import diffusers

    calls: list[str] = []
    from_pretrained = diffusers.DiffusionPipeline.from_pretrained.__func__

    def recorded_from_pretrained(cls, *args, **kwargs):
        calls.append("from_pretrained")
        return from_pretrained(cls, *args, **kwargs)

    pipeline_class = type(images[0].pipe)
    load_lora_weights = pipeline_class.load_lora_weights

    def recorded_load_lora_weights(self, *args, **kwargs):
        calls.append("load_lora_weights")
        return load_lora_weights(self, *args, **kwargs)

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", classmethod(recorded_from_pretrained))
    monkeypatch.setattr(pipeline_class, "load_lora_weights", recorded_load_lora_weights)
    return calls


# --- the catalogue -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", HOSTILE_IMAGES, ids=[f"{b.kind}: {b.what}" for b in HOSTILE_IMAGES])
def test_hostile_image_input(bad, images, where, monkeypatch, regex_guard, touched):
    studio, before = images
    _refused(bad, studio, where, monkeypatch)
    assert touched == [] and regex_guard == []  # refused before the pipeline or a regex saw anything
    assert image_state(studio) == before  # the same weights, adapters and images: the next requests are answered


def test_the_hostile_catalogue_is_complete():
    assert len({b.what for b in HOSTILE_IMAGES}) == len(HOSTILE_IMAGES) >= 30
    assert {b.kind for b in HOSTILE_IMAGES} == {"LoRA file", "Model card", "Local folder", "Pipeline config"}


# --- what the catalogue's assertions rest on -------------------------------------------------------------------------


def test_the_guard_sees_the_regex_key_when_the_studio_does_not_check(where, regex_guard):
    """Without read_lora_file, diffusers turns the hostile key into a rank_pattern and peft hands it to `re`: the
    guard catches it there, so its silence in the catalogue means the key never got that far."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(where["pipeline"], use_safetensors=True)
    state = load_file(Path(where["regex-key"]) / LORA)
    with contextlib.suppress(Exception):  # whatever diffusers makes of the guard's AssertionError
        pipe.load_lora_weights(state, adapter_name="hostile")
    assert regex_guard and all(HOSTILE_PATTERN in pattern for _, pattern in regex_guard)


def test_the_size_check_counts_what_from_pretrained_allocates(where, monkeypatch):
    """The meta-device count equals the loaded pipeline's parameters and buffers: a cap 1 KB under them refuses,
    one at them passes (called directly: the file-size cap would refuse first otherwise)."""
    from diffusers import DiffusionPipeline

    from peft_core import hub
    from peft_core.image import checks as pipeline_checks

    pipe = DiffusionPipeline.from_pretrained(where["pipeline"], use_safetensors=True)
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    loaded = sum(t.numel() * t.element_size() for m in modules for t in (*m.parameters(), *m.buffers()))
    repo = hub.open_repo(where["pipeline"])
    sizes = repo.file_sizes()
    index = pipeline_checks.check_model_index(repo.repo_id, repo.file_path("model_index.json"))
    components = pipeline_checks.model_index_components(index)
    monkeypatch.setenv("STUDIO_MAX_MODEL_MB", str(loaded / 2**20))
    pipeline_checks.check_declared_size(repo, components, sizes, torch.float32)
    monkeypatch.setenv("STUDIO_MAX_MODEL_MB", str((loaded - 1024) / 2**20))
    with pytest.raises(HubError, match=r"its component 'vae' \(AutoencoderKL\) declares more than [\d,]+ parameters"):
        pipeline_checks.check_declared_size(repo, components, sizes, torch.float32)


# --- what is accepted, bounded --------------------------------------------------------------------------------------


def test_lora_metadata_never_becomes_the_config(images, where, tmp_path, regex_guard, monkeypatch):
    """diffusers' exporter writes a LoraConfig into `__metadata__["lora_adapter_metadata"]`; a stranger's asks for
    PiSSA (which rewrites the base weights) and a regex target_modules. The studio gives diffusers the tensors only,
    with the config's allowlisted scaling (lora_alpha 64 / r 4) folded into lora_B (peft_files.py): the adapter loads
    as "b"'s tensors with lora_B x 16 do without metadata, and the base is untouched."""
    studio, before = images
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", str(tmp_path))
    metadata = {"init_lora_weights": "pissa", "target_modules": HOSTILE_PATTERN, "r": 4, "lora_alpha": 64}
    folder, scaled = tmp_path / "pissa", tmp_path / "scaled"
    folder.mkdir()
    scaled.mkdir()
    tensors = load_file(Path(where["lora_b"]) / LORA)
    assert {t.shape[0] for k, t in tensors.items() if ".lora_A." in k} == {4}
    save_file(tensors, folder / LORA, metadata={"format": "pt", "lora_adapter_metadata": json.dumps(metadata)})
    save_file({k: t * 16 if ".lora_B." in k else t for k, t in tensors.items()}, scaled / LORA)
    studio.load_adapter(str(folder), adapter_name="m")
    studio.load_adapter(str(scaled), adapter_name="b16")
    try:
        assert (gen(studio, {"m": 1.0}) == gen(studio, {"b16": 1.0})).all()
        assert not (gen(studio, {"m": 1.0}) == gen(studio, {"b": 1.0})).all()
    finally:
        studio.delete_adapter("m")
        studio.delete_adapter("b16")
    assert regex_guard == []
    assert image_state(studio) == before


def test_a_big_model_card_is_not_read(images, where, tmp_path, monkeypatch, caplog):
    """A 5 MB card loads its weights without the card (a warning says why): it is never parsed, and the listing
    every visitor fetches stays small."""
    import huggingface_hub

    studio, before = images
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", str(tmp_path))
    folder = shutil.copytree(where["lora_b"], tmp_path / "big-card")
    words = "\n".join(f"- word number {i} of a very long list" for i in range(150_000))
    (folder / "README.md").write_text(f"---\ntrigger_words:\n{words}\n---\n")
    assert (folder / "README.md").stat().st_size > 5 * 2**20
    monkeypatch.setattr(huggingface_hub.ModelCard, "load", lambda *a, **k: pytest.fail("the big card was parsed"))
    with caplog.at_level(logging.WARNING, logger="peft_core.hub"):
        studio.load_adapter(str(folder), adapter_name="big")
    try:
        listed = {a["adapter_name"]: a for a in studio.list_adapters()}
        assert listed["big"]["trigger_words"] == []
        assert len(json.dumps(studio.list_adapters())) < 4096
        assert re.search(r"README\.md is [\d,]+ bytes, over the 262,144 read here .*is ignored", caplog.text)
    finally:
        studio.delete_adapter("big")
    assert image_state(studio) == before


def test_trigger_words_are_bounded(images, where, tmp_path, monkeypatch):
    """A card under the cap with 1,000 trigger words, control characters and a 500-character one: the listing
    keeps the first ten printable words of reasonable length."""
    studio, before = images
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", str(tmp_path))
    folder = shutil.copytree(where["lora_b"], tmp_path / "many-words")
    words = ["\u202eevil", "x" * 500, *(f"w{i}" for i in range(1000))]
    (folder / "README.md").write_text("---\n" + json.dumps({"trigger_words": words}) + "\n---\n")
    studio.load_adapter(str(folder), adapter_name="words")
    try:
        listed = {a["adapter_name"]: a for a in studio.list_adapters()}
        assert listed["words"]["trigger_words"] == [f"w{i}" for i in range(10)]
    finally:
        studio.delete_adapter("words")
    assert image_state(studio) == before


def test_links_inside_the_allowed_folders_are_followed(where, assets, tmp_path, monkeypatch):
    """A Hub cache snapshot is made of links: links that stay inside the allowed folders load as before."""
    monkeypatch.setenv("STUDIO_LOCAL_DIRS", f"{assets['root']}:{tmp_path}")
    pipeline = shutil.copytree(assets["pipeline"], tmp_path / "sd", ignore=shutil.ignore_patterns("unet"))
    (pipeline / "unet").symlink_to(assets["pipeline"] / "unet", target_is_directory=True)
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / LORA).symlink_to(assets["lora_b"] / LORA)
    studio = ImageStudio(device="cpu")
    studio.load_base(str(pipeline))
    studio.load_adapter(str(lora), adapter_name="b")
    assert not (gen(studio, {"b": 1.0}) == gen(studio)).all()


def test_the_next_default_request_is_answered_after_a_refused_card(images, where):
    """The issue's failure: a card with steps 0 was accepted and then every request using the defaults failed."""
    studio, before = images
    with pytest.raises(HubError, match="studio_defaults.steps"):
        studio.load_base(where["card-steps-0"])
    assert studio.generate(request(steps=None, width=None, height=None, adapters={"a": 1.0})).size == (32, 32)
    assert image_state(studio) == before
