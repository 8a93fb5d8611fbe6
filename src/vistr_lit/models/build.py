"""``build_vistr``: the network from plain arguments, as in DETR's ``hubconf.py``."""

from collections.abc import Sequence
from functools import partial

from vistr_lit.models.backbone import Backbone
from vistr_lit.models.extensions.dot_product import DotProductMaskHead, upgrade_legacy_keys
from vistr_lit.models.transformer import Transformer
from vistr_lit.models.vistr import MASK_FUSIONS, VisTR

# mask heads beside the paper's, by ``mask_fusion`` name
MASK_EXTENSIONS = {"dot_product": DotProductMaskHead}
PAPER_MASK_STRIDE = 4


def build_vistr(
    num_classes: int,
    num_frames: int,
    num_instances: int = 10,
    backbone: str = "resnet50",
    hidden_dim: int = 384,
    nheads: int = 8,
    enc_layers: int = 6,
    dec_layers: int = 6,
    dim_feedforward: int = 2048,
    dropout: float = 0.1,
    attention_dropout: float = 0.0,
    dilation: bool = False,
    trainable_stages: Sequence[str] = ("layer2", "layer3", "layer4"),
    pretrained_backbone: str | None = None,
    backbone_norm: str = "frozen",
    backbone_width: int = 64,
    mask_fusion: str = "attention",
    temporal_fusion: str = "conv3d",
    mask_deformable: bool = True,
    mask_dim: int | None = None,
    aux_loss: bool = True,
    attention_map_scale: str = "none",
    query_groups: int = 1,
    **mask_options,
) -> VisTR:
    """Build VisTR from plain arguments (defaults: the original R50 configuration, T and K to choose).

    ``pretrained_backbone`` is a torchvision weights name such as ``"IMAGENET1K_V1"`` (loaded from the local
    torch hub cache or downloaded by torchvision), or None for random initialization. ``backbone_norm``:
    ``"frozen"`` (FrozenBatchNorm2d, the original) or ``"batch"`` (trainable BatchNorm2d for a backbone
    trained from scratch). ``backbone_width``: channels of its first stage (64 published; narrower ones for
    training from scratch on a CPU). ``mask_fusion``: the paper's ``"attention"``, its ``"concat"`` ablation,
    or a mask head beside the paper's (``MASK_EXTENSIONS``: ``"dot_product"``), which takes
    ``temporal_fusion``, ``mask_dim`` and its own ``mask_options`` (``DotProductMaskHead``: ``aux_masks``,
    ``mask_stride``, ``mask_classifier``, ``masked_attention``, ``mask_coords``).
    """
    choices = (*MASK_FUSIONS, *MASK_EXTENSIONS)
    if mask_fusion not in choices:
        raise ValueError(f"mask_fusion must be one of {choices}, got {mask_fusion!r}")
    if mask_fusion not in MASK_EXTENSIONS:
        _refuse_extension_options(mask_fusion, mask_options)
    net = Backbone(
        name=backbone,
        trainable_stages=tuple(trainable_stages),
        dilation=dilation,
        pretrained=pretrained_backbone,
        norm=backbone_norm,
        width=backbone_width,
    )
    transformer = Transformer(
        d_model=hidden_dim,
        nhead=nheads,
        num_encoder_layers=enc_layers,
        num_decoder_layers=dec_layers,
        dim_feedforward=dim_feedforward,
        dropout=dropout,
        attention_dropout=attention_dropout,
    )
    extension = None
    if mask_fusion in MASK_EXTENSIONS:
        extension = partial(
            MASK_EXTENSIONS[mask_fusion],
            hidden_dim=hidden_dim,
            num_classes=num_classes,
            num_frames=num_frames,
            num_instances=num_instances,
            feature_channels=net.num_channels,
            feature_strides=net.strides,
            stem_channels=net.stem_channels,
            temporal_fusion=temporal_fusion,
            mask_dim=mask_dim,
            **mask_options,
        )
    mask_branch = (
        {"mask_extension": extension}
        if extension is not None
        else {
            "mask_fusion": mask_fusion,
            "temporal_fusion": temporal_fusion,
            "mask_deformable": mask_deformable,
            "mask_dim": mask_dim,
            "attention_map_scale": attention_map_scale,
        }
    )
    model = VisTR(
        net,
        transformer,
        num_classes=num_classes,
        num_frames=num_frames,
        num_instances=num_instances,
        aux_loss=aux_loss,
        query_groups=query_groups,
        **mask_branch,
    )
    if extension is not None:  # checkpoints saved before the head had its own module still load
        model.register_load_state_dict_pre_hook(
            lambda module, state_dict, prefix, *_: upgrade_state_dict(module, state_dict, prefix)
        )
    return model


def upgrade_state_dict(model: VisTR, state_dict: dict, prefix: str = "") -> dict:
    """Move, in place, the keys of a checkpoint saved before the mask extensions had their own module (the
    dot-product head's ``mask_head.*``, ``mask_embed.*``, ... on the network) to where ``model`` has them;
    other state dicts are left as they are. Returns ``state_dict``. ``load_state_dict`` of a network from
    ``build_vistr`` does this itself."""
    if isinstance(model.mask_extension, DotProductMaskHead):
        upgrade_legacy_keys(state_dict, prefix, "mask_extension")
    return state_dict


def _refuse_extension_options(mask_fusion: str, options: dict) -> None:
    """The paper's heads take none of an extension's options (its stride 4 aside)."""
    for name, value in options.items():
        if name == "mask_stride":
            if value != PAPER_MASK_STRIDE:
                raise ValueError(
                    f"mask_stride must be one of ({PAPER_MASK_STRIDE},) with mask_fusion {mask_fusion!r} "
                    f"(others only with a mask extension, e.g. 'dot_product'), got {value}"
                )
        else:
            raise ValueError(
                f"{name} needs mask_fusion 'dot_product' (an option of its head, not the paper's), "
                f"got {mask_fusion!r}"
            )
