"""Tiny models built from configs after a fixed seed, and adapter files for them.

Shared by the tests (tests/conftest.py builds them once per session), the benchmarks (bench/) and the scripts
(scripts/soak.py, and scripts/train/ for the bundled default's CLIP tokenizer). Each file holds one family:

    image.py   a tiny StableDiffusionPipeline, diffusers-format LoRA state dicts for it, Hub-style LoRA repos
    families.py  tiny SDXL, SD3, FLUX.1 and Qwen-Image pipelines (and SD through image.py), LoRAs for each
    text.py    a tiny LlamaForCausalLM with a word-level tokenizer, and peft adapter folders for it

Shapes follow diffusers' own LoRA tests: a few thousand parameters per part, so a generation or a forward pass
takes milliseconds on a CPU.
"""
