"""The image studio: one pipeline, its resident LoRA adapters, and generation with a per-request mix.

Data flows one way: request (an ImageRequest: prompt, mix, seed ...) -> validate -> the pool and the slots under
the lock -> the pipeline -> image. The text studio answers the same verbs (load_base, base_info, load_adapter,
list_adapters, delete_adapter, generate, compare) with the same shapes. The pipeline and the resident adapters are
shared by every user, so they live here behind one lock; the mix (which adapters, at which weights, or none)
belongs to each request. The names belong to each session (docs/SESSIONS.md): the pool maps a session's names to
the resident weights, which the same (repo, revision, file) loaded by several sessions shares. Each step has its
file:

- the checks before anything is touched: checks.py (a pipeline repo's configs), lora_files.py (a LoRA file);
- which adapters are resident and their facts, which one may leave, the base lock: the AdapterPool (pool.py);
- their weights: resident adapters wait in RAM and only the ones in use sit in a few slots of the pipeline, the
  applied mix fused into the base weights (slots.py), so a switch, a generation or a load costs the same with 1
  adapter resident or 64;
- every call into diffusers: pipeline.py. This file imports none of diffusers, peft, transformers or torch.
"""

import dataclasses
from pathlib import Path

from peft_core import bundled, hub, limits, sessions, settings
from peft_core.errors import HubError, InputError
from peft_core.image import checks, families, peft_files, pipeline, recipe
from peft_core.image.export import save_mix
from peft_core.image.lora_files import AdapterInfo, read_lora_file, trigger_words
from peft_core.image.requests import ImageRequest, PipelineInfo
from peft_core.image.slots import LoraSlots
from peft_core.image.thumbnails import Thumbnails, card_picture
from peft_core.pool import AdapterPool, check_base_change, check_base_lock
from peft_core.runtime import pick_device
from peft_core.startup import Startup
from peft_core.turns import TurnLock, between_steps


