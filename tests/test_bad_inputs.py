"""Bad input, a catalogue: every entry is one bad call, and one test.

For each entry the call must be refused with the entry's error type and a message that names the bad value and
what would be valid, and the studio must be exactly as before: the same base, the same resident adapters, the same
weights bit for bit (a fingerprint of every tensor), and generations bit-identical to those made before the call.

The studios are built once per module (the tiny pipeline with LoRAs "a" and "b"; the tiny LM with "a", "b" and a
trainable "t"), so an entry that left anything behind fails itself and every entry after it. Hub ids go to a real
olah server on loopback. Every message users would read lands in test-artifacts/bad_inputs.md.

The security section below the catalogue checks what must never happen at all: code from a repo running, a
pickle being opened, a model bigger than the admin's cap being downloaded.
"""

import hashlib
import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from peft_core.errors import AdapterError, HubError, InputError, StudioError
from peft_core.image.studio import ImageStudio
from peft_core.text.studio import TextRequest, TextStudio
from tests.conftest import ALL, EnvPatch, gen
from tests.hubserver import running_hub
from tiny_models.image import write_repo

pytestmark = [pytest.mark.hub]

LORA = "pytorch_lora_weights.safetensors"
WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class Bad:
    kind: str  # Hub id, File, Adapter name, Parameter, Admin (the groups of docs/RELIABILITY.md)
    what: str  # the bad input in words; also the test id
    call: Callable  # (studio, where) -> anything; `where[name]` is a prepared folder's path or a Hub id
    error: type[StudioError]
    message: str  # a regex the message must match: the bad value and what would be valid
    env: dict = field(default_factory=dict)  # admin settings for this entry only


def E(kind, what, call, error, message, **env):  # noqa: N802 - a table row, read like one
    return Bad(kind, what, call, error, message, env)


