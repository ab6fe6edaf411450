"""LoRA files for the image pipeline: their key layouts, the checked read, the facts listed per adapter.

A LoRA file is read once here, before anything touches the pipeline. Its safetensors header is checked entry by
entry before a tensor is read (peft_core/safetensors_file.py: plain key names, which diffusers turns into
LoraConfig fields that peft matches as regular expressions; dtypes from an allowlist; shapes and offsets that agree
with the file); here, down/up matrices must be 2-D or 4-D with one rank per pair. Then every tensor must be
finite, and the key layout is recognised:

- peft / diffusers: `unet.<module>.lora_A.weight`                      (what diffusers saves today)
                    bare `<module>.lora_A.weight` and `base_model.model.<module>...`: peft's own saves, prefixed
                    here; their LoraConfig's alpha folded in (peft_files.py)
- kohya / A1111:    `lora_unet_<module>.lora_down.weight` + `.alpha`    (most community LoRAs)
- old diffusers:    `unet.<module>.lora.down.weight`                    (diffusers 0.14-0.20 LoRACompatibleLinear)
- attn processors:  `unet.<...>.processor.to_k_lora.down.weight`        (diffusers' training scripts up to ~0.20)
                    and the same without `unet.`, as those scripts saved it in 2023: mapped here to peft keys
- old text encoder: `text_encoder.<module>.lora_linear_layer.down.weight`
- XLabs (FLUX):     `double_blocks.0.processor.qkv_lora1.down.weight`
- LyCORIS LoHa / LoKr (`lora_unet_<module>.hada_w1_a`, `.lokr_w1`): lycoris_files.py, loaded through peft

docs/LAYOUTS.md has the table per family, each row a test (tests/test_layouts.py, tests/test_lycoris.py).

diffusers 0.42 converts the others itself; what it does not do is fail loudly when keys match nothing or only
part of the model: the call returns and the output does not change. So the file's own count of LoRA layers is
kept here and compared with what was registered after the load (see pipeline.py).
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

from peft_core.errors import AdapterError
from peft_core.image import peft_files
from peft_core.image.lora_report import (
    LoadReport,
    alpha_convention,
    cross_attention_width,
    made_for,
    read_metadata,
)
from peft_core.image.lycoris_files import (
    ALGORITHMS,
    linear_in_features,
    lycoris_algorithm,
    module_alpha,
    module_rank,
    read_modules,
)
from peft_core.safetensors_file import check_finite, check_safetensors_header, read_tensors

# Trigger words are listed with every adapter on every /list_adapters answer and added to prompts: a few short ones.
MAX_TRIGGER_WORDS = 10
MAX_TRIGGER_WORD_CHARS = 120
# One marker per LoRA layer: the "down" (A) matrix, in each layout's spelling, and its "up" (B) twin.
_DOWN_UP = {
    ".lora_A.": ".lora_B.",
    ".lora_down.": ".lora_up.",
    ".lora.down.": ".lora.up.",
    "_lora.down.": "_lora.up.",
    ".lora_linear_layer.down.": ".lora_linear_layer.up.",
    "_lora1.down.": "_lora1.up.",  # XLabs' FLUX processors: proj_lora1 / qkv_lora1 (image), ..._lora2 (text)
    "_lora2.down.": "_lora2.up.",
}
_DOWN_MARKERS = tuple(_DOWN_UP)
_UP_MARKERS = tuple(_DOWN_UP.values())
_LYCORIS_MARKERS = ("hada_w1", "hada_w2", "lokr_w1", "lokr_w2", ".oft_", "lora_mid")
_KOHYA_COMPONENTS = {
    "lora_unet_": "unet",
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
    "lora_te_": "text_encoder",
    "lycoris_": "unet",  # LyCORIS' wrapper (lycoris/wrapper.py) keys the denoiser it was given by diffusers' names
}


@dataclass
class LoraFile:
    """A checked LoRA file: its tensors and what they say about the adapter."""

    state_dict: dict = field(repr=False)
    layout: str  # one of the layouts in the module docstring
    rank: int  # the largest rank among its layers (most files use one rank throughout)
    components: list[str]  # pipeline parts it touches, e.g. ["unet", "text_encoder"]
    num_layers: int  # LoRA layers the file names; compared with what the pipeline registers
    size_mb: float
    report: LoadReport  # per component: layers named, ranks; alpha convention, family; the load adds what landed
    width: int | None = None  # the cross-attention width its keys take (lora_report.cross_attention_width)
    modules: dict = field(default_factory=dict, repr=False)  # component -> {flat module name: a key naming it}
    algorithm: str = "lora"  # or "loha" / "lokr": a LyCORIS file, loaded into peft's tuner of that name
    lycoris: dict = field(default_factory=dict, repr=False)  # LyCORIS: {kohya module name: {suffix: tensor}}


@dataclass
class AdapterInfo:
    """One resident adapter, as listed to users and API clients."""

    adapter_name: str
    repo_id: str
    weight_name: str
    revision: str
    rank: int
    components: list[str]
    size_mb: float
    trigger_words: list[str]
    layout: str
    num_layers: int
    report: dict = field(default_factory=dict)  # LoadReport.to_dict(): what the file named and what landed

    def to_dict(self) -> dict:
        return asdict(self)


def _check_lora_shapes(name: str, header: dict[str, dict]) -> None:
    """LoRA down/up matrices are 2-D (linear) or 4-D (conv) with every size >= 1 and one rank per pair; `alpha`
    entries are single numbers. Checked on the header, before a tensor is read."""
    for key, info in header.items():
        shape = info["shape"]
        if key.endswith(".alpha"):
            if len(shape) > 1 or (shape and shape[0] != 1) or not info["dtype"].startswith(("F", "BF")):
                raise AdapterError(
                    f"{name!r}: {key!r} has shape {shape} ({info['dtype']}); an alpha is one float (shape [] or [1])"
                )
        elif key.endswith(".weight") and any(m in key for m in _DOWN_MARKERS + _UP_MARKERS):
            if len(shape) not in (2, 4) or min(shape) < 1:
                raise AdapterError(
                    f"{name!r}: {key!r} has shape {shape}; a LoRA down/up matrix is 2-D (linear) or 4-D (conv) with "
                    "every size at least 1"
                )
    for key, info in header.items():
        marker = next((m for m in _DOWN_MARKERS if m in key), None)
        if marker is None or not key.endswith(".weight"):
            continue
        up = header.get(key.replace(marker, _DOWN_UP[marker]))
        if up is not None and up["shape"][1] != info["shape"][0]:
            raise AdapterError(
                f"{name!r}: {key!r} has rank {info['shape'][0]} but its up matrix has rank {up['shape'][1]}; the two "
                "halves of a LoRA layer share one rank"
            )


def detect_layout(keys: list[str]) -> str:
    """Name the key layout of a LoRA state dict, or refuse one that is not a LoRA (lycoris_files.py reads LoHa and
    LoKr files before this is asked)."""
    if any(marker in k for k in keys for marker in _LYCORIS_MARKERS):
        raise AdapterError(
            "this file mixes LyCORIS keys (LoHa / LoKr / OFT, such as 'hada_w1_a') with other adapter keys; a file "
            "holds one LoRA, LoHa or LoKr"
        )
    lora_keys = [k for k in keys if "lora" in k]
    if not lora_keys:
        example = ", ".join(repr(k) for k in keys[:2])
        raise AdapterError(
            f"this file holds no LoRA weights (keys such as {example}); it looks like a full model's weights. "
            "Load it as a base pipeline instead, or pick the LoRA file of the repo"
        )
    if any(k.startswith(tuple(_KOHYA_COMPONENTS)) for k in lora_keys):
        return "kohya"
    if any(k.startswith(_XLABS_BLOCKS) and ".processor." in k for k in lora_keys):
        return "xlabs"
    if any(".processor." in k and "_lora." in k for k in lora_keys):
        return "attn-procs"
    if any(".lora_linear_layer." in k for k in lora_keys):
        return "old-text-encoder"
    if any(".lora.down." in k or ".lora.up." in k for k in lora_keys):
        return "old-diffusers"
    if any(".lora_A." in k or ".lora_B." in k for k in lora_keys):
        return "peft"
    raise AdapterError(f"unrecognised LoRA key layout (for example {lora_keys[0]!r})")


# XLabs' FLUX LoRAs name BFL's blocks, with or without the `diffusion_model.` of BFL's checkpoints.
_XLABS_BLOCKS = tuple(f"{p}{b}_blocks." for p in ("", "diffusion_model.") for b in ("double", "single"))
# The UNet's own top-level blocks: keys that start with one name a UNet module without saying which component.
_UNET_BLOCKS = ("down_blocks.", "mid_block.", "up_blocks.")
# The attention processors' LoRA projections and the module each wraps.
_PROCESSOR_PROJECTIONS = {"to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"}


def _prefixed_attn_procs(state_dict: dict) -> dict:
    """The old attention-processor layout as diffusers' 2023 training scripts saved it, without a `unet.` prefix
    (`down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_k_lora.down.weight`), in peft keys
    (`unet.down_blocks...attn1.to_k.lora_A.weight`). diffusers 0.42 reads nothing from such a file, and says
    nothing; the mapping is one to one. A key that does not fit it leaves the file as it is (then the load is
    refused for what does not match)."""
    converted = {}
    for key, tensor in state_dict.items():
        module, _, rest = key.partition(".processor.")
        projection, _, matrix = rest.partition(".")
        if projection not in _PROCESSOR_PROJECTIONS or matrix not in ("down.weight", "up.weight"):
            return state_dict
        half = "lora_A" if matrix == "down.weight" else "lora_B"
        converted[f"unet.{module}.{_PROCESSOR_PROJECTIONS[projection]}.{half}.weight"] = tensor
    return converted


def _component(key: str) -> str:
    for prefix, component in _KOHYA_COMPONENTS.items():
        if key.startswith(prefix):
            return component
    if key.startswith(_XLABS_BLOCKS):
        return "transformer"
    return key.split(".", 1)[0]


def flat_module(key: str) -> str:
    """The module a LoRA key names, with its component prefix cut and "." spelled "_" as kohya spells it:
    `unet.a.b.attn1.processor.to_out_lora.down.weight` and `lora_unet_a_b_attn1_to_out_0.lora_down.weight` both
    give `a_b_attn1_to_out_0`. Compared with the registered modules' names spelled the same way, it says which of
    a file's layers landed nowhere (an SDXL file in sgm names, which diffusers renumbers, is not compared)."""
    for prefix in _KOHYA_COMPONENTS:
        if key.startswith(prefix):
            return key[len(prefix) :].split(".", 1)[0]
    module = key.split(".", 1)[1] if "." in key else key
    for marker in _DOWN_MARKERS + _UP_MARKERS:
        if marker in f".{module}":
            module = f".{module}".split(marker, 1)[0].lstrip(".")
            break
    module, _, projection = module.partition(".processor.")
    if projection:  # the attention processors' own spelling: to_out_lora is to_out.0
        module = f"{module}.{_PROCESSOR_PROJECTIONS.get(projection + '_lora', projection)}"
    return module.replace(".", "_")


