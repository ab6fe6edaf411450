"""Cold start: `python app.py` until the page answers, and until the first image through gradio_client (item 5).

Each run is a fresh process on a free loopback port. With the bundled assets present, `python app.py` starts as
users start it; without them (while they are being trained) the defaults point at the tiny pipeline and tiny LM
built from tiny_models/ (`STUDIO_DEFAULT_PIPELINE`, `STUDIO_DEFAULT_TEXT_MODEL`), which
load the same code paths. `python -c "import app"` is timed too, to split the start into its parts.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from bench.common import ROOT, BenchConfig, Goal, median, resolve_pipeline, table, write_result

GOAL_PAGE_S = 20.0
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(cfg: BenchConfig) -> tuple[dict, str]:
    """The environment for `python app.py`, and what it loads."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    if (ROOT / "assets" / "hub" / "adapter-studio" / "tiny-shapes" / "model_index.json").exists():
        return env, "bundled assets (adapter-studio/tiny-shapes + its LoRAs, tiny-shapes-lm + its adapters)"
    from tiny_models.text import build_tiny_lm

    pipeline = resolve_pipeline("tiny", cfg).folder
    lm = cfg.work / "tiny-lm"
    if not (lm / "config.json").exists():
        build_tiny_lm(lm)
    env.update(STUDIO_LOCAL_DIRS=str(cfg.work.resolve()), STUDIO_DEFAULT_PIPELINE=str(pipeline.resolve()),
               STUDIO_DEFAULT_TEXT_MODEL=str(lm.resolve()))  # fmt: skip
    return env, "tiny pipeline and tiny LM from tiny_models/ (bundled assets absent), no adapters"


def _wait_page(url: str, proc, start: float) -> float:
    while time.perf_counter() - start < TIMEOUT_S:
        if proc.poll() is not None:
            raise RuntimeError(f"python app.py exited with {proc.returncode}: {proc.stdout.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no page at {url} after {TIMEOUT_S} s")


def one_start(env: dict, defaults: bool = True) -> dict:
    """Seconds from `python app.py` to the page, and to the first image (None with defaults=False: no model)."""
    from gradio_client import Client

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    args = [sys.executable, "app.py", "--server-port", str(port)] + ([] if defaults else ["--no-defaults"])
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        page = _wait_page(url, proc, start)
        if not defaults:
            return {"page_s": page, "first_image_s": None}
        client = Client(url, verbose=False)
        info = client.predict(api_name="/list_adapters")
        mix = {info[0]["adapter_name"]: 1.0} if info else {}
        client.predict(prompt="a red circle", adapters=mix, seed=0, api_name="/generate")
        first_image = time.perf_counter() - start
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"page_s": page, "first_image_s": first_image}


def import_time(env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import app"], cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def run(cfg: BenchConfig) -> dict:
    env, what = _env(cfg)
    if cfg.quick:  # one start without models: keeps the script runnable in tests at the least cost
        runs, imports, what = [one_start(env, defaults=False)], [], "python app.py --no-defaults (quick mode)"
    else:
        runs, imports = [], []
        for _ in range(3):
            imports.append(import_time(env))
            runs.append(one_start(env))
            print(json.dumps(runs[-1]), flush=True)
    page = median([r["page_s"] for r in runs])
    firsts = [r["first_image_s"] for r in runs if r["first_image_s"] is not None]
    text = table(f"Cold start of `python app.py` ({what}); median of {len(runs)} fresh processes",
                 ["import app", "page answers", "first image via gradio_client", "worst page"],
                 [[f"{median(imports):.1f} s" if imports else "-", f"{page:.1f} s",
                   f"{median(firsts):.1f} s" if firsts else "-",
                   f"{max(r['page_s'] for r in runs):.1f} s"]])  # fmt: skip
    goal = Goal(f"cold start to a served page ≤ {GOAL_PAGE_S:.0f} s", pipeline=what.split(" (")[0],
                measured=f"{page:.1f} s (worst {max(r['page_s'] for r in runs):.1f} s)",
                passed=max(r["page_s"] for r in runs) <= GOAL_PAGE_S)  # fmt: skip
    write_result(cfg, "coldstart", {"loads": what, "runs": runs, "import_s": imports, "table": text, "goals": [goal]})
    return {"goals": [goal]}
