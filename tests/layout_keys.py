"""LoRA files keyed as each published layout keys them, generated for a tiny pipeline by that layout's own naming rule.

A tiny pipeline has fewer blocks than a real one, so the keys cannot be copied from real files; they are generated
from the tiny pipeline's real module names, converted by the rule each trainer applies, and checked against key
lists of real files (the sources are named at each rule). Every layout here gets the same weights, per layer, from
`lora_layers`, so a file in any layout must give the image of the same layers in peft layout.

    layers = lora_layers(pipe, {"unet": KOHYA_UNET, "text_encoder": KOHYA_TE}, seed=1)
    save_file(kohya(layers, alpha=4.0), path)   # lora_unet_down_blocks_1_attentions_0_..._attn1_to_q.lora_down.weight
"""

import torch

# kohya sd-scripts, networks/lora.py: the module classes whose children get a LoRA (UNET_TARGET_REPLACE_MODULE,
# UNET_TARGET_REPLACE_MODULE_CONV2D_3X3 for LoCon / conv_dim, TEXT_ENCODER_TARGET_REPLACE_MODULE), the children
# being every nn.Linear and 1x1 nn.Conv2d (3x3 convolutions too under the conv classes, when conv_dim is set).
KOHYA_UNET = ("Transformer2DModel",)
KOHYA_LOCON = ("Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D")
KOHYA_TE = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")
# diffusers' training scripts (train_dreambooth_lora.py, train_text_to_image_lora.py): the attention projections.
ATTENTION = ("Attention",)
PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
CLIP_ATTENTION = ("CLIPAttention", "CLIPSdpaAttention")
# kohya's file prefixes (networks/lora.py LORA_PREFIX_UNET, LORA_PREFIX_TEXT_ENCODER; sdxl_train_network.py names
# the two SDXL text encoders lora_te1 and lora_te2).
KOHYA_PREFIX = {"unet": "lora_unet", "text_encoder": "lora_te", "text_encoder_2": "lora_te2"}
KOHYA_SDXL_PREFIX = {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}


def target_modules(model, parents: tuple, conv3x3: bool = False, children: tuple = ()) -> list[str]:
    """The module names kohya's rule picks in `model`: the Linear and 1x1 Conv2d children (3x3 too with `conv3x3`)
    of every module whose class is in `parents`; with `children`, only those child names (e.g. to_q)."""
    names = []
    for parent_name, parent in model.named_modules():
        if type(parent).__name__ not in parents:
            continue
        for child_name, child in parent.named_modules():
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if not child_name or (children and child_name not in children):
                continue
            is_conv = isinstance(child, torch.nn.Conv2d)
            if isinstance(child, torch.nn.Linear) or (is_conv and (conv3x3 or child.kernel_size == (1, 1))):
                names.append(name)
    return list(dict.fromkeys(names))


def lora_layers(pipe, rules: dict, seed: int, rank: int = 4, scale: float = 0.3) -> dict:
    """{component: {module name: (down, up)}}: one LoRA layer per module the rule picks, weights drawn after
    `torch.manual_seed(seed)` (large enough to change a tiny pipeline's image)."""
    torch.manual_seed(seed)
    layers = {}
    for component, rule in rules.items():
        model = getattr(pipe, component)
        parents, conv3x3, children = rule if isinstance(rule[0], tuple) else (rule, False, ())
        modules = dict(model.named_modules())
        layers[component] = {}
        for name in target_modules(model, parents, conv3x3, children):
            module = modules[name]
            if isinstance(module, torch.nn.Conv2d):
                down = torch.randn(rank, module.in_channels, *module.kernel_size) * scale
                up = torch.randn(module.out_channels, rank, 1, 1) * scale
            else:
                down = torch.randn(rank, module.in_features) * scale
                up = torch.randn(module.out_features, rank) * scale
            layers[component][published(model, name)] = (down, up)
    return layers