def read_lora_file(path: Path, adapter_config: str | None = None) -> LoraFile:
    """Load and check a LoRA safetensors file; never unpickles.

    Args:
        adapter_config: the text of the `adapter_config.json` beside it (peft's save_pretrained), if any; its
            scaling fields, or those of the file's `lora_adapter_metadata`, are folded in (peft_files.py).

    Every key, dtype and shape is checked on the header, before a tensor is read. diffusers is given the tensors
    only, never the path: given the path it would read `lora_adapter_metadata` in `__metadata__` as a LoraConfig
    (init_lora_weights, target_modules ... from a stranger), and it builds its config from the key names checked
    here instead (see pipeline.py). Of `__metadata__`, only a few allowlisted fields are read, for the report.
    """
    header = check_safetensors_header(path)
    if not header:
        raise AdapterError(f"{path.name!r} holds no tensors")
    algorithm = lycoris_algorithm(list(header))
    if algorithm is not None:
        return _read_lycoris(path, header, algorithm)
    layout = detect_layout(list(header))
    _check_lora_shapes(path.name, header)
    state_dict = read_tensors(path, repr(path.name))
    check_finite(state_dict, repr(path.name))
    if layout == "attn-procs" and all(k.startswith(_UNET_BLOCKS) for k in state_dict):
        state_dict = _prefixed_attn_procs(state_dict)
    folded = ""
    if layout == "peft":
        state_dict, layout = peft_files.respell(state_dict)
        where, text = ("adapter_config.json", adapter_config) if adapter_config is not None else (
            "its lora_adapter_metadata", peft_files.metadata_config(path))  # fmt: skip
        if text is not None:
            configs = peft_files.read_config_json(text, f"{path.name!r}: {where}")
            state_dict, folded = peft_files.fold_alpha(state_dict, configs, where)
    downs = {k: v for k, v in state_dict.items() if any(m in k for m in _DOWN_MARKERS)}
    if not downs:
        raise AdapterError(f"{path.name!r} has LoRA keys but no down/A matrices; the file is incomplete")
    named: dict[str, int] = {}
    ranks: dict[str, list[int]] = {}
    modules: dict[str, dict] = {}
    for key, tensor in sorted(downs.items()):
        component, rank = _component(key), int(tensor.shape[0])
        named[component] = named.get(component, 0) + 1
        low, high = ranks.get(component, [rank, rank])
        ranks[component] = [min(low, rank), max(high, rank)]
        modules.setdefault(component, {})[flat_module(key)] = key
    alphas = {k: float(v.float().reshape(-1)[0]) for k, v in state_dict.items() if k.endswith(".alpha")}
    width = cross_attention_width(header)
    report = LoadReport(
        layout=layout,
        named=dict(sorted(named.items())),
        ranks=dict(sorted(ranks.items())),
        alpha=folded or alpha_convention(header, len(downs), alphas),
        made_for=made_for(list(header), width),
        metadata=read_metadata(path),
    )
    return LoraFile(
        state_dict=state_dict,
        layout=layout,
        rank=max(int(v.shape[0]) for v in downs.values()),
        components=sorted(named),
        num_layers=len(downs),
        size_mb=round(path.stat().st_size / 2**20, 3),
        report=report,
        width=width,
        modules=modules,
    )


