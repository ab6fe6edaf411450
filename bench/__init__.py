"""Benchmarks of Adapter Studio against the anchors of issue 6: scripts that print a table and write JSON.

Every figure that decides a goal is a ratio of two timings taken in the same run, interleaved round by round
(A, B, A, B, ...), so a machine shared with other jobs still gives a true answer. Run them with

    python -m bench                      # every benchmark, on the default pipelines
    python -m bench switch memory        # some of them
    python -m bench --quick              # tiny N, one repeat, tiny pipeline: what tests/test_bench.py runs

See docs/BENCHMARKS.md for the results, the machine and the anchors. One file per benchmark:

    resident.py    switch, generation and the next load at 1, 4, 16, 64 resident adapters
    generation.py  generation with adapters against the base, beside the FLOP ratio
    load.py        an adapter load against a bare load_lora_weights
    api.py         the API round trip through gradio_client against the direct core call
    coldstart.py   `python app.py` until the page answers and the first image comes
    memory.py      RSS per resident adapter against its parameter bytes
    text.py        tokens per second: base, one adapter, merged
    textbatch.py   1-8 concurrent text clients with their own adapters against the same requests one at a time
    gpu.py         every family on the studio against bare diffusers, on a GPU (gpu_models.py: real-size
                   SDXL and FLUX.1 from configs, random weights)
    profile.py     why the bare libraries slow down with resident adapters
    compile.py     STUDIO_COMPILE=1 against eager, and the recompiles per switch
    realsize.py    real-size SDXL's peak memory, load and fuse times: the studio against bare diffusers
    turns.py       a short request behind a long one, step-level against whole-request turns; the switch per step
and what they share: common.py (config, pipelines, interleaved timing, tables, JSON), plot.py
(docs/switch_latency.png), __main__.py (the command line).
"""
