"""LoRA files saved by peft itself, in its three spellings, and the alpha their LoraConfig gives.

- `unet.<module>.lora_A.weight` (`transformer.`, `text_encoder.` ...): diffusers' `save_lora_weights`;
- `<module>.lora_A.weight`, bare: `get_peft_model_state_dict(unet)`, `unet.save_lora_adapter` and custom training
  scripts, often with the LoraConfig as JSON in `__metadata__["lora_adapter_metadata"]`;
- `base_model.model.<module>.lora_A.weight`: `PeftModel.save_pretrained` of a denoiser, beside an
  `adapter_config.json`.

diffusers 0.42 reads only the first and loads nothing from the others, silently. Here the other two get their
component's prefix (the denoiser's own top-level modules say which: `down_blocks.` is a UNet's, `transformer_blocks.`
a transformer's), one to one.

The LoraConfig's scaling is read from `adapter_config.json` or `lora_adapter_metadata` (diffusers writes the latter
per component, `unet.lora_alpha`; peft's `save_lora_adapter` unprefixed), allowlisted and bounded: `r`,
`lora_alpha`, `use_rslora`, and `rank_pattern` / `alpha_pattern` whose keys are plain module names. A pattern key
that is a regular expression is refused (it would be handed to `re` by peft); every other field (initialisers,
target regexes ...) is never read. The scaling (alpha / r, or alpha / sqrt(r) with rsLoRA) is folded into each
`lora_B`, so diffusers is given tensors at scaling 1 and never the config.
"""

import json
import math
import re

from peft_core.errors import AdapterError

MAX_CONFIG_BYTES = 256 * 2**10  # a LoraConfig is ~1 KB; rank/alpha patterns of every layer of SDXL ~100 KB
MAX_PATTERNS = 4096
MAX_RANK = 4096
MAX_ALPHA = 1e5
COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
# The denoisers' own top-level modules: a bare key starting with one names that component's module.
BARE = {
    "unet": ("down_blocks.", "mid_block.", "up_blocks.", "conv_in.", "conv_out.", "time_embedding.",
             "add_embedding.", "class_embedding."),
    "transformer": ("transformer_blocks.", "single_transformer_blocks.", "x_embedder.", "context_embedder.",
                    "time_text_embed.", "pos_embed.", "img_in.", "txt_in.", "norm_out.", "proj_out."),
}  # fmt: skip
SAVED_PREFIX = "base_model.model."
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")  # the studio's own pattern, matched on a name


def respell(state_dict: dict) -> tuple[dict, str]:
    """(the state dict in diffusers' peft spelling, the layout): "peft" as it is, "peft-bare" or "peft-model" with
    the component prefix added (and `base_model.model.` cut); a dict whose keys mix spellings is left as it is."""
    keys = list(state_dict)
    if all(k.startswith(SAVED_PREFIX) for k in keys):
        state_dict, layout = {k[len(SAVED_PREFIX) :]: v for k, v in state_dict.items()}, "peft-model"
    elif any(k.split(".", 1)[0] in COMPONENTS for k in keys):
        return state_dict, "peft"
    else:
        layout = "peft-bare"
    for component, starts in BARE.items():
        if all(k.startswith(starts) for k in state_dict):
            return {f"{component}.{k}": v for k, v in state_dict.items()}, layout
    shown = next((k for k in state_dict if not k.startswith(BARE["unet"] + BARE["transformer"])), keys[0])
    raise AdapterError(
        f"this peft LoRA's keys name no pipeline part ({shown[:120]!r}); peft files name a UNet's modules "
        f"({', '.join(BARE['unet'][:3])} ...), a transformer's ({', '.join(BARE['transformer'][:2])} ...), or start "
        f"with one of {', '.join(COMPONENTS)}"
    )