def _read_lycoris(path: Path, header: dict, algorithm: str) -> LoraFile:
    """A LoHa or LoKr file (lycoris_files.py), checked per module, with the facts and report a LoRA file has."""
    state_dict = read_tensors(path, repr(path.name))
    check_finite(state_dict, repr(path.name))
    lycoris = read_modules(path.name, algorithm, state_dict)
    named, ranks, modules, alphas = {}, {}, {}, {}
    for module, tensors in sorted(lycoris.items()):
        component, rank = _component(module), module_rank(tensors)
        named[component] = named.get(component, 0) + 1
        low, high = ranks.get(component, [rank, rank])
        ranks[component] = [min(low, rank), max(high, rank)]
        modules.setdefault(component, {})[flat_module(module)] = module
        if "alpha" in tensors:
            alphas[module] = module_alpha(tensors, rank)
    # the text width a cross-attention key / value layer takes (LoHa's hada_w1_b; LoKr's factors' c x d)
    width = next((w for m, t in sorted(lycoris.items()) if m.endswith(("attn2_to_k", "attn2_to_v"))
                  and (w := linear_in_features(t)) is not None), None)  # fmt: skip
    layout = f"lycoris-{algorithm}"
    report = LoadReport(
        layout=layout,
        named=dict(sorted(named.items())),
        ranks=dict(sorted(ranks.items())),
        alpha=alpha_convention(header, len(lycoris), alphas),
        made_for=made_for(list(header), width),
        metadata=read_metadata(path),
        algorithm=ALGORITHMS[algorithm][0],
    )
    return LoraFile(
        state_dict=state_dict,
        layout=layout,
        rank=max(high for _, high in ranks.values()),
        components=sorted(named),
        num_layers=len(lycoris),
        size_mb=round(path.stat().st_size / 2**20, 3),
        report=report,
        width=width,
        modules=modules,
        algorithm=algorithm,
        lycoris=lycoris,
    )


