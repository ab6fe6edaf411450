"""The API round trip through gradio_client against the direct core call, same request (issue 6, item 4).

The real app (`app.build_demo`) is served on a free loopback port, as tests/conftest.py's `launch_app` does, and
`/generate` is called with gradio_client; the direct call is `ImageStudio.generate` with the same request on the
same studio. Both use one adapter at weight 0.8, so neither pays a switch. The round trip adds the queue, the
PNG encoding with its recipe chunk (`ui.recipe.recipe_png`), the HTTP transfer and the client's download. The round
trip of `/list_adapters`, which does next to nothing, is timed in the same rounds: the floor any endpoint pays.

Two clients: with one TLS context for every call (`ssl_verify=httpx.create_ssl_context()`, the README's
"Performance notes"), and with gradio_client's defaults, as the page's "Use via API" snippet and the README's
examples make it (a plain `Client(url)`, read first), which build a TLS context (the CA bundle read from disk)
for each connection, two or three per call, even over plain http.
"""

from bench.common import (
    BenchConfig,
    Goal,
    adapter_repos,
    image_request,
    interleave,
    median,
    ms,
    quiet,
    resolve_pipeline,
    studio_env,
    studio_for,
    summary,
    table,
    timed,
    write_result,
)

GOAL_RATIO = 1.10


def run_pipeline(cfg: BenchConfig, name: str) -> dict:
    import httpx
    from gradio_client import Client

    import app
    from peft_core.text.studio import TextStudio

    spec = resolve_pipeline(name, cfg)
    print(f"\n## api on {spec.name}", flush=True)
    studio = studio_for(spec, cfg)
    repo = adapter_repos(studio.pipe, spec, cfg, 1)[0]
    with quiet():
        studio.load_adapter(str(repo), adapter_name="a0")
    request = image_request(spec, {"a0": 0.8})
    demo = app.build_demo(studio, TextStudio(device="cpu"))
    demo.queue(default_concurrency_limit=4).launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                                                   css=app.CSS)  # fmt: skip
    try:
        clients = {"snippet": Client(demo.local_url, verbose=False, ssl_verify=httpx.create_ssl_context()),
                   "defaults": Client(demo.local_url, verbose=False)}  # fmt: skip

        def api(client):
            r = request
            return lambda: client.predict(prompt=r.prompt, adapters={"a0": 0.8}, use_adapters=True, seed=r.seed,
                                          steps=r.steps, guidance_scale=r.guidance_scale, width=r.width,
                                          height=r.height, api_name="/generate")  # fmt: skip

        cases = {"direct": timed(lambda: studio.generate(request))}
        for how, client in clients.items():
            cases[f"api {how}"] = timed(api(client))
            # The floor: /list_adapters does next to nothing, so its round trip is the protocol's own cost.
            cases[f"floor {how}"] = timed(lambda c=client: c.predict(api_name="/list_adapters"))
        with quiet():
            times = interleave(cases, max(cfg.repeats, cfg.pick(10, 1)), cfg.warmup)
    finally:
        demo.close()
    rows, goals, ratios = [], [], {}
    for how, words in (("snippet", "one TLS context (README, performance notes)"),
                       ("defaults", "gradio_client defaults (the page's snippet)")):  # fmt: skip
        api_times = times[f"api {how}"]
        ratio = median([a / d for a, d in zip(api_times, times["direct"], strict=True)])
        extra = median([a - d for a, d in zip(api_times, times["direct"], strict=True)])
        ratios[how] = ratio
        rows.append([words, ms(median(times["direct"])), ms(median(api_times)), f"{ratio:.3f}", ms(extra),
                     ms(median(times[f"floor {how}"]))])  # fmt: skip
        goals.append(Goal(f"API round trip ÷ direct ≤ {GOAL_RATIO:.2f} [{words}]", pipeline=spec.name,
                          measured=f"{ratio:.3f} (+{ms(extra)})", passed=ratio <= GOAL_RATIO))  # fmt: skip
    text = table(f"/generate through gradio_client against ImageStudio.generate on {spec.name} "
                 f"({spec.steps} steps, {spec.size}x{spec.size})",
                 ["client", "direct", "API round trip", "ratio", "added per request",
                  "round trip of /list_adapters (floor)"], rows)  # fmt: skip
    return {"pipeline": spec.describe(), "times": summary(times), "ratio": ratios["snippet"],
            "ratio_defaults": ratios["defaults"], "table": text, "goals": goals}  # fmt: skip


def run(cfg: BenchConfig) -> dict:
    with studio_env(cfg):
        results = {name: run_pipeline(cfg, name) for name in cfg.pipelines}
    goals = [g for r in results.values() for g in r["goals"]]
    write_result(cfg, "api", {"pipelines": results, "goals": goals})
    return {"goals": goals}
