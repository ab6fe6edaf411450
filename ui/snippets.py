"""The "use via API" panel: a gradio_client snippet that reproduces what is on screen."""


def image_snippet(url: str, prompt: str, negative: str, mix: dict, use_adapters: bool, seed: int, steps: int,
                  guidance: float, width: int, height: int) -> str:  # fmt: skip
    mix_text = "{" + ", ".join(f"{name!r}: {weight:g}" for name, weight in mix.items()) + "}"
    return f'''from gradio_client import Client

client = Client({url!r})
png = client.predict(
    prompt={prompt!r},
    adapters={mix_text},
    use_adapters={use_adapters!r},
    seed={seed},
    steps={steps},
    guidance_scale={guidance:g},
    width={width},
    height={height},
    negative_prompt={negative!r},
    api_name="/generate",
)
print(png)  # a PNG file path
'''


def text_snippet(url: str, prompt: str, active: list, use_adapters: bool, max_new_tokens: int, do_sample: bool,
                 seed: int, temperature: float) -> str:  # fmt: skip
    return f'''from gradio_client import Client

client = Client({url!r})
text = client.predict(
    prompt={prompt!r},
    adapters={list(active)!r},
    use_adapters={use_adapters!r},
    max_new_tokens={max_new_tokens},
    do_sample={do_sample!r},
    seed={seed},
    temperature={temperature:g},
    api_name="/generate_text",
)
print(text)
'''
