"""What one image request asks for: `ImageRequest`, in a module of its own so that the studio and those it hands
work to (recipe.py, thumbnails.py) all import it from here and none of them imports the studio."""

from dataclasses import dataclass, field


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
