"""Resolving and loading the text studio's causal LM: which repos are acceptable, and how they are read.

A model repo needs config.json and safetensors weights (pickle is refused: unpickling can run code); its config.json
passes config_checks.py and must declare a model that fits STUDIO_MAX_MODEL_MB before any weight is fetched. An
adapter repo needs adapter_config.json and adapter_model.safetensors, and names its base in the config, which is
then resolved like any id, so a bundled base works offline. Nothing here holds state: TextStudio decides when a
loaded model replaces the old one.
"""

from dataclasses import asdict, dataclass

from peft_core import hub, settings
from peft_core.config_checks import (
    ADAPTER_CONFIG_MAX_BYTES,
    MODEL_CONFIG_MAX_BYTES,
    check_model_config,
    check_model_shape,
    read_json_object,
)
from peft_core.errors import HubError, StudioError
from peft_core.runtime import quiet_libraries
from peft_core.text_adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterFolder, first_line, read_adapter_folder

# Files a causal LM and its tokenizer need; pickle weights are left out on purpose.
MODEL_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]
ADAPTER_PATTERNS = [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
MODEL_CONFIG = "config.json"
# What a repo's generation_config.json may set: its special tokens, and sampling knobs that cost nothing extra.
GENERATION_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "top_k", "top_p",
                     "min_p", "typical_p", "repetition_penalty")  # fmt: skip


@dataclass
class TextModelInfo:
    """The loaded base, as shown to users and API clients."""

    model_id: str
    revision: str
    model_class: str
    model_type: str  # the config's model_type, e.g. "llama": peft's default targets depend on it
    device: str
    dtype: str
    num_parameters: int  # of the base model, adapters not counted
    context_length: int | None  # prompt + new tokens must fit; None when the config does not say
    default_target_modules: list[str] | None  # what add_adapter uses when target_modules is empty

    def to_dict(self) -> dict:
        return asdict(self)


def fetch_adapter(repo: hub.Repo, sizes: dict) -> AdapterFolder:
    """The adapter folder of `repo`, downloaded (two files, size-capped) and checked; nothing is loaded yet."""
    where = f"{repo.repo_id!r} (revision {repo.revision!r})"
    if ADAPTER_CONFIG not in sizes:
        raise HubError(f"{where} is not a peft adapter (no {ADAPTER_CONFIG}); files: {_some(sizes)}")
    if ADAPTER_WEIGHTS not in sizes:
        pickles = [f for f in sizes if f.endswith(hub.PICKLE_SUFFIXES)]
        if pickles:
            raise HubError(
                f"{where} has only pickle weights ({', '.join(pickles)}); they are refused because unpickling "
                f"can run code. Ask the author for {ADAPTER_WEIGHTS}."
            )
        raise HubError(f"{where} has no {ADAPTER_WEIGHTS}; files: {_some(sizes)}")
    hub.check_file_size(repo, ADAPTER_CONFIG, sizes[ADAPTER_CONFIG], ADAPTER_CONFIG_MAX_BYTES / 2**20)
    hub.check_file_size(repo, ADAPTER_WEIGHTS, sizes[ADAPTER_WEIGHTS], settings.current().max_adapter_mb)
    return hub.read_healing_cache(
        repo,
        ADAPTER_PATTERNS,
        lambda force: repo.snapshot(ADAPTER_PATTERNS, force),
        lambda folder: read_adapter_folder(folder, source=repr(repo.repo_id)),
    )


def open_base(adapter_repo: hub.Repo, adapter: AdapterFolder) -> hub.Repo:
    """The base an adapter repo names in its config, resolved like any id (so bundled ids work offline)."""
    base = adapter.config.base_model_name_or_path
    if not base:
        raise HubError(f"{adapter_repo.repo_id!r} is an adapter whose config names no base_model_name_or_path")
    try:
        repo = hub.open_repo(base, getattr(adapter.config, "revision", None) or "main")
    except HubError as exc:
        raise HubError(f"{adapter_repo.repo_id!r} is an adapter for {base!r}, which cannot be opened: {exc}") from None
    return repo


