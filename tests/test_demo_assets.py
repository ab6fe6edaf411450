"""The bundled demo repos (assets/hub/adapter-studio/...) load offline and do what their model cards say.

Everything is measured on the committed files with the helpers in scripts/demo_shapes.py; the thresholds sit
well inside the values scripts/train_demo_assets.py printed when it made them (quoted next to each one).
"""

import copy
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
HUB = ROOT / "assets" / "hub"
SCRIPT = ROOT / "scripts" / "train_demo_assets.py"
sys.path.insert(0, str(SCRIPT.parent))
import demo_shapes as ds  # noqa: E402
import train  # noqa: E402
from train.jobs import close_pool, run_jobs  # noqa: E402
from train.summary import generate_batch  # noqa: E402
from train.text import greedy  # noqa: E402

# three prompts, one per shape and each a different colour: a style has to show on all of them
PROMPTS = ("a red circle", "a blue square", "a yellow triangle")
IMAGE_REPOS = [train.PIPELINE_REPO] + [f"{train.ORG}/shapes-{s}" for s in train.IMAGE_STYLES]
TEXT_REPOS = [train.LM_REPO] + [f"{train.ORG}/lm-{s}" for s in train.LM_STYLES]
# a word that only the adapter's style uses, found by `marker(words)`
LM_MARKERS = {
    "pirate": lambda words: "arr" in words,
    "formal": lambda words: "thank" in words or "kindly" in words,
    "shouting": lambda words: any(w.isalpha() and w.isupper() for w in words),
}
LM_PROMPTS = ("the red circle", "the blue square")


def generate(pipe, prompts) -> list[np.ndarray]:
    # one call for all (half the time of one call each); the seed is the prompt's index, "a red square" takes
    # "a red circle"'s noise, so the two differ by the prompt alone
    seeds = [PROMPTS.index(p) if p in PROMPTS else 0 for p in prompts]
    return generate_batch(pipe, prompts, seeds)


# the base prompts, with the square that test_base_draws_prompt_shape holds against the circle
BASE_PROMPTS = PROMPTS + ("a red square",)


