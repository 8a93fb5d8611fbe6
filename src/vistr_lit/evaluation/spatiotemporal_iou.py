"""Spatio-temporal mask IoU of YouTube-VIS: intersections and unions summed over frames, one division.

For tracks d and g over frames f: ``IoU = sum_f |d_f ∩ g_f| / sum_f |d_f ∪ g_f|`` where an absent frame
is an empty mask; 0 when the union is empty. Crowd ground truth uses the same IoU (as the official code).

Why this design: the per-frame intersections come from pycocotools' C RLE ops (``mask.iou``), one call per
frame for all (detection, ground truth) pairs present there, so no mask is ever decoded and the cost scales
with the RLE lengths, not with the pixels. ``mask.iou`` with ``iscrowd=1`` returns ``I / area(d)``; both are
integers below 2**32, so ``rint(iou * area(d))`` recovers ``I`` exactly, and the sums stay exact int64.
Then ``I / U`` is the same single float64 division as the official ``iou_seq``.
(Feeding pycocotools' COCOeval one "tall image" per video would also be exact for the IoU, but COCOeval
applies the COCO crowd rule ``I / area(d)``, which YouTube-VIS does not; see ytvis_metric.md, section 5.)
"""

import numpy as np
from pycocotools import mask as mask_utils

from vistr_lit.evaluation.inputs import VideoTracks


def intersections(
    dt_rles: list[list[dict | None]], gt_rles: list[list[dict | None]], dt_areas: np.ndarray
) -> np.ndarray:
    """int64 ``[D, G]``: mask intersection areas summed over the frames of every (detection, gt) pair.

    ``dt_rles[d][f]`` / ``gt_rles[g][f]``: compressed RLE or ``None``; all lists have the video's V frames.
    ``dt_areas``: int64 ``[D, V]`` mask areas of the detections.
    """
    inter = np.zeros((len(dt_rles), len(gt_rles)), dtype=np.int64)
    if not dt_rles or not gt_rles:
        return inter
    for frame in range(len(gt_rles[0])):
        g_idx = [g for g, rles in enumerate(gt_rles) if rles[frame] is not None]
        if not g_idx:
            continue
        d_idx = [d for d, rles in enumerate(dt_rles) if rles[frame] is not None]
        if not d_idx:
            continue
        d_frame = [dt_rles[d][frame] for d in d_idx]
        ratio = mask_utils.iou(d_frame, [gt_rles[g][frame] for g in g_idx], [1] * len(g_idx))  # I / area(d)
        if (ratio < 0).any():  # pycocotools' marker for masks of different sizes; inputs were validated
            raise ValueError(f"frame {frame}: masks of different sizes")
        d_area = dt_areas[d_idx, frame].astype(np.float64)
        inter[np.ix_(d_idx, g_idx)] += np.rint(ratio * d_area[:, None]).astype(np.int64)
    return inter


def spatiotemporal_iou(
    dts: VideoTracks, dt_idx: np.ndarray, gts: VideoTracks, gt_idx: np.ndarray
) -> np.ndarray:
    """float64 ``[D, G]`` IoU of detections ``dt_idx`` ``[D]`` and ground truths ``gt_idx`` ``[G]``."""
    dt_areas = dts.areas[dt_idx]  # [D, V]
    inter = intersections([dts.rles[d] for d in dt_idx], [gts.rles[g] for g in gt_idx], dt_areas)
    union = dt_areas.sum(1)[:, None] + gts.areas[gt_idx].sum(1)[None, :] - inter
    iou = np.zeros(inter.shape, dtype=np.float64)
    np.divide(inter, union, out=iou, where=union > 0)  # official: 0 (and a printed warning) when U == 0
    return iou
