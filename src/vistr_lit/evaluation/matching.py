"""Greedy detection-to-ground-truth matching of one (video, category), as the official ``evaluateVid``.

The official loop runs, per IoU threshold and area range, over detections in score order and, for each,
over ground truths sorted non-ignored first. We run the same loop over detections but vectorise the inner
two levels (range x threshold x ground truth). The rules it reproduces (ytvis_metric.md, section 2):
- a detection takes, among ground truths not yet taken (crowd ones may be taken again), the one with the
  highest IoU >= the threshold (capped at 1 - 1e-10; equality matches);
- on IoU ties the *later* ground truth in the (stably) sorted order wins (the loop tests ``iou < best``);
- ignored ground truths are considered only if no non-ignored one qualifies;
- a match is recorded as the ground-truth *id*, and later read for truthiness, so a match to annotation id 0
  counts as unmatched (kept: the leaderboard numbers come from that code);
- an unmatched detection whose ``avg_area`` lies outside the area range is ignored.
"""

from dataclasses import dataclass

import numpy as np

IOU_CAP = 1 - 1e-10  # official: iou = min(t, 1 - 1e-10), so a perfect match also passes t = 1


@dataclass
class VideoCategoryMatches:
    """Matching of one (video, category): R ranges, T thresholds, D detections (score order), G truths."""

    scores: np.ndarray  # float64 [D], descending (stable)
    matched: np.ndarray  # bool [R, T, D]: matched to a ground truth with a truthy id
    dt_ignore: np.ndarray  # bool [R, T, D]
    num_gt: np.ndarray  # int64 [R]: ground truths not ignored in each range


def match_video_category(
    iou: np.ndarray,
    scores: np.ndarray,
    gt_ids: np.ndarray,
    gt_crowd: np.ndarray,
    gt_ignore: np.ndarray,
    dt_out_of_range: np.ndarray,
    iou_thresholds: np.ndarray,
) -> VideoCategoryMatches:
    """Match D detections to G ground truths in R (area, occlusion) ranges at T IoU thresholds.

    Args:
        iou: float64 ``[D, G]``, rows in descending score order (the top ``maxDets[-1]`` only).
        scores: float64 ``[D]``, descending.
        gt_ids: int64 ``[G]`` annotation ids; gt_crowd: bool ``[G]``.
        gt_ignore: bool ``[R, G]``: crowd, or outside range r.
        dt_out_of_range: bool ``[R, D]``: the detection's ``avg_area`` is outside range r's area range.
        iou_thresholds: float64 ``[T]``.
    """
    num_ranges, num_gt = gt_ignore.shape
    num_dt, num_thr = len(scores), len(iou_thresholds)
    dt_match_id = np.zeros((num_ranges, num_thr, num_dt), dtype=np.int64)
    dt_ignore = np.zeros((num_ranges, num_thr, num_dt), dtype=bool)
    if num_dt and num_gt:
        # Per range, ground truths in the official order: non-ignored first, stable.
        order = np.argsort(gt_ignore, axis=1, kind="stable")  # [R, G]
        iou_sorted = iou[:, order].transpose(1, 0, 2)  # [R, D, G]
        ignore = np.take_along_axis(gt_ignore, order, axis=1)[:, None, :]  # [R, 1, G]
        crowd = gt_crowd[order][:, None, :]  # [R, 1, G]
        ids = gt_ids[order]  # [R, G]
        thresholds = np.minimum(iou_thresholds, IOU_CAP)[None, :, None]  # [1, T, 1]
        taken = np.zeros((num_ranges, num_thr, num_gt), dtype=bool)
        r_index, t_index = np.indices((num_ranges, num_thr))
        for d in range(num_dt):
            d_iou = iou_sorted[:, d, None, :]  # [R, 1, G]
            ok = (d_iou >= thresholds) & (~taken | crowd)  # [R, T, G]
            ok_regular = ok & ~ignore
            pool = np.where(ok_regular.any(-1, keepdims=True), ok_regular, ok & ignore)
            found = pool.any(-1)  # [R, T]
            candidates = np.where(pool, d_iou, -np.inf)
            best = num_gt - 1 - np.argmax(candidates[..., ::-1], axis=-1)  # last index of the max: [R, T]
            r, t, g = r_index[found], t_index[found], best[found]
            taken[r, t, g] = True
            dt_match_id[r, t, d] = ids[r, g]
            dt_ignore[r, t, d] = ignore[r, 0, g]
    matched = dt_match_id != 0
    dt_ignore |= ~matched & dt_out_of_range[:, None, :]
    return VideoCategoryMatches(
        scores=scores, matched=matched, dt_ignore=dt_ignore, num_gt=(~gt_ignore).sum(1).astype(np.int64)
    )
