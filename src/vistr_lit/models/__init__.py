"""The VisTR network as plain PyTorch modules (no Hydra or Lightning imports)."""

from vistr_lit.models.backbone import Backbone
from vistr_lit.models.checkpoint_import import (
    CheckpointError,
    ImportReport,
    convert_vistr_state_dict,
    init_from_detr,
    load_checkpoint_file,
    load_vistr_checkpoint,
)
from vistr_lit.models.transformer import Transformer
from vistr_lit.models.vistr import VisTR, build_vistr

__all__ = [
    "Backbone",
    "CheckpointError",
    "ImportReport",
    "Transformer",
    "VisTR",
    "build_vistr",
    "convert_vistr_state_dict",
    "init_from_detr",
    "load_checkpoint_file",
    "load_vistr_checkpoint",
]