def trigger_words(card_data: dict) -> list[str]:
    """Trigger words from a model card, in the fields the common trainers write them to.

    At most MAX_TRIGGER_WORDS, each printable text of at most MAX_TRIGGER_WORD_CHARS; others are left out (a card
    is a stranger's text, and these words travel with every listing of the adapters).
    """
    words: list[str] = []
    for key in ("instance_prompt", "trigger_words", "trigger_word", "activation_text", "trigger"):
        value = card_data.get(key)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            words += [w.strip() for w in value if isinstance(w, str) and _usable_word(w.strip())]
    return list(dict.fromkeys(words))[:MAX_TRIGGER_WORDS]


def _usable_word(word: str) -> bool:
    return 0 < len(word) <= MAX_TRIGGER_WORD_CHARS and word.isprintable()


# kohya sd-scripts' SD3 LoRA (networks/lora_sd3.py: every Linear of MMDiT's SingleDiTBlock, prefix lora_unet, qkv saved
# combined) names Stability's MMDiT layers; diffusers 0.42's SD3 loader converts none of them. Each is the diffusers
# module(s) of diffusers' own checkpoint converter (single_file_utils.convert_sd3_transformer_checkpoint_to_diffusers):
# a qkv is to_q, to_k, to_v by rows; the adaLN of a context block that is "pre_only" (the last) is
# AdaLayerNormContinuous, whose (scale, shift) is the checkpoint's (shift, scale) swapped.
SD3_LAYERS = {
    "x_block_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "x_block_attn_proj": ("attn.to_out.0",),
    "x_block_attn2_qkv": ("attn2.to_q", "attn2.to_k", "attn2.to_v"),
    "x_block_attn2_proj": ("attn2.to_out.0",),
    "x_block_mlp_fc1": ("ff.net.0.proj",),
    "x_block_mlp_fc2": ("ff.net.2",),
    "x_block_adaLN_modulation_1": ("norm1.linear",),
    "context_block_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "context_block_attn_proj": ("attn.to_add_out",),
    "context_block_mlp_fc1": ("ff_context.net.0.proj",),
    "context_block_mlp_fc2": ("ff_context.net.2",),
    "context_block_adaLN_modulation_1": ("norm1_context.linear",),
}


