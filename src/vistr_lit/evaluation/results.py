"""YouTube-VIS results files: one entry per predicted track, and the zip the CodaLab server expects.

A results entry is ``{"video_id", "category_id" (original id), "score", "segmentations": [RLE | None] * V}``
with compressed RLE ``{"size": [h, w], "counts": str}`` per frame and ``None`` where the track is absent.
"""

import json
import math
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

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
    """Write the results list as YouTube-VIS ``results.json``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable_results(results)))
    return path


def write_codalab_zip(results: Iterable[dict], path: str | Path) -> Path:
    """Write the CodaLab submission: a zip holding ``results.json`` at its top level; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(RESULTS_NAME, json.dumps(jsonable_results(results)))
    return path