def published(model, name: str) -> str:
    """A module's name as published files spell it. transformers 5's CLIPTextModel dropped the `text_model.` level
    its checkpoints and every LoRA trained before it carry (`text_model.encoder.layers.0.self_attn.q_proj`;
    CLIPTextModelWithProjection still has it): files keep the old spelling, so the fixtures do too."""
    if type(model).__name__ == "CLIPTextModel" and not hasattr(model, "text_model"):
        return f"text_model.{name}"
    return name


def peft(layers: dict) -> dict:
    """diffusers' own save format since 0.22 (`save_lora_weights` via peft): `unet.<module>.lora_A.weight`."""
    return {f"{c}.{m}.lora_{h}.weight": t for c, mods in layers.items() for m, pair in mods.items()
            for h, t in zip("AB", pair, strict=True)}  # fmt: skip


def kohya(layers: dict, alpha: float | None = None, prefix: dict = KOHYA_PREFIX, unet_name=None) -> dict:
    """kohya sd-scripts (networks/lora.py LoRAModule): `lora_name = prefix + "." + module; .replace(".", "_")`, then
    `<lora_name>.lora_down.weight`, `.lora_up.weight` and, unless `alpha` is None, `.alpha` (a 0-d tensor; files
    from early scripts and some converters have none). `unet_name`: a UNet module's name -> the name kohya saw
    (sgm_name for SDXL)."""
    state = {}
    for component, modules in layers.items():
        for module, (down, up) in modules.items():
            spelled = unet_name(module) if unet_name and component == "unet" else module
            key = f"{prefix[component]}_{spelled.replace('.', '_')}"
            state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"] = down, up
            if alpha is not None:
                state[f"{key}.alpha"] = torch.tensor(float(alpha))
    return state


def attn_procs(layers: dict, prefix: str = "unet.") -> dict:
    """diffusers' LoRAAttnProcessor, saved by `save_attn_procs` (0.12-0.20) and its training scripts:
    `<block>.attn1.processor.to_q_lora.down.weight` (to_out.0 spelled `to_out_lora`); with a `unet.` prefix from
    `LoraLoaderMixin.save_lora_weights`, without one from `unet.save_attn_procs` (most 2023 Hub files)."""
    state = {}
    for module, (down, up) in layers["unet"].items():
        block, _, projection = module.rpartition(".attn")
        attn, _, proj = projection.partition(".")
        spelled = "to_out" if proj == "to_out.0" else proj
        key = f"{prefix}{block}.attn{attn}.processor.{spelled}_lora"
        state[f"{key}.down.weight"], state[f"{key}.up.weight"] = down, up
    return state


def old_diffusers(layers: dict) -> dict:
    """diffusers 0.21's LoRACompatibleLinear / LoRACompatibleConv (`unet.<module>.lora.down.weight`)."""
    return {f"{c}.{m}.lora.{h}.weight": t for c, mods in layers.items() for m, pair in mods.items()
            for h, t in zip(("down", "up"), pair, strict=True)}  # fmt: skip


def old_text_encoder(layers: dict) -> dict:
    """diffusers 0.15-0.20's PatchedLoraProjection on the text encoder, saved beside attention processors:
    `text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight`."""
    return {f"text_encoder.{m}.lora_linear_layer.{h}.weight": t for m, pair in layers["text_encoder"].items()
            for h, t in zip(("down", "up"), pair, strict=True)}  # fmt: skip