class ImageStudio:
    """Owns the diffusion pipeline and its resident adapters; safe to share between threads."""

    def __init__(self, device: str | None = None, quotas: sessions.Quotas | None = None):
        """`quotas`: the app's per-session counters, shared with the text studio (app.py); a studio of its own
        otherwise (scripts, tests)."""
        self.device, self.dtype = pick_device(device)
        self.quotas = quotas if quotas is not None else sessions.Quotas()
        # Served in arrival order; a generation hands it over between denoising steps (turns.py), so one visitor's
        # big request delays another's small one by a step, not by the whole request (on a pipeline whose family
        # declares its per-call state, families.Family.call_state; any other runs each request in one turn).
        self._lock = TurnLock()
        self.startup = Startup()  # app.py loads the defaults in the background; calls wait for them
        self.pipe = None
        self._scheduler = None  # the loaded scheduler, untouched: every generation steps a copy of its own
        self.info: PipelineInfo | None = None
        self.family = families.GENERIC  # the loaded pipeline's (image/families.py): its call arguments and ranges
        self.pool = AdapterPool()  # the resident adapters' facts (AdapterInfo), in load order, and their use order
        self.slots: LoraSlots | None = None  # their weights: in RAM, and the few in use in the pipeline's slots
        # the cards' pictures, made once per (base, adapter file) (thumbnails.py), through this studio's own calls
        # (looked up at each use, so a wrapped generate is the one used)
        self.thumbnails = Thumbnails(self.device, lambda: self.info,
                                     lambda request: self.generate(request), lambda: self.list_adapters())  # fmt: skip
        # the defaults' pictures, made after they loaded in the background (app.py), while the page is served
        self.startup.after("the default adapters' pictures", self.thumbnails.make_all)

    # --- base pipeline -------------------------------------------------------------------------------------------

    def load_base(self, model_id: str, revision: str = "main") -> PipelineInfo:
        """Load a base pipeline by Hub id (or bundled id). The old pipeline and its adapters stay until it works."""
        self.startup.wait()  # else the defaults, still loading, would replace it
        repo = hub.open_repo(model_id, revision)
        loaded = (self.info.model_id, self.info.revision) if self.info is not None else None
        if check_base_change(loaded, repo, "base pipeline") or check_base_lock(loaded, repo):
            return self.base_info()  # already loaded: reloading would only drop every adapter
        sizes = repo.file_sizes()
        files = sorted(sizes)
        if "model_index.json" not in files:
            raise HubError(
                f"{repo.repo_id!r} is not a diffusers pipeline (no model_index.json); files: {', '.join(files[:10])}"
            )
        hub.check_snapshot_size(repo, sizes, pipeline.PIPELINE_PATTERNS)
        # its configs and card, before anything is built; the family and dtype come out of them
        plan = checks.check_pipeline(repo, sizes, self.device)
        folder = repo.snapshot(pipeline.PIPELINE_PATTERNS)
        offload = families.offload_mode(self.device)
        config = settings.current()
        pipe = pipeline.build(repo.repo_id, folder, self.device, families.torch_dtype(plan.dtype), offload,
                              compile=config.compile)  # fmt: skip
        card = checks.check_studio_defaults(repo.card_data())
        info = PipelineInfo(
            model_id=repo.repo_id,
            revision=repo.revision,
            pipeline_class=type(pipe).__name__,
            device=self.device,
            dtype=plan.dtype,
            offload=offload,
            **pipeline.pipeline_defaults(pipe, plan.family, card, repo.repo_id),
        )
        slots = LoraSlots(pipe, k=config.lora_slots, fuse=config.fuse, fuse_max_mb=config.fuse_max_mb,
                          compiled=config.compile)  # fmt: skip
        with self._lock:
            self.pipe, self.info, self.slots, self._scheduler = pipe, info, slots, pipe.scheduler
            self.family = plan.family
            self.pool.clear()  # adapters belong to the base they were loaded into
        return info

    def base_info(self) -> PipelineInfo:
        """The loaded pipeline's facts: its defaults, and the ranges a request may use on its family."""
        return self._require_pipe()

    def _require_pipe(self) -> PipelineInfo:
        self.startup.wait()
        if self.pipe is None or self.info is None:
            raise InputError("no base pipeline is loaded; load one first (for example 'adapter-studio/tiny-shapes')")
        return self.info

    # --- adapters ------------------------------------------------------------------------------------------------

    def load_adapter(self, repo_id: str, weight_name: str = "", adapter_name: str = "", revision: str = "main"):
        """Load a LoRA by Hub id and keep it resident under a name of this session; returns what it sees.

        The file is resolved, downloaded and checked before the lock is taken, so a slow download does not hold
        up generations, and a bad file leaves the pipeline untouched. Weights another session loaded from the same
        (repo, revision, file) are shared: no download, no new memory.
        """
        self._require_pipe()
        repo = hub.open_repo(repo_id, revision)
        if adapter_name and adapter_name.strip():
            adapter_name = limits.check_adapter_name(adapter_name)
            self.pool.check_free(adapter_name)
        session = sessions.current()
        entry = self.pool.entries.get(self.pool.find((repo.repo_id, repo.revision, weight_name or "")))
        picked = not weight_name
        if entry is not None:  # resident already: its facts, and no request to the Hub at all
            info = entry.info
            lora, weight_name, words = None, info.weight_name, info.trigger_words
            hub.check_file_size(repo, weight_name, entry.file_bytes, settings.current().max_adapter_mb)
            sessions.check_held(session, *self.pool.held(session), info.size_mb)
        else:
            self.quotas.check_download(session)
            sizes = repo.file_sizes()
            weight_name = hub.pick_weight_name(repo, weight_name or "", list(sizes))
            file_bytes = sizes[weight_name]
            hub.check_file_size(repo, weight_name, sizes[weight_name], settings.current().max_adapter_mb)
            sessions.check_held(session, *self.pool.held(session), (sizes[weight_name] or 0) / 2**20)
            config = peft_files.adapter_config(repo, weight_name, sizes)  # peft's save_pretrained writes one
            lora = hub.read_healing_cache(
                repo, [weight_name], lambda force: repo.file_path(weight_name, force),
                lambda path: read_lora_file(path, config),
            )  # fmt: skip
            card = repo.card_data(sizes) if "README.md" in sizes else {}
            words = trigger_words(card)
            picture = card_picture(card, sizes, words)  # checks its widget image; downloads nothing
            self.quotas.count_download(session)
        source = (repo.repo_id, repo.revision, weight_name)
        with self._lock:
            if not adapter_name or not adapter_name.strip():
                adapter_name = self.pool.free_name(repo.repo_id)
            self.pool.check_free(adapter_name)
            key = self.pool.find(source)
            if key is not None:  # resident already (loaded by another session, or meanwhile): one more name
                sessions.check_held(session, *self.pool.held(session), self.pool.entries[key].info.size_mb)
                self.pool.add(adapter_name, None, reloadable=False, key=key)
                return self.list_adapters()
            if lora is None:
                raise InputError(f"{repo.repo_id!r} was unloaded while it was being added; load it again")
            sessions.check_held(session, *self.pool.held(session), lora.size_mb)
            # The least recently used adapter outside the applied mix goes; bundled ones stay (every visitor's demo).
            evict = self.pool.eviction_candidate(in_use=self.slots.applied)
            key = self.pool.new_key(adapter_name)
            slot_name = self.slots.slot_for_load()
            report = pipeline.load_lora(self.pipe, slot_name, lora, f"{repo.repo_id}/{weight_name}",
                                        self.info.model_id)  # fmt: skip
            self.slots.add(key, slot_name)
            if evict is not None:
                self._delete(evict)
            info = AdapterInfo(
                adapter_name=adapter_name,
                repo_id=repo.repo_id,
                weight_name=weight_name,
                revision=repo.revision,
                rank=lora.rank,
                components=lora.components,
                size_mb=lora.size_mb,
                trigger_words=words,
                layout=lora.layout,
                num_layers=lora.num_layers,
                report=report.to_dict(),
            )
            reloadable = bundled.bundled_path(repo.repo_id) is None
            self.pool.add(adapter_name, info, reloadable, key, (*source, picked), file_bytes)
            self.thumbnails.note(source, picture)
            return self.list_adapters()

    def list_adapters(self) -> list[dict]:
        """The adapters this session may use: the shared ones, then its own."""
        self.startup.wait()
        with self._lock:
            return self.pool.list()

    def delete_adapter(self, adapter_name: str) -> list[dict]:
        """Remove this session's adapter; the others stay loaded with their weights, and so do its weights while
        another session uses them."""
        self._require_pipe()
        with self._lock:
            key = self.pool.remove(adapter_name)  # refuses a name that is not this session's
            if key is not None:
                self.slots.remove(key)
            return self.list_adapters()

    def release_session(self, session) -> None:
        """A session ended: drop its names, and the weights nobody else uses (sessions.Tracker calls this), and
        forget its counts."""
        self.quotas.forget(session)
        if self.slots is None:
            return
        with self._lock:
            for key in self.pool.release(session):
                self.slots.remove(key)

    def _delete(self, key: str) -> None:
        """Free one resident's weights, and every session's name for it (eviction)."""
        self.slots.remove(key)
        self.pool.remove_key(key)

    def export_mix(self, adapters: dict, folder):
        """One LoRA safetensors file that equals this mix (see export.py); returns its path."""
        request = self.check_request(ImageRequest("", adapters))
        name = "_".join(f"{n}-{w:g}" for n, w in request.adapters.items())[:100] or "mix"
        with self._lock:
            path = Path(folder) / f"mix_{name}.safetensors"
            self.pool.check_loaded(request.adapters)
            for adapter_name in request.adapters:
                algorithm = self.pool.get(adapter_name).report.get("algorithm", "LoRA")
                if algorithm != "LoRA":  # peft has no conversion of a LoHa / LoKr to LoRA factors
                    raise InputError(
                        f"{adapter_name!r} is a {algorithm} adapter; a mix exports as one LoRA file (its parts "
                        "concatenated), which a LoHa or LoKr is not. Export a mix of LoRAs only"
                    )
            by_slot = self.slots.place(self.pool.mix(request.adapters))
            return save_mix(self.pipe, by_slot, path, self.info.model_id, label=request.adapters)

    # --- generation ----------------------------------------------------------------------------------------------

    def check_request(self, request: ImageRequest) -> ImageRequest:
        """Validate every field and fill the pipeline's defaults; raises before anything runs."""
        info = self._require_pipe()
        mix = request.adapters or {}
        if not isinstance(mix, dict) or not all(isinstance(name, str) for name in mix):
            raise InputError(
                f"adapters must map adapter names to weights, like {{'style': 0.8}}, got {type(mix).__name__} "
                f"{mix!r:.80}"
            )
        with self._lock:
            self.pool.check_loaded(mix)
        weights = {name: limits.check_weight(name, w) for name, w in mix.items()}
        # the pipeline family's ranges (image/families.py); a refusal names the range and the family
        steps, guidance, width, height = families.check_ranges(
            self.family,
            info,
            info.default_steps if request.steps is None else request.steps,
            info.default_guidance_scale if request.guidance_scale is None else request.guidance_scale,
            info.default_width if request.width is None else request.width,
            info.default_height if request.height is None else request.height,
        )
        checked = ImageRequest(
            prompt=limits.check_prompt("prompt", request.prompt),
            negative_prompt=limits.check_prompt("negative_prompt", request.negative_prompt or ""),
            adapters=weights,
            use_adapters=limits.check_bool("use_adapters", request.use_adapters),
            seed=limits.check_int("seed", request.seed, limits.SEED_MIN, limits.SEED_MAX),
            steps=steps,
            guidance_scale=guidance,
            width=width,
            height=height,
        )
        default = (info.default_steps, info.default_width, info.default_height)
        budget = settings.current().max_image_cost
        limits.check_image_cost(checked.steps, checked.width, checked.height, default, budget)
        return checked

    def generate(self, request: ImageRequest, progress=None):
        """One PIL image for `request`. `progress(step, total)` is called after each denoising step."""
        request = self.check_request(request)
        with self._lock:
            # again: another request may have deleted one meanwhile
            self.pool.check_loaded(request.adapters)
            return self._stamped(self._run(request, progress), request)

    def compare(self, request: ImageRequest, progress=None):
        """(base image, adapted image) with the same seed and settings."""
        request = self.check_request(request)
        with self._lock:
            self.pool.check_loaded(request.adapters)
            base = dataclasses.replace(request, use_adapters=False)
            return self._stamped(self._run(base, progress), base), self._stamped(self._run(request, progress), request)

    def _stamped(self, image, request: ImageRequest):
        """`image` carrying its recipe (recipe.py); called with the lock held, so the facts are those that made it."""
        # by this session's names: two visitors may call different files by one name (docs/SESSIONS.md)
        records = {name: self.pool.get(name) for name in request.adapters}
        return recipe.stamp(image, recipe.recipe(self.info, records, request))

    def _apply_mix(self, request: ImageRequest) -> None:
        mix = self.pool.mix(request.adapters) if request.use_adapters else {}  # by resident key
        self.pool.touch(mix)
        self.slots.activate(mix)  # an empty mix is the base: same as the disable toggle

    def _run(self, request: ImageRequest, progress):
        """The pipeline call for `request`, with its mix applied; called with the lock held.

        Between denoising steps it hands the lock to whoever waits (turns.py). What they may change in between is
        put back before the next step: the mix (they apply their own), and through pipeline.CallState the
        scheduler and the per-call attributes the pipeline's family declares (families.Family.call_state). A
        pipeline of a family that declares none keeps the lock to its last step (docs/DEVELOPMENT.md#turns).
        """
        pipe = self.pipe
        self._apply_mix(request)

        def resume(call: pipeline.CallState):
            if self.pipe is not pipe:
                raise InputError("the generation stopped: the base pipeline was replaced meanwhile")
            self.pool.check_loaded(request.adapters if request.use_adapters else {})
            call.restore()
            self._apply_mix(request)

        def after_step(step: int, call: pipeline.CallState):
            if progress is not None:
                progress(step + 1, request.steps)
            between_steps(
                self._lock, "the generation", lambda: resume(call), before=call.save, hand_over=call.can_hand_over
            )

        return pipeline.run(pipe, self._scheduler, request, after_step, self.family)
