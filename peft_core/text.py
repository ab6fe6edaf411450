"""The text studio: one causal LM, its adapters, and generation with a per-request set of active adapters.

Data flows one way: request (prompt, adapters, seed) -> validate -> set the active adapters under the lock -> LM
-> text. The model and its adapters are shared by every user, so they live here behind one lock; which adapters
are active belongs to each request and is set again for every generation (`set_adapter` walks the modules once:
cheap next to a forward pass, and never stale after a load, a merge or a training run changed the active set).

Adapters come from the Hub (transformers' `load_adapter`), are added fresh (`add_adapter` with a LoraConfig),
trained on pasted text (text_train.py) or merged from others (peft's `add_weighted_adapter`, see
text_merge.py). Every method validates all of its input before the model is touched, and a failure leaves
the adapters and the outputs exactly as they were.
"""

import zlib
from dataclasses import dataclass
from pathlib import Path

from peft_core import bundled, hub, limits, settings
from peft_core.errors import AdapterError, InputError, StudioError
from peft_core.runtime import pick_device, quiet_libraries
from peft_core.startup import Startup
from peft_core.text_adapters import (
    ADAPTER_CONFIG,
    TextAdapterInfo,
    adapter_record,
    check_target_modules,
    first_line,
    load_adapter_folder,
    peft_type_name,
    seeded,
    undo_inject,
    write_adapter_folder,
)
from peft_core.text_merge import MERGE_TYPES, check_merge_request, check_mergeable, weighted_merge
from peft_core.text_model import (
    MODEL_PATTERNS,
    TextModelInfo,
    check_model_files,
    describe_model,
    fetch_adapter,
    load_causal_lm,
    open_base,
    read_model_config,
)
from peft_core.text_train import make_batch, train_adapter
from peft_core.turns import TurnLock, between_steps

__all__ = ["MERGE_TYPES", "TextModelInfo", "TextRequest", "TextStudio"]

MAX_NEW_TOKENS_MIN, MAX_NEW_TOKENS_MAX = 1, 256
# Beyond the max, sampling is uniform noise; below the min, logits / temperature overflow float32 and sampling fails.
TEMPERATURE_MIN, TEMPERATURE_MAX = 0.01, 5.0
RANK_MIN, RANK_MAX = 1, 256
LORA_ALPHA_MAX = 1024.0
TRAIN_STEPS_MIN, TRAIN_STEPS_MAX = 1, 500  # a few hundred steps is what a shared Space can give one request
LEARNING_RATE_MAX = 1.0
TRAIN_TEXT_MAX_CHARS = 20_000
TRAIN_MAX_TOKENS = 4096  # every step sees the whole text: this bounds the cost of one step
# Tokens x steps of one training run: the whole run's cost (500 steps on 400 tokens, or 48 on the longest text).
TRAIN_MAX_TOKEN_STEPS = 200_000


@dataclass(frozen=True)
class TextRequest:
    """One generation, normalised: everything that decides the text, so equal requests give equal text."""

    prompt: str
    adapters: tuple[str, ...] = ()  # active for this request only; empty is the base model
    use_adapters: bool = True  # False is the disable toggle: exactly the base output
    max_new_tokens: int = 32
    do_sample: bool = False
    seed: int = 0
    temperature: float = 1.0


