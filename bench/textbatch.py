"""Text: N concurrent clients, each with its own adapter, against the same requests one at a time (issue 30, item 1).

For N = 1, 2, 4, 8: N threads call `TextStudio.generate` at once (a barrier), client i with LoRA i (greedy, a
prompt of its own, the same max_new_tokens), so the studio's batcher (peft_core/text/batching.py) can put them in
one generate; and the same N requests one after another. Both in the same rounds. Reported:

- aggregate tokens/s (the generated tokens of all N ÷ the wall time from the start to the last answer) of each,
  and concurrent ÷ serial, the median of the per-round ratios;
- p50 and p95 latency over every request of every round. A serial request's latency counts from the round's start,
  as N clients who arrive at once and are served one at a time would see it; "alone" is one request's own time.

Every concurrent text is checked against its serial one (greedy: token for token). LMs as in bench/text.py: the
bundled tiny-shapes-lm and the Llama-shaped "medium" model built from a config.
"""

import statistics
import threading
import time

from bench.common import Goal, environ, median, quiet, studio_env, table, write_result
from bench.text import PROMPT, TARGETS, _lm_folder

CLIENTS = (1, 2, 4, 8)
GOAL_SPEEDUP = 3.0  # aggregate tokens/s at 8 clients on the medium model, concurrent ÷ serial
PROMPTS = [PROMPT, "the blue square", "a small circle", "the big red", "a star is", "the green", "two circles",
           "the night sky is"]  # fmt: skip


