"""The VisTR network as plain PyTorch modules (no Hydra or Lightning imports)."""

from vistr_lit.models.backbone import Backbone
from vistr_lit.models.transformer import Transformer
from vistr_lit.models.vistr import VisTR, build_vistr

__all__ = [
    "Backbone",
    "Transformer",
    "VisTR",
    "build_vistr",
]