IMAGES = [
    # --- Hub ids ---------------------------------------------------------------------------------------------------
    E("Hub id", "empty", lambda s, w: s.load_adapter(""), HubError, r"must be a Hub id like 'org/name', got ''"),
    E("Hub id", "spaces only", lambda s, w: s.load_adapter("   "), HubError, r"like 'org/name', got '   '"),
    E("Hub id", "too many slashes", lambda s, w: s.load_adapter("org/name/extra"), HubError,
      r"'org/name/extra' has too many '/': a Hub id is 'org/name'"),
    E("Hub id", "'..' segment", lambda s, w: s.load_adapter("org/../secret"), HubError,
      r"'org/../secret' contains '..'; a Hub id is 'org/name'"),
    E("Hub id", "a URL", lambda s, w: s.load_adapter("https://huggingface.co/org/name"), HubError,
      r"'https://huggingface.co/org/name' looks like a URL; give the id only, like 'org/name'"),
    E("Hub id", "1,000 characters", lambda s, w: s.load_adapter("a" * 1000), HubError,
      r"'a{77}\.\.\.' is 1000 characters; Hub ids have at most 96"),
    E("Hub id", "a space inside", lambda s, w: s.load_adapter("org/na me"), HubError,
      r"'org/na me' is not a valid Hub id: use 'org/name' with letters, digits"),
    E("Hub id", "unknown repo", lambda s, w: s.load_adapter("test-org/missing"), HubError,
      r"repository 'test-org/missing' .*not found on the Hub"),
    E("Hub id", "unknown revision", lambda s, w: s.load_adapter("test-org/lora", revision="nope"), HubError,
      r"revision 'nope' not found in 'test-org/lora'; its branches: main"),
    E("Hub id", "revision with '..'", lambda s, w: s.load_adapter("test-org/lora", revision="../main"), HubError,
      r"revision must be a branch, tag or commit sha like 'main', got '../main'"),
    E("Hub id", "repo with only .bin", lambda s, w: s.load_adapter("test-org/bin-only"), HubError,
      r"only pickle weights \(pytorch_lora_weights.bin\); they are refused because unpickling can run code"),
    E("Hub id", "repo with only .ckpt", lambda s, w: s.load_adapter("test-org/ckpt-only"), HubError,
      r"only pickle weights \(lora.ckpt\)"),
    E("Hub id", "repo with only .pt", lambda s, w: s.load_adapter("test-org/pt-only"), HubError,
      r"only pickle weights \(lora.pt\)"),
    E("Hub id", "several safetensors, no weight_name", lambda s, w: s.load_adapter("test-org/two-files"), HubError,
      r"several safetensors files; choose one as weight_name: one.safetensors, two.safetensors"),
    E("Hub id", "weight_name with a path", lambda s, w: s.load_adapter("test-org/lora", "sub/x.safetensors"),
      HubError, r"weight_name must be a file name in the repo like '.*', got 'sub/x.safetensors'"),
    E("Hub id", "weight_name with '..'", lambda s, w: s.load_adapter("test-org/lora", "../x.safetensors"),
      HubError, r"weight_name must be a file name in the repo .*got '../x.safetensors'"),
    E("Hub id", "weight_name not in the repo", lambda s, w: s.load_adapter("test-org/lora", "other.safetensors"),
      HubError, rf"'other.safetensors' is not in 'test-org/lora' .*its safetensors files are: {LORA}"),
    E("Hub id", "weight_name of a pickle", lambda s, w: s.load_adapter("test-org/lora", "lora.bin"), HubError,
      r"weight_name 'lora.bin' is a pickle file; only .safetensors are loaded"),
    E("Hub id", "local path outside the allowed folders", lambda s, w: s.load_adapter("/etc"), HubError,
      r"local path '/etc' is not allowed; give a Hub id like 'org/name'. Allowed folders: "),
    E("Hub id", "local path with a NUL byte", lambda s, w: s.load_adapter("/tmp/a\x00b"), HubError,
      r"local path '/tmp/a\\x00b' is not a valid path"),
    E("Hub id", "pipeline: unknown repo", lambda s, w: s.load_base("test-org/missing"), HubError,
      r"repository 'test-org/missing' .*not found"),
    E("Hub id", "pipeline: a LoRA repo", lambda s, w: s.load_base("test-org/lora"), HubError,
      rf"'test-org/lora' is not a diffusers pipeline \(no model_index.json\); files: .*{LORA}"),
    # --- Files -----------------------------------------------------------------------------------------------------
    E("File", "truncated safetensors", lambda s, w: s.load_adapter(w["truncated"]), AdapterError,
      rf"'{LORA}' is truncated or corrupt: tensor '.*' lies outside the file's [\d,]+ data bytes"),
    E("File", "header claiming a huge size", lambda s, w: s.load_adapter(w["huge-header"]), AdapterError,
      rf"'{LORA}' is corrupt: its header claims 1,099,511,627,776 bytes but the file has 10 bytes"),
    E("File", "empty file", lambda s, w: s.load_adapter(w["empty"]), AdapterError,
      rf"'{LORA}' is not a safetensors file: it is 0 bytes long \(empty or truncated\)"),
    E("File", "header not JSON", lambda s, w: s.load_adapter(w["not-json"]), AdapterError,
      rf"'{LORA}' is not a safetensors file: its header is not JSON"),
    E("File", "a full model's weights", lambda s, w: s.load_adapter(w["full-model"]), AdapterError,
      r"holds no LoRA weights \(keys such as .*\); it looks like a full model's weights"),
    E("File", "LoRA for another architecture", lambda s, w: s.load_adapter(w["other-arch"]), AdapterError,
      r"other-arch/.* \(peft layout\) names \d+ LoRA layers but none match '.*tiny-sd': it names \d+ layers under "
      r"down_blocks\.\d that it has no module for \(such as other_0_"),
    E("File", "LoRA that half fits", lambda s, w: s.load_adapter(w["half-fits"]), AdapterError,
      r"names 64 LoRA layers but only 32 match .*: it names 8 layers under down_blocks\.1 that it has no module for "
      r"\(such as other_0_.*; it names 8 layers under mid_block that"),
    E("File", "NaN inside", lambda s, w: s.load_adapter(w["nan"]), AdapterError,
      rf"'{LORA}' has NaN or infinite values in 'unet\..*lora_B.weight'; the file is broken"),
    E("File", "inf inside", lambda s, w: s.load_adapter(w["inf"]), AdapterError,
      rf"'{LORA}' has NaN or infinite values in"),
    E("File", "LyCORIS (LoHa) file missing factors", lambda s, w: s.load_adapter(w["lycoris"]), AdapterError,
      r"'lora_unet_x' has no hada_w2_a; this LyCORIS LoHa layer is incomplete"),
    E("File", "pipeline with truncated weights", lambda s, w: s.load_base(w["pipeline-truncated"]), HubError,
      r"could not be loaded as a diffusers pipeline: .*diffusion_pytorch_model.safetensors"),
    # --- Adapter names ---------------------------------------------------------------------------------------------
    E("Adapter name", "empty, cannot be derived", lambda s, w: s.load_adapter(w["default"]), InputError,
      r"cannot derive an adapter name from '.*/default'; please give adapter_name"),
    E("Adapter name", "duplicate", lambda s, w: s.load_adapter(w["lora_b"], adapter_name="a"), InputError,
      r"adapter_name 'a' is already loaded; choose another name or delete it first"),
    E("Adapter name", "containing '.'", lambda s, w: s.load_adapter(w["lora_b"], adapter_name="my.style"),
      InputError, r"adapter_name 'my.style' is not valid: use letters, digits, '_' or '-'"),
    E("Adapter name", "containing '/'", lambda s, w: s.load_adapter(w["lora_b"], adapter_name="my/style"),
      InputError, r"adapter_name 'my/style' is not valid"),
    E("Adapter name", "200 characters", lambda s, w: s.load_adapter(w["lora_b"], adapter_name="n" * 200),
      InputError, r"adapter_name 'n{77}\.\.\.' is 200 characters; at most 64 are allowed"),
    E("Adapter name", "starting with a digit", lambda s, w: s.load_adapter(w["lora_b"], adapter_name="1st"),
      InputError, r"'1st' is not valid: .*starting with a letter or '_'"),
    E("Adapter name", "reserved: default", lambda s, w: s.load_adapter(w["lora_b"], adapter_name="default"),
      InputError, r"adapter_name 'default' is reserved by the libraries; choose another \(reserved: .*base_layer"),
    E("Adapter name", "reserved: lora_A", lambda s, w: s.load_adapter(w["lora_b"], adapter_name="lora_A"),
      InputError, r"'lora_A' is reserved by the libraries"),
    E("Adapter name", "a torch method: to", lambda s, w: s.load_adapter(w["lora_b"], adapter_name="to"),
      InputError, r"'to' is the name of a torch module method or attribute; choose another"),
    E("Adapter name", "a torch attribute: training",
      lambda s, w: s.load_adapter(w["lora_b"], adapter_name="training"), InputError,
      r"'training' is the name of a torch module method or attribute"),
    # --- Weights and parameters ------------------------------------------------------------------------------------
    E("Parameter", "weight NaN", lambda s, w: gen(s, {"a": float("nan")}), InputError,
      r"weight of adapter 'a' must be a finite number in \[-2.0, 2.0\], got nan"),
    E("Parameter", "weight inf", lambda s, w: gen(s, {"a": float("inf")}), InputError, r"'a' .*got inf"),
    E("Parameter", "weight -inf", lambda s, w: gen(s, {"b": float("-inf")}), InputError, r"'b' .*got -inf"),
    E("Parameter", "weight 2.5", lambda s, w: gen(s, {"a": 2.5}), InputError,
      r"weight of adapter 'a' must be a finite number in \[-2.0, 2.0\], got 2.5"),
    E("Parameter", "weight -3", lambda s, w: gen(s, {"a": 1.0, "b": -3}), InputError, r"'b' .*got -3"),
    E("Parameter", "weight as text", lambda s, w: gen(s, {"a": "strong"}), InputError,
      r"weight of adapter 'a' must be a number in \[-2.0, 2.0\], got str 'strong'"),
    E("Parameter", "weight a 400-digit integer", lambda s, w: gen(s, {"a": 10**400}), InputError,
      r"weight of adapter 'a' must be a number in \[-2.0, 2.0\], got 1000"),
    E("Parameter", "mix naming a missing adapter", lambda s, w: gen(s, {"a": 1.0, "nope": 0.5}), InputError,
      r"adapter\(s\) 'nope' not loaded; loaded: a, b"),
    E("Parameter", "mix that is a list", lambda s, w: s.generate(request(adapters=["a"])), InputError,
      r"adapters must map adapter names to weights, like \{'style': 0.8\}, got list \['a'\]"),
    E("Parameter", "steps 0", lambda s, w: s.generate(request(steps=0)), InputError,
      r"steps must be an integer in \[1, 100\], got 0"),
    E("Parameter", "steps negative", lambda s, w: s.generate(request(steps=-5)), InputError, r"got -5"),
    E("Parameter", "steps 10,000", lambda s, w: s.generate(request(steps=10_000)), InputError,
      r"steps must be an integer in \[1, 100\], got 10000"),
    E("Parameter", "steps 2.5", lambda s, w: s.generate(request(steps=2.5)), InputError, r"got 2.5"),
    E("Parameter", "width not a multiple of 8", lambda s, w: s.generate(request(width=33)), InputError,
      r"width must be a multiple of 8 in \[8, 1024\], got 33"),
    E("Parameter", "height beyond the cap", lambda s, w: s.generate(request(height=4096)), InputError,
      r"height must be an integer in \[8, 1024\], got 4096"),
    E("Parameter", "width 0", lambda s, w: s.generate(request(width=0)), InputError, r"width .*got 0"),
    E("Parameter", "prompt of 100,000 characters", lambda s, w: s.generate(request(prompt="x" * 100_000)),
      InputError, r"prompt is 100,000 characters long; at most 2,000 are allowed"),
    E("Parameter", "negative prompt of 100,000 characters",
      lambda s, w: s.generate(request(negative_prompt="x" * 100_000)), InputError,
      r"negative_prompt is 100,000 characters long"),
    E("Parameter", "prompt not text", lambda s, w: s.generate(request(prompt=None)), InputError,
      r"prompt must be text, got NoneType"),
    E("Parameter", "seed negative", lambda s, w: s.generate(request(seed=-1)), InputError,
      r"seed must be an integer in \[0, 4294967295\], got -1"),
    E("Parameter", "seed 2**32", lambda s, w: s.generate(request(seed=2**32)), InputError, r"got 4294967296"),
    E("Parameter", "guidance NaN", lambda s, w: s.generate(request(guidance_scale=float("nan"))), InputError,
      r"guidance_scale must be a finite number in \[0.0, 30.0\], got nan"),
    E("Parameter", "compare with a missing adapter", lambda s, w: s.compare(request(adapters={"zz": 1.0})),
      InputError, r"'zz' not loaded; loaded: a, b"),
    E("Parameter", "delete an unknown adapter", lambda s, w: s.delete_adapter("zz"), InputError,
      r"no adapter named 'zz'; loaded: a, b"),
    E("Parameter", "export of an empty mix", lambda s, w: s.export_mix({"a": 0.0}, w["out"]), InputError,
      r"the mix is empty \(no adapter with a weight other than 0\); nothing to export"),
    # --- Admin settings and code in repos --------------------------------------------------------------------------
    E("Admin", "pipeline naming a custom class", lambda s, w: s.load_base(w["custom-pipeline"]), HubError,
      r"names the pipeline class \['evil', 'EvilPipeline'\], which is not a pipeline that ships with diffusers; "
      r"custom pipeline code is never run"),
    E("Admin", "pipeline with a custom component", lambda s, w: s.load_base(w["custom-component"]), HubError,
      r"its component 'unet' is \['evil_unet', 'EvilUNet'\], which is not a class from diffusers or transformers"),
    E("Admin", "pipeline naming an unknown class", lambda s, w: s.load_base(w["unknown-class"]), HubError,
      r"names the pipeline class 'NoSuchPipeline', which is not a pipeline that ships with diffusers"),
    E("Admin", "pipeline over STUDIO_MAX_MODEL_MB", lambda s, w: s.load_base(w["pipeline-copy"]), HubError,
      r"needs [\d.]+ MB in \d+ files; this Space loads models of at most 0.01 MB \(STUDIO_MAX_MODEL_MB\)",
      STUDIO_MAX_MODEL_MB="0.01"),
    E("Admin", "LoRA over STUDIO_MAX_ADAPTER_MB", lambda s, w: s.load_adapter(w["lora_b"]), HubError,
      rf"'{LORA}' in '.*lora-b' is [\d.]+ MB; this Space accepts at most 0.001 MB", STUDIO_MAX_ADAPTER_MB="0.001"),
    E("Admin", "org not in STUDIO_ALLOWED_ORGS", lambda s, w: s.load_adapter("test-org/lora"), HubError,
      r"'test-org/lora' is not from an allowed organisation on this Space; allowed: other, trusted",
      STUDIO_ALLOWED_ORGS="trusted,other"),
    E("Admin", "another base under STUDIO_LOCK_BASE", lambda s, w: s.load_base(w["pipeline-copy"]), InputError,
      r"this Space is locked to the base '.*tiny-sd' \(STUDIO_LOCK_BASE\); '.*pipeline-copy' \(revision 'main'\) "
      "cannot replace it",
      STUDIO_LOCK_BASE="1"),
]  # fmt: skip

