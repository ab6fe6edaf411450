"""LyCORIS files (LoHa, LoKr) for the image pipeline: which algorithm, checked per module, and the peft config.

LyCORIS (github.com/KohakuBlueleaf/LyCORIS, lycoris/modules/loha.py and lokr.py) saves one group of tensors per
module under kohya's names (`lora_unet_<module with _>.hada_w1_a`, `lora_te_...`, `.alpha`). peft ships tuners for
two of its algorithms, with the same tensors and the same scaling (alpha / rank): LoHa (`hada_w1_a`, `hada_w1_b`,
`hada_w2_a`, `hada_w2_b`, and `hada_t1`/`hada_t2` for Tucker-decomposed convolutions) and LoKr (`lokr_w1` or
`lokr_w1_a`/`lokr_w1_b`, `lokr_w2` or `lokr_w2_a`/`lokr_w2_b`, `lokr_t2`). Those load through peft's public API
(pipeline.py: `add_adapter` with a LoHaConfig / LoKrConfig built here, then `set_peft_model_state_dict`); the
others, which peft has no tuner for, are refused naming the algorithm.

Networks trained with a conv dimension wrap convolutions too (resnets' conv1 / conv2 / conv_shortcut, samplers,
conv_in / conv_out), in the shapes LyCORIS gives them: LoHa's factors flatten the kernel into the input side
((out, r), (r, in x k x k)); LoKr splits the channels (out = a x b, in = c x d) with a 4-D full `lokr_w2` (b, d, k, k)
or a low-rank (b, r), (r, d x k x k); with `use_tucker`, a 3x3 convolution's factors are (r, out) / (r, in) around a
core (r, r, k, k) (`hada_t1` / `hada_t2`, `lokr_t2`). peft's LoHa and LoKr hold all of these (use_effective_conv2d
for the Tucker cores); LoCon's Tucker core (`lora_mid`) has no place in peft's LoRA and is refused by name.

Every key is checked here against the suffixes of its algorithm; module names are never handed to a library as
they are: pipeline.py maps each to one of the model's own modules (kohya's naming of the model's modules) and
builds the config from those.

FLUX files name the transformer's layers in one of two ways. LyCORIS' kohya network (lycoris/kohya/__init__.py,
whose UNET_TARGET_REPLACE_MODULE lists BFL's DoubleStreamBlock / SingleStreamBlock, used by sd-scripts' FLUX
trainer) keys them by BFL's names, `lora_unet_double_blocks_0_img_attn_qkv.hada_w1_a`; LyCORIS' own wrapper
(lycoris/wrapper.py, LORA_PREFIX = "lycoris", used by SimpleTuner on diffusers' FluxTransformer2DModel) keys them
by diffusers' names, `lycoris_transformer_blocks_0_attn_to_q.lokr_w1`, which map one to one. A BFL name is one
diffusers module, or several where BFL fuses what diffusers splits (`flux_groups`): q, k, v in `*_attn_qkv`, and
q, k, v and the MLP in single blocks' `linear1`. A LoHa on a fused layer splits exactly (`split_rows`); a LoKr
does not, and is refused.
"""

from peft_core.errors import AdapterError

LOHA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
LOKR = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
# Algorithms LyCORIS and kohya save that peft has no tuner for (or none reading this format), by a key suffix each
# saves: refused naming them.
UNSUPPORTED = {
    "a1.weight": "GLoRA",
    "b1.weight": "GLoRA",
    "oft_blocks": "LyCORIS OFT (its block layout is not peft's OFT)",
    "oft_diag": "LyCORIS OFT (its block layout is not peft's OFT)",
    "lora_mid.weight": "LoCon with Tucker decomposition (lora_mid)",
    "w_norm": "LyCORIS norm",
    "diff": "LyCORIS full (diff) fine-tuning",
    "on_input": "(IA)3",
    "dora_scale": "DoRA",
}
ALGORITHMS = {"loha": ("LoHa", LOHA), "lokr": ("LoKr", LOKR)}
COMPONENT_PREFIXES = {"lora_unet_": "unet", "lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2",
                      "lora_te_": "text_encoder", "lycoris_": "unet"}  # fmt: skip
