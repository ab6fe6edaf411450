"""What a LoRA file says about itself, and the load report every image adapter carries.

Read from the checked header and tensors (lora_files.py), before the pipeline is touched:

- the family it was made for, from its key names and shapes: the cross-attention width of a UNet
  (`attn2.to_k` takes the text encoder's width: 768 SD 1.x, 1024 SD 2.x, 2048 SDXL), a second text encoder
  (`lora_te2_`, `text_encoder_2.`: SDXL), FLUX's double/single blocks, SD3's `joint_blocks`;
- the alpha convention: kohya files store one `alpha` per layer (scaling alpha / rank); files without them
  (diffusers' own, most peft exports) are loaded as diffusers does, alpha = rank (scaling 1);
- a few fields of the file's own metadata, each an allowlisted name with bounded text (a stranger's).

Then, after the load, pipeline.py fills in per component how many of the file's layers landed.
"""

from dataclasses import asdict, dataclass, field

# Cross-attention width (the text encoder's hidden size) -> the family a UNet LoRA was trained on.
UNET_FAMILIES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
# Metadata fields shown in the report: kohya's training facts and the model spec's architecture. Others are ignored.
METADATA_FIELDS = ("modelspec.architecture", "ss_base_model_version", "ss_network_module", "ss_network_dim",
                   "ss_network_alpha", "ss_sd_model_name")  # fmt: skip
MAX_METADATA_CHARS = 120
MAX_UNMATCHED_SHOWN = 5


@dataclass
class LoadReport:
    """What the file names and what of it landed, per pipeline component; on every adapter and every refusal."""

    layout: str  # as lora_files.detect_layout names it
    named: dict  # component -> LoRA layers the file names, e.g. {"unet": 32, "text_encoder": 12}
    ranks: dict  # component -> [smallest, largest] rank
    alpha: str  # the alpha convention used, in words
    made_for: str  # the family the keys and shapes point to, or "" when they do not say
    metadata: dict = field(default_factory=dict)  # allowlisted fields of the file's own metadata
    matched: dict = field(default_factory=dict)  # component -> layers registered (filled after the load)
    unmatched: list = field(default_factory=list)  # up to five of the file's layers that landed nowhere
    base: str = ""  # the loaded base's family, as the pipeline says it
    algorithm: str = "LoRA"  # or LoHa / LoKr (a LyCORIS file, in peft's tuner of that name)

    def to_dict(self) -> dict:
        return asdict(self)

    def counts(self) -> str:
        """'unet 32/32, text_encoder 0/12': layers registered / named, per component."""
        return ", ".join(f"{c} {self.matched.get(c, 0)}/{n}" for c, n in self.named.items())

    def line(self) -> str:
        """The report in one line, for refusals."""
        made_for = f"; made for {self.made_for}" if self.made_for else ""
        base = f"; the loaded base is {self.base}" if self.base else ""
        missing = f"; layers that matched nothing: {', '.join(self.unmatched)}" if self.unmatched else ""
        return f"{self.layout} layout; layers registered/named: {self.counts()}{made_for}{base}{missing}"


def cross_attention_width(header: dict[str, dict]) -> int | None:
    """The text width a UNet LoRA's cross-attention takes: the in-features of an `attn2` key/value down matrix."""
    for key, info in header.items():
        flat = key.replace(".", "_")
        if "attn2" in flat and ("to_k" in flat or "to_v" in flat) and _is_down(key) and len(info["shape"]) == 2:
            return int(info["shape"][1])
    return None


def _is_down(key: str) -> bool:
    """A LoRA down matrix, or LoHa's hada_w1_b (it takes the layer's whole input too)."""
    down = (".lora_A.", ".lora_down.", ".lora.down.", "_lora.down.", ".lora_linear_layer.down.")
    return any(m in key for m in down) or key.endswith(".hada_w1_b")


def made_for(keys: list[str], width: int | None) -> str:
    """The family the file's keys and shapes point to, e.g. "SDXL (cross-attention 2048)"; "" when they do not."""
    if any(k.startswith(("lora_unet_double_blocks_", "lora_unet_single_blocks_")) for k in keys) or any(
        ".single_transformer_blocks." in k or k.startswith(("double_blocks.", "single_blocks.")) for k in keys
    ):
        return "FLUX (double/single blocks)"
    if any("joint_blocks" in k for k in keys):
        return "SD3 (joint blocks)"
    if width is not None:
        family = UNET_FAMILIES.get(width, "a UNet")
        return f"{family} (cross-attention {width})"
    if any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in keys):
        return "SDXL (two text encoders)"
    return ""


def base_family(pipe) -> tuple[str, int | None]:
    """The loaded base's family in the same words, and its UNet's cross-attention width (None without a UNet)."""
    unet = getattr(pipe, "unet", None)
    width = getattr(getattr(unet, "config", None), "cross_attention_dim", None)
    if isinstance(width, int):
        return f"{UNET_FAMILIES.get(width, type(pipe).__name__)} (cross-attention {width})", width
    return type(pipe).__name__, None


def alpha_convention(header: dict[str, dict], num_layers: int, alphas: dict[str, float]) -> str:
    """The alpha convention in words: the file's `alpha` keys, none (alpha = rank, as diffusers loads such files), or
    some of each."""
    if not alphas:
        return "no alpha keys: alpha = rank (scaling 1, diffusers' convention)"
    values = sorted(set(alphas.values()))
    shown = ", ".join(f"{v:g}" for v in values[:4]) + (" ..." if len(values) > 4 else "")
    if len(alphas) < num_layers:
        return (f"alpha keys on {len(alphas)} of {num_layers} layers ({shown}); the others alpha = rank "
                "(diffusers' convention)")  # fmt: skip
    return f"alpha keys on every layer ({shown}); scaling alpha / rank"


def read_metadata(path) -> dict:
    """The allowlisted fields of the file's `__metadata__` (safetensors checked it maps names to text), each cut
    to MAX_METADATA_CHARS printable characters."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    shown = {}
    for name in METADATA_FIELDS:
        value = metadata.get(name)
        if isinstance(value, str) and value.strip():
            value = "".join(c for c in value.strip() if c.isprintable())[:MAX_METADATA_CHARS]
            shown[name] = value
    return shown
