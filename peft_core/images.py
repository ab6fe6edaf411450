"""The image studio: one pipeline, its resident LoRA adapters, and generation with a per-request mix.

Data flows one way: request (prompt, mix, seed) -> validate -> apply the mix under the lock -> pipeline -> image.
The pipeline and the resident adapters are shared by every user, so they live here behind one lock; the mix
(which adapters, at which weights, or none) belongs to each request. Resident adapters wait in RAM and only the
ones in use sit in the pipeline (slots.py), so a switch, a generation or a load costs the same with 1 adapter
resident or 64, and the applied mix is fused into the base weights.
"""

import dataclasses
from dataclasses import dataclass, field

from peft_core import bundled, hub, limits, pipeline_checks, settings
from peft_core.adapters import AdapterInfo, check_layer_count, read_lora_file, trigger_words
from peft_core.errors import AdapterError, HubError, InputError
from peft_core.runtime import pick_device, quiet_libraries
from peft_core.slots import LoraSlots
from peft_core.startup import Startup
from peft_core.turns import TurnLock, between_steps

# Files a diffusers pipeline needs; pickle weights are left out on purpose, and so are top-level weights: those
# are single-file checkpoints (for A1111 and the like) that from_pretrained never reads, often several GB each.
# (fnmatch's "*" matches "/", so "*.json" covers the component folders too.)
PIPELINE_PATTERNS = ["*.json", "*.txt", "*.model", "README.md", "*/*.safetensors"]
# Used when a pipeline's own config does not say better (SD 1.x-like defaults).
FALLBACK_STEPS, FALLBACK_GUIDANCE = 25, 7.0


@dataclass(frozen=True)
class ImageRequest:
    """One generation: everything that decides the image, so equal requests give equal images."""

    prompt: str
    adapters: dict = field(default_factory=dict)  # this request's mix: adapter_name -> weight
    use_adapters: bool = True  # False is the disable toggle: exactly the base output
    seed: int = 0
    steps: int | None = None  # None: the pipeline's default
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    negative_prompt: str = ""


