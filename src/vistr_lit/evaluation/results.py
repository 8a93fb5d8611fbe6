"""YouTube-VIS results files: one entry per predicted track, and the zip the CodaLab server expects.

A results entry is ``{"video_id", "category_id" (original id), "score", "segmentations": [RLE | None] * V}``
with compressed RLE ``{"size": [h, w], "counts": str}`` per frame and ``None`` where the track is absent.
:func:`select_results` keeps what can score: an entry with no mask in any frame matches no object (its
IoU with every ground truth is 0), so it can only be a false positive and is dropped; and per video and
category at most :data:`MAX_ENTRIES_PER_VIDEO_CATEGORY` entries, the best scored, are kept, as many as the
official evaluation reads (``maxDets`` 100 per video and category, see ``ytvis_metric.md``).
"""

import io
import json
import math
import zipfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from vistr_lit.atomic_files import atomic_write

MAX_ENTRIES_PER_VIDEO_CATEGORY = 100  # the official evaluation's maxDets[-1], per (video, category)
RESULTS_NAME = "results.json"  # the CodaLab YouTube-VIS server reads this name at the zip's top level


def _to_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def encode_track(
    masks: np.ndarray | torch.Tensor, present: np.ndarray | torch.Tensor | None = None
) -> list[dict | None]:
    """Compressed RLE per frame of one track.

    Args:
        masks: bool ``[V, h, w]``, the track's mask in every frame at the video's original size.
        present: bool ``[V]``; frames where it is False are written as ``None`` (absent). ``None`` writes
            every frame (an empty mask then scores as absent, see ``ytvis_metric.md``).

    Returns:
        V entries, each ``{"size": [h, w], "counts": str}`` or ``None``.
    """
    masks = _to_numpy(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [V, h, w], got shape {masks.shape}")
    num_frames = masks.shape[0]
    present = np.ones(num_frames, dtype=bool) if present is None else _to_numpy(present).astype(bool)
    if present.shape != (num_frames,):
        raise ValueError(f"present must be [V] = [{num_frames}], got shape {present.shape}")
    frames = np.flatnonzero(present)
    rles: list[dict | None] = [None] * num_frames
    if len(frames) == 0:
        return rles
    # pycocotools wants one Fortran-ordered uint8 [h, w, n] array; one call encodes all frames in C.
    stacked = np.asfortranarray(masks[frames].astype(np.uint8).transpose(1, 2, 0))
    for frame, rle in zip(frames.tolist(), mask_utils.encode(stacked)):
        rles[frame] = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return rles


def make_result(
    video_id: int,
    category_id: int,
    score: float,
    masks: np.ndarray | torch.Tensor,
    present: np.ndarray | torch.Tensor | None = None,
) -> dict:
    """One results entry; ``masks`` bool ``[V, h, w]`` and ``present`` bool ``[V]`` as in ``encode_track``."""
    score = float(score)
    if not math.isfinite(score):
        raise ValueError(f"video {video_id}, category {category_id}: score must be finite, got {score}")
    return {
        "video_id": int(video_id),
        "category_id": int(category_id),
        "score": score,
        "segmentations": encode_track(masks, present),
    }


def has_mask(entry: dict) -> bool:
    """Whether any frame of the entry holds a non-empty mask."""
    for rle in entry["segmentations"]:
        if rle is None:
            continue
        if isinstance(rle.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(rle, *rle["size"])
        elif isinstance(rle.get("counts"), str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        if mask_utils.area(rle) > 0:
            return True
    return False


def select_results(
    results: Iterable[dict], max_per_video_category: int = MAX_ENTRIES_PER_VIDEO_CATEGORY
) -> list[dict]:
    """The entries that can score, in their order: those with a mask in some frame, at most
    ``max_per_video_category`` per (video, category), the best scored (ties: the earlier)."""
    kept = [entry for entry in results if has_mask(entry)]
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, entry in enumerate(kept):
        groups[(entry["video_id"], entry["category_id"])].append(index)
    dropped = set()
    for indices in groups.values():
        ranked = sorted(indices, key=lambda i: -kept[i]["score"])  # stable: ties keep their order
        dropped.update(ranked[max_per_video_category:])
    return [entry for i, entry in enumerate(kept) if i not in dropped]


def jsonable_results(results: Iterable[dict]) -> list[dict]:
    """Entries with every RLE ``counts`` as str (pycocotools gives bytes), checked for required fields."""
    out = []
    for index, entry in enumerate(results):
        missing = {"video_id", "category_id", "score", "segmentations"} - set(entry)
        if missing:
            raise ValueError(f"results[{index}] (video {entry.get('video_id')}): missing {sorted(missing)}")
        segmentations = []
        for rle in entry["segmentations"]:
            if rle and isinstance(rle.get("counts"), bytes):
                rle = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
            segmentations.append(rle if rle else None)
        out.append({**entry, "segmentations": segmentations})
    return out


def write_results_json(results: Iterable[dict], path: str | Path) -> Path:
    """Write the results list as YouTube-VIS ``results.json`` (atomically); returns the path."""
    return atomic_write(path, json.dumps(jsonable_results(results)))


def write_codalab_zip(results: Iterable[dict], path: str | Path) -> Path:
    """Write the CodaLab submission, a zip holding ``results.json`` at its top level (atomically); returns
    the path."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(RESULTS_NAME, json.dumps(jsonable_results(results)))
    return atomic_write(path, buffer.getvalue())
