"""Which Hub repos the text side accepts, checked from their file lists before anything big is downloaded.

A model repo needs config.json and safetensors weights (pickle is refused: unpickling can run code); model.py then
checks its config.json and the size it declares before any weight is fetched. An adapter repo needs
adapter_config.json and adapter_model.safetensors, and names its base in the config, which is then resolved like any
id, so a bundled base works offline. Nothing here imports a model library.
"""

from peft_core import hub, settings
from peft_core.config_checks import ADAPTER_CONFIG_MAX_BYTES
from peft_core.errors import HubError
from peft_core.text.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterFolder, read_adapter_folder

# Files a causal LM and its tokenizer need; pickle weights are left out on purpose.
MODEL_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]
ADAPTER_PATTERNS = [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
MODEL_CONFIG = "config.json"


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
    if MODEL_CONFIG not in files:
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


def _some(files) -> str:
    names = sorted(files)
    return ", ".join(names[:10]) + (" ..." if len(names) > 10 else "") if names else "none"
