"""YouTube-VIS (2019/2021) and OVIS annotation files: parse (validated by ``validation``), decode, split.

Every problem found in a file is reported with the file, the video id, the annotation id and the field;
``load_ytvis`` raises :class:`AnnotationError` listing all of them instead of dropping anything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from vistr_lit.errors import UserError
from vistr_lit.ytvis_format import validate_ytvis

# Largest 64-bit value of the stable hash, used to turn it into a fraction in [0, 1).
_HASH_SPAN = float(2**64)


class AnnotationError(UserError, ValueError):
    """Raised for a malformed annotation file; ``problems`` holds one message per problem."""

    def __init__(self, path: str | Path, problems: Sequence[str]):
        self.path = str(path)
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        if len(self.problems) == 1 and self.problems[0].startswith(self.path):
            super().__init__(self.problems[0])  # one line, naming the file
        else:
            super().__init__(f"{self.path}: {len(self.problems)} problem(s):\n  {shown}{more}")


@dataclass(frozen=True)
class Video:
    """One video: ``file_names`` are relative to the frames folder (numbers may skip)."""

    id: int
    width: int
    height: int
    file_names: tuple[str, ...]

    @property
    def length(self) -> int:
        return len(self.file_names)


@dataclass(frozen=True)
class Annotation:
    """One instance track: per-frame ``segmentations``/``bboxes``/``areas``, ``None`` where absent."""

    id: int
    video_id: int
    category_id: int
    iscrowd: int
    segmentations: tuple[Any, ...]
    bboxes: tuple[Any, ...] | None
    areas: tuple[Any, ...] | None


class CategoryMap:
    """Dataset category ids <-> contiguous class indices ``0..K-1`` (sorted by id)."""

    def __init__(self, ids: Iterable[int], names: Iterable[str]):
        pairs = sorted(zip(ids, names, strict=True))
        self.ids: list[int] = [int(i) for i, _ in pairs]
        self.names: list[str] = [str(n) for _, n in pairs]
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"CategoryMap: duplicate category ids in {self.ids}")
        self._index = {cid: k for k, cid in enumerate(self.ids)}

    @classmethod
    def from_categories(cls, categories: Sequence[dict]) -> CategoryMap:
        return cls([c["id"] for c in categories], [c["name"] for c in categories])

    @property
    def num_classes(self) -> int:
        return len(self.ids)

    def to_index(self, category_id: int) -> int:
        if category_id not in self._index:
            raise KeyError(f"category_id {category_id} is not one of {self.ids}")
        return self._index[category_id]

    def to_category_id(self, index: int) -> int:
        if not 0 <= index < len(self.ids):
            raise IndexError(f"class index {index} out of range 0..{len(self.ids) - 1}")
        return self.ids[index]

    def to_dict(self) -> dict[str, list]:
        return {"ids": list(self.ids), "names": list(self.names)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CategoryMap) and self.ids == other.ids and self.names == other.names

    def __repr__(self) -> str:
        return f"CategoryMap({dict(zip(self.ids, self.names))})"


@dataclass
class YTVISData:
    """A parsed annotation file. ``has_annotations`` is False for a test split."""

    path: str
    videos: list[Video]
    annotations: dict[int, list[Annotation]]  # video id -> its instance tracks
    category_map: CategoryMap
    raw: dict
    has_annotations: bool

    def video(self, video_id: int) -> Video:
        for video in self.videos:
            if video.id == video_id:
                return video
        raise KeyError(f"{self.path}: no video with id {video_id}")

    def subset(self, video_ids: Iterable[int]) -> YTVISData:
        """The same file restricted to ``video_ids`` (raw json included, for the evaluator)."""
        keep = set(video_ids)
        raw = dict(self.raw)
        raw["videos"] = [v for v in self.raw["videos"] if v["id"] in keep]
        if self.has_annotations:
            raw["annotations"] = [a for a in self.raw["annotations"] if a["video_id"] in keep]
        return YTVISData(
            path=self.path,
            videos=[v for v in self.videos if v.id in keep],
            annotations={k: v for k, v in self.annotations.items() if k in keep},
            category_map=self.category_map,
            raw=raw,
            has_annotations=self.has_annotations,
        )


def decode_segmentation(seg: Any, height: int, width: int) -> np.ndarray:
    """One frame's segmentation (RLE with list or string counts, polygons, or None) -> uint8 ``[H, W]``."""
    if seg is None:
        return np.zeros((height, width), dtype=np.uint8)
    if isinstance(seg, list):  # polygons: union of the parts
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):  # uncompressed RLE, as in the published json
        rle = mask_utils.frPyObjects(seg, *seg["size"])
    else:
        rle = seg
    return mask_utils.decode(rle)


def parse_ytvis(raw: dict, path: str | Path) -> YTVISData:
    """Validated json -> :class:`YTVISData`; raises :class:`AnnotationError` listing every problem."""
    problems = validate_ytvis(raw, path, dataset=True)
    if problems:
        raise AnnotationError(path, problems)
    videos = [Video(v["id"], v["width"], v["height"], tuple(v["file_names"])) for v in raw["videos"]]
    annotations: dict[int, list[Annotation]] = {v.id: [] for v in videos}
    for a in raw.get("annotations") or []:  # OVIS test files: `annotations: null`
        annotations[a["video_id"]].append(
            Annotation(
                id=a["id"],
                video_id=a["video_id"],
                category_id=a["category_id"],
                iscrowd=int(a["iscrowd"]),
                segmentations=tuple(a["segmentations"]),
                bboxes=tuple(a["bboxes"]) if "bboxes" in a else None,
                areas=tuple(a["areas"]) if "areas" in a else None,
            )
        )
    return YTVISData(
        path=str(path),
        videos=videos,
        annotations=annotations,
        category_map=CategoryMap.from_categories(raw["categories"]),
        raw=raw,
        has_annotations=raw.get("annotations") is not None,
    )


def load_ytvis(path: str | Path) -> YTVISData:
    """Read and validate a YouTube-VIS 2019/2021 or OVIS json (a test split without annotations is fine)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # text that is no JSON, or no text
        raise AnnotationError(path, [f"{path}: not valid JSON ({err})"]) from err
    return parse_ytvis(raw, path)


def hash_fraction(video_id: int, salt: str) -> float:
    """Stable pseudo-random number in [0, 1) for a video id (same on every machine and Python run)."""
    digest = hashlib.sha256(f"{salt}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SPAN


def hash_split(video_ids: Iterable[int], val_fraction: float, salt: str = "vistr-lit") -> tuple[list, list]:
    """Deterministic local split -> (train ids, validation ids): validation iff hash < ``val_fraction``."""
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    train, val = [], []
    for vid in video_ids:
        (val if hash_fraction(vid, salt) < val_fraction else train).append(vid)
    return train, val