# BFL's FLUX.1 layer names -> the diffusers modules each one is, in BFL's row order: diffusers' own reading of kohya's
# FLUX LoRAs (loaders/lora_conversion_utils.py _convert_kohya_flux_lora_to_diffusers, which splits a qkv / linear1
# up matrix by rows in this order; img_mod_lin is norm1.linear as it is, both chunking shift, scale, gate ...).
FLUX_DOUBLE = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "img_attn_proj": ("attn.to_out.0",),
    "img_mlp_0": ("ff.net.0.proj",),
    "img_mlp_2": ("ff.net.2",),
    "img_mod_lin": ("norm1.linear",),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "txt_attn_proj": ("attn.to_add_out",),
    "txt_mlp_0": ("ff_context.net.0.proj",),
    "txt_mlp_2": ("ff_context.net.2",),
    "txt_mod_lin": ("norm1_context.linear",),
}
FLUX_SINGLE = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "linear2": ("proj_out",),
    "modulation_lin": ("norm.linear",),
}
_FUSED_SUFFIXES = tuple(f"_{bfl}" for table in (FLUX_DOUBLE, FLUX_SINGLE) for bfl, t in table.items() if len(t) > 1)


def lycoris_algorithm(keys: list[str]) -> str | None:
    """ "loha" or "lokr" for a LyCORIS file peft can load, None for a file that is no LyCORIS file; refuses an
    algorithm peft lacks, naming it, and a file mixing algorithms."""
    for key in keys:
        suffix = key.split(".", 1)[1] if "." in key else ""
        if suffix in UNSUPPORTED:
            raise AdapterError(
                f"this file is a {UNSUPPORTED[suffix]} adapter (keys such as {key[:120]!r}); peft has no tuner for "
                "it, so it cannot be loaded here. LoRA, LoCon, LoHa and LoKr files can"
            )
    found = {name for name, (_, suffixes) in ALGORITHMS.items() for k in keys if k.rpartition(".")[2] in suffixes}
    if len(found) > 1:
        raise AdapterError("this file mixes LoHa and LoKr layers; peft loads one algorithm per adapter")
    return found.pop() if found else None


def read_modules(name: str, algorithm: str, state_dict: dict) -> dict[str, dict]:
    """{kohya module name: {suffix: tensor}} of a LyCORIS file, every key checked: a kohya component prefix, a
    suffix of `algorithm` or `alpha`, the factors every module needs, and ranks that agree."""
    label, suffixes = ALGORITHMS[algorithm]
    modules: dict[str, dict] = {}
    for key, tensor in state_dict.items():
        module, _, suffix = key.partition(".")
        if not module.startswith(tuple(COMPONENT_PREFIXES)) or suffix not in (*suffixes, "alpha"):
            raise AdapterError(
                f"{name!r}: {key[:120]!r} is not a {label} key as LyCORIS saves them (lora_unet_<module>, "
                f"lora_te_<module>, lycoris_<module> ... with {', '.join(suffixes)} or alpha)"
            )
        modules.setdefault(module, {})[suffix] = tensor
    for module, tensors in modules.items():
        if algorithm == "lokr" and _is_fused_flux(module):
            raise AdapterError(
                f"{name!r}: {module[:120]!r} is a LoKr on BFL's fused FLUX layer, which diffusers' FLUX transformer "
                "has as separate modules (q, k, v, and the MLP in single blocks' linear1); a Kronecker product's "
                "rows cut into those parts are not Kronecker products peft's LoKr can hold, so this file cannot "
                "load exactly. LoHa files, and LoKr files on the other FLUX layers, can"
            )
        _check_module(name, label, module, tensors)
    return modules


def _check_module(name: str, label: str, module: str, t: dict) -> None:
    needed = (
        [("hada_w1_a",), ("hada_w1_b",), ("hada_w2_a",), ("hada_w2_b",)]
        if label == "LoHa"
        else [("lokr_w1", "lokr_w1_a"), ("lokr_w2", "lokr_w2_a")]
    )
    for options in needed:
        if not any(o in t for o in options):
            raise AdapterError(
                f"{name!r}: {module!r} has no {' or '.join(options)}; this LyCORIS {label} layer is incomplete"
            )
    if ("hada_t1" in t) != ("hada_t2" in t):
        raise AdapterError(f"{name!r}: {module!r} has only one of hada_t1 / hada_t2; a Tucker LoHa layer has both")
    for a, b, core in (("hada_w1_a", "hada_w1_b", "hada_t1"), ("hada_w2_a", "hada_w2_b", "hada_t2"),
                       ("lokr_w1_a", "lokr_w1_b", None), ("lokr_w2_a", "lokr_w2_b", "lokr_t2")):  # fmt: skip
        if (a in t) != (b in t) or (a in t and not _is_pair(t[a], t[b], t.get(core) if core else None)):
            raise AdapterError(
                f"{name!r}: {module!r} has {a} and {b} that do not make a rank-r pair (shapes "
                f"{list(getattr(t.get(a), 'shape', []))} and {list(getattr(t.get(b), 'shape', []))}"
                + (f", {core} {list(t[core].shape)})" if core and core in t else ")")
            )
    if "lokr_t2" in t and "lokr_w2_a" not in t:
        raise AdapterError(f"{name!r}: {module!r} has lokr_t2 without lokr_w2_a / lokr_w2_b")
    if "alpha" in t and t["alpha"].numel() != 1:
        raise AdapterError(f"{name!r}: {module}.alpha has shape {list(t['alpha'].shape)}; an alpha is one number")


