"""The named API: every endpoint API clients call (gradio_client, MCP), apart from the page that uses the same core.

Each endpoint is a typed function over a studio; `api_endpoint` checks its arguments' types against the
annotations, turns the core's refusals into Gradio errors and lets long work stop when its caller leaves. The
README and docs/API.md document this contract; to add an endpoint, add a function here and list it in its side's
list: app.py registers each under its function's name.
"""

import gradio as gr
from gradio.data_classes import FileData

from peft_core.image.requests import ImageRequest
from peft_core.image.studio import ImageStudio
from peft_core.text.batching import MAX_ROWS
from peft_core.text.requests import TextRequest
from peft_core.text.studio import TextStudio
from ui.common import api_endpoint
from ui.recipe import recipe_png, restore_png


def image_api(images: ImageStudio) -> list:
    """The named endpoints of the image side, typed for gradio_client (see docs/API.md)."""

    @api_endpoint
    def load_pipeline(model_id: str, revision: str = "main", http: gr.Request | None = None) -> dict:
        """Load a base diffusion pipeline by Hub id; resident adapters are cleared."""
        return images.load_base(model_id, revision).to_dict()

    @api_endpoint
    def load_adapter(
        repo_id: str, weight_name: str = "", adapter_name: str = "", revision: str = "main",
        http: gr.Request | None = None,
    ) -> list[dict]:
        """Load a LoRA by Hub id and keep it resident; returns every resident adapter."""
        return images.load_adapter(repo_id, weight_name, adapter_name, revision)

    @api_endpoint
    def list_adapters(http: gr.Request | None = None) -> list[dict]:
        """Every resident adapter with its facts."""
        return images.list_adapters()

    @api_endpoint
    def delete_adapter(adapter_name: str, http: gr.Request | None = None) -> list[dict]:
        """Remove one adapter; the others stay."""
        return images.delete_adapter(adapter_name)

    @api_endpoint
    def generate(
        prompt: str,
        adapters: dict[str, float] = {},  # noqa: B006 - gradio reads the default for the API docs; never mutated
        use_adapters: bool = True,
        seed: int = 0,
        steps: int | None = None,
        guidance_scale: float | None = None,
        width: int | None = None,
        height: int | None = None,
        negative_prompt: str = "",
        http: gr.Request | None = None,
    ) -> FileData:
        """One PNG image. `adapters` is this request's mix (name -> weight); use_adapters=False gives the base.
        steps, guidance_scale, width and height default to the pipeline's own."""
        request = ImageRequest(prompt=prompt, adapters=adapters or {}, use_adapters=use_adapters, seed=seed,
                               steps=steps, guidance_scale=guidance_scale, width=width, height=height,
                               negative_prompt=negative_prompt)  # fmt: skip
        return recipe_png(images.generate(request))

    @api_endpoint
    def compare(
        prompt: str,
        adapters: dict[str, float] = {},  # noqa: B006
        seed: int = 0,
        steps: int | None = None,
        guidance_scale: float | None = None,
        width: int | None = None,
        height: int | None = None,
        negative_prompt: str = "",
        http: gr.Request | None = None,
    ) -> tuple[FileData, FileData]:
        """Two PNG images with the same seed: the base, then the adapted one."""
        request = ImageRequest(prompt=prompt, adapters=adapters or {}, seed=seed, steps=steps,
                               guidance_scale=guidance_scale, width=width, height=height,
                               negative_prompt=negative_prompt)  # fmt: skip
        base, adapted = images.compare(request)
        return recipe_png(base), recipe_png(adapted)

    @api_endpoint
    def recipe(png: FileData, http: gr.Request | None = None) -> dict:
        """Restore what a PNG made here was made with: loads its base and adapters where needed. Returns
        {"request": the /generate arguments that remake it, "recipe": the PNG's, "not_restored": [what could not
        be, and why]}."""
        return restore_png(images, png)

    return [load_pipeline, load_adapter, list_adapters, delete_adapter, generate, compare, recipe]


