"""A hand-made YouTube-VIS dataset: every segmentation encoding, null frames, skipping frame names."""

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from vistr_lit.data.synthvis import encode_uncompressed_rle, mask_bbox

HEIGHT, WIDTH = 24, 32
FRAME_STEP = 5


def box_mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def write_dataset(root: Path, raw: dict, sizes: dict[int, tuple[int, int]] | None = None) -> Path:
    """Write frames for every video of ``raw`` (random pixels) and the json; returns the json path."""
    rng = np.random.default_rng(0)
    for video in raw["videos"]:
        h, w = (sizes or {}).get(video["id"], (video["height"], video["width"]))
        for name in video["file_names"]:
            path = root / "JPEGImages" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    ann = root / "ann.json"
    ann.write_text(json.dumps(raw))
    return ann


def make_raw() -> dict:
    """Video 1: 5 frames (00000, 00005, ...), two instances; video 7: 2 frames, one instance; categories 3, 9.

    Instance 11 (category 9) uses every encoding: uncompressed RLE, null, polygon, compressed RLE, null.
    Instance 12 (category 3) is a box moving right by 4 px per frame, uncompressed RLE everywhere.
    """
    names = [f"vid_a/{FRAME_STEP * t:05d}.jpg" for t in range(5)]
    poly_mask = box_mask(4, 12, 6, 14)
    seg11 = [
        encode_uncompressed_rle(box_mask(2, 10, 3, 11)),
        None,
        [[6.0, 4.0, 14.0, 4.0, 14.0, 12.0, 6.0, 12.0]],
        compressed_rle(box_mask(10, 20, 16, 30)),
        None,
    ]
    masks11 = [box_mask(2, 10, 3, 11), None, poly_mask, box_mask(10, 20, 16, 30), None]
    masks12 = [box_mask(12, 22, 4 * t, 4 * t + 6) for t in range(5)]

    def track(ann_id, video_id, cat, segs, masks):
        return {
            "id": ann_id,
            "video_id": video_id,
            "category_id": cat,
            "iscrowd": 0,
            "segmentations": segs,
            "bboxes": [mask_bbox(m) if m is not None else None for m in masks],
            "areas": [float(m.sum()) if m is not None else None for m in masks],
        }

    return {
        "videos": [
            {"id": 1, "width": WIDTH, "height": HEIGHT, "length": 5, "file_names": names},
            {
                "id": 7,
                "width": WIDTH,
                "height": HEIGHT,
                "length": 2,
                "file_names": ["vid_b/00000.jpg", "vid_b/00005.jpg"],
            },
        ],
        "categories": [{"id": 9, "name": "nine"}, {"id": 3, "name": "three"}],
        "annotations": [
            track(11, 1, 9, seg11, masks11),
            track(12, 1, 3, [encode_uncompressed_rle(m) for m in masks12], masks12),
            track(
                13, 7, 3, [encode_uncompressed_rle(box_mask(0, 5, 0, 5)), None], [box_mask(0, 5, 0, 5), None]
            ),
        ],
    }
