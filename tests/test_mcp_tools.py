"""--mcp serves exactly the named API as tools: none of the page's own handlers (they leaked as `_lambda_`)."""

import json
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def test_mcp_tools_are_exactly_the_named_endpoints():
    import app
    from peft_core.image.studio import ImageStudio
    from peft_core.text.studio import TextStudio
    from ui.api import image_api, text_api

    images, text = ImageStudio(device="cpu"), TextStudio(device="cpu")
    demo = app.build_demo(images, text)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, mcp_server=True)
    try:
        with urllib.request.urlopen(f"{demo.local_url}gradio_api/mcp/schema") as response:
            tools = {tool["name"] for tool in json.load(response)}
    finally:
        demo.close()
    assert tools == {fn.__name__ for fn in image_api(images) + text_api(text)}
    assert "recipe" in tools