def check_model_files(repo: hub.Repo, files: dict) -> None:
    """Refuse a repo that is not a transformers model with safetensors weights, before anything is downloaded."""
    where = f"{repo.repo_id!r} (revision {repo.revision!r})"
    if "config.json" not in files:
        raise HubError(f"{where} is not a transformers model (no config.json); files: {_some(files)}")
    if not any(f.endswith(".safetensors") for f in files):
        pickles = [f for f in files if f.endswith(hub.PICKLE_SUFFIXES)]
        if pickles:
            raise HubError(
                f"{where} has only pickle weights ({', '.join(pickles[:3])}); they are refused because unpickling "
                "can run code. Pick a model with .safetensors weights."
            )
        raise HubError(f"{where} has no .safetensors weights; files: {_some(files)}")
    hub.check_snapshot_size(repo, files, MODEL_PATTERNS)


def read_model_config(repo: hub.Repo, files: dict, dtype):
    """The base's config object, built from its checked config.json (downloaded alone), once the parameters it
    declares fit STUDIO_MAX_MODEL_MB in `dtype`. They are counted on the meta device: nothing is allocated and no
    weight is downloaded first, so a 0.4 MB repo declaring a 4M-word vocabulary is refused before it costs 2 GB.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    hub.check_file_size(repo, MODEL_CONFIG, files.get(MODEL_CONFIG), MODEL_CONFIG_MAX_BYTES / 2**20)
    what = f"{repo.repo_id!r}: {MODEL_CONFIG}"
    data = read_json_object(repo.file_path(MODEL_CONFIG), what, "model config", MODEL_CONFIG_MAX_BYTES, HubError)
    check_model_config(data, repo.repo_id, HubError)
    try:
        with quiet_libraries():
            config = CONFIG_MAPPING[data["model_type"]].from_dict(data)
            check_model_shape(config, repo.repo_id, HubError)
            with torch.device("meta"):
                skeleton = AutoModelForCausalLM.from_config(config)
    except StudioError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise HubError(f"{repo.repo_id!r} could not be loaded as a causal LM: {first_line(exc)}") from None
    count = sum(p.numel() for p in skeleton.parameters())  # parameters() yields tied weights once
    size, cap = count * dtype.itemsize, settings.current().max_model_mb
    if size > cap * 2**20:
        raise HubError(
            f"{repo.repo_id!r} declares {count:,} parameters in its {MODEL_CONFIG} ({size / 2**20:,.1f} MB as "
            f"{str(dtype).removeprefix('torch.')}); this Space loads models of at most {cap:g} MB "
            "(STUDIO_MAX_MODEL_MB)"
        )
    return config


def describe_model(model, repo: hub.Repo, device: str) -> TextModelInfo:
    """What model_info() reports, read once after the load."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    config = model.config
    default = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(config.model_type)
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return TextModelInfo(
        model_id=repo.repo_id,
        revision=repo.revision,
        model_class=type(model).__name__,
        model_type=config.model_type,
        device=device,
        dtype=str(model.dtype).replace("torch.", ""),
        num_parameters=int(model.num_parameters()),
        context_length=int(context) if context else None,
        default_target_modules=list(default) if default else None,
    )


def load_causal_lm(repo_id: str, folder, device: str, dtype, config):
    """(model, tokenizer) from a snapshot folder and the checked config (`read_model_config`): safetensors only, no
    remote code, frozen, in eval mode."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_libraries():
        try:
            # No trust_remote_code: only code that ships with transformers runs. config=: the checked object, not
            # the folder's file again.
            model = AutoModelForCausalLM.from_pretrained(
                folder, config=config, dtype=dtype, use_safetensors=True, trust_remote_code=False
            )
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
            raise HubError(f"{repo_id!r} could not be loaded as a causal LM: {first_line(exc)}") from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
            raise HubError(f"the tokenizer of {repo_id!r} could not be loaded: {first_line(exc)}") from None
    model.generation_config = _plain_generation_config(model.generation_config)
    model.to(device).eval()
    model.requires_grad_(False)  # the base is never trained; train_adapter unfreezes one adapter at a time
    return model, tokenizer


def _plain_generation_config(loaded):
    """The repo's generation_config.json sets the defaults of every generate() call, and num_beams=64 or another
    decoding strategy would multiply each visitor's cost: only token ids and the author's sampling knobs stay."""
    from transformers import GenerationConfig

    kept = {k: v for k, v in loaded.to_dict().items() if k in GENERATION_FIELDS}
    return GenerationConfig(**kept)


def _some(files) -> str:
    names = sorted(files)
    return ", ".join(names[:10]) + (" ..." if len(names) > 10 else "") if names else "none"
