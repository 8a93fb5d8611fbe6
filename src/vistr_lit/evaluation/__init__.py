"""YouTube-VIS evaluation: the official video mask AP, results files and a DDP-ready torchmetrics metric.

The scoring (``YTVISEval``, ``evaluate_ytvis``) needs numpy and pycocotools only, so ``python -m
vistr_lit.evaluate`` starts without torch: the torch users (``YTVISVideoAP``, the results writers) are
imported on first access.
"""

import importlib
from typing import TYPE_CHECKING, Any

from vistr_lit.evaluation.inputs import GroundTruth, YTVISFormatError, load_ground_truth
from vistr_lit.evaluation.ytvis_eval import OVIS_STATS, YTVIS_STATS, YTVISEval, evaluate_ytvis

if TYPE_CHECKING:
    from vistr_lit.evaluation.metric import YTVISVideoAP
    from vistr_lit.evaluation.results import encode_track, make_result, write_codalab_zip, write_results_json

# name -> the submodule that defines it, imported on first access (they import torch)
_LAZY = {
    "YTVISVideoAP": "metric",
    "encode_track": "results",
    "make_result": "results",
    "write_codalab_zip": "results",
    "write_results_json": "results",
}

__all__ = [
    "OVIS_STATS",
    "YTVIS_STATS",
    "GroundTruth",
    "YTVISEval",
    "YTVISFormatError",
    "YTVISVideoAP",
    "encode_track",
    "evaluate_ytvis",
    "load_ground_truth",
    "make_result",
    "write_codalab_zip",
    "write_results_json",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