TEXT = [
    # --- Hub ids ---------------------------------------------------------------------------------------------------
    E("Hub id", "empty", lambda s, w: s.load_adapter(""), HubError, r"must be a Hub id like 'org/name', got ''"),
    E("Hub id", "too many slashes", lambda s, w: s.load_base("org/a/b"), HubError, r"'org/a/b' has too many '/'"),
    E("Hub id", "a URL", lambda s, w: s.load_base("https://huggingface.co/gpt2"), HubError, r"looks like a URL"),
    E("Hub id", "'..' segment", lambda s, w: s.load_adapter("org/../x"), HubError, r"'org/../x' contains '..'"),
    E("Hub id", "unknown repo", lambda s, w: s.load_adapter("test-org/missing"), HubError,
      r"repository 'test-org/missing' .*not found on the Hub"),
    E("Hub id", "unknown revision", lambda s, w: s.load_adapter("test-org/lm-adapter", revision="nope"), HubError,
      r"revision 'nope' not found in 'test-org/lm-adapter'; its branches: main"),
    E("Hub id", "adapter with only .bin", lambda s, w: s.load_adapter(w["text-bin-only"]), HubError,
      r"has only pickle weights \(adapter_model.bin\); they are refused because unpickling can run code"),
    E("Hub id", "model with only .bin", lambda s, w: s.load_base(w["lm-bin-only"]), HubError,
      r"has only pickle weights \(pytorch_model.bin\); they are refused .* Pick a model with .safetensors"),
    E("Hub id", "a model where an adapter belongs", lambda s, w: s.load_adapter(w["text:lm"]), HubError,
      r"is not a peft adapter \(no adapter_config.json\); files: .*config.json"),
    E("Hub id", "an image LoRA where a model belongs", lambda s, w: s.load_base(w["lora_a"]), HubError,
      r"is not a transformers model \(no config.json\)"),
    # --- Files -----------------------------------------------------------------------------------------------------
    E("File", "truncated safetensors", lambda s, w: s.load_adapter(w["text:truncated"]), AdapterError,
      rf"'{WEIGHTS}' is truncated or corrupt"),
    E("File", "empty file", lambda s, w: s.load_adapter(w["text-empty"]), AdapterError,
      rf"'{WEIGHTS}' is not a safetensors file: it is 0 bytes long"),
    E("File", "header claiming a huge size", lambda s, w: s.load_adapter(w["text-huge-header"]), AdapterError,
      r"its header claims 1,099,511,627,776 bytes"),
    E("File", "NaN inside", lambda s, w: s.load_adapter(w["text-nan"]), AdapterError,
      rf"{WEIGHTS} has NaN or infinite values in '.*lora_B.weight'"),
    E("File", "inf inside", lambda s, w: s.load_adapter(w["text-inf"]), AdapterError, r"NaN or infinite values"),
    E("File", "a full model's weights", lambda s, w: s.load_adapter(w["text-full-model"]), AdapterError,
      r"none of the \d+ tensors is a LORA weight"),
    E("File", "adapter for another architecture", lambda s, w: s.load_adapter(w["text:other_arch"]), AdapterError,
      r"does not fit .*: its weights name modules such as 'transformer.h.0.mlp.down_proj' that the model does not "
      r"have \(its layers are named like 'model.layers.0"),
    E("File", "adapter that half fits", lambda s, w: s.load_adapter(w["text:half_fits"]), AdapterError,
      r"\d+ of its layers got no weights from the file \(for example '.*layers.1."),
    E("File", "adapter_config.json not JSON", lambda s, w: s.load_adapter(w["text-bad-config"]), AdapterError,
      r"adapter_config.json is not a valid peft config"),
    E("File", "a prompt-tuning adapter", lambda s, w: s.load_adapter(w["text-prompt-tuning"]), AdapterError,
      r"is a PROMPT_TUNING adapter \(prompt learning\); only adapters that wrap layers \(LoRA, LoHa"),
    E("File", "LoHa next to LoRAs", lambda s, w: s.load_adapter(w["text:loha"]), AdapterError,
      r"cannot mix a LoRA and a LoHa in one model: .* holds LoRA adapter\(s\) a, b, t; delete those first"),
    E("File", "model with truncated weights", lambda s, w: s.load_base(w["lm-truncated"]), HubError,
      r"could not be loaded as a causal LM: .*"),
    # --- Adapter names ---------------------------------------------------------------------------------------------
    E("Adapter name", "empty, cannot be derived", lambda s, w: s.load_adapter(w["text-default"]), InputError,
      r"cannot derive an adapter name from '.*/default'; please give adapter_name"),
    E("Adapter name", "empty", lambda s, w: s.add_adapter(""), InputError,
      r"adapter_name must be a non-empty name, got ''"),
    E("Adapter name", "duplicate", lambda s, w: s.add_adapter("a"), InputError, r"'a' is already loaded"),
    E("Adapter name", "containing '.'", lambda s, w: s.load_adapter(w["text:lora_b"], adapter_name="x.y"), InputError,
      r"'x.y' is not valid: use letters, digits, '_' or '-'"),
    E("Adapter name", "containing '/'", lambda s, w: s.add_adapter("x/y"), InputError, r"'x/y' is not valid"),
    E("Adapter name", "200 characters", lambda s, w: s.add_adapter("n" * 200), InputError,
      r"is 200 characters; at most 64 are allowed"),
    E("Adapter name", "reserved: lora_B", lambda s, w: s.add_adapter("lora_B"), InputError,
      r"'lora_B' is reserved by the libraries"),
    E("Adapter name", "a torch method: keys", lambda s, w: s.add_adapter("keys"), InputError,
      r"'keys' is the name of a torch module method or attribute"),
    E("Adapter name", "a torch attribute: _modules", lambda s, w: s.add_adapter("_modules"), InputError,
      r"'_modules' is the name of a torch module method or attribute"),
    E("Adapter name", "merge into a taken name", lambda s, w: s.merge_adapters({"a": 1.0}, "b"), InputError,
      r"'b' is already loaded"),
    # --- Parameters ------------------------------------------------------------------------------------------------
    E("Parameter", "max_new_tokens 0", lambda s, w: s.generate(TextRequest("the pirate", max_new_tokens=0)),
      InputError, r"max_new_tokens must be an integer in \[1, 256\], got 0"),
    E("Parameter", "max_new_tokens 10,000", lambda s, w: s.generate(TextRequest("the pirate", max_new_tokens=10_000)),
      InputError, r"max_new_tokens must be an integer in \[1, 256\], got 10000"),
    E("Parameter", "prompt and max_new_tokens past the context",
      lambda s, w: s.generate(TextRequest("the pirate", max_new_tokens=63)), InputError,
      r"with max_new_tokens=63 that passes the model's context of 64 tokens"),
    E("Parameter", "prompt of 100,000 characters", lambda s, w: s.generate(TextRequest("x" * 100_000)),
      InputError, r"prompt is 100,000 characters long; at most 2,000 are allowed"),
    E("Parameter", "empty prompt", lambda s, w: s.generate(TextRequest("  ")), InputError,
      r"prompt must not be empty"),
    E("Parameter", "temperature NaN",
      lambda s, w: s.generate(TextRequest("the", do_sample=True, temperature=float("nan"))), InputError,
      r"temperature must be a finite number in \[0.01, 5.0\], got nan"),
    E("Parameter", "temperature 0", lambda s, w: s.generate(TextRequest("the", temperature=0)), InputError,
      r"temperature must be a finite number in \[0.01, 5.0\], got 0"),
    E("Parameter", "seed negative", lambda s, w: s.generate(TextRequest("the", seed=-1)), InputError,
      r"seed .*got -1"),
    E("Parameter", "active set naming a missing adapter", lambda s, w: s.generate(TextRequest("the", ["a", "nope"])),
      InputError, r"adapter\(s\) 'nope' not loaded; loaded: a, b, t"),
    E("Parameter", "active set that is a dict", lambda s, w: s.generate(TextRequest("the", {"a": 1.0})), InputError,
      r"adapters must be a list of names or a comma-separated string, got \{'a': 1.0\}"),
    E("Parameter", "r = 0", lambda s, w: s.add_adapter("new", r=0), InputError,
      r"r must be an integer in \[1, 256\], got 0"),
    E("Parameter", "r negative", lambda s, w: s.add_adapter("new", r=-4), InputError, r"r .*got -4"),
    E("Parameter", "lora_alpha NaN", lambda s, w: s.add_adapter("new", lora_alpha=float("nan")), InputError,
      r"lora_alpha must be a finite number"),
    E("Parameter", "lora_dropout 1", lambda s, w: s.add_adapter("new", lora_dropout=1.0), InputError,
      r"lora_dropout must be a number in \[0, 1\), got 1.0"),
    E("Parameter", "unknown target module", lambda s, w: s.add_adapter("new", target_modules="q_proj, qproj"),
      AdapterError, r"target module\(s\) 'qproj' not found in .*; valid names: .*q_proj"),
    E("Parameter", "empty training text", lambda s, w: s.train_adapter("t", "", 3, 0.01), InputError,
      r"text to train on must not be empty"),
    E("Parameter", "training text of 100,000 characters", lambda s, w: s.train_adapter("t", "a " * 50_000, 3, 0.01),
      InputError, r"text is 100,000 characters long; at most 20,000 are allowed"),
    E("Parameter", "training steps 0", lambda s, w: s.train_adapter("t", "the cat", 0, 0.01), InputError,
      r"steps must be an integer in \[1, 500\], got 0"),
    E("Parameter", "training steps 10,000", lambda s, w: s.train_adapter("t", "the cat", 10_000, 0.01),
      InputError, r"got 10000"),
    E("Parameter", "learning_rate inf", lambda s, w: s.train_adapter("t", "the cat", 3, float("inf")), InputError,
      r"learning_rate must be a finite number in \[0.0, 1.0\], got inf"),
    E("Parameter", "training a loaded adapter", lambda s, w: s.train_adapter("a", "the cat", 3, 0.01), InputError,
      r"adapter 'a' was loaded from .* add a new adapter \(add_adapter\) to train"),
    E("Parameter", "merge weight NaN", lambda s, w: s.merge_adapters({"a": float("nan")}, "m"), InputError,
      r"weight of adapter 'a' must be a finite number"),
    E("Parameter", "merge weight 5", lambda s, w: s.merge_adapters({"a": 1.0, "b": 5}, "m"), InputError,
      r"weight of adapter 'b' .*got 5"),
    E("Parameter", "merge naming a missing adapter", lambda s, w: s.merge_adapters({"a": 1.0, "zz": 1.0}, "m"),
      InputError, r"'zz' not loaded; loaded: a, b, t"),
    E("Parameter", "merge of an unknown kind", lambda s, w: s.merge_adapters({"a": 1.0, "b": 1.0}, "m", "avg"),
      InputError, r"combination_type must be one of linear, cat, svd, ties.*; got 'avg'"),
    E("Parameter", "ties merge without density", lambda s, w: s.merge_adapters({"a": 1.0, "b": 1.0}, "m", "ties"),
      InputError, r"combination_type 'ties' needs density, the share of weights kept, in \(0, 1\]"),
    E("Parameter", "delete an unknown adapter", lambda s, w: s.delete_adapter("zz"), InputError,
      r"no adapter named 'zz'; loaded: a, b, t"),
    # --- Admin settings and code in repos --------------------------------------------------------------------------
    E("Admin", "model whose config asks for its own code", lambda s, w: s.load_base(w["lm-custom-code"]), HubError,
      r"could not be loaded as a causal LM: .*contains custom code which must be executed"),
    E("Admin", "model over STUDIO_MAX_MODEL_MB", lambda s, w: s.load_base(w["text:lm_copy"]), HubError,
      r"needs [\d.]+ MB in \d+ files; this Space loads models of at most 0.01 MB \(STUDIO_MAX_MODEL_MB\)",
      STUDIO_MAX_MODEL_MB="0.01"),
    E("Admin", "adapter over STUDIO_MAX_ADAPTER_MB", lambda s, w: s.load_adapter(w["text:lora_b"]), HubError,
      rf"'{WEIGHTS}' in '.*lora-b' is [\d.]+ MB; this Space accepts at most 0.001 MB", STUDIO_MAX_ADAPTER_MB="0.001"),
    E("Admin", "another base under STUDIO_LOCK_BASE", lambda s, w: s.load_base(w["text:lm_copy"]), InputError,
      r"this Space is locked to the base '.*tiny-lm' \(STUDIO_LOCK_BASE\); '.*lm-copy' \(revision 'main'\) "
      "cannot replace it",
      STUDIO_LOCK_BASE="1"),
]  # fmt: skip


