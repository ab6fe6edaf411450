"""Allowlists for the config files of strangers' repos: an adapter's adapter_config.json, a base's config.json.

Why a module of its own: peft and transformers act on every field of these files, and some fields do far more than
describe weights. A string `target_modules`, the keys of `rank_pattern` / `alpha_pattern`, `layers_pattern` and a
string `exclude_modules` are regular expressions to peft (a crafted one backtracks for minutes while holding the
interpreter lock); `init_lora_weights="pissa"` / `"olora"` and `layer_replication` rewrite the base model;
`modules_to_save` and `trainable_token_indices` wrap base layers that every other adapter then goes through; a base's
`auto_map` names code to run and its `attn_implementation` can name a kernel to fetch from the Hub. So the studio
reads these files itself (size-capped, nesting bounded), keeps only the fields it knows to be harmless, with checked
types and bounds, refuses the others naming the field, and hands the libraries objects built from the cleaned values,
never the file. Unknown fields that are null, false or empty are dropped: newer peft versions write such defaults.
A string target_modules is not refused but replaced by the modules the weights file names (real adapters carry
such regexes), so no pattern from a repo is ever compiled.

Every check here raises the `error` class its caller names (AdapterError for adapters, HubError for base models),
so the message reads as the caller's own.
"""

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from peft_core.errors import StudioError, shown

ADAPTER_CONFIG_MAX_BYTES = 64 * 1024  # real ones are 1-4 KB; a rank_pattern naming every layer of a 70B ~30 KB
MODEL_CONFIG_MAX_BYTES = 1024 * 1024  # real ones are 1-100 KB (label tables, multimodal sub-configs)
JSON_MAX_DEPTH = 8  # the deepest real field is a sub-config two levels down; parsers recurse per level
ADAPTER_RANK_MAX = 4096  # published adapters go up to rank 1024-2048; the adapter's declared MB is capped apart
ADAPTER_ALPHA_MAX = 1e6  # alpha / r scales the update; beyond this it is a typo or an attack
PATTERN_ENTRIES_MAX = 512  # rank_pattern / alpha_pattern: peft tries every entry against every module
NAMES_MAX = 1024  # entries of target_modules, exclude_modules ...: a big model has a few hundred module paths
NAME_MAX_CHARS = 256  # the longest real module paths are ~100 characters
LAYER_INDEX_MAX = 100_000  # layers_to_transform: far past any real depth, and peft only compares integers
# Plain module names, "q_proj" or "model.layers.0.self_attn.q_proj": the only strings that reach peft's matching.
# (This fixed pattern runs on the stranger's string, in linear time; the string is never made a pattern.)
MODULE_NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")
ALL_LINEAR = "all-linear"  # peft expands it to every linear layer but the output head, without a regex
# Names users know the methods by (peft's PeftType values are upper case).
PEFT_TYPE_NAMES = {"LORA": "LoRA", "LOHA": "LoHa", "LOKR": "LoKr", "IA3": "IA³", "ADALORA": "AdaLoRA", "OFT": "OFT",
                   "BOFT": "BOFT", "VERA": "VeRA", "FOURIERFT": "FourierFT"}  # fmt: skip
# Base configs: attention kernels that ship with torch; anything else may name a kernel repo on the Hub.
ATTENTION_IMPLEMENTATIONS = (None, "eager", "sdpa")
MODEL_LAYERS_MAX = 1024  # the meta-device count builds one Python module per layer: bound it first
MODEL_EXPERTS_MAX = 1024  # likewise per expert, in models that keep experts as separate modules


class _Invalid(Exception):
    """A value outside its rule; the argument says what would be valid."""


Rule = Callable[[object], object]  # value -> cleaned value, or raise _Invalid("what would be valid")


@dataclass(frozen=True)
class Refused:
    """A field that changes the base model or other adapters: accepted only at its empty default."""

    why: str  # what the field would do, for the message
    default: object = None  # its empty value besides null / false / [] / {} (e.g. bias="none")


@dataclass(frozen=True)
class Forced:
    """A field whose value from the file is replaced, whatever it is."""

    value: object


