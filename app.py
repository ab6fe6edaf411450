"""Adapter Studio: try, mix and compare LoRA adapters for Diffusers pipelines and Transformers LMs.

This file is wiring only: `build_demo(images, text)` lays out the page from the tabs in `ui/` and exposes the
named API endpoints; everything else lives in `peft_core`. Importing it downloads nothing and loads no model.

    python app.py                 # bundled tiny models, offline, on CPU
    python app.py --share         # plus a public share link
    python app.py --mcp           # plus an MCP server (tools = the named endpoints) at /gradio_api/mcp/
"""

import argparse
import os
import sys
import threading

import gradio as gr

from peft_core import StudioError, bundled, sessions, settings
from peft_core.image.studio import ImageStudio
from peft_core.text.studio import TextStudio
from ui.api import image_api, text_api
from ui.common import CSS, seen_by, session_of
from ui.images_tab import build_images_tab
from ui.text_tab import build_text_tab

__all__ = ["CSS", "build_demo", "load_defaults", "load_defaults_in_background", "main"]


def build_demo(
    images: ImageStudio, text: TextStudio | None = None, tracker: sessions.Tracker | None = None
) -> gr.Blocks:
    """The whole app around an image studio and a text studio; either may hold no model yet. `tracker` ends the
    visitors' sessions in both (one is made if not given)."""
    text = text if text is not None else TextStudio(device=images.device, quotas=images.quotas)
    tracker = tracker if tracker is not None else sessions.Tracker([images, text])
    with gr.Blocks(title="Adapter Studio") as demo:
        gr.Markdown(
            "# Adapter Studio\nLoad a base model, load LoRA adapters by Hub id, name them, mix them with weights, "
            "switch them off — and see the difference with the same seed."
        )
        with gr.Tab("Images (Diffusers)"):
            on_load = [build_images_tab(images)]
        with gr.Tab("Text (Transformers)"):
            on_load.append(build_text_tab(text))
        for fn, outputs in on_load:
            demo.load(fn, None, outputs, api_visibility="private")
        # The named API (ui/api.py): the contract documented in docs/API.md. Each visitor's adapters are released
        # when their tab closes (gradio's load and unload), or, for a gradio_client Client, which never says
        # goodbye, after STUDIO_SESSION_IDLE_S without a call to the API (docs/SESSIONS.md).
        for fn in image_api(images) + text_api(text):
            gr.api(seen_by(tracker, fn), api_name=fn.__name__, **getattr(fn, "concurrency", {}))

        def open_session(request: gr.Request):
            tracker.opened(session_of(request))

        def end_session(request: gr.Request):
            tracker.end(session_of(request))

        demo.load(open_session, api_visibility="private")
        demo.unload(end_session)
    return demo


def load_defaults(images: ImageStudio, text: TextStudio) -> None:
    """The bundled models and their demo adapters, so the first page shows something real offline."""
    _load_image_defaults(images)
    _load_text_defaults(text)


def load_defaults_in_background(images: ImageStudio, text: TextStudio) -> threading.Thread:
    """load_defaults in a thread, so the page is served while diffusers and transformers import (~8 s here).
    Until both studios' parts are in, calls to either wait for them (peft_core/startup.py says why both)."""
    images.startup.begin()
    text.startup.begin()

    def work():
        try:
            images.startup.run("the default image pipeline", lambda: _load_image_defaults(images))
            text.startup.run("the default text model", lambda: _load_text_defaults(text))
        finally:
            images.startup.finish()
            text.startup.finish()

    thread = threading.Thread(target=work, name="load-defaults", daemon=True)
    thread.start()
    return thread


def _load_image_defaults(images: ImageStudio) -> None:
    pipeline = settings.current().default_pipeline
    images.load_base(pipeline)
    # The demo adapters fit only the bundled bases, not a Hub model an admin chose instead.
    if bundled.bundled_path(pipeline) is not None:
        _load_demo_adapters(images, bundled.DEFAULT_IMAGE_ADAPTERS)


def _load_text_defaults(text: TextStudio) -> None:
    model = settings.current().default_text_model
    text.load_base(model)
    if bundled.bundled_path(model) is not None:
        _load_demo_adapters(text, bundled.DEFAULT_TEXT_ADAPTERS)


def _load_demo_adapters(studio, names) -> None:
    """Every demo adapter that loads: one refused (e.g. over the admin's STUDIO_MAX_ADAPTER_MB) is reported in a
    line and skipped, and the others still load."""
    for name in names:
        repo_id = f"{bundled.BUNDLED_ORG}/{name}"
        if bundled.bundled_path(repo_id) is not None:
            try:
                studio.load_adapter(repo_id, adapter_name=name.split("-", 1)[-1])
            except StudioError as exc:
                print(f"demo adapter {repo_id} skipped: {exc}", file=sys.stderr)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio share link")
    parser.add_argument("--server-name", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--server-port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--mcp", action="store_true", help="also serve the named endpoints as an MCP server")
    parser.add_argument("--no-defaults", action="store_true", help="start without loading the bundled models")
    args = parser.parse_args(argv)

    quotas = sessions.Quotas()  # one per app: a session's downloads and training count across both tabs
    images, text = ImageStudio(quotas=quotas), TextStudio(quotas=quotas)
    demo = build_demo(images, text)
    if not args.no_defaults:
        load_defaults_in_background(images, text)
    demo.queue().launch(
        share=args.share, server_name=args.server_name, server_port=args.server_port, mcp_server=args.mcp, css=CSS
    )


if __name__ == "__main__":
    main()