def request(**change):
    """A fast valid image request with some fields changed."""
    from peft_core.image.studio import ImageRequest

    fields = {"prompt": "a red circle", "adapters": {"a": 1.0}, "steps": 4, "guidance_scale": 5.0, "width": 32,
              "height": 32} | change  # fmt: skip
    return ImageRequest(**fields)


# --- the files and repos the catalogue refers to -----------------------------------------------------------------


def _bad_image_files(root: Path, assets) -> None:
    state = load_file(assets["lora_b"] / LORA)
    good = (assets["lora_b"] / LORA).read_bytes()
    raw = {
        "truncated": good[:-100],
        "huge-header": struct.pack("<Q", 2**40) + b"{}",
        "empty": b"",
        "not-json": struct.pack("<Q", 4) + b"\xff\xfe{[",
    }
    for name, data in raw.items():
        (root / name).mkdir()
        (root / name / LORA).write_bytes(data)
    poisoned = {}
    for name, value in (("nan", float("nan")), ("inf", float("inf"))):
        poisoned[name] = {k: v.clone() for k, v in state.items()}
        key = sorted(k for k in state if "lora_B" in k)[0]
        poisoned[name][key][0, 0] = value
    unet = load_file(assets["pipeline"] / "unet" / "diffusion_pytorch_model.safetensors")
    files = {
        "full-model": {f"unet.{k}": v for k, v in unet.items()},
        "other-arch": {k.replace("attentions", "other"): v for k, v in state.items()},
        "half-fits": dict(state) | {k.replace("attentions", "other"): v.clone() for k, v in state.items()},
        "lycoris": {"lora_unet_x.hada_w1_a": torch.ones(4, 8), "lora_unet_x.hada_w1_b": torch.ones(4, 8)},
        "default": state,
        **poisoned,
    }
    for name, tensors in files.items():
        write_repo(root / name, {LORA: tensors})
    copy = shutil.copytree(assets["pipeline"], root / "pipeline-copy")
    broken = shutil.copytree(assets["pipeline"], root / "pipeline-truncated")
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    evil = "import pathlib\npathlib.Path(__file__).with_name('RAN').write_text('code ran')\nclass EvilPipeline: pass\n"
    for name, component, value, code_file in (
        ("custom-pipeline", "_class_name", ["evil", "EvilPipeline"], "evil.py"),
        ("custom-component", "unet", ["evil_unet", "EvilUNet"], "unet/evil_unet.py"),
        ("unknown-class", "_class_name", "NoSuchPipeline", None),
    ):
        folder = shutil.copytree(copy, root / name)
        index = json.loads((folder / "model_index.json").read_text())
        index[component] = value
        (folder / "model_index.json").write_text(json.dumps(index))
        if code_file:
            (folder / code_file).write_text(evil)


