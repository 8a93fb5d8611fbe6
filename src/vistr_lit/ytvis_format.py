"""The YouTube-VIS / OVIS annotation format: one validator for the dataset reader and checker (``data/``) and
the evaluator (``evaluation/``), so that a file is accepted or refused by all of them alike.

The fields follow the official evaluator (docs: ``ytvis_metric.md``): videos need ``id``, ``width``,
``height`` and their number of frames (``file_names`` or ``length``); annotations need ``id``, ``video_id``,
``category_id``, ``iscrowd`` (0 or 1), and per-frame ``segmentations`` and ``areas`` (the official code
raises a KeyError without the last two or ``iscrowd``). A frame is absent where its segmentation is null
(the published files' convention; an empty RLE or polygon list is refused with that advice). OVIS files
label occlusion per frame in every annotation or in none. Every problem is reported, each naming the file,
video, annotation and field. No torch: ``python -m vistr_lit.evaluate`` imports this.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

# OVIS per-frame occlusion labels and their scores (OVIS challenge paper; oviseval.py `occann2score`).
OCCLUSION_SCORES = {"no_occlusion": 0.0, "slight_occlusion": 0.25, "severe_occlusion": 0.75}
MIN_POLYGON_COORDS = 6  # three (x, y) pairs


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def segmentation_problem(seg: Any, height: int, width: int, polygons: bool = True) -> str | None:
    """Why ``seg`` is not a frame segmentation of a ``height x width`` video, or None if it is (null: absent).

    ``polygons=False`` refuses polygon lists (results files hold compressed RLE only)."""
    if seg is None:
        return None
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            return "RLE needs 'counts' and 'size' (use null for an absent frame)"
        size = seg["size"]
        if not (isinstance(size, list | tuple) and len(size) == 2 and all(_is_int(s) for s in size)):
            return f"RLE size {size!r} is not [height, width]"
        if list(size) != [height, width]:
            return f"RLE size {list(size)} != video size [{height}, {width}]"
        counts = seg["counts"]
        if isinstance(counts, list):  # uncompressed RLE, as in the published files
            if not all(_is_int(c) and c >= 0 for c in counts):
                return "uncompressed RLE counts must be non-negative integers"
            if sum(counts) != height * width:
                return f"uncompressed RLE counts sum to {sum(counts)}, expected {height * width}"
        elif not isinstance(counts, str | bytes):
            return f"RLE counts of type {type(counts).__name__} (expected list of int or str)"
        return None
    if isinstance(seg, list):
        if not polygons:
            return "polygons are not accepted in results; write compressed RLE"
        if not seg:
            return "empty polygon list (use null for an absent frame)"
        for poly in seg:
            if not (isinstance(poly, list) and len(poly) >= MIN_POLYGON_COORDS and len(poly) % 2 == 0):
                return "polygon must be a list of >= 3 (x, y) pairs"
            if not all(isinstance(c, int | float) and not isinstance(c, bool) for c in poly):
                return "polygon coordinates must be numbers"
        return None
    return f"segmentation of type {type(seg).__name__} (expected RLE dict, polygon list or null)"


def num_frames(video: dict) -> int:
    """A valid video's number of frames: ``len(file_names)``, or ``length`` without them."""
    return len(video["file_names"]) if "file_names" in video else video["length"]


def validate_ytvis(
    raw: Any, path: str | Path, dataset: bool = False, segmentations: bool = True
) -> list[str]:
    """Every problem of a YouTube-VIS / OVIS json (a test split without annotations is fine).

    Args:
        raw: the parsed json.
        path: its name in the messages.
        dataset: also require what the dataset reader needs: every video's ``file_names`` (non-empty, unique
            strings) and every category's ``name``.
        segmentations: also check every frame segmentation (``segmentation_problem``); the evaluator checks
            them with the same function when it converts a video's masks instead.
    Returns:
        the problems, ``"<path>, video <id>, annotation <id>: field '<name>' ..."``; empty if valid.
    """
    path = str(path)
    if not isinstance(raw, dict):
        return [f"{path}: top level is {type(raw).__name__}, expected an object"]
    problems: list[str] = []
    for key in ("videos", "categories"):
        if not isinstance(raw.get(key), list):
            problems.append(f"{path}: field '{key}' missing or not a list")
    annotations = raw.get("annotations")  # OVIS's test files hold `annotations: null`
    if annotations is not None and not isinstance(annotations, list):
        problems.append(f"{path}: field 'annotations' is not a list")
    if problems:
        return problems
    cat_ids = _check_categories(raw["categories"], path, dataset, problems)
    videos = _check_videos(raw["videos"], path, dataset, problems)
    anns = annotations or []
    labelled = [isinstance(a, dict) and "occlusion" in a for a in anns]
    ann_ids: set[int] = set()
    for i, ann in enumerate(anns):
        _check_annotation(ann, i, path, cat_ids, videos, ann_ids, problems, segmentations)
        if any(labelled) and not labelled[i] and isinstance(ann, dict):
            problems.append(f"{path}, annotation {ann.get('id')}: missing field 'occlusion' (others have it)")
    return problems


def _check_categories(categories: list, path: str, dataset: bool, problems: list[str]) -> set[int]:
    ids: set[int] = set()
    for i, cat in enumerate(categories):
        required = ("id", "name") if dataset else ("id",)
        missing = [k for k in required if not isinstance(cat, dict) or k not in cat]
        if missing:
            problems.append(f"{path}, categories[{i}]: missing field(s) {missing}")
        elif not _is_int(cat["id"]):
            problems.append(f"{path}, categories[{i}]: field 'id' = {cat['id']!r} is not an integer")
        elif cat["id"] in ids:
            problems.append(f"{path}, category {cat['id']}: duplicate category id")
        else:
            ids.add(cat["id"])
    return ids