def sgm_name(unet) -> callable:
    """A diffusers UNet module name -> the name in Stability's sgm/LDM UNet, which kohya's SDXL trainer (and A1111)
    use: `down_blocks.1.attentions.0` -> `input_blocks.4.1`, `mid_block.attentions.0` -> `middle_block.1`,
    `up_blocks.0.attentions.2` -> `output_blocks.2.1`. The inverse of diffusers' _maybe_map_sgm_blocks_to_diffusers
    (input block n = 1 + i * (layers_per_block + 1) + j; output block n = i * (layers_per_block + 1) + j; inner
    index 0 resnets, 1 attentions), checked against the key list of a real kohya SDXL file
    (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`, `lora_unet_middle_block_1_proj_in`)."""
    per_block = unet.config.layers_per_block + 1

    def convert(module: str) -> str:
        parts = module.split(".")
        if parts[0] == "mid_block" and parts[1] in ("resnets", "attentions"):
            index = 1 if parts[1] == "attentions" else 2 * int(parts[2])  # resnets 0 and 1 sit around the attention
            return ".".join(["middle_block", str(index)] + parts[3:])
        inner = {"resnets": 0, "attentions": 1}.get(parts[2] if len(parts) > 3 else "")
        if parts[0] in ("down_blocks", "up_blocks") and inner is not None:
            n = int(parts[1]) * per_block + int(parts[3]) + (parts[0] == "down_blocks")  # input_blocks.0 is conv_in
            side = "input_blocks" if parts[0] == "down_blocks" else "output_blocks"
            return ".".join([side, str(n), str(inner)] + parts[4:])
        raise ValueError(f"no sgm name for {module!r} in these fixtures")

    return convert


def flat(layers: dict, pipe) -> dict:
    """{component: sorted module names}: what a load of these layers must register in `pipe`, per component."""
    modules = {c: {published(getattr(pipe, c), n): n for n, _ in getattr(pipe, c).named_modules()} for c in layers}
    return {c: sorted(modules[c][m] for m in mods) for c, mods in layers.items()}


def scaled(layers: dict, factor: float) -> dict:
    """The same layers with every up matrix times `factor` (what alpha / rank = factor computes)."""
    return {c: {m: (d, u * factor) for m, (d, u) in mods.items()} for c, mods in layers.items()}


def only(layers: dict, *components: str) -> dict:
    return {c: layers[c] for c in components}


# --- LyCORIS -------------------------------------------------------------------------------------------------------


def _sizes(module) -> tuple[int, int]:
    if isinstance(module, torch.nn.Conv2d):
        return module.out_channels, module.in_channels * module.kernel_size[0] * module.kernel_size[1]
    return module.out_features, module.in_features


def loha(model, modules: list[str], seed: int, rank: int = 4, alpha: float | None = 2.0, prefix="lora_unet",
         scale: float = 0.5, spell=None) -> dict:  # fmt: skip
    """A LoHa file as LyCORIS saves it (lycoris/modules/loha.py LohaModule, kohya names): per module
    `hada_w1_a` (out, rank), `hada_w1_b` (rank, in), `hada_w2_a`, `hada_w2_b` and `alpha`; a convolution's `in` is
    in_channels x kernel (no Tucker). `spell`: a module name -> the name the trainer saw (sgm_name for SDXL)."""
    torch.manual_seed(seed)
    named = dict(model.named_modules())
    state = {}
    for name in modules:
        key = f"{prefix}_{(spell or (lambda n: published(model, n)))(name).replace('.', '_')}"
        state |= loha_layer(key, *_sizes(named[name]), rank, alpha, scale)
    return state


def loha_layer(key: str, out: int, inn: int, rank: int = 4, alpha: float | None = 2.0, scale: float = 0.5) -> dict:
    """One LoHa layer's tensors (LohaModule's state dict) for a layer of `out` x `inn`, under `key`."""
    state = {}
    for w in ("1", "2"):
        state[f"{key}.hada_w{w}_a"] = torch.randn(out, rank) * scale
        state[f"{key}.hada_w{w}_b"] = torch.randn(rank, inn) * scale
    if alpha is not None:
        state[f"{key}.alpha"] = torch.tensor(float(alpha))
    return state


