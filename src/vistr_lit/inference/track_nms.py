"""Soft non-maximum suppression of whole tracks (not in the paper).

VisTR needs no NMS within a clip in principle: each ground-truth sequence is matched to one query sequence.
A small model trained briefly still spends several slots on one object, and the stitched video then holds
duplicate tracks that rank above the true tracks of other objects. Here a track whose video mask IoU with a
better-scored, unsuppressed track exceeds ``iou_threshold`` keeps its masks but has its score multiplied by
``decay`` (Soft-NMS, Bodla et al., ICCV 2017, with a step penalty): it stays in the results, ranked below
the tracks it duplicates, so recall is unchanged.
"""

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from vistr_lit.inference.track import Track, coco_rle


def track_mask_iou(tracks: Sequence[Track], video_length: int) -> np.ndarray:
    """Video mask IoU between tracks → ``[n, n]`` float: intersections and unions summed over the video's
    frames (the YouTube-VIS IoU), 0 where both tracks are empty. Works on the RLEs, frame by frame."""
    n = len(tracks)
    inter, areas = np.zeros((n, n)), np.zeros(n)
    for frame in range(video_length):
        present = [(i, t.segmentation(frame)) for i, t in enumerate(tracks)]
        present = [(i, coco_rle(rle)) for i, rle in present if rle is not None]
        if not present:
            continue
        index = np.array([i for i, _ in present])
        rles = [rle for _, rle in present]
        area = mask_utils.area(rles).astype(np.float64)
        areas[index] += area
        if len(rles) > 1:
            iou = np.asarray(mask_utils.iou(rles, rles, [0] * len(rles)), dtype=np.float64)
            # IoU = I / (A + B - I)  ⇔  I = IoU · (A + B) / (1 + IoU)
            inter[np.ix_(index, index)] += iou * (area[:, None] + area[None, :]) / (1.0 + iou)
    union = areas[:, None] + areas[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def suppress_duplicate_tracks(
    tracks: Sequence[Track], video_length: int, iou_threshold: float, decay: float
) -> list[Track]:
    """Greedy soft NMS in decreasing score order; returns the tracks in their input order.

    A track is suppressed (``score_scale *= decay``) when its video mask IoU with a kept track of higher
    score exceeds ``iou_threshold``; suppressed tracks do not suppress others.
    """
    if not 0.0 < iou_threshold <= 1.0 or not 0.0 <= decay < 1.0:
        raise ValueError(f"need 0 < iou_threshold <= 1 and 0 <= decay < 1, got {iou_threshold}, {decay}")
    tracks = list(tracks)
    if len(tracks) < 2:
        return tracks
    iou = track_mask_iou(tracks, video_length)
    order = sorted(range(len(tracks)), key=lambda i: -tracks[i].score)  # stable: ties keep track order
    kept: list[int] = []
    for i in order:
        if kept and iou[i, kept].max() > iou_threshold:
            tracks[i].score_scale *= decay
        else:
            kept.append(i)
    return tracks
