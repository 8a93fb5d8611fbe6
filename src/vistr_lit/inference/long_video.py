"""AP on videos longer than the model's T frames: window stitching against the original's first window only.

The original predicts only the first T frames of a video (and crashes past them); the frames after T are then
absent from its results. Scoring both on the same videos with the official evaluator shows what stitching
buys. ``scripts/long_video_ap.py`` is the command line.
"""

from collections.abc import Sequence

import torch

from vistr_lit.data.clips import YTVISVideoDataset
from vistr_lit.data.ytvis import YTVISData
from vistr_lit.evaluation import evaluate_ytvis
from vistr_lit.inference.predictor import VideoPredictor
from vistr_lit.models.postprocess import PostProcessVideo

MODES = {"stitched": False, "first_window": True}  # mode → first_window_only


def long_video_ids(data: YTVISData, window: int) -> list[int]:
    """Ids of the annotated videos with more than ``window`` frames."""
    return [v.id for v in data.videos if v.length > window and data.annotations.get(v.id)]


@torch.no_grad()
def long_video_ap(
    model: torch.nn.Module,
    data: YTVISData,
    videos: YTVISVideoDataset,
    postprocess: PostProcessVideo,
    overlap: int | None = None,
    match_iou: float = 0.5,
    category_ids: Sequence[int] | None = None,
    **predictor_options,
) -> dict[str, dict]:
    """Statistics of both modes on the videos of ``videos`` longer than T.

    Args:
        model: a VisTR (``num_frames`` = T).
        data: the annotation file (ground truth) of ``videos``.
        videos: the whole videos, transformed for evaluation.
        postprocess: post-processing for both modes.
        overlap, match_iou: the stitching settings.
        category_ids: original category id per class index; default the file's categories.
        predictor_options: further ``VideoPredictor`` keyword arguments for both modes (``track_nms_iou``,
            ``track_nms_decay``, ``classes_per_track``, ``tta``, ``batch_size``), e.g. a checkpoint's own.
    Returns:
        ``{"stitched": stats, "first_window": stats, "videos": n}`` with ``evaluate_ytvis`` statistics.
    """
    ids = set(long_video_ids(data, model.num_frames))
    if not ids:
        raise ValueError(f"{data.path}: no annotated video is longer than T = {model.num_frames} frames")
    if "first_window_only" in predictor_options:
        raise ValueError("first_window_only is set per mode; it is not a predictor option here")
    category_ids = list(category_ids) if category_ids is not None else data.category_map.ids
    predictors = {
        mode: VideoPredictor(
            model,
            postprocess,
            overlap=overlap,
            match_iou=match_iou,
            first_window_only=first,
            **predictor_options,
        )
        for mode, first in MODES.items()
    }
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for index, video in enumerate(videos.videos):
        if video.id not in ids:
            continue
        sample = videos[index]
        for mode, predictor in predictors.items():
            tracks = predictor.predict_video(sample["frames"], sample["orig_size"])
            results[mode].extend(predictor.results(tracks, video.id, category_ids))
    stats: dict[str, dict] = {mode: evaluate_ytvis(data.raw, results[mode], sorted(ids)) for mode in MODES}
    return {**stats, "videos": len(ids)}
