"""Text side: tokens per second for the base, one adapter unmerged, and merged (issue 6, item 7).

Four copies of one causal LM, timed in the same rounds with greedy `generate` of a fixed number of new tokens
(min_new_tokens = max_new_tokens, so an early end-of-text cannot flatter one case): the base; a PeftModel with one
LoRA unmerged; the same merged in place (`merge_adapter`: peft's layers stay and skip the LoRA branch); and
merged then unloaded (`merge_and_unload`: plain layers). Also the studio's own path (TextStudio.generate with
the adapter active against use_adapters=False), whose token count is read back from its text.

LMs: the bundled tiny-shapes-lm when present (else tiny_models/text.py's), and a "medium" Llama built from a
config (hidden 512, 8 layers, random weights), so the ratios are not all Python overhead.
"""

import copy

from bench.common import (
    ROOT,
    BenchConfig,
    environ,
    interleave,
    median,
    quiet,
    studio_env,
    summary,
    table,
    timed,
    write_result,
)

BUNDLED_LM = ROOT / "assets" / "hub" / "adapter-studio" / "tiny-shapes-lm"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPT = "the red circle is"


def _lm_folder(name: str, cfg: BenchConfig):
    """(folder, description) of a causal LM, built from configs into cfg.work the first time."""
    import torch

    from tiny_models.text import build_tiny_lm, write_tokenizer

    if name == "auto" and (BUNDLED_LM / "config.json").exists():
        return BUNDLED_LM, "bundled adapter-studio/tiny-shapes-lm"
    folder = cfg.work / ("tiny-lm" if name in ("auto", "tiny") else "medium-lm")
    if name in ("auto", "tiny"):
        if not (folder / "config.json").exists():
            build_tiny_lm(folder)
        return folder, "tiny_models/text.py: Llama, hidden 32, 2 layers"
    if not (folder / "config.json").exists():
        from transformers import LlamaConfig, LlamaForCausalLM

        folder.mkdir(parents=True, exist_ok=True)
        tokenizer = write_tokenizer(folder)
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                             num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)  # fmt: skip
        LlamaForCausalLM(config).save_pretrained(folder)
    return folder, "Llama from a config: hidden 512, 8 layers, 8 heads, MLP 1376, random weights"


def run_model(cfg: BenchConfig, name: str) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peft_core.text.studio import TextRequest, TextStudio

    folder, what = _lm_folder(name, cfg)
    print(f"\n## text on {what}", flush=True)
    tokens = cfg.pick(48, 8)  # the bundled LM has a context of 64 tokens
    with quiet():
        tokenizer = AutoTokenizer.from_pretrained(folder)
        base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        torch.manual_seed(1)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False)
        unmerged = get_peft_model(copy.deepcopy(base), config).eval()
        merged = get_peft_model(copy.deepcopy(base), config).eval()
        merged.load_state_dict(unmerged.state_dict())
        merged.merge_adapter()
        unloaded = copy.deepcopy(merged)
        unloaded.unmerge_adapter()
        unloaded = unloaded.merge_and_unload()
        adapter_dir = cfg.work / f"text-adapter-{folder.name}"
        unmerged.save_pretrained(adapter_dir)
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]

    def gen(model):
        def run_once():
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                     min_new_tokens=tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            assert out.shape[1] - ids.shape[1] == tokens

        return timed(run_once)

    import os

    # The LM is loaded by path, as the bench adapter names it: allow its folder (the bundled one lives outside work).
    dirs = os.pathsep.join(str(p.resolve()) for p in (cfg.work, folder.parent))
    with studio_env(cfg), environ(STUDIO_LOCAL_DIRS=dirs), quiet():
        studio = TextStudio(device="cpu")
        studio.load_base(str(folder))
        studio.load_adapter(str(adapter_dir), adapter_name="bench")
    counts = {}

    def ours(use_adapters):
        def run_once():
            import time

            start = time.perf_counter()
            text = studio.generate(TextRequest(PROMPT, ["bench"], use_adapters, max_new_tokens=tokens))
            seconds = time.perf_counter() - start
            counts[use_adapters] = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            return seconds

        return run_once

    cases = {"base": gen(base), "unmerged": gen(unmerged), "merged": gen(merged), "merged_unloaded": gen(unloaded),
             "ours_base": ours(False), "ours_adapter": ours(True)}  # fmt: skip
    with quiet():
        times = interleave(cases, cfg.repeats, cfg.warmup)
    rows, ratios = [], {}
    for key, ts in times.items():
        n = tokens if not key.startswith("ours") else max(counts[key == "ours_adapter"], 1)
        tps = n / median(ts)
        base_key = "ours_base" if key.startswith("ours") else "base"
        n_base = tokens if base_key == "base" else max(counts[False], 1)
        # tokens/s ÷ base tokens/s, round by round (the studio's base may stop early at an end-of-text token)
        r = median([(n / t) / (n_base / b) for t, b in zip(ts, times[base_key], strict=True)])
        ratios[key] = {"tokens_per_s": tps, "÷_base": r, "tokens": n}
        rows.append([key.replace("_", " "), n, f"{tps:,.0f}", f"{r:.3f}"])
    text = table(f"Greedy generation on {what}, {tokens} new tokens; ratios: tokens/s ÷ the base's in the same "
                 "round (ours: ÷ the studio's own base path)", ["model", "tokens", "tokens / s", "÷ base"],
                 rows)  # fmt: skip
    return {"model": what, "folder": str(folder), "tokens": tokens, "times": summary(times), "ratios": ratios,
            "table": text}  # fmt: skip


def run(cfg: BenchConfig) -> dict:
    models = cfg.pick(("auto", "medium"), ("tiny",))
    results = {name: run_model(cfg, name) for name in models}
    write_result(cfg, "text", {"models": results})
    return {}