def _adapters(folder, cfg, n: int) -> list:
    """n LoRA folders for the LM in `folder` (rank 8 on every projection, seeds 1..n), made once in cfg.work."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    made = [cfg.work / f"textbatch-{folder.name}-{i}" for i in range(n)]
    if all((m / "adapter_config.json").exists() for m in made):
        return made
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    for i, out in enumerate(made):
        torch.manual_seed(i + 1)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False)
        get_peft_model(copy.deepcopy(base), config).save_pretrained(out)
    return made


def _percentile(values, q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def run_model(cfg, name: str) -> dict:
    import os

    from peft_core.text.requests import TextRequest
    from peft_core.text.studio import TextStudio

    folder, what = _lm_folder(name, cfg)
    print(f"\n## textbatch on {what}", flush=True)
    tokens = cfg.pick(32, 6)
    with quiet():
        repos = _adapters(folder, cfg, max(CLIENTS))
    dirs = os.pathsep.join(str(p.resolve()) for p in (cfg.work, folder.parent))
    with studio_env(cfg), environ(STUDIO_LOCAL_DIRS=dirs), quiet():
        studio = TextStudio(device="cpu")
        studio.load_base(str(folder))
        for i, repo in enumerate(repos):
            studio.load_adapter(str(repo), adapter_name=f"client{i}")
    tokenizer = studio.tokenizer

    def request(i):
        return studio.generate(TextRequest(PROMPTS[i], [f"client{i}"], max_new_tokens=tokens))

    def count(texts):
        return sum(max(len(tokenizer(t, add_special_tokens=False)["input_ids"]), 1) for t in texts)

    def serial(n):
        start, texts, latencies, own = time.perf_counter(), [], [], []
        for i in range(n):
            began = time.perf_counter()
            texts.append(request(i))
            latencies.append(time.perf_counter() - start)
            own.append(time.perf_counter() - began)
        return time.perf_counter() - start, texts, latencies, own

    def concurrent(n):
        texts, latencies, barrier = [None] * n, [0.0] * n, threading.Barrier(n + 1)

        def client(i):
            barrier.wait()
            texts[i] = request(i)
            latencies[i] = time.perf_counter() - start

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        start = time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join()
        return time.perf_counter() - start, texts, latencies

    results, rows = {}, []
    for _ in range(cfg.warmup):
        serial(max(CLIENTS)), concurrent(max(CLIENTS))
    for n in cfg.pick(CLIENTS, (1, 2)):
        rounds = {"serial_s": [], "concurrent_s": [], "ratio": [], "serial_latency": [], "concurrent_latency": [],
                  "alone": [], "tokens": 0, "batches": []}  # fmt: skip
        for _ in range(cfg.repeats):
            s_wall, s_texts, s_lat, own = serial(n)
            c_wall, c_texts, c_lat = concurrent(n)
            rounds["batches"].append(list(studio.batcher.batches[-n:]))
            assert c_texts == s_texts, f"{n} clients: a batched text differs from its serial run"
            n_tokens = count(s_texts)
            rounds["tokens"] = n_tokens
            rounds["serial_s"].append(s_wall)
            rounds["concurrent_s"].append(c_wall)
            rounds["ratio"].append(s_wall / c_wall)  # aggregate tokens/s concurrent ÷ serial: same tokens
            rounds["serial_latency"] += s_lat
            rounds["concurrent_latency"] += c_lat
            rounds["alone"] += own
        n_tokens = rounds["tokens"]
        entry = {
            "clients": n, "tokens": n_tokens,
            "serial_tokens_per_s": n_tokens / median(rounds["serial_s"]),
            "concurrent_tokens_per_s": n_tokens / median(rounds["concurrent_s"]),
            "concurrent_÷_serial": median(rounds["ratio"]),
            "serial_p50_s": _percentile(rounds["serial_latency"], 50),
            "serial_p95_s": _percentile(rounds["serial_latency"], 95),
            "concurrent_p50_s": _percentile(rounds["concurrent_latency"], 50),
            "concurrent_p95_s": _percentile(rounds["concurrent_latency"], 95),
            "alone_p50_s": _percentile(rounds["alone"], 50), "rounds": rounds,
        }  # fmt: skip
        results[n] = entry
        rows.append([n, n_tokens, f"{entry['serial_tokens_per_s']:,.0f}", f"{entry['concurrent_tokens_per_s']:,.0f}",
                     f"**{entry['concurrent_÷_serial']:.2f}**", f"{entry['alone_p50_s'] * 1e3:,.0f}",
                     f"{entry['serial_p50_s'] * 1e3:,.0f} / {entry['serial_p95_s'] * 1e3:,.0f}",
                     f"{entry['concurrent_p50_s'] * 1e3:,.0f} / {entry['concurrent_p95_s'] * 1e3:,.0f}",
                     " ".join(str(max(b)) for b in rounds["batches"])])  # fmt: skip
    text = table(
        f"{what}: N clients, each with its own LoRA, greedy, {tokens} new tokens each; concurrent ÷ serial is the "
        "median of the per-round ratios of aggregate tokens/s; latencies in ms over every request of "
        f"{cfg.repeats} rounds",
        ["clients", "tokens", "serial tokens/s", "concurrent tokens/s", "concurrent ÷ serial", "alone p50",
         "serial p50 / p95", "concurrent p50 / p95", "largest batch per round"], rows)  # fmt: skip
    return {"model": what, "tokens": tokens, "clients": results, "table": text}


def run(cfg) -> dict:
    models = cfg.pick(("auto", "medium"), ("tiny",))
    results = {name: run_model(cfg, name) for name in models}
    goals = []
    for name, result in results.items():
        top = result["clients"][max(result["clients"])]
        short = "medium" if name == "medium" else "bundled" if "bundled" in result["model"] else name
        if name == "medium" or cfg.quick:
            speedup = top["concurrent_÷_serial"]
            goals.append(Goal(f"{top['clients']} clients: aggregate tokens/s concurrent ÷ serial ≥ {GOAL_SPEEDUP:g}",
                              f"{speedup:.2f}", speedup >= GOAL_SPEEDUP, short))  # fmt: skip
        p95, serial_p95 = top["concurrent_p95_s"], top["serial_p95_s"]
        goals.append(Goal(f"{top['clients']} clients: p95 latency concurrent ≤ serial", f"{p95 * 1e3:,.0f} ms ≤ "
                          f"{serial_p95 * 1e3:,.0f} ms", p95 <= serial_p95, short))  # fmt: skip
    write_result(cfg, "textbatch", {"models": results, "goals": goals})
    return {"goals": goals}