def lokr(model, modules: list[str], seed: int, rank: int = 2, alpha: float = 1.0, prefix="lora_unet",
         scale: float = 0.5, spell=None) -> dict:  # fmt: skip
    """A LoKr file as LyCORIS saves it (lycoris/modules/lokr.py LokrModule, factor -1, decompose_both off), see
    `lokr_layer`. `spell`: a module name -> the name the trainer saw (sgm_name for SDXL)."""
    torch.manual_seed(seed)
    named = dict(model.named_modules())
    state = {}
    for name in modules:
        key = f"{prefix}_{(spell or (lambda n: published(model, n)))(name).replace('.', '_')}"
        state |= lokr_layer(key, *_sizes(named[name]), rank, alpha, scale)
    return state


def lokr_layer(key: str, out: int, inn: int, rank: int = 2, alpha: float = 1.0, scale: float = 0.5) -> dict:
    """One LoKr layer: out and in split by LyCORIS' `factorization` (a <= b, the most square split), `lokr_w1`
    (a, c) full, and `lokr_w2` (b, d) full when rank >= max(b, d) / 2, else `lokr_w2_a` (b, rank) and `lokr_w2_b`
    (rank, d); `alpha` (LyCORIS ignores it when both factors are full)."""
    from peft.tuners.lokr.layer import factorization  # LyCORIS' own function, as peft ships it

    (a, b), (c, d) = factorization(out, -1), factorization(inn, -1)
    state = {f"{key}.lokr_w1": torch.randn(a, c) * scale}
    if rank >= max(b, d) / 2:
        state[f"{key}.lokr_w2"] = torch.randn(b, d) * scale
    else:
        state[f"{key}.lokr_w2_a"] = torch.randn(b, rank) * scale
        state[f"{key}.lokr_w2_b"] = torch.randn(rank, d) * scale
    state[f"{key}.alpha"] = torch.tensor(float(alpha))
    return state


# --- FLUX ----------------------------------------------------------------------------------------------------------

# BFL's FLUX.1 layer names (kohya sd-scripts networks/lora_flux.py keys them lora_unet_<bfl name with _>) and the
# diffusers modules each one is: diffusers' _convert_kohya_flux_lora_to_diffusers (_convert_sd_scripts_to_ai_toolkit)
# and _convert_xlabs_flux_lora_to_diffusers. A qkv layer is three modules (its up matrix split by rows). Single
# blocks' linear1 (q, k, v and the MLP in one) is left out: diffusers splits it at FLUX.1's real widths (3072,
# 12288), which a tiny FLUX does not have.
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
FLUX_SINGLE = {"linear2": ("proj_out",), "modulation_lin": ("norm.linear",)}
# For LyCORIS files, which the studio splits itself at the model's own widths: linear1 too (diffusers' reading of
# BFL's single block: to_q, to_k, to_v, then proj_mlp, by rows).
FLUX_SINGLE_ALL = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), **FLUX_SINGLE}
FLUX_FUSED = ("img_attn_qkv", "txt_attn_qkv", "linear1")
# XLabs' processors (x-flux train_flux_lora_deepspeed.py: DoubleStreamBlockLoraProcessor): proj/qkv, 1 image, 2 text
XLABS_DOUBLE = {"qkv_lora1": "img_attn_qkv", "proj_lora1": "img_attn_proj", "qkv_lora2": "txt_attn_qkv",
                "proj_lora2": "txt_attn_proj"}  # fmt: skip


def flux_bfl_layers(transformer, seed: int, rank: int = 4, scale: float = 0.5, double=FLUX_DOUBLE, single=FLUX_SINGLE):
    """{(block kind, index, BFL layer name): (down, up, [diffusers modules])} for every block of `transformer`."""
    torch.manual_seed(seed)
    modules = dict(transformer.named_modules())
    layers = {}
    for kind, table, count in (("double", double, len(transformer.transformer_blocks)),
                               ("single", single, len(transformer.single_transformer_blocks))):  # fmt: skip
        block = "transformer_blocks" if kind == "double" else "single_transformer_blocks"
        for i in range(count):
            for bfl, targets in table.items():
                names = [f"{block}.{i}.{t}" for t in targets]
                out = sum(modules[n].out_features for n in names)
                down = torch.randn(rank, modules[names[0]].in_features) * scale
                layers[(kind, i, bfl)] = (down, torch.randn(out, rank) * scale, names)
    return layers