def sd3_kohya_to_peft(state_dict: dict, transformer) -> dict:
    """A copy of `state_dict` with kohya's SD3 transformer layers (`lora_unet_joint_blocks_0_x_block_attn_qkv`) as
    the diffusers modules they are, in diffusers' own save format (`transformer.<module>.lora_A.weight`), alpha / rank
    folded into the up matrix as diffusers' kohya converters do; any other state dict is copied as it is. A layer that
    is none of this transformer's modules is refused, named: a qkv layer is three modules, so counting registered
    modules afterwards could not tell."""
    import torch

    if type(transformer).__name__ != "SD3Transformer2DModel" or not any(
        k.startswith("lora_unet_joint_blocks_") for k in state_dict
    ):
        return dict(state_dict)
    modules = dict(transformer.named_modules())
    out, bad = {}, []
    layers = sorted({k.split(".", 1)[0] for k in state_dict if k.startswith("lora_unet_joint_blocks_")})
    for layer in layers:
        index, _, name = layer.removeprefix("lora_unet_joint_blocks_").partition("_")
        down, up = state_dict.get(f"{layer}.lora_down.weight"), state_dict.get(f"{layer}.lora_up.weight")
        names = [f"transformer_blocks.{index}.{t}" for t in SD3_LAYERS.get(name, ())]
        if not names or down is None or up is None or not all(n in modules for n in names):
            bad.append(layer)
            continue
        sizes = [modules[n].out_features for n in names]
        if up.shape[0] != sum(sizes) or any(modules[n].in_features != down.shape[1] for n in names):
            bad.append(layer)
            continue
        alpha = state_dict.get(f"{layer}.alpha")
        up = up * (float(alpha) / down.shape[0]) if alpha is not None else up
        if name == "context_block_adaLN_modulation_1" and modules[f"transformer_blocks.{index}"].context_pre_only:
            shift, scale = up.chunk(2, dim=0)
            up = torch.cat([scale, shift], dim=0)
        for module, part in zip(names, up.split(sizes, dim=0), strict=True):
            out[f"transformer.{module}.lora_A.weight"] = down.clone()  # one tensor per module, as peft holds them
            out[f"transformer.{module}.lora_B.weight"] = part.contiguous()
    if bad:
        raise AdapterError(
            f"{len(bad)} of its {len(layers)} SD3 layers name no module of this transformer (or not at its sizes): "
            f"{[b[:120] for b in bad[:5]]}"
        )
    out |= {k: v for k, v in state_dict.items() if not k.startswith("lora_unet_joint_blocks_")}
    return out