def _is_pair(a, b, core) -> bool:
    """LyCORIS' two shapes of a rank-r factor pair: a plain one, a (out, r) and b (r, in) (a convolution's `in` is
    in_channels x kernel: loha.py / lokr.py without Tucker); or a Tucker one around a core (r, r, *kernel), a (r,
    out) and b (r, in) (`use_tucker` on a 3x3 convolution: hada_t1 / hada_t2 / lokr_t2)."""
    if a.dim() != 2 or b.dim() != 2:
        return False
    if core is None:
        return a.shape[1] == b.shape[0]
    r = a.shape[0]
    return b.shape[0] == r and core.dim() in (3, 4) and tuple(core.shape[:2]) == (r, r)


def module_rank(tensors: dict) -> int:
    """The rank LyCORIS trained a module with (its `lora_dim`); a LoKr with both factors full has none, so the rank
    peft needs to keep them full (r >= half of every factor side, as LyCORIS decided)."""
    for key in ("hada_w1_b", "lokr_w2_b", "lokr_w1_b"):
        if key in tensors:
            return int(tensors[key].shape[0])
    return max(int(s) for key in ("lokr_w1", "lokr_w2") for s in tensors[key].shape[:2])


def factor_sides(tensors: dict) -> tuple[int, int]:
    """A LoKr module's first Kronecker factor's sides (a, c): out = a x b, in = c x d (lokr.py)."""
    if "lokr_w1" in tensors:
        return int(tensors["lokr_w1"].shape[0]), int(tensors["lokr_w1"].shape[1])
    return int(tensors["lokr_w1_a"].shape[0]), int(tensors["lokr_w1_b"].shape[1])


def linear_in_features(tensors: dict) -> int | None:
    """The input width of a LyCORIS layer shaped for a Linear (LoHa's hada_w1_b; LoKr's c x d), or None for a
    Tucker convolution's: what a file's cross-attention width is read from (only attn2 to_k / to_v are asked)."""
    if "hada_t1" in tensors or "lokr_t2" in tensors:
        return None
    if "hada_w1_b" in tensors:
        return int(tensors["hada_w1_b"].shape[1])
    w2 = tensors["lokr_w2"] if "lokr_w2" in tensors else tensors["lokr_w2_b"]
    return factor_sides(tensors)[1] * int(w2.shape[1]) if w2.dim() == 2 else None


def module_alpha(tensors: dict, rank: int) -> float:
    """LyCORIS' alpha: the file's, else the rank (scaling 1); for LoKr with both factors full LyCORIS ignores it
    (lokr.py: `if use_w1 and use_w2: alpha = lora_dim`)."""
    if "lokr_w1" in tensors and "lokr_w2" in tensors:
        return float(rank)
    return float(tensors["alpha"].float().reshape(-1)[0]) if "alpha" in tensors else float(rank)