def flux_kohya(layers: dict, alpha: float | None = None) -> dict:
    """kohya sd-scripts' FLUX LoRA (networks/lora_flux.py): `lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`
    and, unless `alpha` is None, `.alpha`."""
    state = {}
    for (kind, i, bfl), (down, up, _) in layers.items():
        key = f"lora_unet_{kind}_blocks_{i}_{bfl}"
        state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"] = down, up
        if alpha is not None:
            state[f"{key}.alpha"] = torch.tensor(float(alpha))
    return state


def flux_xlabs(layers: dict) -> dict:
    """XLabs' FLUX LoRA: `double_blocks.0.processor.qkv_lora1.down.weight` (double blocks' attention only)."""
    bfl_to_xlabs = {v: k for k, v in XLABS_DOUBLE.items()}
    return {f"double_blocks.{i}.processor.{bfl_to_xlabs[bfl]}.{h}.weight": t
            for (kind, i, bfl), pair in layers.items() if kind == "double" and bfl in bfl_to_xlabs
            for h, t in zip(("down", "up"), pair[:2], strict=True)}  # fmt: skip


def flux_lycoris(transformer, make, seed: int, double=FLUX_DOUBLE, single=FLUX_SINGLE) -> dict:
    """A LyCORIS file for a FLUX transformer as LyCORIS' kohya network saves it on sd-scripts' FLUX trainer (BFL
    modules, lycoris/kohya/__init__.py: DoubleStreamBlock / SingleStreamBlock): `lora_unet_double_blocks_0_<bfl>`
    with `make(key, out, in)`'s tensors (loha_layer, lokr_layer); a fused layer's out is its modules' together."""
    torch.manual_seed(seed)
    modules = dict(transformer.named_modules())
    state = {}
    for kind, table, blocks in (("double", double, "transformer_blocks"), ("single", single,
                                                                          "single_transformer_blocks")):  # fmt: skip
        for i in range(len(getattr(transformer, blocks))):
            for bfl, targets in table.items():
                names = [f"{blocks}.{i}.{t}" for t in targets]
                out = sum(modules[n].out_features for n in names)
                state |= make(f"lora_unet_{kind}_blocks_{i}_{bfl}", out, modules[names[0]].in_features)
    return state


# --- SD3 -----------------------------------------------------------------------------------------------------------

# kohya sd-scripts' SD3 LoRA (networks/lora_sd3.py: SD3_TARGET_REPLACE_MODULE = ["SingleDiTBlock"], every Linear of
# it, LORA_PREFIX_SD3 = "lora_unet", qkv saved combined) on MMDiT's names, and the diffusers modules each is
# (diffusers' convert_sd3_transformer_checkpoint_to_diffusers). A "pre_only" context block (the last) has no attention
# proj and no MLP, and its adaLN is diffusers' AdaLayerNormContinuous: (scale, shift) where MMDiT has (shift, scale).
SD3_BLOCKS = {
    "x_block": {"attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"), "attn_proj": ("attn.to_out.0",),
                "mlp_fc1": ("ff.net.0.proj",), "mlp_fc2": ("ff.net.2",), "adaLN_modulation_1": ("norm1.linear",)},
    "context_block": {"attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
                      "attn_proj": ("attn.to_add_out",), "mlp_fc1": ("ff_context.net.0.proj",),
                      "mlp_fc2": ("ff_context.net.2",), "adaLN_modulation_1": ("norm1_context.linear",)},
}  # fmt: skip


