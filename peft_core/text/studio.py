"""The text studio: one causal LM, its adapters, and generation with a per-request set of active adapters.

Data flows one way: request (a TextRequest) -> validate -> the adapter pool under the lock -> the model
(model.py) -> text; the verbs and their shapes are the image studio's (load_base, base_info, load_adapter,
list_adapters, delete_adapter, generate(request), compare(request)). The model and its adapters are shared by
every user, so they live here behind one lock (the names are each session's, and the same adapter repo loaded by
several sessions is held once: pool.py, docs/SESSIONS.md); which adapters are active belongs to each request and
is set again for every generation (`set_adapter` walks the modules once: cheap next to a forward pass, and never
stale after a load, a merge or a training run changed the active set). Generations that arrive together share one
forward pass, each row with its own adapter, and a lone adapter runs merged (batching.py).

Adapters come from the Hub (transformers' `load_adapter`), are added fresh (a LoraConfig), trained on pasted text
(train.py) or merged from others (peft's `add_weighted_adapter`, merge.py). Every method validates all of its
input before the model is touched, and a failure leaves the adapters and the outputs exactly as they were.

This file imports no model library: everything that touches transformers, peft or torch is a `TextModel` method.
"""

from pathlib import Path

from peft_core import bundled, hub, limits, sessions, settings
from peft_core.config_checks import peft_type_name
from peft_core.errors import AdapterError, InputError
from peft_core.pool import AdapterPool, check_base_change, check_base_lock, size_mb
from peft_core.runtime import pick_device
from peft_core.startup import Startup
from peft_core.text.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, TextAdapterInfo
from peft_core.text.batching import Row, TextBatcher
from peft_core.text.merge import check_merge_request
from peft_core.text.model import TextModel
from peft_core.text.repos import check_model_files, fetch_adapter, open_base
from peft_core.text.requests import ModelInfo, TextRequest
from peft_core.text.train import preview as train_preview
from peft_core.turns import TurnLock, between_steps

__all__ = ["ModelInfo", "TextRequest", "TextStudio"]


