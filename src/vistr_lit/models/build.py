"""``build_vistr``: the network from plain arguments, as in DETR's ``hubconf.py``."""

from functools import partial

from vistr_lit.models.backbone import Backbone
from vistr_lit.models.extensions.cell_scaled_maps import CellScaledAttentionMap
from vistr_lit.models.extensions.dot_product import OPTIONS as DOT_PRODUCT_OPTIONS
from vistr_lit.models.extensions.dot_product import DotProductMaskHead, upgrade_legacy_keys
from vistr_lit.models.mask_head import MHAttentionMap
from vistr_lit.models.postprocess import MASK_STRIDE as PAPER_MASK_STRIDE
from vistr_lit.models.transformer import Transformer
from vistr_lit.models.vistr import MASK_FUSIONS, NUM_INSTANCES, VisTR

# mask heads beside the paper's, by ``mask_fusion`` name
MASK_EXTENSIONS = {"dot_product": DotProductMaskHead}
# the paper's head's attention maps, by ``attention_map_scale``
ATTENTION_MAPS = {"none": MHAttentionMap, "cells": CellScaledAttentionMap}
# build_vistr's keywords -> the argument they set; every default lives in that constructor
BACKBONE_KEYWORDS = {
    "backbone": "name",
    "trainable_stages": "trainable_stages",
    "dilation": "dilation",
    "pretrained_backbone": "pretrained",
    "backbone_norm": "norm",
    "backbone_width": "width",
}
TRANSFORMER_KEYWORDS = {
    "hidden_dim": "d_model",
    "nheads": "nhead",
    "enc_layers": "num_encoder_layers",
    "dec_layers": "num_decoder_layers",
    "dim_feedforward": "dim_feedforward",
    "dropout": "dropout",
    "attention_dropout": "attention_dropout",
}
NETWORK_KEYWORDS = ("aux_loss", "query_groups")
PAPER_MASK_KEYWORDS = ("mask_fusion", "temporal_fusion", "mask_deformable", "mask_dim", "attention_map_scale")
SHARED_MASK_KEYWORDS = ("temporal_fusion", "mask_dim")  # the paper's head's and the extensions'


def build_vistr(num_classes: int, num_frames: int, num_instances: int = NUM_INSTANCES, **options) -> VisTR:
    """Build VisTR from plain keyword arguments; those not given take the constructors' defaults, the
    original R50 configuration (T and K to choose).

    Keywords (flat, as ``model.net`` of the configs):
        Backbone: ``backbone`` (its ``name``: resnet10/18/34/50/101), ``trainable_stages``, ``dilation``,
            ``pretrained_backbone`` (a torchvision weights name such as ``"IMAGENET1K_V1"``, loaded from
            the local torch hub cache or downloaded by torchvision; None: random), ``backbone_norm``
            (``"frozen"``, the original, or ``"batch"`` for a backbone trained from scratch),
            ``backbone_width`` (channels of its first stage: 64 published, narrower from scratch on a CPU).
        Transformer: ``hidden_dim``, ``nheads``, ``enc_layers``, ``dec_layers``, ``dim_feedforward``,
            ``dropout``, ``attention_dropout``.
        VisTR: ``aux_loss``, ``query_groups``, and the paper's mask head
            ``mask_fusion`` (``"attention"``, ``"concat"``), ``temporal_fusion``, ``mask_deformable``,
            ``mask_dim``, ``attention_map_scale``.
        A mask head beside the paper's: ``mask_fusion`` one of ``MASK_EXTENSIONS`` (``"dot_product"``), with
            ``temporal_fusion``, ``mask_dim`` and its own options (``DotProductMaskHead``: ``aux_masks``,
            ``mask_stride``, ``mask_classifier``, ``masked_attention``, ``mask_coords``).
    """
    options = dict(options)
    backbone_args = {BACKBONE_KEYWORDS[k]: options.pop(k) for k in list(options) if k in BACKBONE_KEYWORDS}
    if "trainable_stages" in backbone_args:
        backbone_args["trainable_stages"] = tuple(backbone_args["trainable_stages"])
    transformer_args = {
        TRANSFORMER_KEYWORDS[k]: options.pop(k) for k in list(options) if k in TRANSFORMER_KEYWORDS
    }
    network_args = {k: options.pop(k) for k in NETWORK_KEYWORDS if k in options}
    mask_fusion = options.get("mask_fusion")
    choices = (*MASK_FUSIONS, *MASK_EXTENSIONS)
    if mask_fusion is not None and mask_fusion not in choices:
        raise ValueError(f"mask_fusion must be one of {choices}, got {mask_fusion!r}")
    if mask_fusion in MASK_EXTENSIONS:
        del options["mask_fusion"]
        paper_only = sorted(set(options) & set(PAPER_MASK_KEYWORDS) - set(SHARED_MASK_KEYWORDS))
        if paper_only:
            raise ValueError(f"{paper_only} are options of the paper's mask head, not of {mask_fusion!r}")
        network_args["mask_extension"] = partial(MASK_EXTENSIONS[mask_fusion], **options)
    else:
        network_args.update({k: options.pop(k) for k in PAPER_MASK_KEYWORDS if k in options})
        if "attention_map_scale" in network_args:  # else VisTR's default: the paper's maps
            scale = network_args.pop("attention_map_scale")
            if scale not in ATTENTION_MAPS:
                raise ValueError(f"attention_map_scale must be one of {tuple(ATTENTION_MAPS)}, got {scale!r}")
            network_args["attention_map"] = ATTENTION_MAPS[scale]
        _refuse_extension_options(mask_fusion or MASK_FUSIONS[0], options)
    backbone, transformer = Backbone(**backbone_args), Transformer(**transformer_args)
    model = VisTR(backbone, transformer, num_classes, num_frames, num_instances, **network_args)
    if mask_fusion in MASK_EXTENSIONS:  # checkpoints saved before the head had its own module still load
        model.register_load_state_dict_pre_hook(_upgrade_on_load)
    return model


def _refuse_extension_options(mask_fusion: str, options: dict) -> None:
    """The paper's heads take none of an extension's options (its stride 4 aside); unknown keywords fail."""
    for name, value in options.items():
        if name == "mask_stride":
            if value != PAPER_MASK_STRIDE:
                raise ValueError(
                    f"mask_stride must be one of ({PAPER_MASK_STRIDE},) with mask_fusion {mask_fusion!r} "
                    f"(others only with a mask extension, e.g. 'dot_product'), got {value}"
                )
        elif name in DOT_PRODUCT_OPTIONS:
            raise ValueError(
                f"{name} needs mask_fusion 'dot_product' (an option of its head, not the paper's), "
                f"got {mask_fusion!r}"
            )
        else:
            raise TypeError(f"build_vistr() got an unexpected keyword argument {name!r}")


def upgrade_state_dict(model: VisTR, state_dict: dict, prefix: str = "") -> dict:
    """Move, in place, the keys of a checkpoint saved before the mask extensions had their own module (the
    dot-product head's ``mask_head.*``, ``mask_embed.*``, ... on the network) to where ``model`` has them;
    other state dicts are left as they are. Returns ``state_dict``. ``load_state_dict`` of a network from
    ``build_vistr`` does this itself."""
    if isinstance(model.mask_extension, DotProductMaskHead):
        upgrade_legacy_keys(state_dict, prefix, "mask_extension")
    return state_dict


def _upgrade_on_load(module: VisTR, state_dict: dict, prefix: str, *_) -> None:
    """``load_state_dict`` pre-hook (module-level: the network stays picklable for spawned ranks)."""
    upgrade_state_dict(module, state_dict, prefix)