def sd3_layers(transformer, seed: int, rank: int = 4, scale: float = 0.5) -> dict:
    """{kohya layer name: (down, up, [diffusers modules], swapped)} for every layer MMDiT has in every block."""
    torch.manual_seed(seed)
    modules = dict(transformer.named_modules())
    layers = {}
    for i, block in enumerate(transformer.transformer_blocks):
        for side, table in SD3_BLOCKS.items():
            for name, targets in table.items():
                names = [f"transformer_blocks.{i}.{t}" for t in targets]
                if not all(modules.get(n) is not None for n in names):
                    continue  # a pre_only context block: no proj, no MLP
                out = sum(modules[n].out_features for n in names)
                down = torch.randn(rank, modules[names[0]].in_features) * scale
                swapped = side == "context_block" and name.startswith("adaLN") and block.context_pre_only
                layers[f"lora_unet_joint_blocks_{i}_{side}_{name}"] = (down, torch.randn(out, rank) * scale, names,
                                                                       swapped)  # fmt: skip
    return layers


def sd3_kohya(layers: dict, alpha: float | None = None) -> dict:
    state = {}
    for key, (down, up, _, _) in layers.items():
        state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"] = down, up
        if alpha is not None:
            state[f"{key}.alpha"] = torch.tensor(float(alpha))
    return state


def sd3_peft(layers: dict, transformer, factor: float = 1.0) -> dict:
    """The same weights in diffusers' own format, as diffusers' checkpoint converter splits and orders the rows."""
    modules = dict(transformer.named_modules())
    state = {}
    for down, up, names, swapped in layers.values():
        up = torch.cat(up.chunk(2)[::-1]) if swapped else up
        for name, part in zip(names, up.split([modules[n].out_features for n in names]), strict=True):
            state[f"transformer.{name}.lora_A.weight"] = down
            state[f"transformer.{name}.lora_B.weight"] = (part * factor).contiguous()
    return state


# --- LyCORIS networks with convolutions ------------------------------------------------------------------------------

# LyCORIS' kohya network (lycoris/kohya.py LycorisNetworkKohya, the "full" preset): create_modules gives a module to
# every Linear / Conv1d-3d inside a module whose class is in UNET_TARGET_REPLACE_MODULE (1x1 convolutions with the
# linear dim, the others with conv_dim, so all of them once conv_dim is set), named `<prefix>_<parent>_<child>` with
# "." spelled "_", and to the modules named exactly in UNET_TARGET_REPLACE_NAME; the text encoders likewise.
LYCORIS_UNET = ("Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D")
LYCORIS_UNET_NAMES = ("conv_in", "conv_out", "time_embedding.linear_1", "time_embedding.linear_2")
LYCORIS_TE = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")
# LyCORIS' wrapper (lycoris/wrapper.py LycorisNetwork, what SimpleTuner trains diffusers' models with): its presets'
# unet_target_module lists are not read by its apply_preset (only target_module), so TARGET_REPLACE_MODULE keeps its
# default, the layer classes themselves: every Linear and Conv of the one model it is given, named
# `lycoris_<module with _>` (norms too only with train_norm).
LYCORIS_WRAPPER = ("Linear", "Conv1d", "Conv2d", "Conv3d")
# sd-scripts' SDXL UNet (library/sdxl_original_unet.py), which kohya's SDXL trainer hands LyCORIS: a ResnetBlock2D's
# layers are in_layers.2 (conv1), emb_layers.1 (time_emb_proj), out_layers.3 (conv2), skip_connection (conv_shortcut);
# Downsample2D's conv is `op`, Upsample2D's `conv`; input_blocks get a Downsample2D after each level's blocks, an
# output block holds [ResnetBlock2D, Transformer2DModel (if any), Upsample2D]. Its conv_in / conv_out / time_embed
# are input_blocks.0.0, out.2, time_embed.0 / .2: not the names LyCORIS looks for, so SDXL files lack them.
SGM_RESNET = {"conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "conv2": "out_layers.3",
              "conv_shortcut": "skip_connection"}  # fmt: skip


