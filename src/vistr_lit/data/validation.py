"""Structural validation of YouTube-VIS/OVIS annotation json: every problem, each naming file, video,
annotation and field. Frame files are checked by ``vistr_lit.data.check``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_VIDEO_KEYS = ("id", "width", "height", "file_names")
_ANNOTATION_KEYS = ("id", "video_id", "category_id", "segmentations")
_CATEGORY_KEYS = ("id", "name")


def _where(path: str, video_id: Any = None, ann_id: Any = None) -> str:
    parts = [path]
    if video_id is not None:
        parts.append(f"video {video_id}")
    if ann_id is not None:
        parts.append(f"annotation {ann_id}")
    return ", ".join(parts)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def segmentation_problem(seg: Any, height: int, width: int) -> str | None:
    """Why ``seg`` is not a valid frame segmentation of a ``height x width`` video, or None if it is."""
    if seg is None:
        return None
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            return "RLE needs 'counts' and 'size'"
        size = seg["size"]
        if not (isinstance(size, list | tuple) and len(size) == 2 and all(_is_int(s) for s in size)):
            return f"RLE size {size!r} is not [height, width]"
        if list(size) != [height, width]:
            return f"RLE size {list(size)} != video size [{height}, {width}]"
        counts = seg["counts"]
        if isinstance(counts, list):
            if not all(_is_int(c) and c >= 0 for c in counts):
                return "uncompressed RLE counts must be non-negative integers"
            if sum(counts) != height * width:
                return f"uncompressed RLE counts sum to {sum(counts)}, expected {height * width}"
        elif not isinstance(counts, str | bytes):
            return f"RLE counts of type {type(counts).__name__} (expected list of int or str)"
        return None
    if isinstance(seg, list):
        if not seg:
            return "empty polygon list (use null for an absent frame)"
        for poly in seg:
            if not (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0):
                return "polygon must be a list of >= 3 (x, y) pairs"
            if not all(isinstance(c, int | float) for c in poly):
                return "polygon coordinates must be numbers"
        return None
    return f"segmentation of type {type(seg).__name__} (expected RLE dict, polygon list or null)"


def validate_ytvis(raw: Any, path: str | Path) -> list[str]:
    """Every structural problem of a YouTube-VIS/OVIS json (without touching frame files)."""
    path = str(path)
    problems: list[str] = []
    if not isinstance(raw, dict):
        return [f"{path}: top level is {type(raw).__name__}, expected an object"]
    for key in ("videos", "categories"):
        if not isinstance(raw.get(key), list):
            problems.append(f"{path}: field '{key}' missing or not a list")
    if "annotations" in raw and not isinstance(raw["annotations"], list):
        problems.append(f"{path}: field 'annotations' is not a list")
    if problems:
        return problems

    cat_ids: set[int] = set()
    for i, cat in enumerate(raw["categories"]):
        missing = [k for k in _CATEGORY_KEYS if not isinstance(cat, dict) or k not in cat]
        if missing:
            problems.append(f"{path}, categories[{i}]: missing field(s) {missing}")
        elif not _is_int(cat["id"]):
            problems.append(f"{path}, categories[{i}]: field 'id' = {cat['id']!r} is not an integer")
        elif cat["id"] in cat_ids:
            problems.append(f"{path}, category {cat['id']}: duplicate category id")
        else:
            cat_ids.add(cat["id"])

    videos: dict[int, dict] = {}
    for i, vid in enumerate(raw["videos"]):
        missing = [k for k in _VIDEO_KEYS if not isinstance(vid, dict) or k not in vid]
        if missing:
            problems.append(f"{path}, videos[{i}]: missing field(s) {missing}")
            continue
        where = _where(path, vid["id"])
        if not _is_int(vid["id"]):
            problems.append(f"{path}, videos[{i}]: field 'id' = {vid['id']!r} is not an integer")
            continue
        if vid["id"] in videos:
            problems.append(f"{where}: duplicate video id")
            continue
        for key in ("width", "height"):
            if not (_is_int(vid[key]) and vid[key] > 0):
                problems.append(f"{where}: field '{key}' = {vid[key]!r} is not a positive integer")
        names = vid["file_names"]
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            problems.append(f"{where}: field 'file_names' must be a non-empty list of strings")
        elif len(set(names)) != len(names):
            problems.append(f"{where}: field 'file_names' has duplicate entries")
        elif "length" in vid and vid["length"] != len(names):
            problems.append(f"{where}: field 'length' = {vid['length']} != len(file_names) = {len(names)}")
        videos[vid["id"]] = vid

    ann_ids: set[int] = set()
    for i, ann in enumerate(raw.get("annotations", [])):
        missing = [k for k in _ANNOTATION_KEYS if not isinstance(ann, dict) or k not in ann]
        if missing:
            problems.append(f"{path}, annotations[{i}]: missing field(s) {missing}")
            continue
        where = _where(path, ann["video_id"], ann["id"])
        if not _is_int(ann["id"]):
            problems.append(f"{path}, annotations[{i}]: field 'id' = {ann['id']!r} is not an integer")
        elif ann["id"] in ann_ids:
            problems.append(f"{where}: duplicate annotation id")
        ann_ids.add(ann["id"])
        if ann["category_id"] not in cat_ids:
            problems.append(f"{where}: field 'category_id' = {ann['category_id']!r} is not a listed category")
        if ann.get("iscrowd", 0) not in (0, 1):
            problems.append(f"{where}: field 'iscrowd' = {ann['iscrowd']!r} is not 0 or 1")
        vid = videos.get(ann["video_id"])
        if vid is None:
            problems.append(f"{where}: field 'video_id' refers to a video that is not listed")
            continue
        if not isinstance(vid["file_names"], list):
            continue
        length = len(vid["file_names"])
        for key in ("segmentations", "bboxes", "areas"):
            if key in ann and not (isinstance(ann[key], list) and len(ann[key]) == length):
                got = len(ann[key]) if isinstance(ann[key], list) else type(ann[key]).__name__
                problems.append(f"{where}: field '{key}' has length {got}, video length is {length}")
        if isinstance(ann["segmentations"], list):
            for t, seg in enumerate(ann["segmentations"]):
                why = segmentation_problem(seg, vid["height"], vid["width"])
                if why:
                    problems.append(f"{where}: field 'segmentations[{t}]': {why}")
        if isinstance(ann.get("areas"), list):
            for t, area in enumerate(ann["areas"]):
                if not (area is None or (isinstance(area, int | float) and area >= 0)):
                    problems.append(f"{where}: field 'areas[{t}]' = {area!r} is not a number >= 0 or null")
        if isinstance(ann.get("bboxes"), list):
            for t, box in enumerate(ann["bboxes"]):
                ok = box is None or (
                    isinstance(box, list) and len(box) == 4 and all(isinstance(c, int | float) for c in box)
                )
                if not ok:
                    problems.append(f"{where}: field 'bboxes[{t}]' = {box!r} is not [x, y, w, h] or null")
    return problems