def _check_videos(videos: list, path: str, dataset: bool, problems: list[str]) -> dict[int, dict]:
    """The valid videos by id (a video with a problem is left out, so its annotations are not checked)."""
    valid: dict[int, dict] = {}
    for i, vid in enumerate(videos):
        if not isinstance(vid, dict):
            problems.append(f"{path}, videos[{i}]: expected an object, got {type(vid).__name__}")
            continue
        if not _is_int(vid.get("id")):
            problems.append(
                f"{path}, videos[{i}]: field 'id' = {vid.get('id')!r} is missing or not an integer"
            )
            continue
        where = f"{path}, video {vid['id']}"
        if vid["id"] in valid:
            problems.append(f"{where}: duplicate video id")
            continue
        count = len(problems)
        missing = [k for k in ("width", "height") if k not in vid]
        if "file_names" not in vid and (dataset or "length" not in vid):
            missing.append("file_names" if dataset else "file_names' or 'length")
        if missing:  # named by id and by position
            problems.append(f"{where}, videos[{i}]: missing field(s) {missing}")
        for key in ("width", "height"):
            if key in vid and not (_is_int(vid[key]) and vid[key] > 0):
                problems.append(f"{where}: field '{key}' = {vid[key]!r} is not a positive integer")
        names = vid.get("file_names")
        if "file_names" in vid:
            if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
                problems.append(f"{where}: field 'file_names' must be a non-empty list of strings")
            elif dataset and len(set(names)) != len(names):
                problems.append(f"{where}: field 'file_names' has duplicate entries")
            elif "length" in vid and vid["length"] != len(names):
                problems.append(
                    f"{where}: field 'length' = {vid['length']} != len(file_names) = {len(names)}"
                )
        elif "length" in vid and not (_is_int(vid["length"]) and vid["length"] > 0):
            problems.append(f"{where}: field 'length' = {vid['length']!r} is not a positive integer")
        if len(problems) == count:
            valid[vid["id"]] = vid
    return valid


def _check_annotation(
    ann: Any,
    i: int,
    path: str,
    cat_ids: set[int],
    videos: dict[int, dict],
    ann_ids: set[int],
    problems: list[str],
    segmentations: bool,
) -> None:
    if not isinstance(ann, dict):
        problems.append(f"{path}, annotations[{i}]: expected an object, got {type(ann).__name__}")
        return
    required = ("id", "video_id", "category_id", "iscrowd", "segmentations", "areas")
    if not (_is_int(ann.get("id")) and _is_int(ann.get("video_id"))):
        problems.append(
            f"{path}, annotations[{i}]: fields 'id' and 'video_id' must be integers, "
            f"got {ann.get('id')!r} and {ann.get('video_id')!r}"
        )
        return
    where = f"{path}, video {ann['video_id']}, annotation {ann['id']}"
    if ann["id"] in ann_ids:
        problems.append(f"{where}: duplicate annotation id")
    ann_ids.add(ann["id"])
    missing = [k for k in required if k not in ann]
    if missing:  # named by id and by position
        problems.append(f"{where}, annotations[{i}]: missing field(s) {missing}")
    if "category_id" in ann and ann["category_id"] not in cat_ids:
        problems.append(f"{where}: field 'category_id' = {ann['category_id']!r} is not a listed category")
    if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):  # True and False compare equal to 1 and 0
        problems.append(f"{where}: field 'iscrowd' = {ann['iscrowd']!r} is not 0 or 1")
    vid = videos.get(ann["video_id"])
    if vid is None:
        problems.append(f"{where}: field 'video_id' refers to a video that is not listed (or not valid)")
        return
    length = num_frames(vid)
    for key in ("segmentations", "areas", "bboxes", "occlusion"):
        if key in ann and not (isinstance(ann[key], list) and len(ann[key]) == length):
            got = len(ann[key]) if isinstance(ann[key], list) else type(ann[key]).__name__
            problems.append(f"{where}: field '{key}' has length {got}, video length is {length}")
    if segmentations and isinstance(ann.get("segmentations"), list):
        for t, seg in enumerate(ann["segmentations"]):
            why = segmentation_problem(seg, vid["height"], vid["width"])
            if why:
                problems.append(f"{where}: field 'segmentations[{t}]': {why}")
    areas = ann.get("areas")
    for t, area in enumerate(areas if isinstance(areas, list) else []):
        if not (area is None or (_is_number(area) and area >= 0)):
            problems.append(f"{where}: field 'areas[{t}]' = {area!r} is not a finite number >= 0 or null")
    boxes = ann.get("bboxes")
    for t, box in enumerate(boxes if isinstance(boxes, list) else []):
        if not (box is None or (isinstance(box, list) and len(box) == 4 and all(_is_number(c) for c in box))):
            problems.append(f"{where}: field 'bboxes[{t}]' = {box!r} is not [x, y, w, h] or null")
    occlusion = ann.get("occlusion")
    if isinstance(occlusion, list):
        for t, label in enumerate(occlusion):
            if label is not None and label not in OCCLUSION_SCORES:
                problems.append(
                    f"{where}: field 'occlusion[{t}]' = {label!r} not in {list(OCCLUSION_SCORES)}"
                )
        if all(label is None for label in occlusion):  # the official code divides by zero
            problems.append(f"{where}: field 'occlusion' has no labelled frame")
