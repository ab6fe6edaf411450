"""Every picture carries its recipe, as AUTOMATIC1111's PNG info does: a PNG text chunk holding what made it.

The chunk (key RECIPE_KEY) is JSON: the base's id and revision, each adapter's repo, revision, file and weight,
the prompt, negative prompt, seed, steps, guidance and size. `stamp` writes it on a generated image (the studio
does, under its lock, so the facts are those of the pipeline that made it); `read` takes it back from a PNG sent
by anyone, checked field by field; `restore` loads what it needs and answers the request that remakes the image,
with a line for each part it could not restore.
"""

import json

from peft_core.errors import InputError, StudioError
from peft_core.image.requests import ImageRequest

RECIPE_KEY = "adapter-studio-recipe"
RECIPE_VERSION = 1
MAX_RECIPE_CHARS = 32_000  # a recipe of the most adapters a mix may hold is ~5 kB; a stranger's PNG may say more
MAX_PNG_MB = 40  # the PNG itself is decoded only as far as its text chunks, but is read from disk whole


def recipe(info, records: dict, request) -> dict:
    """The recipe of `request` (checked, defaults filled) made on the pipeline `info` (PipelineInfo) with the
    resident adapters `records` ({adapter_name: AdapterInfo})."""
    mix = request.adapters if request.use_adapters else {}
    adapters = [{"adapter_name": name, "repo_id": records[name].repo_id, "revision": records[name].revision,
                 "weight_name": records[name].weight_name, "weight": float(weight)}
                for name, weight in mix.items()]  # fmt: skip
    return {
        "version": RECIPE_VERSION,
        "base": {"model_id": info.model_id, "revision": info.revision},
        "adapters": adapters,
        "use_adapters": bool(request.use_adapters),
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "seed": request.seed,
        "steps": request.steps,
        "guidance_scale": request.guidance_scale,
        "width": request.width,
        "height": request.height,
    }


def stamp(image, made: dict):
    """`image` with its recipe in `image.info`, which PIL writes as a PNG text chunk when saved with it (gradio's
    page does; API files are saved by `png_info`)."""
    image.info[RECIPE_KEY] = json.dumps(made, ensure_ascii=False)
    return image


def png_info(image):
    """The PngInfo to save `image` with so that its recipe travels in the file."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if RECIPE_KEY in image.info:
        info.add_itxt(RECIPE_KEY, image.info[RECIPE_KEY])
    return info


def read(path) -> dict:
    """The recipe in the PNG at `path`, checked: a refusal names what is wrong."""
    from pathlib import Path

    from PIL import Image, UnidentifiedImageError

    if Path(path).stat().st_size > MAX_PNG_MB * 2**20:
        raise InputError(f"the file is over {MAX_PNG_MB} MB; a PNG made here is far smaller")
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise InputError(f"the file is a {image.format} image; only PNGs made here carry a recipe")
            text = getattr(image, "text", {}).get(RECIPE_KEY)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError("the file is not a readable PNG image") from None
    if text is None:
        raise InputError("this PNG carries no Adapter Studio recipe (only images made here do)")
    if len(text) > MAX_RECIPE_CHARS:
        raise InputError(f"this PNG's recipe is {len(text):,} characters long; at most {MAX_RECIPE_CHARS:,}")
    try:
        made = json.loads(text)
    except ValueError:
        raise InputError("this PNG's recipe is not valid JSON") from None
    return _check(made)


def _check(made) -> dict:
    """Shapes and types only; the studio checks values (ids, weights, sizes) when it loads and generates."""
    where = "this PNG's recipe"
    if not isinstance(made, dict) or made.get("version") != RECIPE_VERSION:
        raise InputError(f"{where} is not an Adapter Studio recipe of version {RECIPE_VERSION}")
    base, adapters = made.get("base"), made.get("adapters")
    if not isinstance(base, dict) or not all(isinstance(base.get(k), str) for k in ("model_id", "revision")):
        raise InputError(f"{where} must name its base as {{'model_id': ..., 'revision': ...}}")
    fields = ("adapter_name", "repo_id", "revision", "weight_name")
    if not isinstance(adapters, list) or not all(
        isinstance(a, dict) and all(isinstance(a.get(k), str) for k in fields)
        and isinstance(a.get("weight"), (int, float)) and not isinstance(a.get("weight"), bool) for a in adapters
    ):  # fmt: skip
        raise InputError(f"{where} must list its adapters with {', '.join(fields)} and a numeric weight")
    text, number, integer = (str, "text"), ((int, float), "a number"), (int, "an integer")
    kinds = {"prompt": text, "negative_prompt": text, "use_adapters": (bool, "true or false"), "seed": integer,
             "steps": integer, "guidance_scale": number, "width": integer, "height": integer}  # fmt: skip
    for key, (kind, want) in kinds.items():
        value = made.get(key)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise InputError(f"{where} has {key}={value!r}, which is not {want}")
    return made


def restore(studio, made: dict) -> tuple:
    """Load what `made` (a checked recipe) needs into `studio` (an ImageStudio, handed in by the caller: this module
    never imports it) and return the request that remakes its image,
    with a line for each part not restored. A base that will not load keeps the current one; an adapter that will
    not load is left out of the mix. Answers (ImageRequest, [note])."""
    notes = []
    base = made["base"]
    info = studio.info
    if info is None or (info.model_id, info.revision) != (base["model_id"], base["revision"]):
        try:
            studio.load_base(base["model_id"], base["revision"])
        except StudioError as exc:
            notes.append(f"base {base['model_id']} @ {base['revision']} not loaded: {exc}")
    mix = {}
    for a in made["adapters"]:
        key = (a["repo_id"], a["revision"], a["weight_name"])
        resident = {(r["repo_id"], r["revision"], r["weight_name"]): r["adapter_name"] for r in studio.list_adapters()}
        if key not in resident:
            taken = a["adapter_name"] in {r["adapter_name"] for r in studio.list_adapters()}
            try:
                loaded = studio.load_adapter(a["repo_id"], a["weight_name"], "" if taken else a["adapter_name"],
                                             a["revision"])  # fmt: skip
                resident[key] = loaded[-1]["adapter_name"]
            except StudioError as exc:
                notes.append(f"adapter {a['adapter_name']} ({a['repo_id']} @ {a['revision']}) not loaded: {exc}")
                continue
        mix[resident[key]] = float(a["weight"])
    request = ImageRequest(made["prompt"], mix, made["use_adapters"], made["seed"], made["steps"],
                           float(made["guidance_scale"]), made["width"], made["height"],
                           made["negative_prompt"])  # fmt: skip
    return request, notes
