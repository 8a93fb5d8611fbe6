"""YouTube-VIS evaluation: the official video mask AP, results files and a DDP-ready torchmetrics metric."""

from vistr_lit.evaluation.inputs import GroundTruth, YTVISFormatError, load_ground_truth
from vistr_lit.evaluation.metric import YTVISVideoAP
from vistr_lit.evaluation.results import encode_track, make_result, write_codalab_zip, write_results_json
from vistr_lit.evaluation.ytvis_eval import OVIS_STATS, YTVIS_STATS, YTVISEval, evaluate_ytvis

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
