"""ui/common.py: the wrappers every page handler and API endpoint goes through. The visitor's request arrives in
the parameter each handler declares (gradio fills a parameter annotated gr.Request), so the named API shows the
documented arguments and nothing else; a handler that declares none is refused when decorated, since it would run
as the admin; the API's argument types are checked before the core sees them (messages: tests/test_hostile_api.py).
"""

from types import SimpleNamespace

import gradio as gr
import pytest

from peft_core import sessions

REQUIRED = object()
# The named API as docs/API.md documents it: {endpoint: ([(argument, default, type)], [return types])}.
API = {
    "/add_text_adapter": ([("adapter_name", REQUIRED, "str"), ("r", 8, "int"), ("lora_alpha", 16, "int"),
                           ("lora_dropout", 0.0, "float"), ("target_modules", "", "str")], ["list[dict(str, Any)]"]),
    "/compare": ([("prompt", REQUIRED, "str"), ("adapters", {}, "dict(str, float)"), ("seed", 0, "int"),
                  ("steps", None, "None | int"), ("guidance_scale", None, "None | float"),
                  ("width", None, "None | int"), ("height", None, "None | int"), ("negative_prompt", "", "str")],
                 ["filepath", "filepath"]),
    "/compare_text": ([("prompt", REQUIRED, "str"), ("adapters", [], "list[str]"), ("max_new_tokens", 32, "int"),
                       ("do_sample", False, "bool"), ("seed", 0, "int"), ("temperature", 1.0, "float")],
                      ["str", "str"]),
    "/delete_adapter": ([("adapter_name", REQUIRED, "str")], ["list[dict(str, Any)]"]),
    "/delete_text_adapter": ([("adapter_name", REQUIRED, "str")], ["list[dict(str, Any)]"]),
    "/generate": ([("prompt", REQUIRED, "str"), ("adapters", {}, "dict(str, float)"), ("use_adapters", True, "bool"),
                   ("seed", 0, "int"), ("steps", None, "None | int"), ("guidance_scale", None, "None | float"),
                   ("width", None, "None | int"), ("height", None, "None | int"), ("negative_prompt", "", "str")],
                  ["filepath"]),
    "/generate_text": ([("prompt", REQUIRED, "str"), ("adapters", [], "list[str]"), ("use_adapters", True, "bool"),
                        ("max_new_tokens", 32, "int"), ("do_sample", False, "bool"), ("seed", 0, "int"),
                        ("temperature", 1.0, "float")], ["str"]),
    "/list_adapters": ([], ["list[dict(str, Any)]"]),
    "/list_text_adapters": ([], ["list[dict(str, Any)]"]),
    "/load_adapter": ([("repo_id", REQUIRED, "str"), ("weight_name", "", "str"), ("adapter_name", "", "str"),
                       ("revision", "main", "str")], ["list[dict(str, Any)]"]),
    "/load_pipeline": ([("model_id", REQUIRED, "str"), ("revision", "main", "str")], ["dict(str, Any)"]),
    "/load_text_adapter": ([("repo_id", REQUIRED, "str"), ("adapter_name", "", "str"), ("revision", "main", "str")],
                           ["list[dict(str, Any)]"]),
    "/load_text_model": ([("model_id", REQUIRED, "str"), ("revision", "main", "str")], ["dict(str, Any)"]),
    "/merge_text_adapters": ([("adapters", REQUIRED, "dict(str, float)"), ("new_adapter_name", REQUIRED, "str"),
                              ("combination_type", "linear", "str"), ("density", 0.5, "float")],
                             ["list[dict(str, Any)]"]),
    "/recipe": ([("png", REQUIRED, "filepath")], ["dict(str, Any)"]),
    "/train_text_adapter": ([("adapter_name", REQUIRED, "str"), ("text", REQUIRED, "str"), ("steps", REQUIRED, "int"),
                             ("learning_rate", REQUIRED, "float")], ["dict(str, Any)"]),
}  # fmt: skip


def test_the_named_api_shows_the_documented_arguments_and_no_request():
    import app
    from peft_core.image.studio import ImageStudio
    from peft_core.text.studio import TextStudio

    info = app.build_demo(ImageStudio(device="cpu"), TextStudio(device="cpu")).get_api_info()
    shown = {
        name: ([(p["parameter_name"], p["parameter_default"] if p["parameter_has_default"] else REQUIRED,
                 p["python_type"]["type"]) for p in e["parameters"]],
               [r["python_type"]["type"] for r in e["returns"]])
        for name, e in info["named_endpoints"].items()
    }  # fmt: skip
    assert shown == API
    assert info["unnamed_endpoints"] == {}  # the page's own events (and the session's load and unload) are private


@pytest.mark.parametrize("wrap", ["user_errors", "user_errors_gen", "api_endpoint"])
def test_a_handler_without_a_request_parameter_is_refused_when_decorated(wrap):
    import ui.common

    def plain(x: int) -> int:
        return x

    def keyword_only(x: int, *, request: gr.Request = None) -> int:  # gradio fills positional parameters only
        return x

    for fn in (plain, keyword_only):
        with pytest.raises(TypeError, match=rf"{fn.__name__} needs a parameter annotated gr.Request"):
            getattr(ui.common, wrap)(fn)


def test_a_handler_runs_as_the_session_of_the_request_it_declares():
    from ui.common import user_errors, user_errors_gen

    def whose(x: int, request: gr.Request = None) -> str:
        return f"{sessions.current()}:{x}"

    def steps(x: int, http: gr.Request | None = None):
        yield f"{sessions.current()}:{x}"

    visitor = SimpleNamespace(session_hash="visitor-7")
    assert user_errors(whose)(1, visitor) == "visitor-7:1"  # gradio passes it by position
    assert user_errors(whose)(2, request=visitor) == "visitor-7:2"
    assert user_errors(whose)(3) == "None:3"  # a direct call, without gradio: the admin
    assert list(user_errors_gen(steps)(4, http=visitor)) == ["visitor-7:4"]
    assert user_errors(whose).__wrapped__ is whose  # gradio reads the handler's own parameters through it


def test_the_api_types_allow_what_json_clients_send_and_pass_it_on_as_sent():
    from ui.common import api_endpoint

    @api_endpoint
    def echo(steps: int, names: list[str], weight: float | None = None, http: gr.Request | None = None) -> list:
        return [steps, names, weight]

    assert echo(8.0, "a, b") == [8.0, "a, b", None]  # a whole float is an integer; a string, the text box's list
    assert echo(8, ["a"], 1) == [8, ["a"], 1]
    with pytest.raises(gr.Error, match=r"argument 'steps' of /echo must be an integer, got float 8.5"):
        echo(8.5, [])
    with pytest.raises(gr.Error, match=r"argument 'weight' of /echo must be a number, got str '1'"):
        echo(8, [], "1")
    with pytest.raises(gr.Error, match=r"argument 'names' of /echo must be a list of names .*got list \['a', 1\]"):
        echo(8, ["a", 1])
