"""Training the bundled default: the tiny models of assets/hub/adapter-studio/, from procedural data, on a CPU.

scripts/train_demo_assets.py runs the steps; each module holds what one of them trains:

    common.py   the run's settings (Config, QUICK), seeding, the learning-rate schedule, log lines, model cards
    jobs.py     run_jobs: steps that do not depend on each other, in worker processes of one thread each
    images.py   the pipeline: CLIP tokenizer, VAE, text encoder and UNet, and the VAE decoder's later tuning
    loras.py    the four style LoRAs for that pipeline
    text.py     the LM, its word-level tokenizer and its three style adapters
    summary.py  loads what was written, as the app will, and measures it (and draws the sample grid)

The repo ids and style names below are what every module (and tests/test_demo_assets.py) shares.
"""

ORG = "adapter-studio"
PIPELINE_REPO = f"{ORG}/tiny-shapes"
LM_REPO = f"{ORG}/tiny-shapes-lm"
IMAGE_STYLES = ("night", "outline", "stripes", "pastel")
LM_STYLES = ("pirate", "formal", "shouting")