DROPPED = object()  # metadata peft fills in itself (auto_mapping, peft_version, runtime_config)


# --- reading ---------------------------------------------------------------------------------------------------------


def read_json_object(path, what: str, kind: str, max_bytes: int, error: type[StudioError]) -> dict:
    """The JSON object in `path`, read only if it is at most `max_bytes` and nests at most JSON_MAX_DEPTH levels.

    `what` names the file in messages (e.g. "'org/name': adapter_config.json"), `kind` says what it should be
    ("peft config").
    """
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{what} is not a valid {kind}: it is {size:,} bytes, and at most {max_bytes:,} are read")
    raw = path.read_bytes()
    depth = _max_depth(raw)
    if depth > JSON_MAX_DEPTH:
        raise error(f"{what} is not a valid {kind}: it nests {depth:,} levels deep; at most {JSON_MAX_DEPTH} are read")
    try:
        # NaN / Infinity are not JSON; Python would accept them. Integers past 4,300 digits raise ValueError.
        data = json.loads(raw, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise error(f"{what} is not a valid {kind} (not JSON: {str(exc)[:120]})") from None
    if not isinstance(data, dict):
        raise error(f"{what} is not a valid {kind}: it must hold a JSON object, got {type(data).__name__}")
    return data


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _max_depth(raw: bytes) -> int:
    """How deep brackets nest outside strings, counted before a parser recurses into them."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


# --- rules -----------------------------------------------------------------------------------------------------------


def integer(lo: int, hi: int) -> Rule:
    def rule(value):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise _Invalid(f"an integer in [{lo}, {hi}]")
        return value

    return rule


def number(lo: float, hi: float) -> Rule:
    def rule(value):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not lo <= value <= hi:
            raise _Invalid(f"a number in [{lo:g}, {hi:g}]")
        return value

    return rule


def flag(value) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("true or false")
    return value


def one_of(*choices: str) -> Rule:
    def rule(value):
        if not isinstance(value, str) or value not in choices:
            raise _Invalid(f"one of {', '.join(map(repr, choices))}")
        return value

    return rule


def text(max_chars: int) -> Rule:
    def rule(value):
        if not isinstance(value, str) or len(value) > max_chars or "\x00" in value:
            raise _Invalid(f"text of at most {max_chars} characters")
        return value

    return rule


def optional(rule: Rule) -> Rule:
    return lambda value: None if value is None else rule(value)


def module_name(value) -> str:
    if not isinstance(value, str) or len(value) > NAME_MAX_CHARS or not MODULE_NAME.fullmatch(value):
        raise _Invalid(
            "a module name such as 'q_proj' or 'model.layers.0.self_attn.q_proj' (letters, digits and '_', joined "
            "by '.'); patterns from repos are never run here"
        )
    return value


def module_names(value) -> list[str]:
    """A list of plain module names. A string is a regular expression to peft, so it is refused."""
    if isinstance(value, str) or not isinstance(value, list) or len(value) > NAMES_MAX:
        raise _Invalid(
            f"a list of at most {NAMES_MAX} module names such as ['q_proj', 'v_proj']; a string is a regular "
            "expression to peft, and patterns from repos are never run here"
        )
    return [module_name(v) for v in value]


def name_or_names(value):
    return module_name(value) if isinstance(value, str) else module_names(value)


def layer_indexes(value):
    values = value if isinstance(value, list) else [value]
    if len(values) > NAMES_MAX or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= LAYER_INDEX_MAX for v in values
    ):
        raise _Invalid(f"a layer index or a list of at most {NAMES_MAX}, each in [0, {LAYER_INDEX_MAX}]")
    return value


def pattern_map(value_rule: Rule) -> Rule:
    """rank_pattern / alpha_pattern: {plain module name: value}. peft makes each key part of a regex."""

    def rule(value):
        if not isinstance(value, dict) or len(value) > PATTERN_ENTRIES_MAX:
            raise _Invalid(f"an object of at most {PATTERN_ENTRIES_MAX} entries {{module name: value}}")
        return {module_name(k): value_rule(v) for k, v in value.items()}

    return rule


def targets(value):
    """target_modules: None (peft's default for the architecture), 'all-linear', or a list of plain names.

    Any other string is a regular expression to peft; it comes back as None here and the caller builds the list
    from the modules the weights file names (see `check_adapter_config`).
    """
    if value is None or value == ALL_LINEAR:
        return value
    return _REGEX_TARGETS if isinstance(value, str) else module_names(value)


_REGEX_TARGETS = object()


# --- adapter configs -------------------------------------------------------------------------------------------------

_RANK = integer(1, ADAPTER_RANK_MAX)
_ALPHA = number(-ADAPTER_ALPHA_MAX, ADAPTER_ALPHA_MAX)
_SHARE = number(0.0, 1.0)
_TASK_TYPES = ("SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION")
_MODULES_TO_SAVE = Refused(
    "it makes full trainable copies of base layers (such as the embeddings or the output head), which every other "
    "adapter would then go through"
)

# Every config: where it came from, and fields peft fills in itself.
_META = {
    "peft_type": DROPPED,  # read by check_adapter_config itself
    "task_type": optional(one_of(*_TASK_TYPES)),
    "base_model_name_or_path": optional(text(1000)),
    "revision": optional(text(256)),
    "inference_mode": Forced(True),  # loaded adapters are kept as their author made them
    "auto_mapping": DROPPED,
    "peft_version": DROPPED,
}
# Where an adapter goes: plain names only (see `targets`).
_TARGETING = {
    "target_modules": targets,
    "exclude_modules": optional(module_names),
    "layers_to_transform": optional(layer_indexes),
    "layers_pattern": optional(name_or_names),
    "modules_to_save": _MODULES_TO_SAVE,
}
_LYCORIS = {
    **_META,
    **_TARGETING,
    "r": _RANK,
    "alpha": _ALPHA,
    "rank_pattern": pattern_map(_RANK),
    "alpha_pattern": pattern_map(_ALPHA),
    "rank_dropout": _SHARE,
    "module_dropout": _SHARE,
    "use_effective_conv2d": flag,
    "init_weights": Forced(True),  # the file's weights replace the init
}
ADAPTER_FIELDS = {
    "LORA": {
        **_META,
        **_TARGETING,
        "r": _RANK,
        "lora_alpha": _ALPHA,
        "rank_pattern": pattern_map(_RANK),
        "alpha_pattern": pattern_map(_ALPHA),
        "lora_dropout": _SHARE,
        "fan_in_fan_out": flag,
        "use_rslora": flag,
        "use_dora": flag,
        "lora_bias": flag,
        # PiSSA, OLoRA, LoftQ, EVA, CorDA ... rewrite the base weights when the adapter is made; the file's weights
        # replace any init, so True (which only fills the adapter's own matrices) loads the same adapter.
        "init_lora_weights": Forced(True),
        "bias": Refused("it loads the biases of base layers from the file, changing the base model", default="none"),
        "layer_replication": Refused("it duplicates base layers, changing the base model for every adapter"),
        "trainable_token_indices": Refused(
            "it retrains rows of the base embeddings, which every other adapter would then go through"
        ),
        "target_parameters": Refused("it wraps base parameters directly, which this Space does not support"),
        "ensure_weight_tying": Refused("it ties the adapter into the base's shared embedding weights"),
        "megatron_config": Refused("it swaps base layers for Megatron's"),
        "megatron_core": Refused("it names a module to import", default="megatron.core"),
        "loftq_config": Refused("LoftQ rewrites the base weights"),
        "eva_config": Refused("EVA initialisation runs the base on data and is not a loadable setting"),
        "corda_config": Refused("CorDA rewrites the base weights"),
        "lora_ga_config": Refused("LoRA-GA rewrites the base weights"),
        "alora_invocation_tokens": Refused("activated LoRA changes how generation runs for this adapter"),
        "use_qalora": Refused("QA-LoRA needs a quantized base"),
        "qalora_group_size": integer(1, 1 << 16),  # only read with use_qalora
        "velora_config": Refused("this LoRA variant is not supported here"),
        "monteclora_config": Refused("this LoRA variant is not supported here"),
        "use_bdlora": Refused("this LoRA variant is not supported here"),
        "arrow_config": Refused("Arrow routing is not supported here"),
        "kasa_config": Refused("this LoRA variant is not supported here"),
        "runtime_config": DROPPED,  # settings of one run, never read from files
    },
    "LOHA": _LYCORIS,
    "LOKR": {
        **_LYCORIS,
        "decompose_both": flag,
        "decompose_factor": integer(-1, 1 << 16),
        "rank_dropout_scale": flag,
    },
    "IA3": {
        **_META,
        "target_modules": targets,
        "exclude_modules": optional(module_names),
        "feedforward_modules": optional(module_names),
        "modules_to_save": _MODULES_TO_SAVE,
        "fan_in_fan_out": flag,
        "init_ia3_weights": Forced(True),
    },
}
SUPPORTED_TYPES = ", ".join(PEFT_TYPE_NAMES[t] for t in ADAPTER_FIELDS)


def peft_type_name(peft_type: str) -> str:
    return PEFT_TYPE_NAMES.get(peft_type, peft_type)


def check_peft_type(data: dict, source: str, error: type[StudioError]) -> str:
    """The config's peft_type, when it is one this Space loads ("LORA", "LOHA", "LOKR", "IA3")."""
    from peft.config import PromptLearningConfig
    from peft.utils.peft_types import PeftType

    peft_type = data.get("peft_type")
    if peft_type in ADAPTER_FIELDS:
        return peft_type
    known = {t.value for t in PeftType}
    if not isinstance(peft_type, str) or peft_type not in known:
        raise error(
            f"{source}: adapter_config.json has peft_type {shown(peft_type)}, which is not a peft method; this "
            f"Space loads {SUPPORTED_TYPES} adapters"
        )
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    if issubclass(PEFT_TYPE_TO_CONFIG_MAPPING[PeftType(peft_type)], PromptLearningConfig):
        raise error(
            f"{source} is a {peft_type_name(peft_type)} adapter (prompt learning); only adapters that wrap layers "
            f"({SUPPORTED_TYPES}) can be loaded into a transformers model"
        )
    raise error(f"{source}: its peft_type is {peft_type_name(peft_type)}; this Space loads {SUPPORTED_TYPES} adapters")


def check_adapter_config(
    data: dict, peft_type: str, source: str, file_modules: Iterable[str], error: type[StudioError]
) -> dict:
    """The fields of an adapter config this Space passes to peft, checked and cleaned.

    Args:
        data: the parsed adapter_config.json (see `read_json_object`).
        peft_type: from `check_peft_type`.
        source: names the adapter in messages.
        file_modules: the module paths its weights file names. A string target_modules (a regex to peft) is
            replaced by them, so the adapter wraps exactly the modules its file has weights for; the fields that
            only narrow a regex's matches (exclude_modules, layers_to_transform, layers_pattern) are then dropped.
    """
    fields = ADAPTER_FIELDS[peft_type]
    where = f"{source}: adapter_config.json"
    unknown = {k: v for k, v in data.items() if k not in fields and not _is_empty(v)}
    if unknown:
        listed = ", ".join(f"{k}={shown(v)}" for k, v in sorted(unknown.items())[:5])
        raise error(
            f"{where} sets field(s) this Space does not know: {listed}; {peft_type_name(peft_type)} adapters may "
            f"carry only fields it can check ({', '.join(sorted(k for k in fields if k != 'peft_type'))}), and "
            "unknown ones only when null, false or empty"
        )
    clean = {}
    for name, rule in fields.items():
        if rule is DROPPED:
            continue
        if isinstance(rule, Forced):
            clean[name] = rule.value
            continue
        if name not in data:
            continue
        value = data[name]
        if isinstance(rule, Refused):
            if not (_is_empty(value) or value == rule.default):
                raise error(f"{where} sets {name}={shown(value)}: {rule.why}; this Space loads adapters without it")
            continue
        try:
            clean[name] = rule(value)
        except _Invalid as exc:
            raise error(f"{where} field {name!r} must be {exc}, got {shown(value)}") from None
    if clean.get("target_modules") is _REGEX_TARGETS:
        clean["target_modules"] = sorted(file_modules)
        for narrowing in ("exclude_modules", "layers_to_transform", "layers_pattern"):
            clean.pop(narrowing, None)
    return clean


def build_peft_config(peft_type: str, clean: dict, source: str, error: type[StudioError]):
    """peft's config object (LoraConfig, LoHaConfig ...) from checked fields; the file is never read again."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils.peft_types import PeftType

    from peft_core.runtime import quiet_libraries

    try:
        with quiet_libraries():
            return PEFT_TYPE_TO_CONFIG_MAPPING[PeftType(peft_type)](**clean)
    except (TypeError, ValueError) as exc:  # peft's own consistency checks, e.g. layers_pattern without indexes
        lines = str(exc).strip().splitlines()
        shown = lines[0][:200] if lines else type(exc).__name__
        raise error(f"{source}: adapter_config.json is not a valid peft config ({shown})") from None


# --- base model configs ----------------------------------------------------------------------------------------------


def check_model_config(data: dict, repo_id: str, error: type[StudioError]) -> dict:
    """Refuse a base config.json asking for code, quantization or a kernel from the Hub; returns `data`.

    Model configs hold architecture-specific fields, too many to allowlist: what is checked here are the fields
    that make transformers fetch or run something (in the config or any sub-config), and the model type.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    where = f"{repo_id!r}: config.json"
    for path, key, value in _walk(data):
        if key == "auto_map" and not _is_empty(value):
            named = ", ".join(sorted(value)) if isinstance(value, dict) else shown(value)
            # Worded like transformers' own refusal, so callers that know that message still recognise it.
            raise error(
                f"{repo_id!r} could not be loaded as a causal LM: its config.json sets {path}auto_map ({named}), "
                "i.e. it contains custom code which must be executed; code from repos is never run here"
            )
        if key == "quantization_config" and not _is_empty(value):
            method = value.get("quant_method") if isinstance(value, dict) else None
            raise error(
                f"{where} sets {path}quantization_config ({shown(method or value)}): quantized models are not "
                "supported here; pick the model's unquantized weights"
            )
        if key in ("attn_implementation", "_attn_implementation") and value not in ATTENTION_IMPLEMENTATIONS:
            raise error(
                f"{where} sets {path}{key}={shown(value)}; this Space runs "
                f"{' or '.join(repr(v) for v in ATTENTION_IMPLEMENTATIONS if v)} attention (others may fetch kernels "
                "from the Hub)"
            )
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING_NAMES:
        raise error(
            f"{where} has model_type {shown(model_type)}, which is not a model type transformers ships (such as "
            "'llama', 'gpt2', 'qwen2'); code from repos is never run here"
        )
    return data


def check_model_shape(config, repo_id: str, error: type[StudioError]) -> None:
    """Bound what counting parameters on the meta device costs: it builds one Python module per layer and expert."""
    for part in {id(c): c for c in (config, config.get_text_config())}.values():
        for name, cap in (("num_hidden_layers", MODEL_LAYERS_MAX), ("num_local_experts", MODEL_EXPERTS_MAX),
                          ("num_experts", MODEL_EXPERTS_MAX), ("n_routed_experts", MODEL_EXPERTS_MAX)):  # fmt: skip
            value = getattr(part, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                raise error(f"{repo_id!r}: config.json declares {name}={value:,}; this Space loads at most {cap:,}")


def _walk(data, path: str = ""):
    """(path, key, value) for every key of every object in `data` (nesting is bounded by `read_json_object`)."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield path, key, value
            yield from _walk(value, f"{path}{key}.")
    elif isinstance(data, list):
        for item in data:
            yield from _walk(item, path)


def _is_empty(value) -> bool:
    return value is None or value is False or (isinstance(value, (str, list, dict)) and not value)
