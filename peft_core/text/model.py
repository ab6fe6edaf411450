"""The text side's backend: one causal LM, its tokenizer and the peft adapters in it, reached through transformers,
peft and torch. The studio (studio.py) never imports those libraries; it calls a `TextModel`'s methods.

A `TextModel` is one loaded base: `TextModel.load` checks the repo's config.json and the size it declares before any
weight is downloaded, then loads safetensors weights only, with no remote code. Its methods load an adapter from a
checked folder (after fit.py's meta-device check), add a fresh LoRA, merge (merge.py), train (train.py), delete,
set the active adapters and generate, handing the turn over between tokens through a callback. It keeps no registry
and takes no lock: the studio validates every request, keeps the adapters' records in its pool and calls these
methods under its lock. Every method that can fail part-way undoes what it did, so the model works as before.

To put the text side on another backend, this is the file to replace (with its helpers fit.py, layers.py, merge.py
and train.py): a class with the same methods.
"""

import copy
import zlib
from pathlib import Path

from peft_core import hub, limits, settings
from peft_core.config_checks import MODEL_CONFIG_MAX_BYTES, check_model_config, check_model_shape, read_json_object
from peft_core.errors import AdapterError, HubError, InputError, StudioError, first_line
from peft_core.runtime import quiet_libraries
from peft_core.text.adapters import AdapterFolder, TextAdapterInfo, check_keys_match
from peft_core.text.fit import check_fits
from peft_core.text.layers import (
    adapter_parameters,
    adapter_record,
    check_target_modules,
    seeded,
    targetable_modules,
    undo_inject,
    write_adapter_folder,
)
from peft_core.text.merge import check_mergeable, weighted_merge
from peft_core.text.mixed import (
    ActiveSet,
    MergedAdapter,
    MergedWeights,
    MixedRows,
    mixable,
)
from peft_core.text.repos import MODEL_CONFIG, MODEL_PATTERNS
from peft_core.text.requests import ModelInfo
from peft_core.text.train import TrainResult, make_batch, train_adapter

# What a repo's generation_config.json may set: its special tokens, and sampling knobs that cost nothing extra.
GENERATION_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "top_k", "top_p",
                     "min_p", "typical_p", "repetition_penalty")  # fmt: skip