# Text generations (these endpoints and the Text tab's buttons) run up to one batch at once: the studio gathers
# concurrent ones into one forward pass (peft_core/text/batching.py), which one call at a time would never see.
TEXT_GENERATION = {"concurrency_id": "text-generation", "concurrency_limit": MAX_ROWS}


def text_api(studio: TextStudio) -> list:
    """The named endpoints of the text side, typed for gradio_client (see docs/API.md)."""

    @api_endpoint
    def load_text_model(model_id: str, revision: str = "main", http: gr.Request | None = None) -> dict:
        """Load a causal LM by Hub id; an adapter repo brings its base model and the adapter on it."""
        info = studio.load_base(model_id, revision)
        return {**info.to_dict(), "adapters": studio.list_adapters()}

    @api_endpoint
    def load_text_adapter(
        repo_id: str, adapter_name: str = "", revision: str = "main", http: gr.Request | None = None
    ) -> list[dict]:
        """Load a PEFT adapter by Hub id; returns every adapter."""
        return studio.load_adapter(repo_id, adapter_name, revision)

    @api_endpoint
    def add_text_adapter(
        adapter_name: str, r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0, target_modules: str = "",
        http: gr.Request | None = None,
    ) -> list[dict]:
        """Add a new trainable LoRA (target_modules comma-separated; empty: peft's default for the model)."""
        return studio.add_adapter(adapter_name, r, lora_alpha, lora_dropout, target_modules)

    @api_endpoint
    def train_text_adapter(
        adapter_name: str, text: str, steps: int, learning_rate: float, http: gr.Request | None = None
    ) -> dict:
        """Train an added adapter on the given text; returns the loss before and after, and the curve."""
        return studio.train_adapter(adapter_name, text, steps, learning_rate)

    @api_endpoint
    def merge_text_adapters(
        adapters: dict[str, float], new_adapter_name: str, combination_type: str = "linear", density: float = 0.5,
        http: gr.Request | None = None,
    ) -> list[dict]:
        """peft's add_weighted_adapter: a new adapter from weighted existing ones (density for ties/dare/prune)."""
        return studio.merge_adapters(adapters, new_adapter_name, combination_type, density)

    @api_endpoint
    def list_text_adapters(http: gr.Request | None = None) -> list[dict]:
        """Every adapter of the text model with its facts."""
        return studio.list_adapters()

    @api_endpoint
    def delete_text_adapter(adapter_name: str, http: gr.Request | None = None) -> list[dict]:
        """Remove one adapter; the others stay."""
        return studio.delete_adapter(adapter_name)

    @api_endpoint
    def generate_text(
        prompt: str,
        adapters: list[str] = [],  # noqa: B006 - gradio reads the default for the API docs; never mutated
        use_adapters: bool = True,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        seed: int = 0,
        temperature: float = 1.0,
        http: gr.Request | None = None,
    ) -> str:
        """The completion with `adapters` active for this request only; use_adapters=False gives the base."""
        request = TextRequest(prompt=prompt, adapters=adapters or [], use_adapters=use_adapters,
                              max_new_tokens=max_new_tokens, do_sample=do_sample, seed=seed, temperature=temperature)
        return studio.generate(request)

    @api_endpoint
    def compare_text(
        prompt: str,
        adapters: list[str] = [],  # noqa: B006
        max_new_tokens: int = 32,
        do_sample: bool = False,
        seed: int = 0,
        temperature: float = 1.0,
        http: gr.Request | None = None,
    ) -> tuple[str, str]:
        """Base text, then adapted text, with the same prompt, seed and settings."""
        request = TextRequest(prompt=prompt, adapters=adapters or [], max_new_tokens=max_new_tokens,
                              do_sample=do_sample, seed=seed, temperature=temperature)
        return studio.compare(request)

    generate_text.concurrency = compare_text.concurrency = TEXT_GENERATION  # app.py passes it to gr.api
    return [load_text_model, load_text_adapter, add_text_adapter, train_text_adapter, merge_text_adapters,
            list_text_adapters, delete_text_adapter, generate_text, compare_text]  # fmt: skip