class TextStudio:
    """Owns the causal LM, its tokenizer and its adapters; safe to share between threads."""

    def __init__(self, device: str | None = None):
        self.device, self.dtype = pick_device(device)
        # Served in arrival order; generation hands it over between tokens and training between steps (turns.py).
        self._lock = TurnLock()
        self.startup = Startup()  # app.py loads the defaults in the background; calls wait for them
        self.model = None
        self.tokenizer = None
        self.info: TextModelInfo | None = None
        self._adapters: dict[str, TextAdapterInfo] = {}  # insertion order = load order
        self._last_used: dict[str, int] = {}  # adapter_name -> request counter, for least-recently-used eviction
        self._requests = 0
        self._training: set[str] = set()  # adapters being trained: their run hands the lock over between steps

    # --- base model ----------------------------------------------------------------------------------------------

    def load_model(self, model_id: str, revision: str = "main") -> dict:
        """Load a causal LM by Hub id, bundled id or allowed local path; returns model_info().

        An adapter repo (one with adapter_config.json) loads the base its config names, then the adapter on it,
        as `AutoModelForCausalLM.from_pretrained("ybelkada/opt-350m-lora")` does. The old model and its adapters
        stay until the new one loaded fine.
        """
        self.startup.wait()  # else the defaults, still loading, would replace it
        repo = hub.open_repo(model_id, revision)
        files = repo.file_sizes()
        adapter_repo, adapter = None, None
        if ADAPTER_CONFIG in files:
            adapter_repo, adapter = repo, fetch_adapter(repo, files)
            repo = open_base(repo, adapter)
            files = repo.file_sizes()
        if self._check_base_lock(repo):  # locked, and this base is loaded: reloading would drop every adapter
            if adapter is not None:  # an adapter repo for it: add just the adapter, as load_adapter does
                self.load_adapter(adapter_repo.repo_id, revision=adapter_repo.revision)
            return self.model_info()
        check_model_files(repo, files)
        config = read_model_config(repo, files, self.dtype)  # before any weight is downloaded
        model, tokenizer = load_causal_lm(
            repo.repo_id, repo.snapshot(MODEL_PATTERNS), self.device, self.dtype, config
        )
        info = describe_model(model, repo, self.device)
        adapters = {}
        if adapter is not None:
            name = limits.derive_adapter_name(adapter_repo.repo_id, ())
            adapters[name] = load_adapter_folder(model, name, adapter, adapter_repo, info.model_id)
        with self._lock:
            self.model, self.tokenizer, self.info = model, tokenizer, info
            self._adapters = adapters  # adapters belong to the base they were loaded into
            self._last_used.clear()
            return self.model_info()

    def _check_base_lock(self, repo: hub.Repo) -> bool:
        """Under STUDIO_LOCK_BASE: refuse another base; True when `repo` is the loaded one (nothing to load)."""
        if self.info is None or not settings.current().lock_base:
            return False
        if (repo.repo_id, repo.revision) == (self.info.model_id, self.info.revision):
            return True
        raise InputError(
            f"this Space is locked to the base {self.info.model_id!r} (STUDIO_LOCK_BASE); {repo.repo_id!r} "
            f"(revision {repo.revision!r}) cannot replace it"
        )

    def model_info(self) -> dict:
        with self._lock:
            return {**self._require_model().to_dict(), "adapters": self.list_adapters()}

    def _require_model(self) -> TextModelInfo:
        self.startup.wait()
        if self.model is None or self.info is None:
            raise InputError(f"no text model is loaded; load one first (for example {bundled.DEFAULT_TEXT_MODEL!r})")
        return self.info

    # --- adapters ------------------------------------------------------------------------------------------------

    def load_adapter(self, repo_id: str, adapter_name: str = "", revision: str = "main") -> list[dict]:
        """Load a peft adapter repo (adapter_config.json + adapter_model.safetensors); returns every adapter.

        The files are downloaded and checked before the lock is taken, so a slow download does not hold up
        generations, and a bad file leaves the model untouched.
        """
        self._require_model()
        repo = hub.open_repo(repo_id, revision)
        if adapter_name and adapter_name.strip():
            adapter_name = limits.check_adapter_name(adapter_name)
            limits.check_free(adapter_name, self._adapters)
        adapter = fetch_adapter(repo, repo.file_sizes())
        with self._lock:
            info = self._require_model()
            if not adapter_name or not adapter_name.strip():
                adapter_name = limits.derive_adapter_name(repo.repo_id, self._adapters)
            limits.check_free(adapter_name, self._adapters)
            self._check_same_type(adapter.peft_type, repr(repo.repo_id))
            evict = self._eviction_candidate()
            record = load_adapter_folder(self.model, adapter_name, adapter, repo, info.model_id)
            self._add(record, evict)
            return self.list_adapters()

    def add_adapter(
        self, adapter_name: str, r: int = 8, lora_alpha: float = 16, lora_dropout: float = 0.0, target_modules=""
    ) -> list[dict]:
        """Add a fresh, trainable LoRA; returns every adapter.

        Args:
            target_modules: comma-separated layer names ("q_proj, v_proj"), a list of them, or "all-linear";
                empty uses peft's default for the architecture.
        """
        self._require_model()  # first: it waits for the defaults, whose loader may still be importing peft
        from peft import LoraConfig

        adapter_name = limits.check_adapter_name(adapter_name)
        r = limits.check_int("r", r, RANK_MIN, RANK_MAX)
        lora_alpha = limits.check_number("lora_alpha", lora_alpha, 0.0, LORA_ALPHA_MAX)
        if lora_alpha <= 0:
            raise InputError(f"lora_alpha must be a number in (0, {LORA_ALPHA_MAX:g}], got {lora_alpha!r}")
        lora_dropout = limits.check_number("lora_dropout", lora_dropout, 0.0, 1.0)
        if lora_dropout >= 1:
            raise InputError(f"lora_dropout must be a number in [0, 1), got {lora_dropout!r}")
        targets = _split_names("target_modules", target_modules)
        with self._lock:
            info = self._require_model()
            limits.check_free(adapter_name, self._adapters)
            self._check_same_type("LORA", f"the new adapter {adapter_name!r}")
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
            config = LoraConfig(
                r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=peft_targets,
                task_type="CAUSAL_LM",
            )  # fmt: skip
            evict = self._eviction_candidate()
            try:
                # LoRA A starts random: a seed from the name makes the same request give the same adapter.
                with quiet_libraries(), seeded(zlib.crc32(adapter_name.encode()), self.device):
                    self.model.add_adapter(config, adapter_name=adapter_name)
            except Exception as exc:
                undo_inject(self.model, adapter_name, "LORA")
                raise AdapterError(f"LoRA {adapter_name!r} could not be added: {first_line(exc)}") from None
            self._add(adapter_record(self.model, adapter_name, None, None, "added", trainable=True), evict)
            return self.list_adapters()

    def train_adapter(self, adapter_name: str, text: str, steps: int, learning_rate: float, progress=None) -> dict:
        """Train one adapter on `text`; the other adapters keep their weights. Returns the TrainResult as a dict.

        `progress(step, total, loss)` is called after each step, for a live loss curve. Between steps the lock goes
        to whoever waits (turns.py): other visitors' generations run in between, and the training picks up after.
        """
        self._require_model()
        steps = limits.check_int("steps", steps, TRAIN_STEPS_MIN, TRAIN_STEPS_MAX)
        learning_rate = limits.check_number("learning_rate", learning_rate, 0.0, LEARNING_RATE_MAX)
        if learning_rate <= 0:
            raise InputError(f"learning_rate must be a number in (0, {LEARNING_RATE_MAX:g}], got {learning_rate!r}")
        if not isinstance(text, str) or not text.strip():
            raise InputError("text to train on must not be empty")
        if len(text) > TRAIN_TEXT_MAX_CHARS:
            raise InputError(f"text is {len(text):,} characters long; at most {TRAIN_TEXT_MAX_CHARS:,} are allowed")
        with self._lock:
            info = self._require_model()
            record = self._get(adapter_name)
            if not record.trainable:
                raise InputError(
                    f"adapter {adapter_name!r} was loaded from {record.repo_id!r} and is kept as its author made it; "
                    "add a new adapter (add_adapter) to train"
                )
            batch = make_batch(self.tokenizer, text, TRAIN_MAX_TOKENS, info.context_length, self.device)
            tokens = int(batch["attention_mask"].sum())
            if tokens * steps > TRAIN_MAX_TOKEN_STEPS:
                raise InputError(
                    f"training {steps} steps on {tokens:,} tokens is {tokens * steps:,} token-steps; this Space "
                    f"allows {TRAIN_MAX_TOKEN_STEPS:,} per run: {TRAIN_MAX_TOKEN_STEPS // tokens} steps at most here"
                )
            model = self.model

            def resume():  # a generation in between set its own adapters and eval mode
                if self.model is not model or adapter_name not in self._adapters:
                    raise InputError(f"training of {adapter_name!r} stopped: the adapter or its base was replaced")
                model.enable_adapters()
                model.set_adapter(adapter_name)
                model.train()

            def each_step(step, total, loss):
                if progress is not None:
                    progress(step, total, loss)
                between_steps(self._lock, f"training of {adapter_name!r}", resume)

            self._training.add(adapter_name)
            try:
                result = train_adapter(model, adapter_name, batch, steps, learning_rate, each_step)
            finally:
                self._training.discard(adapter_name)
            record.steps_trained += steps
            self._touch([adapter_name])
            return result.to_dict()

    def merge_adapters(
        self, adapters: dict, new_adapter_name: str, combination_type: str = "linear", density: float | None = None
    ) -> list[dict]:
        """A new LoRA made by peft's `add_weighted_adapter` from loaded LoRAs; returns every adapter.

        Args:
            adapters: adapter_name -> weight, e.g. {"pirate": 1.0, "formal": 0.5}.
            combination_type: linear, cat, svd, ties, dare_linear, dare_ties or magnitude_prune. All but cat and
                svd need adapters of one rank.
            density: share of weights kept, in (0, 1]; needed by ties, dare_linear, dare_ties, magnitude_prune and
                ignored by the others.
        """
        self._require_model()
        weights, kind, density = check_merge_request(adapters, combination_type, density)
        new_adapter_name = limits.check_adapter_name(new_adapter_name)
        with self._lock:
            self._require_model()
            limits.check_loaded(weights, self._adapters)
            limits.check_free(new_adapter_name, self._adapters)
            check_mergeable(self.model, weights, kind)
            evict = self._eviction_candidate()
            try:
                with quiet_libraries():
                    weighted_merge(self.model, weights, new_adapter_name, kind, density)
            except Exception as exc:
                undo_inject(self.model, new_adapter_name, "LORA")
                if isinstance(exc, StudioError):
                    raise
                raise AdapterError(f"merging into {new_adapter_name!r} failed: {first_line(exc)}") from None
            self.model.eval()
            self.model.requires_grad_(False)
            record = adapter_record(self.model, new_adapter_name, None, None, "merged", trainable=True)
            record.merged_from, record.combination_type = weights, kind
            self._add(record, evict)
            return self.list_adapters()

    def list_adapters(self) -> list[dict]:
        self.startup.wait()
        with self._lock:
            return [info.to_dict() for info in self._adapters.values()]

    def delete_adapter(self, adapter_name: str) -> list[dict]:
        """Remove one adapter; the others stay with their weights."""
        self._require_model()
        with self._lock:
            self._get(adapter_name)
            self._delete(adapter_name)
            return self.list_adapters()

    def export_adapter(self, adapter_name: str, folder) -> Path:
        """Write `folder/<adapter_name>/` (adapter_config.json + adapter_model.safetensors, as peft saves them)
        and `folder/<adapter_name>.zip` of it; returns the zip's path, for a download button."""
        with self._lock:
            info = self._require_model()
            self._get(adapter_name)
            return write_adapter_folder(self.model, adapter_name, Path(folder), info.model_id, info.revision)

    def _get(self, adapter_name) -> TextAdapterInfo:
        if adapter_name not in self._adapters:
            raise InputError(f"no adapter named {adapter_name!r}; loaded: {', '.join(self._adapters) or 'none'}")
        return self._adapters[adapter_name]

    def _check_same_type(self, peft_type: str, what: str) -> None:
        """One peft method per model: a LoHa injected next to a LoRA wraps the LoRA layer inside its own."""
        held = {info.peft_type for info in self._adapters.values()}
        if held and peft_type not in held:
            have = held.pop()
            names = ", ".join(n for n, i in self._adapters.items() if i.peft_type == have)
            raise AdapterError(
                f"cannot mix a {peft_type_name(have)} and a {peft_type_name(peft_type)} in one model: {what} is a "
                f"{peft_type_name(peft_type)}, and the model holds {peft_type_name(have)} adapter(s) {names}; "
                "delete those first"
            )

    def _eviction_candidate(self) -> str | None:
        """The adapter to drop so a new one fits under the resident cap: the least recently used one that came from
        the Hub and is not bundled (it can be loaded again). Adapters made here are never dropped silently."""
        cap = settings.current().max_resident_adapters
        if len(self._adapters) < cap:
            return None
        candidates = [
            name
            for name in sorted(self._adapters, key=lambda n: self._last_used.get(n, 0))
            if self._adapters[name].source == "hub" and bundled.bundled_path(self._adapters[name].repo_id) is None
        ]
        if not candidates:
            raise InputError(
                f"{len(self._adapters)} adapters are loaded, the most this Space keeps ({cap}), and each is bundled "
                "or was made here; delete one first"
            )
        return candidates[0]

    def _add(self, record: TextAdapterInfo, evict: str | None) -> None:
        if evict is not None:
            self._delete(evict)
        self._adapters[record.adapter_name] = record

    def _delete(self, adapter_name: str) -> None:
        with quiet_libraries():
            self.model.delete_adapter(adapter_name)
        del self._adapters[adapter_name]
        self._last_used.pop(adapter_name, None)

    def _touch(self, names) -> None:
        self._requests += 1
        self._last_used.update({name: self._requests for name in names})

    # --- generation ----------------------------------------------------------------------------------------------

    def check_request(self, request: TextRequest) -> TextRequest:
        """Validate every field; raises before anything runs. Token counts are checked under the lock."""
        self._require_model()
        names = _split_names("adapters", request.adapters)
        with self._lock:
            limits.check_loaded(names, self._adapters)
        temperature = limits.check_number("temperature", request.temperature, TEMPERATURE_MIN, TEMPERATURE_MAX)
        return TextRequest(
            prompt=limits.check_prompt("prompt", request.prompt, allow_empty=False),
            adapters=tuple(names),
            use_adapters=limits.check_bool("use_adapters", request.use_adapters),
            max_new_tokens=limits.check_int(
                "max_new_tokens", request.max_new_tokens, MAX_NEW_TOKENS_MIN, MAX_NEW_TOKENS_MAX
            ),
            do_sample=limits.check_bool("do_sample", request.do_sample),
            seed=limits.check_int("seed", request.seed, limits.SEED_MIN, limits.SEED_MAX),
            temperature=temperature,
        )

    def generate(self, prompt: str, adapters=(), use_adapters: bool = True, max_new_tokens: int = 32,
                 do_sample: bool = False, seed: int = 0, temperature: float = 1.0) -> str:  # fmt: skip
        """The completion of `prompt` (without the prompt) with `adapters` active for this request only.

        An empty `adapters` or use_adapters=False gives the base model's text, token for token.
        """
        request = self.check_request(
            TextRequest(prompt, adapters, use_adapters, max_new_tokens, do_sample, seed, temperature)
        )
        with self._lock:
            # again: another request may have deleted one meanwhile
            limits.check_loaded(request.adapters, self._adapters)
            ids = self._encode(request)
            return self._run(ids, request, request.adapters if request.use_adapters else ())

    def compare(self, prompt: str, adapters=(), max_new_tokens: int = 32, do_sample: bool = False, seed: int = 0,
                temperature: float = 1.0) -> tuple[str, str]:  # fmt: skip
        """(base text, adapted text) for the same prompt, seed and settings."""
        request = self.check_request(TextRequest(prompt, adapters, True, max_new_tokens, do_sample, seed, temperature))
        with self._lock:
            limits.check_loaded(request.adapters, self._adapters)
            ids = self._encode(request)
            return self._run(ids, request, ()), self._run(ids, request, request.adapters)

    def _encode(self, request: TextRequest):
        ids = self.tokenizer(request.prompt, return_tensors="pt")["input_ids"]
        context = self.info.context_length
        if ids.shape[1] == 0:
            raise InputError(f"prompt {request.prompt[:40]!r} gives no tokens with this tokenizer")
        if context and ids.shape[1] + request.max_new_tokens > context:
            raise InputError(
                f"prompt is {ids.shape[1]} tokens; with max_new_tokens={request.max_new_tokens} that passes the "
                f"model's context of {context} tokens"
            )
        return ids.to(self.device)

    def _apply_active(self, names) -> None:
        """Make exactly `names` active; none is the disable toggle. transformers' set_adapter takes a list and
        hands it to every peft layer (BaseTunerLayer.set_adapter), so several adapters add up in one pass."""
        self._touch(names)
        if not self._adapters:
            return  # no adapters: layers left by deleted ones are empty and pass the base output through
        if not names:
            self.model.disable_adapters()
            return
        self.model.enable_adapters()
        try:
            self.model.set_adapter(list(names) if len(names) > 1 else names[0])
        except ValueError as exc:  # e.g. two adapters that each fully train the same module (modules_to_save)
            raise AdapterError(f"adapters {', '.join(names)} cannot be active together: {first_line(exc)}") from None

    def _run(self, ids, request: TextRequest, active) -> str:
        """Generate with exactly `active` adapters on; called with the lock held.

        Between tokens it hands the lock to whoever waits (turns.py); they may set other adapters, or catch a
        training run in train mode, so both are put back before the next token. The sampling RNG is forked per
        request (`seeded`), so what runs in between does not change this request's text.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        model, lock = self.model, self._lock

        def resume():
            if self.model is not model:
                raise InputError("generation stopped: the text model was replaced meanwhile")
            limits.check_loaded(active, self._adapters)
            model.eval()
            self._apply_active(active)

        class HandOver(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                between_steps(lock, "the generation", resume)
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # never stops

        model.eval()  # a training run that handed the lock over left the model in train mode
        self._apply_active(active)
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        kwargs = {"max_new_tokens": request.max_new_tokens, "do_sample": request.do_sample, "pad_token_id": pad}
        if request.do_sample:
            kwargs["temperature"] = request.temperature
        with seeded(request.seed, self.device), torch.inference_mode(), quiet_libraries():
            hand_over = StoppingCriteriaList([HandOver()])
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), stopping_criteria=hand_over, **kwargs
            )
        return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def _split_names(what: str, value) -> list[str]:
    """Names from a list, or from one comma-separated string (what a text box sends); order kept, no repeats."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{what} must be a list of names or a comma-separated string, got {value!r}")
    return list(dict.fromkeys(v.strip() for v in value if v.strip()))