def lycoris_targets(model, parents: tuple, names: tuple = ()) -> list[str]:
    """The module names LyCORIS' create_modules picks in `model` (see LYCORIS_UNET)."""
    wraps = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    picked = []
    for parent_name, parent in model.named_modules():
        if type(parent).__name__ in parents:  # create_modules_ on it: itself (name "") and every child
            picked += [f"{parent_name}.{child_name}" if child_name else parent_name
                       for child_name, child in parent.named_modules() if isinstance(child, wraps)]  # fmt: skip
        elif parent_name in names:
            picked.append(parent_name)
    return list(dict.fromkeys(picked))


def lycoris_sgm_name(unet) -> callable:
    """A diffusers SDXL UNet module name -> its name in sd-scripts' SDXL UNet (SGM_RESNET, samplers), as kohya's SDXL
    trainer and so LyCORIS name it."""
    blocks = sgm_name(unet)
    per_block = unet.config.layers_per_block

    def convert(module: str) -> str:
        parts = module.split(".")
        if parts[0] == "down_blocks" and parts[2] == "downsamplers":
            return f"input_blocks.{(int(parts[1]) + 1) * (per_block + 1)}.0.op"
        if parts[0] == "up_blocks" and parts[2] == "upsamplers":
            inner = 2 if hasattr(unet.up_blocks[int(parts[1])], "attentions") else 1
            return f"output_blocks.{int(parts[1]) * (per_block + 1) + per_block}.{inner}.conv"
        if "resnets" in parts and parts[-1] in SGM_RESNET:
            return f"{blocks('.'.join(parts[:-1]))}.{SGM_RESNET[parts[-1]]}"
        return blocks(module)

    return convert


def lycoris_layer(algo: str, key: str, module, rank: int, alpha: float, tucker: bool = False,
                  scale: float = 0.3) -> dict:  # fmt: skip
    """One module's tensors as LyCORIS saves them, with the shapes its modules make for a Linear and for 1x1 / 3x3
    convolutions (`tucker`: use_tucker, which applies to convolutions larger than 1x1 only):

    - LoCon (modules/locon.py): lora_down (r, in) / (r, in, k, k), lora_up (out, r) / (out, r, 1, 1); Tucker: lora_down
      (r, in, 1, 1), lora_mid (r, r, k, k), lora_up (out, r, 1, 1);
    - LoHa (modules/loha.py): hada_w{1,2}_a (out, r), hada_w{1,2}_b (r, in x k x k); Tucker: hada_t{1,2} (r, r, k, k),
      hada_w{1,2}_a (r, out), hada_w{1,2}_b (r, in);
    - LoKr (modules/lokr.py, factor -1): out = a x b and in = c x d by `factorization` of the channels, lokr_w1 (a, c);
      lokr_w2 (b, d[, k, k]) full when r >= max(b, d) / 2; else Tucker lokr_t2 (r, r, k, k), lokr_w2_a (r, b),
      lokr_w2_b (r, d); else lokr_w2_a (b, r), lokr_w2_b (r, d x k x k).
    """
    from peft.tuners.lokr.layer import factorization  # LyCORIS' own function, as peft ships it

    conv = isinstance(module, torch.nn.Conv2d)
    out, inn = (module.out_channels, module.in_channels) if conv else (module.out_features, module.in_features)
    kernel = tuple(module.kernel_size) if conv else ()
    k = kernel[0] * kernel[1] if conv else 1
    tucker = tucker and conv and kernel != (1, 1)

    def rand(*shape):
        return torch.randn(*shape) * scale

    state = {f"{key}.alpha": torch.tensor(float(alpha))}
    if algo == "locon":
        if tucker:
            state[f"{key}.lora_down.weight"] = rand(rank, inn, 1, 1)
            state[f"{key}.lora_mid.weight"] = rand(rank, rank, *kernel)
        else:
            state[f"{key}.lora_down.weight"] = rand(rank, inn, *kernel)
        state[f"{key}.lora_up.weight"] = rand(out, rank, 1, 1) if conv else rand(out, rank)
    elif algo == "loha":
        for w in ("1", "2"):
            if tucker:
                state |= {f"{key}.hada_t{w}": rand(rank, rank, *kernel), f"{key}.hada_w{w}_a": rand(rank, out),
                          f"{key}.hada_w{w}_b": rand(rank, inn)}  # fmt: skip
            else:
                state |= {f"{key}.hada_w{w}_a": rand(out, rank), f"{key}.hada_w{w}_b": rand(rank, inn * k)}
    else:
        (a, b), (c, d) = factorization(out, -1), factorization(inn, -1)
        state[f"{key}.lokr_w1"] = rand(a, c)
        if rank >= max(b, d) / 2:
            state[f"{key}.lokr_w2"] = rand(b, d, *kernel)
        elif tucker:
            state |= {f"{key}.lokr_t2": rand(rank, rank, *kernel), f"{key}.lokr_w2_a": rand(rank, b),
                      f"{key}.lokr_w2_b": rand(rank, d)}  # fmt: skip
        else:
            state |= {f"{key}.lokr_w2_a": rand(b, rank), f"{key}.lokr_w2_b": rand(rank, d * k)}
    return state


