"""The denoiser compiled once per base (`STUDIO_COMPILE=1`), and kept from recompiling when the mix changes.

torch.compile guards every compiled graph on the Python state it read while tracing; a switch that changes that
state compiles the graph again, which costs more than the compilation saves. A peft LoRA layer reads its
`disable_adapters` flag and its merged record first, and, only when adapters are on and unmerged, its active
adapters, their ranks and their scales. So under compile the slots (slots.py) keep every LoRA layer the graph
sees in one state, the one peft's disabled branch takes: adapters off, nothing merged on record, the base layer
alone. The base is exactly that; an applied mix is fused into the base weights (fusion.py) and the layers are
switched off after the merge, so the graph reads the fused weights through the same branch. The weights are
graph inputs (torch 2.x inlines nn.Modules and lifts their parameters), so copying a fused mix in or the base
weights back changes no guard; a refill of a slot, with any rank, changes only modules that branch never reads.

A mix that cannot be fused (`STUDIO_FUSE=0`, or past `STUDIO_FUSE_MAX_MB`) needs the LoRA branch, whose guards
would differ: it runs eagerly instead (torch.compiler.set_stance("force_eager")), set by the slots with the mix,
which is as global as the stance: both belong to whoever holds the studio's lock.

What still compiles again, as for any compiled model: a new image size or batch (guidance on or off), and, likely
(not measured), an adapter that wraps a layer no slot wrapped before (the module tree changes). On a real SDXL
LoRA on a CPU the default STUDIO_FUSE_MAX_MB is too small to fuse, so such a mix runs eagerly (docs/BENCHMARKS.md,
which measures the rest: `python -m bench compile`, `python -m bench realsize`). tests/test_compile.py holds it.
"""


def denoiser(pipe):
    """The pipeline's denoiser: its UNet, else its transformer (the part compiled)."""
    model = getattr(pipe, "unet", None)
    return model if model is not None else pipe.transformer


def compile_denoiser(pipe) -> None:
    """Compile the pipeline's denoiser in place (nn.Module.compile): the module, its parameters and the LoRA layers
    peft injects into it stay the ones diffusers and the slots hold; its calls go through the compiled graph,
    traced at the first generation."""
    denoiser(pipe).compile()


def run_compiled(compiled: bool) -> None:
    """Let compiled models run compiled (True) or eagerly (False) from now on, until called again."""
    import torch

    torch.compiler.set_stance("default" if compiled else "force_eager")


def compiled_frames() -> int:
    """How many frames torch.compile has compiled in this process, recompilations included.

    torch.compiler has no public count; dynamo's `counters["stats"]["unique_graphs"]` is the count its own tests
    read (one per compiled graph, each recompile adds one). tests/test_compile.py checks that it still moves.
    """
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
