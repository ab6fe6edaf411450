"""The "use via API" panel: a gradio_client snippet that reproduces what is on screen (the request the page's
settings describe: an ImageRequest or a TextRequest, built by the tab's handlers)."""

from peft_core.image.requests import ImageRequest
from peft_core.text.requests import TextRequest

# The snippet is written to be read first: a plain Client. Passing one TLS context
# (`ssl_verify=httpx.create_ssl_context()`) makes each call ~0.1 s faster on a small CPU; the README's
# "Performance notes" explain it once instead of every snippet carrying it (docs/BENCHMARKS.md, "API round trip").
CLIENT = """from gradio_client import Client

client = Client({url!r})"""


def image_snippet(url: str, r: ImageRequest, loads=()) -> str:
    """/generate with request `r`. `loads`: the facts (as /list_adapters gives them) of the page session's own
    adapters in the mix. A Client is a session of its own (docs/SESSIONS.md), so the snippet loads them under the
    same names first; shared ones it sees already. Loading what is resident costs no download."""
    mix_text = "{" + ", ".join(f"{name!r}: {weight:g}" for name, weight in r.adapters.items()) + "}"
    return f'''{CLIENT.format(url=url)}
{_image_loads(loads, r.adapters)}png = client.predict(
    prompt={r.prompt!r},
    adapters={mix_text},
    use_adapters={r.use_adapters!r},
    seed={r.seed},
    steps={r.steps},
    guidance_scale={r.guidance_scale:g},
    width={r.width},
    height={r.height},
    negative_prompt={r.negative_prompt!r},
    api_name="/generate",
)
print(png)  # a PNG file path
'''


def _image_loads(loads, mix: dict) -> str:
    lines = [
        f"client.predict(repo_id={a['repo_id']!r}, weight_name={a.get('weight_name') or ''!r}, "
        f"adapter_name={a['adapter_name']!r}, revision={a.get('revision') or 'main'!r}, api_name=\"/load_adapter\")\n"
        for a in loads
        if a.get("adapter_name") in mix and not a.get("shared", True) and a.get("repo_id")
    ]
    return "".join(lines)


def text_snippet(url: str, r: TextRequest, own=()) -> str:
    """/generate_text with request `r`. `own`: the names in its adapters that the page's session added, trained or
    merged. A Client is a session of its own (docs/SESSIONS.md) and cannot see them, so the snippet says how to
    bring them along instead of failing."""
    active = list(r.adapters)
    return f'''{CLIENT.format(url=url)}
{_text_own(own, active)}text = client.predict(
    prompt={r.prompt!r},
    adapters={active!r},
    use_adapters={r.use_adapters!r},
    max_new_tokens={r.max_new_tokens},
    do_sample={r.do_sample!r},
    seed={r.seed},
    temperature={r.temperature:g},
    api_name="/generate_text",
)
print(text)
'''


def _text_own(own, active: list) -> str:
    names = [name for name in active if name in own]
    if not names:
        return ""
    return (f"# {', '.join(map(repr, names))}: made in your browser session, which this Client (a session of\n"
            "# its own) cannot see: add or train it here first (/add_text_adapter, /train_text_adapter), or\n"
            "# export it, push it to a Hub repo and load it with /load_text_adapter\n")  # fmt: skip
