"""The VisTR network as plain PyTorch modules (no Hydra or Lightning imports)."""

from vistr_lit.models.backbone import Backbone
from vistr_lit.models.build import build_vistr
from vistr_lit.models.checkpoint_import import (
    CheckpointError,
    ImportReport,
    convert_vistr_state_dict,
    init_from_detr,
    load_checkpoint_file,
    load_vistr_checkpoint,
)
from vistr_lit.models.criterion import SetCriterion
from vistr_lit.models.matcher import HungarianMatcher
from vistr_lit.models.postprocess import ClipPredictions, PostProcessVideo
from vistr_lit.models.transformer import Transformer
from vistr_lit.models.vistr import VisTR

__all__ = [
    "Backbone",
    "CheckpointError",
    "ClipPredictions",
    "HungarianMatcher",
    "ImportReport",
    "PostProcessVideo",
    "SetCriterion",
    "Transformer",
    "VisTR",
    "build_vistr",
    "convert_vistr_state_dict",
    "init_from_detr",
    "load_checkpoint_file",
    "load_vistr_checkpoint",
]