def read_config_json(text: str, where: str) -> dict:
    """The allowlisted scaling fields of a LoraConfig as JSON (adapter_config.json, lora_adapter_metadata), per
    component: {None: fields} for an unprefixed config, {"unet": fields, ...} for diffusers' prefixed one."""
    if len(text) > MAX_CONFIG_BYTES:
        raise AdapterError(f"{where} is {len(text):,} characters; a LoraConfig has at most {MAX_CONFIG_BYTES:,}")
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise AdapterError(f"{where} is not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(raw, dict):
        raise AdapterError(f"{where} is not a JSON object")
    configs: dict = {None: {}}
    for key, value in raw.items():
        if key in COMPONENTS and isinstance(value, dict):  # {"unet": {"r": 4, ...}}
            configs.setdefault(key, {}).update(value)
            continue
        component, _, field = key.rpartition(".") if isinstance(key, str) else ("", "", "")
        if component and component not in COMPONENTS:
            continue
        configs.setdefault(component or None, {})[field] = value
    return {c: _checked(fields, f"{where}{f' ({c})' if c else ''}") for c, fields in configs.items()}


def _checked(fields: dict, where: str) -> dict:
    out = {}
    if "r" in fields:
        out["r"] = _number(fields["r"], f"{where}: r", integer=True)
    if "lora_alpha" in fields:
        out["lora_alpha"] = _number(fields["lora_alpha"], f"{where}: lora_alpha")
    if "use_rslora" in fields:
        if not isinstance(fields["use_rslora"], bool):
            raise AdapterError(f"{where}: use_rslora must be true or false, got {str(fields['use_rslora'])[:40]!r}")
        out["use_rslora"] = fields["use_rslora"]
    for name, integer in (("rank_pattern", True), ("alpha_pattern", False)):
        pattern = fields.get(name) or {}
        if not isinstance(pattern, dict) or len(pattern) > MAX_PATTERNS:
            raise AdapterError(f"{where}: {name} must map at most {MAX_PATTERNS:,} module names to numbers")
        for key in pattern:
            if not isinstance(key, str) or len(key) > 300 or not _PLAIN_NAME.fullmatch(key):
                raise AdapterError(
                    f"{where}: {name} key {str(key)[:80]!r} is not a plain module name (such as "
                    "'down_blocks.0.attentions.0.proj_in'); patterns are not read here"
                )
        out[name] = {k: _number(v, f"{where}: {name}[{k[:80]!r}]", integer) for k, v in pattern.items()}
    return out


def _number(value, where: str, integer: bool = False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AdapterError(f"{where} must be a number, got {str(value)[:40]!r}")
    if integer and (value != int(value) or not 1 <= value <= MAX_RANK):
        raise AdapterError(f"{where} must be a whole number from 1 to {MAX_RANK}, got {value!r}")
    if abs(value) > MAX_ALPHA:
        raise AdapterError(f"{where} must be at most {MAX_ALPHA:g} in size, got {value!r}")
    return int(value) if integer else float(value)


def _for(module: str, pattern: dict):
    """peft's reading of a plain-name pattern key: the module itself or any module whose name ends with it."""
    return next((v for k, v in pattern.items() if module == k or module.endswith(f".{k}")), None)


def fold_alpha(state_dict: dict, configs: dict, source: str) -> tuple[dict, str]:
    """The state dict with each layer's scaling folded into its lora_B, and the alpha convention in words; the
    state dict as it is when no config gives an alpha. A rank the config states that is not the tensors' rank is
    refused (peft would build the layer at the config's rank and fail on the tensors)."""
    out, scales, rslora = dict(state_dict), set(), False
    for key, down in state_dict.items():
        if ".lora_A." not in key:
            continue
        component, _, rest = key.partition(".")
        module = rest.split(".lora_A.", 1)[0]
        config = configs.get(component) or configs.get(None) or {}
        if "lora_alpha" not in config and not config.get("alpha_pattern"):
            continue
        rank = int(down.shape[0])
        stated = _for(module, config.get("rank_pattern", {})) or config.get("r")
        if stated is not None and stated != rank:
            raise AdapterError(
                f"{source} says r = {stated} for {module[:120]!r}, but its lora_A has rank {rank}; the config does "
                "not belong to these tensors"
            )
        alpha = _for(module, config.get("alpha_pattern", {}))
        alpha = config.get("lora_alpha", rank) if alpha is None else alpha
        rslora |= bool(config.get("use_rslora"))
        scale = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
        scales.add(round(scale, 6))
        up = key.replace(".lora_A.", ".lora_B.")
        if up in out and scale != 1:
            out[up] = state_dict[up] * scale
    if not scales:
        return state_dict, ""
    shown = ", ".join(f"{s:g}" for s in sorted(scales)[:4]) + (" ..." if len(scales) > 4 else "")
    rule = "alpha / sqrt(r), rsLoRA" if rslora else "alpha / r"
    return out, f"lora_alpha from {source}: scaling {shown} ({rule}), folded into lora_B"


def metadata_config(path) -> str | None:
    """The `lora_adapter_metadata` text of a safetensors file's `__metadata__`, if any."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        value = (f.metadata() or {}).get("lora_adapter_metadata")
    return value if isinstance(value, str) else None

def adapter_config(repo, weight_name: str, sizes: dict) -> str | None:
    """The text of the adapter_config.json beside `weight_name` (peft's `save_pretrained` writes the two together),
    or None; one over peft_files.MAX_CONFIG_BYTES is refused before it is downloaded."""
    folder = weight_name.rpartition("/")[0]
    rel = f"{folder}/adapter_config.json" if folder else "adapter_config.json"
    if rel not in sizes:
        return None
    if (sizes[rel] or 0) > MAX_CONFIG_BYTES or repo.file_path(rel).stat().st_size > MAX_CONFIG_BYTES:
        raise AdapterError(f"{repo.repo_id!r}: {rel} is over {MAX_CONFIG_BYTES:,} bytes; a LoraConfig is a few KB")
    try:
        return repo.file_path(rel).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{repo.repo_id!r}: {rel} cannot be read ({exc})") from None