@dataclass
class PipelineInfo:
    model_id: str
    revision: str
    pipeline_class: str
    device: str
    dtype: str
    default_steps: int
    default_guidance_scale: float
    default_width: int
    default_height: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class ImageStudio:
    """Owns the diffusion pipeline and its resident adapters; safe to share between threads."""

    def __init__(self, device: str | None = None):
        self.device, self.dtype = pick_device(device)
        # Served in arrival order; a generation hands it over between denoising steps (turns.py), so one visitor's
        # big request delays another's small one by a step, not by the whole request.
        self._lock = TurnLock()
        self.startup = Startup()  # app.py loads the defaults in the background; calls wait for them
        self.pipe = None
        self._scheduler = None  # the loaded scheduler, untouched: every generation steps a copy of its own
        self.slots: LoraSlots | None = None  # the resident adapters of self.pipe, in RAM and in its slots
        self.info: PipelineInfo | None = None
        self._adapters: dict[str, AdapterInfo] = {}  # insertion order = load order
        self._last_used: dict[str, int] = {}  # adapter_name -> request counter, for least-recently-used eviction
        self._requests = 0

    # --- base pipeline -------------------------------------------------------------------------------------------

    def load_pipeline(self, model_id: str, revision: str = "main") -> dict:
        """Load a base pipeline by Hub id (or bundled id). The old pipeline and its adapters stay until it works."""
        self.startup.wait()  # else the defaults, still loading, would replace it
        repo = hub.open_repo(model_id, revision)
        if self.info is not None and settings.current().lock_base:
            if (repo.repo_id, repo.revision) == (self.info.model_id, self.info.revision):
                return self.pipeline_info()  # already loaded: reloading would only drop every adapter
            raise InputError(
                f"this Space is locked to the base {self.info.model_id!r} (STUDIO_LOCK_BASE); {repo.repo_id!r} "
                f"(revision {repo.revision!r}) cannot replace it"
            )
        sizes = repo.file_sizes()
        files = sorted(sizes)
        if "model_index.json" not in files:
            raise HubError(
                f"{repo.repo_id!r} is not a diffusers pipeline (no model_index.json); files: {', '.join(files[:10])}"
            )
        hub.check_snapshot_size(repo, sizes, PIPELINE_PATTERNS)
        pipeline_checks.check_pipeline(repo, sizes, self.dtype)  # its configs and card, before anything is built
        folder = repo.snapshot(PIPELINE_PATTERNS)
        pipe = self._from_pretrained(repo.repo_id, folder)
        info = PipelineInfo(
            model_id=repo.repo_id,
            revision=repo.revision,
            pipeline_class=type(pipe).__name__,
            device=self.device,
            dtype=str(self.dtype).replace("torch.", ""),
            **_pipeline_defaults(pipe, repo.card_data()),
        )
        config = settings.current()
        slots = LoraSlots(pipe, k=config.lora_slots, fuse=config.fuse, fuse_max_mb=config.fuse_max_mb)
        with self._lock:
            self.pipe, self.info, self.slots, self._scheduler = pipe, info, slots, pipe.scheduler
            self._adapters.clear()  # adapters belong to the base they were loaded into
            self._last_used.clear()
        return info.to_dict()

    def _from_pretrained(self, repo_id: str, folder):
        from diffusers import DiffusionPipeline

        with quiet_libraries():
            try:
                # No custom_pipeline, no trust_remote_code: only code that ships with diffusers runs.
                pipe = DiffusionPipeline.from_pretrained(
                    folder, dtype=self.dtype, use_safetensors=True, trust_remote_code=False
                )
            except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError, RuntimeError) as exc:
                raise HubError(f"{repo_id!r} could not be loaded as a diffusers pipeline: {exc}") from None
        if not hasattr(pipe, "load_lora_weights"):
            raise AdapterError(f"{type(pipe).__name__} ({repo_id!r}) does not support LoRA adapters")
        pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def pipeline_info(self) -> dict:
        return self._require_pipe().to_dict()

    def _require_pipe(self) -> PipelineInfo:
        self.startup.wait()
        if self.pipe is None or self.info is None:
            raise InputError("no base pipeline is loaded; load one first (for example 'adapter-studio/tiny-shapes')")
        return self.info

    # --- adapters ------------------------------------------------------------------------------------------------

    def load_adapter(self, repo_id: str, weight_name: str = "", adapter_name: str = "", revision: str = "main"):
        """Load a LoRA by Hub id and keep it resident; returns every resident adapter.

        The file is resolved, downloaded and checked before the lock is taken, so a slow download does not hold
        up generations, and a bad file leaves the pipeline untouched.
        """
        self._require_pipe()
        repo = hub.open_repo(repo_id, revision)
        if adapter_name and adapter_name.strip():
            adapter_name = limits.check_adapter_name(adapter_name)
            limits.check_free(adapter_name, self._adapters)
        sizes = repo.file_sizes()
        weight_name = hub.pick_weight_name(repo, weight_name or "", list(sizes))
        hub.check_file_size(repo, weight_name, sizes[weight_name], settings.current().max_adapter_mb)
        lora = hub.read_healing_cache(
            repo, [weight_name], lambda force: repo.file_path(weight_name, force), read_lora_file
        )
        words = trigger_words(repo.card_data()) if "README.md" in sizes else []
        with self._lock:
            if not adapter_name or not adapter_name.strip():
                adapter_name = limits.derive_adapter_name(repo.repo_id, self._adapters)
            limits.check_free(adapter_name, self._adapters)
            evict = self._eviction_candidate()
            source = f"{repo.repo_id}/{weight_name}"
            self.slots.load(adapter_name, lambda slot_name: self._inject(slot_name, lora, source))
            if evict is not None:
                self._delete(evict)
            self._adapters[adapter_name] = AdapterInfo(
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
            )
            return self.list_adapters()

    def _eviction_candidate(self) -> str | None:
        """The adapter to drop so a new one fits under the resident cap: the least recently used one that is
        neither bundled nor in the applied mix. Raises when the cap is reached and nothing may go."""
        cap = settings.current().max_resident_adapters
        if len(self._adapters) < cap:
            return None
        in_use = set(self.slots.applied)
        candidates = [
            name
            for name in sorted(self._adapters, key=lambda n: self._last_used.get(n, 0))
            if name not in in_use and bundled.bundled_path(self._adapters[name].repo_id) is None
        ]
        if not candidates:
            raise InputError(
                f"{len(self._adapters)} adapters are loaded, the most this Space keeps ({cap}), and all are bundled "
                "or in use; delete one first"
            )
        return candidates[0]

    def _inject(self, adapter_name: str, lora, source: str) -> None:
        """load_lora_weights under `adapter_name` (a slot's name), then check that the adapter really landed; on any
        failure, undo it."""
        pipe = self.pipe
        check_layer_count(lora, pipe, source, self.info.model_id)  # before peft matches its layers one by one
        try:
            with quiet_libraries():
                # Tensors, never the file: given a path, diffusers would build the LoraConfig from the file's
                # `lora_adapter_metadata` (a stranger's init_lora_weights, target_modules ...); given a dict it
                # builds it from the key names and alphas read_lora_file checked (plain names, no regex).
                # A copy: diffusers converts the dict in place, and the caller may reuse it. low_cpu_mem_usage off:
                # for LoRA-sized tensors its meta-device path is slower here (bench/load.py: 1.25-1.35x).
                pipe.load_lora_weights(dict(lora.state_dict), adapter_name=adapter_name, low_cpu_mem_usage=False)
            registered = _count_lora_layers(pipe, adapter_name)
        except Exception as exc:
            self._undo_load(adapter_name)
            if "not found in the base model" in str(exc):  # peft's words when no key matches a module at all
                raise AdapterError(
                    f"{source} ({lora.layout} layout) names {lora.num_layers} LoRA layers but none match "
                    f"{self.info.model_id!r}: it was probably made for another base model"
                ) from None
            raise AdapterError(
                f"{source} ({lora.layout} layout) does not fit {self.info.model_id!r}: {_first_line(exc)}"
            ) from None
        if registered < lora.num_layers:
            self._undo_load(adapter_name)
            raise AdapterError(
                f"{source} ({lora.layout} layout) names {lora.num_layers} LoRA layers but only {registered} match "
                f"{self.info.model_id!r}: it was probably made for another base model"
            )

    def _undo_load(self, adapter_name: str) -> None:
        """Remove whatever a failed load registered, so the pipeline is exactly as before."""
        pipe = self.pipe
        if adapter_name in {a for names in pipe.get_list_adapters().values() for a in names}:
            with quiet_libraries():
                pipe.delete_adapters(adapter_name)
        for component in pipe._lora_loadable_modules:
            model = getattr(pipe, component, None)
            config = getattr(model, "peft_config", None)
            if isinstance(config, dict):
                config.pop(adapter_name, None)

    def list_adapters(self) -> list[dict]:
        self.startup.wait()
        with self._lock:
            return [info.to_dict() for info in self._adapters.values()]

    def delete_adapter(self, adapter_name: str) -> list[dict]:
        """Remove one adapter; the others stay loaded with their weights."""
        self._require_pipe()
        with self._lock:
            if adapter_name not in self._adapters:
                raise InputError(f"no adapter named {adapter_name!r}; loaded: {', '.join(self._adapters) or 'none'}")
            self._delete(adapter_name)
            return self.list_adapters()

    def _delete(self, adapter_name: str) -> None:
        with quiet_libraries():
            self.slots.remove(adapter_name)
        del self._adapters[adapter_name]
        self._last_used.pop(adapter_name, None)

    def export_mix(self, adapters: dict, folder):
        """One LoRA safetensors file that equals this mix (see export.py); returns its path."""
        from pathlib import Path

        from peft_core.export import save_mix

        request = self.check_request(ImageRequest("", adapters))
        name = "_".join(f"{n}-{w:g}" for n, w in request.adapters.items())[:100] or "mix"
        with self._lock:
            path = Path(folder) / f"mix_{name}.safetensors"
            limits.check_loaded(request.adapters, self._adapters)
            by_slot = self.slots.place(request.adapters)
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
            limits.check_loaded(mix, self._adapters)
        weights = {name: limits.check_weight(name, w) for name, w in mix.items()}
        checked = ImageRequest(
            prompt=limits.check_prompt("prompt", request.prompt),
            negative_prompt=limits.check_prompt("negative_prompt", request.negative_prompt or ""),
            adapters=weights,
            use_adapters=limits.check_bool("use_adapters", request.use_adapters),
            seed=limits.check_int("seed", request.seed, limits.SEED_MIN, limits.SEED_MAX),
            steps=limits.check_int(
                "steps",
                info.default_steps if request.steps is None else request.steps,
                limits.STEPS_MIN,
                limits.STEPS_MAX,
            ),
            guidance_scale=limits.check_number(
                "guidance_scale",
                info.default_guidance_scale if request.guidance_scale is None else request.guidance_scale,
                limits.GUIDANCE_MIN,
                limits.GUIDANCE_MAX,
            ),
            width=limits.check_size("width", info.default_width if request.width is None else request.width),
            height=limits.check_size("height", info.default_height if request.height is None else request.height),
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
            limits.check_loaded(request.adapters, self._adapters)
            return self._run(request, progress)

    def compare(self, request: ImageRequest, progress=None):
        """(base image, adapted image) with the same seed and settings."""
        request = self.check_request(request)
        with self._lock:
            limits.check_loaded(request.adapters, self._adapters)
            base = self._run(dataclasses.replace(request, use_adapters=False), progress)
            return base, self._run(request, progress)

    def _apply_mix(self, request: ImageRequest) -> None:
        mix = tuple((n, w) for n, w in request.adapters.items()) if request.use_adapters else ()
        self._requests += 1
        self._last_used.update({name: self._requests for name, _ in mix})
        self.slots.activate(dict(mix))  # an empty mix is the base: same as the disable toggle

    def _run(self, request: ImageRequest, progress):
        """The pipeline call for `request`, with its mix applied; called with the lock held.

        Between denoising steps it hands the lock to whoever waits (turns.py). What they may change in between is
        put back before the next step: the mix (they apply their own), the scheduler (each call steps its own
        copy, made here) and the pipeline's per-call attributes (`_guidance_scale`, `_num_timesteps` ...).
        """
        import copy

        import torch

        pipe = self.pipe
        pipe.scheduler = scheduler = copy.deepcopy(self._scheduler)
        self._apply_mix(request)
        saved: dict = {}

        def save():
            saved.clear()
            saved.update({k: v for k, v in vars(pipe).items() if k.startswith("_") and not k.startswith("__")})

        def resume():
            if self.pipe is not pipe:
                raise InputError("the generation stopped: the base pipeline was replaced meanwhile")
            limits.check_loaded(request.adapters if request.use_adapters else {}, self._adapters)
            pipe.scheduler = scheduler
            vars(pipe).update(saved)
            self._apply_mix(request)

        def callback(pipe, step, timestep, kwargs):
            if progress is not None:
                progress(step + 1, request.steps)
            between_steps(self._lock, "the generation", resume, before=save)
            return kwargs

        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        with torch.inference_mode():
            result = pipe(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or None,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance_scale,
                width=request.width,
                height=request.height,
                generator=generator,
                callback_on_step_end=callback,
            )
        return result.images[0]


def _count_lora_layers(pipe, adapter_name: str) -> int:
    """How many LoRA layers across the pipeline's parts carry `adapter_name`."""
    count = 0
    for component in pipe._lora_loadable_modules:
        model = getattr(pipe, component, None)
        if model is None:
            continue
        for module in model.modules():
            lora_a = getattr(module, "lora_A", None)
            if lora_a is not None and adapter_name in lora_a:
                count += 1
    return count


def _pipeline_defaults(pipe, card_data: dict) -> dict:
    """Steps, guidance and size to use when a request leaves them out: the model card's (checked with the ranges
    of a request, see pipeline_checks), else the pipeline's, so the defaults always make a valid request."""
    card = pipeline_checks.check_studio_defaults(card_data)
    sample_size = getattr(getattr(getattr(pipe, "unet", None), "config", None), "sample_size", None)
    if isinstance(sample_size, (list, tuple)) and sample_size:  # (height, width) in some configs
        sample_size = sample_size[0]
    size = 512
    if type(sample_size) is int and sample_size > 0:  # noqa: E721 - bool is an int subclass
        size = sample_size * getattr(pipe, "vae_scale_factor", 8)
    # sample_size comes from the repo's config too: keep the default a size a request may ask for.
    size = min(max(size - size % limits.SIZE_MULTIPLE, limits.SIZE_MIN), limits.SIZE_MAX)
    return {
        "default_steps": card.get("steps", FALLBACK_STEPS),
        "default_guidance_scale": card.get("guidance_scale", FALLBACK_GUIDANCE),
        "default_width": card.get("width", size),
        "default_height": card.get("height", size),
    }


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