def lycoris_network(algo: str, model, modules: list[str], seed: int, prefix: str = "lora_unet", rank: int = 4,
                    alpha: float = 2.0, tucker: bool = False, spell=None) -> dict:  # fmt: skip
    """A LyCORIS file's tensors for `modules` of `model`, keyed `<prefix>_<name with _>` (`spell`: a module name ->
    the name the trainer saw, lycoris_sgm_name for SDXL)."""
    torch.manual_seed(seed)
    named = dict(model.named_modules())
    state = {}
    for name in modules:
        key = f"{prefix}_{(spell or (lambda n: published(model, n)))(name).replace('.', '_')}"
        state |= lycoris_layer(algo, key, named[name], rank, alpha, tucker)
    return state


def lycoris_delta(tensors: dict, shape) -> torch.Tensor:
    """LyCORIS' own formulas for one module's weight delta (functional/loha.py, lokr.py, locon.py; rebuild_tucker's
    einsum "i j ..., i p, j r -> p r ..."), at the module's weight `shape`: the oracle merged weights are held to."""
    t = tensors

    def tucker(core, wa, wb):
        return torch.einsum("i j ..., i p, j r -> p r ...", core, wa, wb)

    alpha = float(t["alpha"])
    if "hada_w1_a" in t:
        rank = t["hada_w1_b"].shape[0]
        if "hada_t1" in t:
            w1 = tucker(t["hada_t1"], t["hada_w1_a"], t["hada_w1_b"])
            w = w1 * tucker(t["hada_t2"], t["hada_w2_a"], t["hada_w2_b"])
        else:
            w = (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"])
        return w.reshape(shape) * alpha / rank
    if "lokr_w1" in t:
        if "lokr_w2" in t:
            w2, scale = t["lokr_w2"], 1.0
        elif "lokr_t2" in t:
            w2, scale = tucker(t["lokr_t2"], t["lokr_w2_a"], t["lokr_w2_b"]), alpha / t["lokr_w2_b"].shape[0]
        else:
            w2, scale = t["lokr_w2_a"] @ t["lokr_w2_b"], alpha / t["lokr_w2_b"].shape[0]
        w1 = t["lokr_w1"]
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        return torch.kron(w1, w2).reshape(shape) * scale
    up, down = t["lora_up.weight"], t["lora_down.weight"]
    return (up.flatten(1) @ down.flatten(1)).reshape(shape) * alpha / down.shape[0]