class TextStudio:
    """Owns the causal LM, its tokenizer and its adapters; safe to share between threads."""

    def __init__(self, device: str | None = None, quotas: sessions.Quotas | None = None):
        """`quotas`: the app's per-session counters, shared with the image studio (app.py); a studio of its own
        otherwise (scripts, tests)."""
        self.device, self.dtype = pick_device(device)
        self.quotas = quotas if quotas is not None else sessions.Quotas()
        # Served in arrival order; generation hands it over between tokens and training between steps (turns.py).
        self._lock = TurnLock()
        self.startup = Startup()  # app.py loads the defaults in the background; calls wait for them
        self.lm: TextModel | None = None
        self.pool = AdapterPool()  # records of the adapters in self.lm, in load order
        # Concurrent generations share one forward pass, each row with its own adapter (batching.py).
        self.batcher = TextBatcher(self._lock, lambda: (self.lm, self.pool))

    @property
    def model(self):
        """The transformers model, for tests and benchmarks that look inside; None before a load."""
        return self.lm.model if self.lm is not None else None

    @property
    def tokenizer(self):
        return self.lm.tokenizer if self.lm is not None else None

    @property
    def info(self) -> ModelInfo | None:
        return self.lm.info if self.lm is not None else None

    # --- base model ----------------------------------------------------------------------------------------------

    def load_base(self, model_id: str, revision: str = "main") -> ModelInfo:
        """Load a causal LM by Hub id, bundled id or allowed local path; returns its facts (base_info()).

        An adapter repo (one with adapter_config.json) loads the base its config names, then the adapter on it,
        as `AutoModelForCausalLM.from_pretrained("ybelkada/opt-350m-lora")` does. The old model and its adapters
        stay until the new one loaded fine.
        """
        self.startup.wait()  # else the defaults, still loading, would replace it
        repo = hub.open_repo(model_id, revision)
        if settings.current().public and not sessions.is_admin():  # refused before any Hub request
            if check_base_change((self.info.model_id, self.info.revision) if self.info else None, repo, "text model"):
                return self.base_info()
        files = repo.file_sizes()
        adapter_repo, adapter = None, None
        if ADAPTER_CONFIG in files:
            adapter_repo, adapter = repo, fetch_adapter(repo, files)
            adapter_bytes = files.get(ADAPTER_WEIGHTS)
            repo = open_base(repo, adapter)
            files = repo.file_sizes()
        loaded = (self.info.model_id, self.info.revision) if self.info is not None else None
        if check_base_change(loaded, repo, "text model") or check_base_lock(loaded, repo):  # nothing to reload
            if adapter is not None:  # an adapter repo for it: add just the adapter, as load_adapter does
                self.load_adapter(adapter_repo.repo_id, revision=adapter_repo.revision)
            return self.base_info()
        check_model_files(repo, files)
        lm = TextModel.load(repo, files, self.device, self.dtype)
        pool = AdapterPool()  # adapters belong to the base they were loaded into
        if adapter is not None:
            record = lm.load_adapter_folder(pool.free_name(adapter_repo.repo_id), adapter, adapter_repo)
            source = (adapter_repo.repo_id, adapter_repo.revision, "")
            pool.add(record.adapter_name, record, _reloadable(record), source=source, file_bytes=adapter_bytes)
        with self._lock:
            self.lm, self.pool = lm, pool
            return self.base_info()

    def base_info(self) -> ModelInfo:
        """The loaded model's facts: its class, size, context length and peft's default targets for it."""
        return self._require_model()

    def _require_model(self) -> ModelInfo:
        self.startup.wait()
        if self.lm is None:
            example = settings.current().default_text_model
            raise InputError(f"no text model is loaded; load one first (for example {example!r})")
        return self.lm.info

    # --- adapters ------------------------------------------------------------------------------------------------

    def load_adapter(self, repo_id: str, adapter_name: str = "", revision: str = "main") -> list[dict]:
        """Load a peft adapter repo (adapter_config.json + adapter_model.safetensors); returns what this session
        sees. One another session loaded already (same repo and revision) is shared: no download, no new memory.

        The files are downloaded and checked before the lock is taken, so a slow download does not hold up
        generations, and a bad file leaves the model untouched.
        """
        self._require_model()
        repo = hub.open_repo(repo_id, revision)
        if adapter_name and adapter_name.strip():
            adapter_name = limits.check_adapter_name(adapter_name)
            self.pool.check_free(adapter_name)
        session, source = sessions.current(), (repo.repo_id, repo.revision, "")
        adapter, entry = None, self.pool.entries.get(self.pool.find(source))
        if entry is not None:  # held already: no request to the Hub; the size cap still holds
            hub.check_file_size(repo, ADAPTER_WEIGHTS, entry.file_bytes, settings.current().max_adapter_mb)
        else:
            self.quotas.check_download(session)
            sizes = repo.file_sizes()
            adapter = fetch_adapter(repo, sizes)
            megabytes = sum(t.numel() * t.element_size() for t in adapter.state_dict.values()) / 2**20
            sessions.check_held(session, *self.pool.held(session), megabytes)
            self.quotas.count_download(session)
        with self._lock:
            self._require_model()
            if not adapter_name or not adapter_name.strip():
                adapter_name = self.pool.free_name(repo.repo_id)
            self.pool.check_free(adapter_name)
            key = self.pool.find(source)
            if key is not None:  # held already (loaded by another session, or meanwhile): one more name
                sessions.check_held(session, *self.pool.held(session), size_mb(self.pool.entries[key].info))
                self.pool.add(adapter_name, None, reloadable=False, key=key)
                return self.list_adapters()
            if adapter is None:
                raise InputError(f"{repo.repo_id!r} was unloaded while it was being added; load it again")
            self._check_same_type(adapter.peft_type, repr(repo.repo_id))
            evict = self.pool.eviction_candidate()
            key = self.pool.new_key(adapter_name)
            record = self.lm.load_adapter_folder(key, adapter, repo)
            self._add(adapter_name, record, evict, key, source, sizes.get(ADAPTER_WEIGHTS))
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
        adapter_name = limits.check_adapter_name(adapter_name)
        r = limits.check_int("r", r, limits.RANK_MIN, limits.RANK_MAX)
        lora_alpha = limits.check_positive("lora_alpha", lora_alpha, limits.LORA_ALPHA_MAX)
        lora_dropout = limits.check_number("lora_dropout", lora_dropout, 0.0, 1.0)
        if lora_dropout >= 1:
            raise InputError(f"lora_dropout must be a number in [0, 1), got {lora_dropout!r}")
        targets = _split_names("target_modules", target_modules)
        session = sessions.current()
        with self._lock:
            self._require_model()
            self.pool.check_free(adapter_name)
            sessions.check_held(session, *self.pool.held(session), 0.0)
            self._check_same_type("LORA", f"the new adapter {adapter_name!r}")
            config = self.lm.lora_config(r, lora_alpha, lora_dropout, targets)
            evict = self.pool.eviction_candidate()
            key = self.pool.new_key(adapter_name)
            self._add(adapter_name, self.lm.add_lora(key, config), evict, key)
            return self.list_adapters()

    def train_adapter(self, adapter_name: str, text: str, steps: int, learning_rate: float, progress=None) -> dict:
        """Train one adapter on `text`; the other adapters keep their weights. Returns the TrainResult as a dict.

        `progress(step, total, loss)` is called after each step, for a live loss curve. Between steps the lock goes
        to whoever waits (turns.py): other visitors' generations run in between, and the training picks up after.
        """
        self._require_model()
        steps = limits.check_int("steps", steps, limits.TRAIN_STEPS_MIN, limits.TRAIN_STEPS_MAX)
        learning_rate = limits.check_positive("learning_rate", learning_rate, limits.LEARNING_RATE_MAX)
        if not isinstance(text, str) or not text.strip():
            raise InputError("text to train on must not be empty")
        if len(text) > limits.TRAIN_TEXT_MAX_CHARS:
            raise InputError(
                f"text is {len(text):,} characters long; at most {limits.TRAIN_TEXT_MAX_CHARS:,} are allowed"
            )
        session = sessions.current()
        self.quotas.check_train_steps(session, steps)
        with self._lock:
            self._require_model()
            record = self.pool.get(adapter_name)
            key = self.pool.check_own(adapter_name, "train")
            if not record.trainable:
                raise InputError(
                    f"adapter {adapter_name!r} was loaded from {record.repo_id!r} and is kept as its author made it; "
                    "add a new adapter (add_adapter) to train"
                )
            lm = self.lm
            batch, tokens = lm.training_batch(text)
            cap = limits.TRAIN_MAX_TOKEN_STEPS
            if tokens * steps > cap:
                raise InputError(
                    f"training {steps} steps on {tokens:,} tokens is {tokens * steps:,} token-steps; this Space "
                    f"allows {cap:,} per run: {cap // tokens} steps at most here"
                )

            def resume():  # a generation in between set its own adapters and eval mode
                if self.lm is not lm or self.pool.own().get(adapter_name) != key:
                    raise InputError(f"training of {adapter_name!r} stopped: the adapter or its base was replaced")
                lm.resume_training(key)

            def each_step(step, total, loss):
                if progress is not None:
                    progress(step, total, loss)
                between_steps(self._lock, f"training of {adapter_name!r}", resume)

            self.quotas.count_train_steps(session, steps)  # counted when it starts: a stopped run used them too
            result = lm.train(key, batch, steps, learning_rate, each_step)
            record.steps_trained += steps
            self.pool.touch([key])
            return {**result.to_dict(), "adapter_name": adapter_name}  # as this session calls it

    def training_preview(self, text: str) -> dict:
        """What training on `text` would see (train.preview: tokens, max, <unk> count and words, blocks), for the
        page to show before Train is pressed. Read-only."""
        self._require_model()
        if not isinstance(text, str):
            raise InputError(f"text to train on must be text, got {type(text).__name__}")
        if len(text) > limits.TRAIN_TEXT_MAX_CHARS:
            raise InputError(
                f"text is {len(text):,} characters long; at most {limits.TRAIN_TEXT_MAX_CHARS:,} are allowed"
            )
        with self._lock:  # the tokenizer is shared with generation and training, which run under the lock
            self._require_model()  # the model may have been replaced meanwhile
            lm = self.lm
            return train_preview(lm.tokenizer, text, limits.TRAIN_MAX_TOKENS, lm.info.context_length)

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
        session = sessions.current()
        with self._lock:
            self._require_model()
            by_key = self.pool.mix(weights)  # the adapters this session may use, by the model's names
            self.pool.check_free(new_adapter_name)
            sessions.check_held(session, *self.pool.held(session), 0.0)
            self.lm.check_merge(by_key, kind)
            evict = self.pool.eviction_candidate()
            key = self.pool.new_key(new_adapter_name)
            record = self.lm.merge(by_key, key, kind, density)
            record.merged_from = dict(weights)  # as this session named them
            self._add(new_adapter_name, record, evict, key)
            return self.list_adapters()

    def list_adapters(self) -> list[dict]:
        self.startup.wait()
        with self._lock:
            return self.pool.list()

    def delete_adapter(self, adapter_name: str) -> list[dict]:
        """Remove this session's adapter; the others stay with their weights, and so do its own while another
        session uses them."""
        self._require_model()
        with self._lock:
            key = self.pool.remove(adapter_name)  # refuses a name that is not this session's
            if key is not None:
                self.lm.delete(key)
            return self.list_adapters()

    def release_session(self, session) -> None:
        """A session ended: drop its names, and the adapters nobody else uses (sessions.Tracker calls this), and
        forget its counts."""
        self.quotas.forget(session)
        with self._lock:
            if self.lm is None:
                return
            for key in self.pool.release(session):
                self.lm.delete(key)

    def export_adapter(self, adapter_name: str, folder) -> Path:
        """Write `folder/<adapter_name>/` (adapter_config.json + adapter_model.safetensors, as peft saves them)
        and `folder/<adapter_name>.zip` of it; returns the zip's path, for a download button."""
        with self._lock:
            self._require_model()
            key = self.pool.check_own(adapter_name, "export")
            return self.lm.export(key, Path(folder))

    def _check_same_type(self, peft_type: str, what: str) -> None:
        """One peft method per model: a LoHa injected next to a LoRA wraps the LoRA layer inside its own."""
        held = {info.peft_type for info in self.pool.records()}  # every session's: one model holds them all
        if held and peft_type not in held:
            have = held.pop()
            # The names this session sees only: another session's names are none of its business.
            entries, visible = self.pool.entries, self.pool.visible().items()
            names = ", ".join(n for n, k in visible if entries[k].info.peft_type == have) or "of other sessions"
            raise AdapterError(
                f"cannot mix a {peft_type_name(have)} and a {peft_type_name(peft_type)} in one model: {what} is a "
                f"{peft_type_name(peft_type)}, and the model holds {peft_type_name(have)} adapter(s) {names}; "
                "delete those first"
            )

    def _add(self, adapter_name: str, record: TextAdapterInfo, evict: str | None, key: str, source=None,
             file_bytes=None) -> None:  # fmt: skip
        """Register an adapter the model now holds as `key`, named `adapter_name` in this session, after dropping
        `evict` (see AdapterPool.eviction_candidate)."""
        if evict is not None:
            self._delete(evict)
        record.adapter_name = adapter_name
        self.pool.add(adapter_name, record, _reloadable(record), key, source, file_bytes)

    def _delete(self, key: str) -> None:
        """Free one resident adapter, and every session's name for it (eviction)."""
        self.lm.delete(key)
        self.pool.remove_key(key)

    # --- generation ----------------------------------------------------------------------------------------------

    def check_request(self, request: TextRequest) -> TextRequest:
        """Validate every field; raises before anything runs. Token counts are checked under the lock."""
        self._require_model()
        names = _split_names("adapters", request.adapters)
        with self._lock:
            self.pool.check_loaded(names)
        temperature = limits.check_number(
            "temperature", request.temperature, limits.TEMPERATURE_MIN, limits.TEMPERATURE_MAX
        )
        return TextRequest(
            prompt=limits.check_prompt("prompt", request.prompt, allow_empty=False),
            adapters=tuple(names),
            use_adapters=limits.check_bool("use_adapters", request.use_adapters),
            max_new_tokens=limits.check_int(
                "max_new_tokens", request.max_new_tokens, limits.MAX_NEW_TOKENS_MIN, limits.MAX_NEW_TOKENS_MAX
            ),
            do_sample=limits.check_bool("do_sample", request.do_sample),
            seed=limits.check_int("seed", request.seed, limits.SEED_MIN, limits.SEED_MAX),
            temperature=temperature,
        )

    def generate(self, request: TextRequest, progress=None) -> str:
        """The completion of `request.prompt` (without the prompt) with its adapters active for this request only.
        `progress(token, total)` is called after each new token.

        Empty `adapters` or use_adapters=False gives the base model's text, token for token.
        """
        request = self.check_request(request)
        return self._generate([(request, request.adapters if request.use_adapters else ())], progress)[0]

    def compare(self, request: TextRequest, progress=None) -> tuple[str, str]:
        """(base text, adapted text) for the same prompt, seed and settings."""
        request = self.check_request(request)
        adapted = request.adapters if request.use_adapters else ()
        base, adapted = self._generate([(request, ()), (request, adapted)], progress)  # two rows of one batch
        return base, adapted

    def _generate(self, runs, progress=None) -> list[str]:
        """The text of each (checked request, active names), gathered with concurrent requests' rows into as few
        generations as can serve them (batching.py); the lock is taken there, and handed over between tokens.
        `progress(token, total)` after each of a row's new tokens."""
        return self.batcher.run(
            [Row(r.prompt, tuple(active), r.max_new_tokens, r.do_sample, r.seed, r.temperature) for r, active in runs],
            progress,
        )


def _reloadable(record: TextAdapterInfo) -> bool:
    """Only an adapter from the Hub can be loaded again; bundled ones and those made here are never evicted."""
    return record.source == "hub" and bundled.bundled_path(record.repo_id) is None


def _split_names(what: str, value) -> list[str]:
    """Names from a list, or from one comma-separated string (what a text box sends); order kept, no repeats."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{what} must be a list of names or a comma-separated string, got {value!r}")
    return list(dict.fromkeys(v.strip() for v in value if v.strip()))