def peft_config(algorithm: str, modules: dict, sizes: dict):
    """The LoHaConfig / LoKrConfig of a file's modules in one pipeline part ({module name: {suffix: tensor}}, the
    names the model's own): targets those modules exactly, with each one's rank and alpha (the most common as the
    default, the others in rank_pattern / alpha_pattern, escaped: peft reads those keys as regular expressions).
    `sizes`: {module name: (out, in)} channels or features of the model's modules, which LoKr's factors split."""
    import re
    from collections import Counter

    from peft import LoHaConfig, LoKrConfig

    ranks = {m: module_rank(t) for m, t in modules.items()}
    alphas = {m: module_alpha(t, ranks[m]) for m, t in modules.items()}
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    common = {
        "r": r,
        "alpha": alpha,
        "target_modules": sorted(modules),
        "rank_pattern": {re.escape(m): v for m, v in ranks.items() if v != r},
        "alpha_pattern": {re.escape(m): v for m, v in alphas.items() if v != alpha},
        "init_weights": False,  # the file's tensors replace them
    }
    if algorithm == "loha":
        return LoHaConfig(use_effective_conv2d=any("hada_t1" in t for t in modules.values()), **common)
    return LoKrConfig(
        use_effective_conv2d=any("lokr_t2" in t for t in modules.values()),
        decompose_both=any("lokr_w1_a" in t for t in modules.values()),
        decompose_factor=_decompose_factor(modules, sizes),
        **common,
    )


def _decompose_factor(modules: dict, sizes: dict) -> int:
    """The Kronecker factor under which peft splits every module's sizes as the file's factors do (LyCORIS' `factor`
    argument; -1 is its default, the most square split), or a refusal. A factor's sides are read from `lokr_w1`
    (a, c); the module's own sizes give b and d (out = a x b, in = c x d), whatever shape the second factor has
    (2-D, a convolution's 4-D, or Tucker's (r, b) / (r, d))."""
    from peft.tuners.lokr.layer import factorization

    shapes = {}
    for module, t in modules.items():
        a, c = factor_sides(t)
        out, inn = sizes[module]
        if out % a or inn % c:
            raise AdapterError(f"{module[:120]!r}: its lokr_w1 ({a} x {c}) does not divide the layer's {out} x {inn}")
        shapes[module] = ((a, out // a), (c, inn // c))
    for factor in [-1, *sorted({s[0][0] for s in shapes.values()})]:
        if all(factorization(a * b, factor) == (a, b) and factorization(c * d, factor) == (c, d)
               for (a, b), (c, d) in shapes.values()):  # fmt: skip
            return factor
    raise AdapterError(
        "this LoKr file splits its layers' sizes in a way peft's LoKr cannot reproduce (no single decompose_factor "
        "fits every layer)"
    )


def _is_fused_flux(module: str) -> bool:
    return module.startswith(("lora_unet_double_blocks_", "lora_unet_single_blocks_")) and module.endswith(
        _FUSED_SUFFIXES
    )


def flux_groups(transformer) -> dict[str, tuple[str, ...]]:
    """{BFL name as kohya keys it: the diffusers modules it is} for every block of a diffusers FLUX transformer
    (`lora_unet_double_blocks_0_img_attn_qkv` -> transformer_blocks.0.attn.to_q, .to_k, .to_v); {} for any other."""
    if type(transformer).__name__ != "FluxTransformer2DModel":
        return {}
    groups = {}
    for kind, table, blocks in (("double", FLUX_DOUBLE, "transformer_blocks"),
                                ("single", FLUX_SINGLE, "single_transformer_blocks")):  # fmt: skip
        for i in range(len(getattr(transformer, blocks))):
            for bfl, targets in table.items():
                groups[f"lora_unet_{kind}_blocks_{i}_{bfl}"] = tuple(f"{blocks}.{i}.{t}" for t in targets)
    return groups


def split_rows(name: str, algorithm: str, tensors: dict, sizes: list[int]) -> list[dict]:
    """A LyCORIS layer on a fused BFL layer as one layer per diffusers module, whose output sizes are `sizes` in
    BFL's row order. Exact for LoHa: its delta (w1_a w1_b) * (w2_a w2_b) is element-wise, so the rows of one part
    are those of w1_a and w2_a times the same w1_b, w2_b, with the same rank and alpha."""
    if len(sizes) == 1:
        return [tensors]
    if algorithm != "loha" or "hada_t1" in tensors:
        raise ValueError(f"{name[:120]} is a fused FLUX layer; only a linear LoHa on it splits exactly")
    out = int(tensors["hada_w1_a"].shape[0])
    if out != sum(sizes) or int(tensors["hada_w2_a"].shape[0]) != out:
        raise ValueError(f"{name[:120]} has {out} output rows; the modules it is here have {sum(sizes)} ({sizes})")
    parts, start = [], 0
    for size in sizes:
        rows = ("hada_w1_a", "hada_w2_a")
        parts.append({k: t[start : start + size] if k in rows else t for k, t in tensors.items()})
        start += size
    return parts
