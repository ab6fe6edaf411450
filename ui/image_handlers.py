"""What the Images tab's events do: each handler a few lines into the image studio.

Handlers receive their inputs by parameter name (gradio's `inputs_kwargs`) and answer with a dict keyed by the
page's components, so neither side depends on the order of a list. `p` is the page (ui/images_tab.py, ImagesPage).
"""

import dataclasses
import tempfile

import gradio as gr

from peft_core import presets, settings, turns
from peft_core.image.prompts import with_trigger_words
from peft_core.image.requests import ImageRequest, PipelineInfo
from peft_core.image.studio import ImageStudio
from peft_core.image.sweep import Axis, composite_axes, parse_axis, sweep_axes
from ui.common import gpu, hub_progress, page_url, still_wanted, user_errors
from ui.image_cards import cards, kept_ticks, mix_of
from ui.preset_gallery import check_available, gallery_items
from ui.recipe import restore_png
from ui.snippets import image_snippet

# What the settings start at before a pipeline is loaded (the page is served while the default one loads): the
# bundled pipeline's defaults, and the ranges of no known family.
FALLBACK = PipelineInfo(model_id="", revision="", pipeline_class="", device="", dtype="", default_steps=20,
                        default_guidance_scale=5.0, default_width=32, default_height=32)  # fmt: skip
LOADING = "Loading the pipeline…"  # shown until the page's first load answers (the defaults may be loading)
# The pipeline's defaults the page shows: {default's key: the page's component}.
SETTINGS = {"steps": "steps", "guidance_scale": "guidance", "width": "width", "height": "height"}


def pipeline_markdown(info: PipelineInfo | None) -> str:
    if not info:
        return "No pipeline loaded."
    return (
        f"**{info.model_id}** @ `{info.revision}` — {info.pipeline_class} on {info.device} ({info.dtype}); "
        f"defaults: {info.default_steps} steps, guidance {info.default_guidance_scale}, "
        f"{info.default_width}×{info.default_height}"
    )


def size_range(info: PipelineInfo, value: int) -> int:
    """The width/height sliders' maximum for a pipeline: four times its default size (a 32-px model does not need
    sliders to 1024), within its family's range (image/families.py), and never below `value`."""
    multiple = info.size_multiple
    top = min(info.size_max, 4 * max(info.default_width, info.default_height))
    return max(top - top % multiple, int(value))


def ranges(info: PipelineInfo, values: dict) -> dict:
    """{setting: slider update} with the ranges a request may use on pipeline `info`'s family (the same ranges the
    studio checks a request against, answered by /load_pipeline), so the sliders never offer a refused value."""
    size = {"minimum": info.size_min, "step": info.size_multiple}
    return {
        "steps": {"minimum": info.steps_min, "maximum": info.steps_max},
        "guidance_scale": {"minimum": info.guidance_min, "maximum": info.guidance_max},
        "width": {**size, "maximum": size_range(info, values["width"])},
        "height": {**size, "maximum": size_range(info, values["height"])},
    }


# The sweep's axis pickers: an adapter's name sweeps its weight; these values (each with a ':', which no adapter
# name holds, peft_core/limits.py) sweep a setting of the request (peft_core/image/sweep.py, AXIS_KINDS).
SETTING_AXES = {":seed": "seed", ":steps": "steps", ":guidance": "guidance", ":prompt": "prompt"}
SETTING_AXIS_LABELS = {":seed": "seed", ":steps": "steps", ":guidance": "guidance", ":prompt": "prompt S/R"}


def x_choices(names: list[str]) -> list:
    """The X axis's choices: each adapter's weight, then the seed, steps, guidance and a prompt search-and-replace."""
    return [(f"weight of {n}", n) for n in names] + [(label, v) for v, label in SETTING_AXIS_LABELS.items()]


def y_choices(names: list[str]) -> list:
    """The Y axis's choices: a named "none" first (a blank entry read as a glitch), then X's."""
    return [("none (X only)", "")] + x_choices(names)


def sweep_axis(which: str, choice: str, text: str, info: PipelineInfo | None) -> Axis:
    """The axis picked as `choice` (an adapter's name or a SETTING_AXES value) with the values typed as `text`,
    checked against the loaded pipeline's ranges (`info`)."""
    if choice in SETTING_AXES:
        return parse_axis(which, SETTING_AXES[choice], text, ranges=info)
    return parse_axis(which, "weight", text, adapter_name=choice)


