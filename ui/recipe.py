"""PNGs that carry their recipe, for API clients and the page (the recipe itself: peft_core/image/recipe.py)."""

import dataclasses
import tempfile
import uuid
from pathlib import Path

from gradio.data_classes import FileData

from peft_core.errors import InputError
from peft_core.image import recipe
from peft_core.image.studio import ImageStudio

OUTPUT_DIR = Path(tempfile.gettempdir()) / "adapter-studio"  # the PNGs the API answers with


def recipe_png(image) -> FileData:
    """A PNG on disk for gradio_client (a PIL image would reach it as a repr string), with the image's recipe as a
    text chunk."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUTPUT_DIR / f"{uuid.uuid4().hex}.png"
    image.save(path, format="PNG", pnginfo=recipe.png_info(image))
    return FileData(path=str(path), mime_type="image/png")


def path_of(file) -> str:
    """The local path of an uploaded file, however gradio handed it over (FileData, its dict, or a path)."""
    path = getattr(file, "path", None) or (file.get("path") if isinstance(file, dict) else file)
    if not isinstance(path, str) or not path:
        raise InputError("send a PNG file made by Adapter Studio (with gradio_client: handle_file('image.png'))")
    return path


def restore_png(images: ImageStudio, file) -> dict:
    """Restore what the PNG `file` was made with: {"request": the /generate arguments that remake it, "recipe":
    what the PNG said, "not_restored": a line for each part that could not be restored}."""
    made = recipe.read(path_of(file))
    request, notes = recipe.restore(images, made)
    # An ImageRequest's fields are /generate's parameters, by the same names.
    return {"request": dataclasses.asdict(request), "recipe": made, "not_restored": notes}