@pytest.fixture(scope="module")
def images():
    """Every picture the image tests measure, made once: base, each style at weight 1, every pair at 50/50."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(HUB / train.PIPELINE_REPO, dtype=torch.float32, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    out = {"base": generate(pipe, BASE_PROMPTS)}  # no LoRA loaded at all
    for style in train.IMAGE_STYLES:
        pipe.load_lora_weights(HUB / train.ORG / f"shapes-{style}", adapter_name=style)
    for style in train.IMAGE_STYLES:
        pipe.set_adapters([style], adapter_weights=[1.0])
        out[style] = generate(pipe, PROMPTS)
    for mix in MIXES:
        pipe.set_adapters(mix.split("+"), adapter_weights=[0.5, 0.5])
        out[mix] = generate(pipe, PROMPTS)
    # the same batch as the base's: batched kernels round differently from one picture alone
    pipe.set_adapters(list(train.IMAGE_STYLES), adapter_weights=[0.0] * 4)
    out["weights 0"] = generate(pipe, BASE_PROMPTS)
    pipe.set_adapters(["night"], adapter_weights=[1.0])
    pipe.disable_lora()
    out["disabled"] = generate(pipe, BASE_PROMPTS)
    return out


def mean_measure(imgs, name: str) -> float:
    return float(np.mean([ds.MEASURES[name](img) for img in imgs]))


# ---------------------------------------------------------------------------------------------------------
# files


@pytest.mark.parametrize("repo", IMAGE_REPOS + TEXT_REPOS)
def test_model_cards(repo):
    from huggingface_hub.repocard import metadata_load

    meta = metadata_load(HUB / repo / "README.md")
    assert meta["license"] == "mit" and meta["tags"]
    if repo not in (train.PIPELINE_REPO, train.LM_REPO):
        assert meta["base_model"] in (train.PIPELINE_REPO, train.LM_REPO)
    if repo.split("/")[1].startswith("shapes-"):
        assert meta["instance_prompt"] == ""  # no trigger words: the LoRAs restyle every prompt
    if repo.split("/")[1].startswith("lm-"):
        assert meta["library_name"] == "peft" and meta["base_model"] == train.LM_REPO


def test_bundle_is_small():
    total = sum(f.stat().st_size for f in (HUB / train.ORG).rglob("*") if f.is_file())
    assert total < 40e6, f"bundled assets are {total / 1e6:.1f} MB"


def test_clip_tokenizer_keeps_whole_words():
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(HUB / train.PIPELINE_REPO / "tokenizer")
    assert tokenizer.tokenize("a red circle") == ["a</w>", "red</w>", "circle</w>"]
    assert tokenizer.tokenize("a purple triangle") == ["a</w>", "purple</w>", "triangle</w>"]


def test_lora_files_are_diffusers_format():
    from safetensors.torch import load_file

    for style in train.IMAGE_STYLES:
        state = load_file(HUB / train.ORG / f"shapes-{style}" / "pytorch_lora_weights.safetensors")
        assert state and all(k.startswith("unet.") for k in state)
        assert any(k.endswith("lora_A.weight") for k in state)


# ---------------------------------------------------------------------------------------------------------
# the base pipeline draws what the prompt says


def test_base_draws_prompt_colour_on_light_background(images):
    for prompt, img in zip(PROMPTS, images["base"], strict=False):
        colour = prompt.split()[1]
        assert ds.brightness(img) > 0.8, prompt  # measured ~0.92
        assert ds.colour_share(img, colour) > 0.7, prompt  # measured >= 0.9
        assert ds.shape_mask(img).mean() > 0.15, prompt  # a shape of ~20x20 pixels, not a speck


def test_base_draws_prompt_shape(images):
    red_circle, red_square = images["base"][0], images["base"][3]
    assert ds.colour_share(red_square, "red") > 0.7
    assert ds.mask_iou(red_circle, red_square) < 0.9
    # fill ratio of the bounding box: circle ~0.785, square ~1.0, triangle ~0.5
    assert 0.65 < ds.fill_ratio(red_circle) < 0.88
    assert ds.fill_ratio(red_square) > 0.88
    assert ds.fill_ratio(images["base"][2]) < 0.65


# ---------------------------------------------------------------------------------------------------------
# each image LoRA moves its own measure; weight 0 and disable_lora() give the base bit for bit

# style -> (measure, threshold at weight 1); the values quoted are the means over PROMPTS (and over the training
# script's 18 prompts)
STYLE_THRESHOLDS = {
    "night": ("brightness", 0.4),  # below; night 0.268 (0.239), base 0.901 (0.908)
    "outline": ("hollowness", 0.1),  # above; outline 0.227 (0.184), base 0.000 (0.000)
    "stripes": ("stripiness", 0.12),  # above; stripes 0.190 (0.179), base 0.085 (0.079)
    "pastel": ("saturation", 0.5),  # below; pastel 0.422 (0.363), base 0.796 (0.733)
}
# Each style restyles the shape and keeps it: the IoU of its filled shape with the base's (same prompt and seed)
# stays above this on every prompt. Measured minima over PROMPTS: night 0.645, outline 0.674, stripes 0.811,
# pastel 0.801; every 50/50 pair 0.575 or more. The night LoRA of the first training garbled shapes (IoU down to
# 0.20 over 18 prompts), and at 0.5 in a mix down to 0.18 until the decoder and LoRAs learnt styles part way.
KEPT_IOU = 0.5


@pytest.mark.parametrize("style", train.IMAGE_STYLES)
def test_style_moves_its_measure(images, style):
    name, threshold = STYLE_THRESHOLDS[style]
    value, base = mean_measure(images[style], name), mean_measure(images["base"][:3], name)
    if ds.STYLE_MEASURE[style][1] < 0:
        assert value < threshold < base, (style, name, value, base)
    else:
        assert value > threshold > base, (style, name, value, base)


@pytest.mark.parametrize("style", train.IMAGE_STYLES)
def test_style_keeps_the_shape(images, style):
    for prompt, img, base in zip(PROMPTS, images[style], images["base"], strict=False):
        iou = ds.mask_iou(img, base)
        assert iou > KEPT_IOU, (style, prompt, iou)


# Every pair of styles at 50/50. Before the VAE decoder learnt the pictures between the styles and the LoRAs were
# trained part way (scripts/train/: images.tune_vae_decoder and loras.LoraRecipe.strengths), night at 0.5
# garbled the shape (IoU with the base's down to 0.18) and outline at 0.5 barely hollowed squares or triangles.
MIXES = [f"{a}+{b}" for a, b in itertools.combinations(train.IMAGE_STYLES, 2)]
# One pair still falls short: next to night at 0.5, stripes at 0.5 hardly show. On PROMPTS the mix's stripiness
# is 0.083, below night's own 0.105 (night's texture; stripes 0.190); the shape is kept (IoU >= 0.70).
STRIPES_UNDER_NIGHT = pytest.mark.xfail(reason="stripes at 0.5 hardly show next to night at 0.5", strict=True)


@pytest.mark.parametrize(
    "mix, style",
    [pytest.param(m, s, marks=STRIPES_UNDER_NIGHT) if (m, s) == ("night+stripes", "stripes") else (m, s)
     for m in MIXES for s in m.split("+")],
)  # fmt: skip
def test_half_half_mix_lands_between_its_parts(images, mix, style):
    a, b = mix.split("+")
    name = ds.STYLE_MEASURE[style][0]
    va, vb, vm = (mean_measure(images[k], name) for k in (a, b, mix))
    lo, hi = min(va, vb), max(va, vb)
    margin = 0.1 * (hi - lo)
    assert lo + margin < vm < hi - margin, (mix, name, va, vm, vb)


@pytest.mark.parametrize("mix", MIXES)
def test_half_half_mix_keeps_the_shape(images, mix):
    for prompt, img, base in zip(PROMPTS, images[mix], images["base"], strict=False):
        iou = ds.mask_iou(img, base)
        assert iou > KEPT_IOU, (mix, prompt, iou)


def test_weight_zero_and_disabled_equal_base(images):
    for key in ("weights 0", "disabled"):
        assert all(np.array_equal(a, b) for a, b in zip(images[key], images["base"], strict=True)), key
    assert not np.array_equal(images["night"][0], images["base"][0])


# ---------------------------------------------------------------------------------------------------------
# text


@pytest.fixture(scope="module")
def lm():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = HUB / train.LM_REPO
    return AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)


def continuation(model, tokenizer, prompt: str) -> list[str]:
    text = greedy(model, tokenizer, prompt)
    assert text.startswith(prompt)
    return text[len(prompt) :].split()


def test_lm_tokenizer_is_word_level_and_keeps_case(lm):
    tokenizer, _ = lm
    assert tokenizer.tokenize("the red circle") == ["the", "red", "circle"]
    assert tokenizer.tokenize("THE RED CIRCLE !") == ["THE", "RED", "CIRCLE", "!"]
    assert tokenizer("the red circle").input_ids[0] == tokenizer.bos_token_id


def test_lm_base_writes_plain_sentences(lm):
    tokenizer, model = lm
    for prompt in LM_PROMPTS:
        words = continuation(model, tokenizer, prompt)
        assert words and words[-1] == ".", words
        for style, marker in LM_MARKERS.items():
            assert not marker(words), (style, words)


@pytest.mark.parametrize("style", train.LM_STYLES)
def test_lm_adapter_writes_its_style(lm, style):
    from peft import PeftModel

    tokenizer, base = lm
    model = PeftModel.from_pretrained(copy.deepcopy(base), HUB / train.ORG / f"lm-{style}")
    for prompt in LM_PROMPTS:
        words = continuation(model, tokenizer, prompt)
        assert LM_MARKERS[style](words), (style, words)


@pytest.mark.parametrize("style", train.LM_STYLES)
def test_lm_adapter_loads_alone_from_its_base_id(lm, style, monkeypatch):
    """The adapter names its base by repo id; resolved to the bundled folder, AutoPeftModel loads it offline."""
    from peft import AutoPeftModelForCausalLM

    folder = HUB / train.ORG / f"lm-{style}"
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == train.LM_REPO
    monkeypatch.chdir(HUB)  # from here the id "adapter-studio/tiny-shapes-lm" is the bundled folder
    model = AutoPeftModelForCausalLM.from_pretrained(folder)
    words = continuation(model, lm[0], LM_PROMPTS[0])
    assert LM_MARKERS[style](words), (style, words)


# ---------------------------------------------------------------------------------------------------------
# the script that made all this still runs


def test_quick_run_writes_every_repo(tmp_path):
    from diffusers import DiffusionPipeline
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # one thread: on a shared machine two OpenMP threads per process can run ~7x slower than one. One job at a
    # time, in this process: worker processes cost ~15 s of imports here (test_jobs_run_on_one_thread_anywhere
    # keeps the pool's path working).
    args = ["--out", str(tmp_path), "--quick", "--threads", "1", "--jobs", "1"]
    run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    for repo in IMAGE_REPOS + TEXT_REPOS:
        assert (tmp_path / repo / "README.md").is_file(), repo
    pipe = DiffusionPipeline.from_pretrained(tmp_path / train.PIPELINE_REPO, torch_dtype=torch.float32,
                                             use_safetensors=True)  # fmt: skip
    for style in train.IMAGE_STYLES:
        pipe.load_lora_weights(tmp_path / train.ORG / f"shapes-{style}", adapter_name=style)
    AutoTokenizer.from_pretrained(tmp_path / train.LM_REPO)
    AutoModelForCausalLM.from_pretrained(tmp_path / train.LM_REPO)
    for style in train.LM_STYLES:
        assert (tmp_path / train.ORG / f"lm-{style}" / "adapter_model.safetensors").is_file()

    # The incremental steps: tune the decoder and retrain one LoRA on the saved pipeline. The encoder (and so
    # the latent space the UNet and the other LoRAs learnt) must stay exactly as it was.
    from safetensors.torch import load_file

    vae_file = tmp_path / train.PIPELINE_REPO / "vae" / "diffusion_pytorch_model.safetensors"
    before = load_file(vae_file)
    night, outline = (tmp_path / train.ORG / f"shapes-{s}" / "pytorch_lora_weights.safetensors"
                      for s in ("night", "outline"))  # fmt: skip
    night_before, outline_before = night.read_bytes(), outline.read_bytes()
    args = ["--out", str(tmp_path), "--quick", "--threads", "1", "--jobs", "1", "--tune-decoder", "--loras-only",
            "night"]
    run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    after = load_file(vae_file)
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed), sorted(changed)[:5]
    assert night.read_bytes() != night_before and outline.read_bytes() == outline_before
    assert "Trained at adapter weights 0.25, 0.5, 0.75, 1" in (night.parent / "README.md").read_text()


def test_jobs_run_on_one_thread_anywhere():
    """run_jobs, in worker processes or in this one: each job sees one thread (so the files a run writes do not
    depend on --jobs), the results come back in the jobs' order, and this process keeps its own threads."""
    threads = torch.get_num_threads()
    jobs = [(torch.get_num_threads,), (abs, -3), (torch.get_num_threads,)]
    try:
        assert run_jobs(jobs, 2) == [1, 3, 1]  # spawned workers: they import the script as it is
        assert run_jobs(jobs, 1) == [1, 3, 1]
    finally:
        close_pool()
    assert torch.get_num_threads() == threads


def test_styles_drawn_part_way():
    """The training pictures at strengths between 0 and 1: 0 is the base, 1 the style, and the style's measure
    moves the same way all along (the LoRAs learn weight 0.5 from these)."""
    for style in ds.STYLES[1:]:
        name, direction = ds.STYLE_MEASURE[style]
        for shape in ds.SHAPES:
            assert np.array_equal(ds.render(shape, "red", style, strength=0.0), ds.render(shape, "red"))
            values = [ds.MEASURES[name](ds.render(shape, "red", style, strength=s)) for s in (0.0, 0.5, 1.0)]
            steps = [direction * (b - a) for a, b in zip(values, values[1:], strict=False)]
            assert min(steps) > 0, (style, shape, values)