def prompt_note(r: ImageRequest) -> str:
    return f"Prompt sent: `{r.prompt}`"


def request_label(r: ImageRequest) -> str:
    """A short line naming the request an output came from: its mix (or "base"), seed, steps, size."""
    mix = ", ".join(f"{k}={v:g}" for k, v in r.adapters.items()) if r.use_adapters and r.adapters else "base"
    return f"{mix} · seed {r.seed} · {r.steps} steps · {r.width}×{r.height}"


def denoising(progress):
    return lambda step, total: progress((step, total), desc="denoising")


class ImageHandlers:
    """The Images tab's event handlers over one studio."""

    def __init__(self, images: ImageStudio, page):
        self.images, self.p = images, page
        self.presets = [p for p in presets.presets("images") if p.thumbnail.exists()]

    def gallery(self) -> list:
        """The presets, those this machine cannot run (no Hub, no GPU) greyed with the reason."""
        return gallery_items(self.presets, self.images.device)

    def pictured(self, adapters: list[dict]) -> list[dict]:
        """The adapters with the path of each one's card picture made so far ("thumbnail", None before)."""
        made = (self.images.thumbnails.get(self.images.info, a) for a in adapters)
        return [{**a, "thumbnail": str(path) if path else None} for a, path in zip(adapters, made, strict=True)]

    def refreshed(self, adapters, previous=None, ticks=None) -> dict:
        """The cards, the mix and the sweep's adapter pickers, after the resident set changed."""
        p = self.p
        ticks = kept_ticks(adapters, previous) if ticks is None else ticks
        names = [a["adapter_name"] for a in adapters]
        return {p.resident: cards(self.pictured(adapters), ticks), p.ticks: ticks,
                p.x_name: gr.update(choices=x_choices(names), value=names[0] if names else None),
                p.y_name: gr.update(choices=y_choices(names), value="")}  # fmt: skip

    def settings(self, info: PipelineInfo, values: dict | None = None) -> dict:
        """The settings sliders for pipeline `info`: `values` ({"steps": ..., "width": ...}) or its defaults, each
        slider's range the family's."""
        values = {k: (values or {}).get(k, getattr(info, f"default_{k}")) for k in SETTINGS}
        fitted = ranges(info, values)
        return {getattr(self.p, c): gr.update(value=values[k], **fitted[k]) for k, c in SETTINGS.items()}

    def request(self, v: dict, use_adapters: bool | None = None) -> ImageRequest:
        """The request the page's settings `v` ({component: value}) describe."""
        p = self.p
        mix = mix_of(v[p.ticks])
        prompt = v[p.prompt]
        if v[p.triggers]:  # also when disabled: the toggle then shows what the LoRA alone does to the same prompt
            prompt = with_trigger_words(prompt, self.images.list_adapters(), mix)
        use = not v[p.disabled] if use_adapters is None else use_adapters
        return ImageRequest(prompt=prompt, adapters=mix, use_adapters=use, seed=int(v[p.seed]), steps=int(v[p.steps]),
                            guidance_scale=float(v[p.guidance]), width=int(v[p.width]), height=int(v[p.height]),
                            negative_prompt=v[p.negative])  # fmt: skip

    @user_errors
    def ui_load_pipeline(self, model_id, revision, progress=gr.Progress(), request: gr.Request = None):
        with hub_progress(progress, f"loading {model_id}", [(model_id, revision)]):
            info = self.images.load_base(model_id, revision or "main")
        return {self.p.pipeline_md: pipeline_markdown(info), **self.refreshed([]), **self.settings(info)}

    @user_errors
    def ui_load_adapter(self, repo_id, weight_name, adapter_name, revision, ticks, progress=gr.Progress(),
                        request: gr.Request = None):  # fmt: skip
        with hub_progress(progress, f"loading {repo_id}", [(repo_id, revision)]):
            adapters = self.images.load_adapter(repo_id, weight_name, adapter_name, revision or "main")
        new = adapters[-1]
        note = f"Loaded **{new['adapter_name']}** from `{new['repo_id']}` ({new['size_mb']} MB)."
        return {self.p.load_note: note, **self.refreshed(adapters, ticks)}

    @user_errors  # the visitor's session: a picture is made with its names, through its generate path
    def ui_thumbnails(self, shown, http: gr.Request = None):
        """After each change of the cards: make the pictures they lack (peft_core/image/thumbnails.py) and redraw
        them once; no answer (no redraw) when there is nothing new, so this ends the chain it is in."""
        images = self.images
        info = images.info
        adapters = images.list_adapters() if info else []
        if any(images.thumbnails.pending(info, a) for a in adapters):
            with turns.watch(still_wanted(http, "ui_thumbnails")):
                self._make_thumbnails(adapters)
        pictured = self.pictured(adapters)
        had = [(a["adapter_name"], a.get("thumbnail")) for a in (shown or {}).get("adapters", [])]
        if had == [(a["adapter_name"], a["thumbnail"]) for a in pictured]:
            return {self.p.resident: gr.skip()}
        # the ticks as shown: the cards are drawn at the page's mix as it is then (images_tab.adapter_cards)
        return {self.p.resident: cards(pictured, (shown or {}).get("ticks", {}))}

    @gpu  # on ZeroGPU a picture made here needs a GPU lent, as a generation does
    def _make_thumbnails(self, adapters: list[dict]) -> None:
        for a in adapters:
            self.images.thumbnails.make(a)

    def deleter(self, name):
        @user_errors
        def ui_delete_adapter(ticks, request: gr.Request = None):
            """Delete `name`, keeping what Undo needs to load it back as it was: its repo, file, revision, tick."""
            gone = next((a for a in self.images.list_adapters() if a["adapter_name"] == name), None)
            shown = self.refreshed(self.images.delete_adapter(name), ticks)
            if gone is None:
                return shown
            undo = {k: gone[k] for k in ("adapter_name", "repo_id", "weight_name", "revision")}
            undo["tick"] = list((ticks or {}).get(name, [False, 1.0]))
            return {**shown, self.p.undo: undo, self.p.undo_btn: gr.update(value=f"Undo: delete {name}", visible=True)}

        return ui_delete_adapter

    @user_errors
    def ui_undo_delete(self, undo, ticks, progress=gr.Progress(), request: gr.Request = None):
        """Load the last deleted adapter back from where it came (the cache or the bundled folder: no download for
        a Hub repo just loaded), under its name, ticked and weighted as it was."""
        p = self.p
        if not undo:
            return {p.undo_btn: gr.update(visible=False)}
        with hub_progress(progress, f"loading {undo['adapter_name']} back"):
            adapters = self.images.load_adapter(undo["repo_id"], undo["weight_name"], undo["adapter_name"],
                                                undo["revision"])  # fmt: skip
        ticks = {**kept_ticks(adapters, ticks), undo["adapter_name"]: undo["tick"]}
        return {**self.refreshed(adapters, ticks=ticks), p.undo: None, p.undo_btn: gr.update(visible=False)}

    def shown(self, r: ImageRequest, image=None, compared=None) -> dict:
        """The result outputs after one request: the image or the comparison, labelled with the request that made
        it; the other cleared, so nothing on screen is left from an earlier request."""
        p, label = self.p, request_label(r)
        base, adapted = compared or (None, None)
        return {p.image: gr.update(value=image, label=f"Image · {label}" if image else "Image"),
                p.slider: gr.update(value=compared, visible=compared is not None,
                                    label=f"Compare: base | adapted (drag) · {label}"),
                p.base_image: gr.update(value=base, label=f"Base · {label}", visible=compared is not None),
                p.adapted_image: gr.update(value=adapted, label=f"Adapted · {label}", visible=compared is not None),
                p.sent: prompt_note(r)}  # fmt: skip

    # The page's long events stop between steps once their tab is closed (ui/common.py, still_wanted).
    @user_errors
    @gpu
    def ui_generate(self, values: dict, progress=gr.Progress(), http: gr.Request = None):
        r = self.request(values)
        with turns.watch(still_wanted(http, "ui_generate")):
            return self.shown(r, image=self.images.generate(r, denoising(progress)))

    @user_errors
    @gpu
    def ui_compare(self, values: dict, progress=gr.Progress(), http: gr.Request = None):
        r = self.request(values, use_adapters=True)
        with turns.watch(still_wanted(http, "ui_compare")):
            return self.shown(r, compared=tuple(self.images.compare(r, denoising(progress))))

    @user_errors
    @gpu
    def ui_sweep(self, values: dict, progress=gr.Progress(), http: gr.Request = None):
        p = self.p
        x_name, y_name = values[p.x_name], values[p.y_name]
        if not x_name:
            raise gr.Error("choose what to sweep on X: an adapter's weight, the seed, steps, guidance or a prompt S/R")
        r = self.request(values, use_adapters=True)
        if not values[p.sweep_others]:  # only the swept adapters
            r = dataclasses.replace(r, adapters={})
        info = self.images.info
        x = sweep_axis("X", x_name, values[p.x_text], info)
        y = sweep_axis("Y", y_name, values[p.y_text], info) if y_name else None
        with turns.watch(still_wanted(http, "ui_sweep")):
            cells = sweep_axes(
                self.images, r, x, y, progress=lambda i, n: progress((i, n), desc=f"cell {min(i + 1, n)} of {n}")
            )
        swept = {a.adapter_name for a in (x, y) if a is not None and a.kind == "weight"}
        others = ", ".join(f"{k}={v:g}" for k, v in r.adapters.items() if k not in swept) or "none"
        return {p.grid: composite_axes(cells, x, y),
                p.sent: f"{prompt_note(r)}; other adapters on: {others}"}  # fmt: skip

    @user_errors  # binds the visitor's session: its own adapters' trigger words, and the loads its snippet needs
    def ui_snippet(self, values: dict, http: gr.Request):
        r = self.request(values)
        return image_snippet(page_url(http), r, loads=self.images.list_adapters())

    @user_errors
    def ui_export(self, ticks, request: gr.Request = None):
        return str(self.images.export_mix(mix_of(ticks), tempfile.mkdtemp(prefix="adapter-studio-mix-")))

    @user_errors
    def ui_preset(self, ticks, progress=gr.Progress(), evt: gr.SelectData = None, request: gr.Request = None):
        p, preset = self.p, self.presets[evt.index]
        check_available(preset, self.images.device)
        needs = [(preset.base, "main"), *((a.repo_id, "main") for a in preset.adapters)]
        with hub_progress(progress, f"loading {preset.name}", needs):
            mix = presets.apply(preset, self.images)
        info = self.images.base_info()
        adapters = self.images.list_adapters()
        kept = kept_ticks(adapters, ticks)
        ticks = {name: [name in mix, mix.get(name, weight)] for name, (_, weight) in kept.items()}
        return {p.pipeline_md: pipeline_markdown(info), p.model_id: preset.base, p.prompt: preset.prompt,
                **self.refreshed(adapters, ticks=ticks), **self.settings(info, preset.extra)}  # fmt: skip

    @user_errors
    def ui_restore(self, png, ticks, progress=gr.Progress(), request: gr.Request = None):
        """A PNG made here, dropped on the page: its recipe loaded (base, adapters) and set on the page."""
        p = self.p
        if png is None:
            return {}
        with hub_progress(progress, "restoring the recipe"):
            restored = restore_png(self.images, png)
        r, notes = restored["request"], restored["not_restored"]
        info = self.images.base_info()
        adapters = self.images.list_adapters()
        kept = kept_ticks(adapters, ticks)
        ticks = {name: [name in r["adapters"], r["adapters"].get(name, w)] for name, (_, w) in kept.items()}
        note = "Restored the recipe" + (": not restored: " + "; ".join(notes) if notes else ", all of it.")
        return {p.pipeline_md: pipeline_markdown(info), p.model_id: info.model_id, p.prompt: r["prompt"],
                p.negative: r["negative_prompt"], p.seed: r["seed"], **self.settings(info, r),
                p.disabled: not r["use_adapters"], p.triggers: False, p.restore_note: note,
                **self.refreshed(adapters, ticks=ticks)}  # fmt: skip

    @user_errors
    def ui_page_load(self, request: gr.Request = None):
        """What the page shows of the studio, read when the page loads: python app.py serves the page while the
        default pipeline is still loading (peft_core/startup.py), and other users may have changed it since."""
        p, images = self.p, self.images
        images.startup.wait()
        info = images.info
        return {p.model_id: info.model_id if info else settings.current().default_pipeline,
                p.pipeline_md: pipeline_markdown(info), p.gallery: self.gallery(),
                **self.settings(info or FALLBACK),
                **self.refreshed(images.list_adapters() if info else [])}  # fmt: skip