class TextModel:
    """One loaded causal LM and its adapters; not thread-safe on its own (the studio's lock guards it)."""

    def __init__(self, model, tokenizer, info: ModelInfo, device: str):
        self.model, self.tokenizer, self.info, self.device = model, tokenizer, info, device
        self._merged = MergedWeights()  # lone adapters' merged weights (mixed.py), dropped when they change

    @classmethod
    def load(cls, repo: hub.Repo, files: dict, device: str, dtype) -> "TextModel":
        """The causal LM of `repo` (whose file list repos.check_model_files passed): frozen, in eval mode."""
        config = read_model_config(repo, files, dtype)  # before any weight is downloaded
        model, tokenizer = load_causal_lm(repo.repo_id, repo.snapshot(MODEL_PATTERNS), device, dtype, config)
        return cls(model, tokenizer, describe_model(model, repo, device), device)

    # --- adapters ------------------------------------------------------------------------------------------------

    def load_adapter_folder(self, adapter_name: str, adapter: AdapterFolder, repo: hub.Repo) -> TextAdapterInfo:
        """transformers' load_adapter from a checked folder of `repo`, then check that every weight landed; on any
        failure, undo it. Returns the adapter's record."""
        model, model_id, source = self.model, self.info.model_id, repr(repo.repo_id)
        check_keys_match(adapter, set(targetable_modules(model)), source, model_id)
        tensors = check_fits(model, adapter, adapter_name, source, model_id)
        try:
            with quiet_libraries():
                # The checked config object and tensors: the library never reads the repo's files. hotswap=False: a
                # new adapter, never one replacing another's weights.
                loading = model.load_adapter(
                    adapter_name=adapter_name, peft_config=copy.deepcopy(adapter.config), adapter_state_dict=tensors,
                    hotswap=False, use_safetensors=True,
                )  # fmt: skip
        except Exception as exc:
            undo_inject(model, adapter_name, adapter.peft_type)
            raise AdapterError(f"{source} could not be loaded into {model_id!r}: {first_line(exc)}") from None
        # A second line behind check_fits: weights of this adapter that the load did not fill keep their fresh init.
        missing = sorted(set(loading.missing_keys) & set(adapter_parameters(model, adapter_name)))
        if missing:
            undo_inject(model, adapter_name, adapter.peft_type)
            raise AdapterError(
                f"{source} does not fit {model_id!r}: {len(missing)} of its layers got no weights from the file (for "
                f"example {missing[0]!r}); it was probably made for another base"
            )
        model.eval()
        model.requires_grad_(False)
        return adapter_record(model, adapter_name, repo.repo_id, repo.revision, "hub", trainable=False)

    def lora_config(self, r: int, lora_alpha: float, lora_dropout: float, targets: list[str]):
        """peft's LoraConfig for a new adapter, once `targets` (checked names, or empty for peft's default for the
        architecture) name layers of this model."""
        from peft import LoraConfig

        info = self.info
        if targets == ["all-linear"]:
            peft_targets = "all-linear"  # peft expands it to every linear layer but the output head
        elif "all-linear" in targets:
            raise InputError("target_modules 'all-linear' cannot be combined with other names")
        elif targets:
            peft_targets = check_target_modules(self.model, targets, info.model_id)
        elif info.default_target_modules:
            peft_targets = list(info.default_target_modules)
        else:
            raise InputError(
                f"peft has no default target modules for model type {info.model_type!r}; give target_modules, "
                "for example 'all-linear' or names such as 'q_proj, v_proj'"
            )
        return LoraConfig(
            r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=peft_targets, task_type="CAUSAL_LM"
        )

    def add_lora(self, adapter_name: str, config) -> TextAdapterInfo:
        """A fresh, trainable LoRA from `config` (see lora_config); undone if peft fails part-way."""
        try:
            # LoRA A starts random: a seed from the name makes the same request give the same adapter.
            with quiet_libraries(), seeded(zlib.crc32(adapter_name.encode()), self.device):
                self.model.add_adapter(config, adapter_name=adapter_name)
        except Exception as exc:
            undo_inject(self.model, adapter_name, "LORA")
            raise AdapterError(f"LoRA {adapter_name!r} could not be added: {first_line(exc)}") from None
        return adapter_record(self.model, adapter_name, None, None, "added", trainable=True)

    def check_merge(self, weights: dict[str, float], combination_type: str) -> None:
        """What add_weighted_adapter would refuse or get wrong here (merge.py), before anything is made."""
        check_mergeable(self.model, weights, combination_type)

    def merge(self, weights: dict[str, float], new_name: str, combination_type: str, density) -> TextAdapterInfo:
        """A new LoRA from loaded ones by peft's add_weighted_adapter (merge.py); undone if it fails part-way."""
        try:
            with quiet_libraries():
                weighted_merge(self.model, weights, new_name, combination_type, density)
        except Exception as exc:
            undo_inject(self.model, new_name, "LORA")
            if isinstance(exc, StudioError):
                raise
            raise AdapterError(f"merging into {new_name!r} failed: {first_line(exc)}") from None
        self.model.eval()
        self.model.requires_grad_(False)
        record = adapter_record(self.model, new_name, None, None, "merged", trainable=True)
        record.merged_from, record.combination_type = weights, combination_type
        return record

    def delete(self, adapter_name: str) -> None:
        self._merged.forget(adapter_name)
        with quiet_libraries():
            self.model.delete_adapter(adapter_name)

    def export(self, adapter_name: str, folder: Path) -> Path:
        """`folder/<adapter_name>/` as peft saves it, and its zip; returns the zip's path."""
        return write_adapter_folder(self.model, adapter_name, folder, self.info.model_id, self.info.revision)

    # --- training --------------------------------------------------------------------------------------------------

    def training_batch(self, text: str) -> tuple[dict, int]:
        """(batch, number of tokens) of `text`, cut to the model's context (train.py)."""
        batch = make_batch(self.tokenizer, text, limits.TRAIN_MAX_TOKENS, self.info.context_length, self.device)
        return batch, int(batch["attention_mask"].sum())

    def resume_training(self, adapter_name: str) -> None:
        """Put back what a generation in between changed: its own active adapters, and eval mode."""
        self.model.enable_adapters()
        self.model.set_adapter(adapter_name)
        self.model.train()

    def train(self, adapter_name: str, batch: dict, steps: int, learning_rate: float, each_step) -> TrainResult:
        """`steps` training steps of `adapter_name` alone; `each_step(step, total, loss)` runs after each."""

        def step(done, total, loss):  # a generation in between (each_step hands over) merges the new weights
            self._merged.forget(adapter_name)
            each_step(done, total, loss)

        try:
            return train_adapter(self.model, adapter_name, batch, steps, learning_rate, step)
        finally:
            self._merged.forget(adapter_name)

    # --- generation ------------------------------------------------------------------------------------------------

    def set_active(self, names, any_loaded: bool = True) -> None:
        """Make exactly `names` active, in eval mode (a training run that handed the lock over left the model in
        train mode); none is the disable toggle. transformers' set_adapter takes a list and hands it to every peft
        layer (BaseTunerLayer.set_adapter), so several adapters add up in one pass.

        Args:
            any_loaded: False when the model holds no adapter: there is nothing to switch.
        """
        self.model.eval()
        if not any_loaded:
            return  # no adapters: layers left by deleted ones are empty and pass the base output through
        if not names:
            self.model.disable_adapters()
            return
        self.model.enable_adapters()
        try:
            self.model.set_adapter(list(names) if len(names) > 1 else names[0])
        except ValueError as exc:  # e.g. two adapters that each fully train the same module (modules_to_save)
            raise AdapterError(f"adapters {', '.join(names)} cannot be active together: {first_line(exc)}") from None

    def encode(self, prompt: str, max_new_tokens: int):
        """The prompt's token ids on the model's device, once they and the new tokens fit the context."""
        ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        context = self.info.context_length
        if ids.shape[1] == 0:
            raise InputError(f"prompt {prompt[:40]!r} gives no tokens with this tokenizer")
        if context and ids.shape[1] + max_new_tokens > context:
            raise InputError(
                f"prompt is {ids.shape[1]} tokens; with max_new_tokens={max_new_tokens} that passes the "
                f"model's context of {context} tokens"
            )
        return ids.to(self.device)

    def shares_pass(self, keys) -> bool:
        """Whether a request with exactly `keys` active can be one row of a mixed batch: the base, or one plain
        LoRA (mixed.mixable). Several adapters at once, DoRA and the other peft types run alone."""
        return len(keys) == 0 or (len(keys) == 1 and mixable(self.model, keys[0]))

    def forward_for(self, keys_per_row, any_loaded: bool = True):
        """How rows with these active keys reach their adapters in one generation (mixed.py): one set for every
        row is that set active, or, for one plain LoRA, that LoRA merged (when STUDIO_FUSE allows and its layers'
        weights fit STUDIO_FUSE_MAX_MB); rows with different sets (each `shares_pass`) are a mixed batch."""
        sets = {tuple(keys) for keys in keys_per_row}
        if len(sets) > 1:
            keys = [keys[0] if keys else None for keys in keys_per_row]
            return MixedRows(self.model, keys)
        (keys,) = sets
        options = settings.current()
        if len(keys) == 1 and options.fuse and mixable(self.model, keys[0]):
            merged = self._merged.get(self.model, keys[0], options.fuse_max_mb)
            if merged is not None:
                return MergedAdapter(self.model, merged)
        return ActiveSet(lambda active: self.set_active(active, any_loaded), keys)

    def generate_rows(self, rows, forward, between_tokens, do_sample=False, seed=0, temperature=1.0) -> list[str]:
        """The text that follows each row's ids (without its prompt), all rows in one `generate`, left-padded.

        Args:
            rows: [(ids from `encode`, max_new_tokens)]; each row stops at its own count (or its end-of-text).
            forward: from `forward_for`, applied here and removed when the generation ends.
            between_tokens: called as `between_tokens(forward)` before each new token, returns one bool per row
                (True: stop that row); the studio hands the turn over there (removing and re-applying `forward`).
        The sampling RNG is forked and seeded (`seeded`), so what runs in between does not change the text; one
        seed serves the whole batch, so a sampled request runs as a batch of one (docs/DEVELOPMENT.md).
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        width = max(ids.shape[1] for ids, _ in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long, device=self.device)
        mask = torch.zeros_like(ids)
        for i, (row, _) in enumerate(rows):  # left-padded: every row's next token is at the same position
            ids[i, width - row.shape[1] :], mask[i, width - row.shape[1] :] = row[0], 1
        wanted = torch.tensor([n for _, n in rows], device=self.device)

        class EachRow(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                stop = torch.tensor(between_tokens(forward), dtype=torch.bool, device=input_ids.device)
                return stop | (input_ids.shape[1] - width >= wanted)

        kwargs = {"max_new_tokens": int(wanted.max()), "do_sample": do_sample, "pad_token_id": pad}
        if do_sample:
            kwargs["temperature"] = temperature
        forward.apply()
        try:
            with seeded(seed, self.device), torch.inference_mode(), quiet_libraries():
                out = self.model.generate(
                    input_ids=ids, attention_mask=mask, stopping_criteria=StoppingCriteriaList([EachRow()]), **kwargs
                )
        finally:
            forward.remove()
        eos = self.model.generation_config.eos_token_id
        ends = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        texts = []
        for i, (_, n) in enumerate(rows):
            new = out[i, width : width + n].tolist()
            cut = next((j + 1 for j, t in enumerate(new) if t in ends), len(new))  # what follows is padding
            texts.append(tok.decode(new[:cut], skip_special_tokens=True))
        return texts


# --- loading the base ------------------------------------------------------------------------------------------------


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


def describe_model(model, repo: hub.Repo, device: str) -> ModelInfo:
    """What TextStudio.base_info() reports, read once after the load."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    config = model.config
    default = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(config.model_type)
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return ModelInfo(
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


def _plain_generation_config(loaded):
    """The repo's generation_config.json sets the defaults of every generate() call, and num_beams=64 or another
    decoding strategy would multiply each visitor's cost: only token ids and the author's sampling knobs stay."""
    from transformers import GenerationConfig

    kept = {k: v for k, v in loaded.to_dict().items() if k in GENERATION_FIELDS}
    return GenerationConfig(**kept)