def _bad_text_files(root: Path, lm_assets) -> None:
    lora = lm_assets["lora_a"]
    state = load_file(lora / WEIGHTS)

    def adapter(name, weights=None, raw=None, config=None):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(config or (lora / "adapter_config.json").read_text())
        if raw is not None:
            (folder / WEIGHTS).write_bytes(raw)
        elif weights is not None:
            save_file(weights, folder / WEIGHTS)
        return folder

    for name, value in (("text-nan", float("nan")), ("text-inf", float("inf"))):
        poisoned = {k: v.clone() for k, v in state.items()}
        poisoned[sorted(k for k in state if "lora_B" in k)[0]][0, 0] = value
        adapter(name, poisoned)
    adapter("text-empty", raw=b"")
    adapter("text-huge-header", raw=struct.pack("<Q", 2**40) + b"{}")
    adapter("text-full-model", load_file(lm_assets["lm"] / "model.safetensors"))
    adapter("text-bad-config", state, config="{not json")
    prompt_tuning = {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 4,
                     "base_model_name_or_path": str(lm_assets["lm"])}  # fmt: skip
    adapter("text-prompt-tuning", {"prompt_embeddings": torch.zeros(4, 32)}, config=json.dumps(prompt_tuning))
    adapter("text-dir/default", state)
    bin_only = adapter("text-bin-only")
    (bin_only / "adapter_model.bin").write_bytes(b"never unpickled")
    lm_bin = shutil.copytree(lm_assets["lm"], root / "lm-bin-only", ignore=shutil.ignore_patterns("*.safetensors"))
    (lm_bin / "pytorch_model.bin").write_bytes(b"never unpickled")
    truncated = shutil.copytree(lm_assets["lm"], root / "lm-truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    custom = shutil.copytree(lm_assets["lm"], root / "lm-custom-code")
    config = json.loads((custom / "config.json").read_text())
    config.update(model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.Evil"})
    (custom / "config.json").write_text(json.dumps(config))
    (custom / "evil.py").write_text("import pathlib\npathlib.Path(__file__).with_name('RAN').write_text('ran')\n")


class Where(dict):
    """name -> a prepared folder's path (a str, as users type it) or a Hub id."""

    def __missing__(self, key):
        raise KeyError(f"no prepared folder or repo named {key!r}")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models are a few thousand parameters: one torch thread beats two fighting over a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def where(tmp_path_factory, assets, lm_assets):
    root = tmp_path_factory.mktemp("bad")
    _bad_image_files(root, assets)
    _bad_text_files(root, lm_assets)
    where = Where({f"text:{name}": str(path) for name, path in lm_assets.items()})  # the image assets reuse names
    where.update({name: str(path) for name, path in assets.items()})
    where.update({p.name: str(p) for p in root.iterdir()})
    where.update({"text-default": str(root / "text-dir" / "default"), "out": str(root / "out"), "root": root})
    with EnvPatch.context() as mp:
        mp.setenv("STUDIO_LOCAL_DIRS", ":".join(str(p) for p in (assets["root"], lm_assets["root"], root)))
        for name in ("STUDIO_ALLOWED_ORGS", "STUDIO_LOCK_BASE", "STUDIO_MAX_ADAPTER_MB", "STUDIO_MAX_MODEL_MB"):
            mp.delenv(name, raising=False)
        yield where


@pytest.fixture(scope="module")
def hub(tmp_path_factory, assets, lm_assets):
    with running_hub(tmp_path_factory.mktemp("hub")) as server:
        server.add_repo("test-org/lora", assets["lora_a"])
        server.add_repo("test-org/two-files", assets["two_files"])
        for suffix in ("bin", "ckpt", "pt"):
            name = "pytorch_lora_weights.bin" if suffix == "bin" else f"lora.{suffix}"
            server.add_repo(f"test-org/{suffix}-only", {name: b"never unpickled", "README.md": "# pickles\n"})
        server.add_repo("test-org/lm-adapter", lm_assets["lora_a"])
        yield server


def fingerprint(modules: dict) -> str:
    """One hash over every parameter and buffer (names and bytes) of the given torch modules, and their adapters."""
    digest = hashlib.sha256()
    for part, module in sorted(modules.items()):
        for name, tensor in sorted([*module.named_parameters(), *module.named_buffers()], key=lambda x: x[0]):
            digest.update(f"{part}.{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        digest.update(repr(sorted(getattr(module, "peft_config", {}) or {})).encode())
    return digest.hexdigest()


def image_state(studio: ImageStudio) -> dict:
    """What a refused call must leave as it was; the images are small and short (2 steps, 16x16) to stay fast."""
    modules = {k: v for k, v in studio.pipe.components.items() if isinstance(v, torch.nn.Module)}
    mixes = {"base": {}, "mix": {"a": 0.5, "b": -1.0}}
    images = {
        name: studio.generate(request(adapters=mix, steps=2, width=16, height=16)) for name, mix in mixes.items()
    }
    return {
        "pipeline": studio.base_info(),
        "adapters": studio.list_adapters(),
        "weights": fingerprint(modules),
        "images": {name: hashlib.sha256(image.tobytes()).hexdigest() for name, image in images.items()},
    }


def text_state(studio: TextStudio) -> dict:
    sets = [[], ["a"], ["a", "b"], ["t"]]
    return {
        "model": studio.base_info(),
        "adapters": studio.list_adapters(),
        "weights": fingerprint({"model": studio.model}),
        "texts": [studio.generate(TextRequest("the pirate", names, max_new_tokens=8)) for names in sets],
    }


@pytest.fixture(scope="module")
def images(where, hub, assets):
    studio = ImageStudio(device="cpu")
    studio.load_base(where["pipeline"])
    studio.load_adapter(where["lora_a"], adapter_name="a")
    studio.load_adapter(where["lora_b"], adapter_name="b")
    return studio, image_state(studio)


@pytest.fixture(scope="module")
def text(where, hub):
    studio = TextStudio(device="cpu")
    studio.load_base(where["text:lm"])
    studio.load_adapter(where["text:lora_a"], adapter_name="a")
    studio.load_adapter(where["text:lora_b"], adapter_name="b")
    studio.add_adapter("t", r=4, lora_alpha=8, target_modules=ALL)
    return studio, text_state(studio)


@pytest.fixture(scope="module")
def messages():
    """Every refusal as users read it, written to test-artifacts/bad_inputs.md for the docs."""
    seen: list[tuple[str, str, str, str]] = []
    yield seen
    out = Path(__file__).resolve().parent.parent / "test-artifacts" / "bad_inputs.md"
    out.parent.mkdir(exist_ok=True)
    rows = [f"| {side} | {kind} | {what} | {message.replace('|', '/')[:300]} |" for side, kind, what, message in seen]
    out.write_text("| side | kind | bad input | message |\n|---|---|---|---|\n" + "\n".join(sorted(rows)) + "\n")


def _refused(bad: Bad, studio, where, monkeypatch) -> str:
    for name, value in bad.env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StudioError) as caught:
        bad.call(studio, where)
    assert type(caught.value) is bad.error, f"{type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    assert caught.match(bad.message), message
    for name in bad.env:
        monkeypatch.delenv(name)
    return message


@pytest.mark.parametrize("bad", IMAGES, ids=[f"{b.kind}: {b.what}" for b in IMAGES])
def test_image_bad_input(bad, images, where, monkeypatch, messages):
    studio, before = images
    messages.append(("images", bad.kind, bad.what, _refused(bad, studio, where, monkeypatch)))
    assert image_state(studio) == before


@pytest.mark.parametrize("bad", TEXT, ids=[f"{b.kind}: {b.what}" for b in TEXT])
def test_text_bad_input(bad, text, where, monkeypatch, messages):
    studio, before = text
    messages.append(("text", bad.kind, bad.what, _refused(bad, studio, where, monkeypatch)))
    assert text_state(studio) == before


def test_the_catalogue_is_complete():
    entries = {(side, b.kind, b.what) for side, table in (("images", IMAGES), ("text", TEXT)) for b in table}
    assert len(entries) == len(IMAGES) + len(TEXT) >= 40  # every entry distinct
    assert {b.kind for b in IMAGES + TEXT} == {"Hub id", "File", "Adapter name", "Parameter", "Admin"}


# --- security: what must never happen ------------------------------------------------------------------------------

EVIL_PICKLE_TEMPLATE = "cos\nsystem\n(S'touch {marker}'\ntR."  # protocol-0 pickle: unpickling runs `touch`


def _loader_calls():
    """(file, call name, keywords) of every loader call in peft_core, read from the source."""
    import ast

    for path in sorted((Path(__file__).resolve().parent.parent / "peft_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
                yield path.name, owner, node.func.attr, {k.arg: k.value for k in node.keywords}


def test_no_loader_call_can_run_code():
    """use_safetensors=True on every weight loader, never trust_remote_code or custom_pipeline, no torch.load."""
    import ast

    weight_loaders = []
    for file, owner, name, keywords in _loader_calls():
        where = f"{file}: {owner}.{name}"
        assert name not in ("load", "loads") or owner not in ("torch", "pickle"), where
        assert "custom_pipeline" not in keywords, where
        if "trust_remote_code" in keywords:
            assert isinstance(keywords["trust_remote_code"], ast.Constant), where
            assert keywords["trust_remote_code"].value is False, where
        not_loaders = ("AutoTokenizer", "PeftConfig", "studio", "self")  # self.load_adapter: the studio's own method
        if name in ("from_pretrained", "load_adapter") and owner not in not_loaders:
            weight_loaders.append(where)
            assert isinstance(keywords.get("use_safetensors"), ast.Constant), where
            assert keywords["use_safetensors"].value is True, where
    assert len(weight_loaders) == 3  # diffusers' pipeline, transformers' model, transformers' load_adapter


def test_pickles_next_to_safetensors_are_never_opened(tmp_path, hub, assets, lm_assets, monkeypatch):
    """Repos holding both formats load from safetensors only; the pickle would run `touch` if it were opened."""
    marker = tmp_path / "UNPICKLED"
    evil = EVIL_PICKLE_TEMPLATE.format(marker=marker).encode()
    pipeline = shutil.copytree(assets["pipeline"], tmp_path / "sd")
    lm = shutil.copytree(lm_assets["lm"], tmp_path / "lm")
    (pipeline / "unet" / "diffusion_pytorch_model.bin").write_bytes(evil)
    (lm / "pytorch_model.bin").write_bytes(evil)
    lora = shutil.copytree(assets["lora_a"], tmp_path / "lora")
    (lora / "pytorch_lora_weights.bin").write_bytes(evil)
    adapter = shutil.copytree(lm_assets["lora_a"], tmp_path / "adapter")
    (adapter / "adapter_model.bin").write_bytes(evil)
    for name, folder in (("sd", pipeline), ("lm", lm), ("lora", lora), ("adapter", adapter)):
        hub.add_repo(f"both/{name}", folder)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    local = tuple(str(p) for p in (pipeline, lora, lm, adapter))
    for ids in (("both/sd", "both/lora", "both/lm", "both/adapter"), local):
        monkeypatch.setenv("STUDIO_LOCAL_DIRS", str(tmp_path))
        images, text = ImageStudio(device="cpu"), TextStudio(device="cpu")
        images.load_base(ids[0])
        images.load_adapter(ids[1], weight_name=LORA, adapter_name="a")
        text.load_base(ids[2])
        text.load_adapter(ids[3], adapter_name="a")
        assert gen(images, {"a": 1.0}).any() and text.generate(TextRequest("the pirate", ["a"], max_new_tokens=4))
    assert not marker.exists()
    cached = [p.name for p in Path(os.environ["HF_HOME"]).rglob("*") if "models--both--" in str(p)]
    assert cached and not [name for name in cached if name.endswith(".bin")]  # never even downloaded


def test_code_in_repos_never_runs(where, hub, monkeypatch):
    """A pipeline naming its own classes and an LM whose config maps to its own code: refused, and the code (which
    would write RAN next to itself) never runs, locally or through the Hub."""
    root = where["root"]
    llama_with_auto_map = shutil.copytree(where["text:lm"], root / "lm-auto-map")
    config = json.loads((llama_with_auto_map / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.Evil"}
    (llama_with_auto_map / "config.json").write_text(json.dumps(config))
    shutil.copy(Path(where["lm-custom-code"]) / "evil.py", llama_with_auto_map / "evil.py")
    for name in ("custom-pipeline", "custom-component", "lm-custom-code"):
        hub.add_repo(f"evil/{name}", Path(where[name]))
    hub.add_repo("evil/lm-auto-map", llama_with_auto_map)
    images, text = ImageStudio(device="cpu"), TextStudio(device="cpu")
    custom = ("custom-pipeline", "custom-component")
    for repo_id in (*(where[name] for name in custom), *(f"evil/{name}" for name in custom)):
        with pytest.raises(HubError, match="code is never run here"):
            images.load_base(repo_id)
    for repo_id in (where["lm-custom-code"], "evil/lm-custom-code"):
        with pytest.raises(HubError, match="contains custom code which must be executed"):
            text.load_base(repo_id)
    for repo_id in (str(llama_with_auto_map), "evil/lm-auto-map"):  # a known model_type: auto_map is refused too
        with pytest.raises(HubError, match=r"sets auto_map \(AutoModelForCausalLM\), i.e. it contains custom code"):
            text.load_base(repo_id)
    assert not list(root.rglob("RAN")) and not list(Path(os.environ["HF_HOME"]).rglob("RAN"))
    assert not [p for p in Path(os.environ["HF_HOME"]).rglob("*.py") if "models--evil--" in str(p)]  # not fetched


def test_model_size_cap_is_checked_before_download(hub, assets, lm_assets, monkeypatch):
    hub.add_repo("big/sd", assets["pipeline"])
    hub.add_repo("big/lm", lm_assets["lm"])
    monkeypatch.setenv("STUDIO_MAX_MODEL_MB", "0.05")
    with pytest.raises(HubError, match=r"'big/sd' \(revision 'main'\) needs [\d.]+ MB in \d+ files; this Space loads"):
        ImageStudio(device="cpu").load_base("big/sd")
    with pytest.raises(HubError, match=r"'big/lm' \(revision 'main'\) needs [\d.]+ MB in \d+ files"):
        TextStudio(device="cpu").load_base("big/lm")
    assert not list(Path(os.environ["HF_HOME"]).rglob("models--big--*/blobs/*"))  # nothing was downloaded
    monkeypatch.setenv("STUDIO_MAX_MODEL_MB", "10")
    assert ImageStudio(device="cpu").load_base("big/sd").pipeline_class == "StableDiffusionPipeline"


def test_the_token_is_never_returned_or_logged(hub, assets, lm_assets, monkeypatch, caplog, capfd):
    """With HF_TOKEN set, every call of the API, good or refused, answers and logs without it, while the token does
    reach the Hub (a proxy in front of it records what was sent)."""
    import logging

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from tests.conftest import launch_app
    from tests.faultproxy import FaultProxy
    from tests.hubserver import use_endpoint

    token = "hf_StudioTokenMarker7f3a9c0e41b2"
    monkeypatch.setenv("HF_TOKEN", token)
    caplog.set_level(logging.DEBUG)
    answers = []
    with FaultProxy(hub.endpoint) as proxy, use_endpoint(proxy.endpoint, Path(os.environ["HF_HOME"])):
        with launch_app(assets, lm_assets=lm_assets) as url:
            client = Client(url, verbose=False)
            calls = [
                ("/load_adapter", {"repo_id": "test-org/lora", "adapter_name": "hub"}),
                ("/load_adapter", {"repo_id": "test-org/missing"}),
                ("/load_adapter", {"repo_id": "test-org/lora", "revision": "nope"}),
                ("/load_adapter", {"repo_id": "test-org/bin-only"}),
                ("/load_pipeline", {"model_id": "test-org/missing"}),
                ("/list_adapters", {}),
                ("/generate", {"prompt": "a red circle", "adapters": {"hub": 1.0}, "steps": 2}),
                ("/load_text_model", {"model_id": str(lm_assets["lm"])}),
                ("/load_text_adapter", {"repo_id": "test-org/lm-adapter", "adapter_name": "hub"}),
                ("/load_text_adapter", {"repo_id": "test-org/missing"}),
                ("/generate_text", {"prompt": "the pirate", "adapters": ["hub"], "max_new_tokens": 4}),
            ]
            for api_name, kwargs in calls:
                try:
                    answers.append(repr(client.predict(**kwargs, api_name=api_name)))
                except AppError as exc:
                    answers.append(str(exc))
            answers.append(repr(client.view_api(print_info=False, return_format="dict")))
    out, err = capfd.readouterr()
    assert f"Bearer {token}" in proxy.authorizations  # the Hub got it ...
    assert any("not found" in a for a in answers) and any(".png" in a for a in answers)
    for text in (*answers, caplog.text, out, err):
        assert token not in text and token[3:] not in text  # ... and nothing else did
