"""Random small YouTube-VIS ground truth + results pairs that hit the metric's corner cases.

Score ties (scores on a coarse grid), crowd ground truth, absent and present-but-empty frames, >100
detections per (video, category), GT ``areas`` on the 128² / 256² boundaries, three segmentation formats,
detections made from shifted ground-truth masks (so IoUs spread over the thresholds), optional OVIS labels.
"""

import numpy as np
from pycocotools import mask as mask_utils

OCCLUSION = ["no_occlusion", "slight_occlusion", "severe_occlusion"]


def rle(mask: np.ndarray) -> dict:
    out = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in out["size"]], "counts": out["counts"].decode("ascii")}


def uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.astype(np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [len(flat)]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def random_box(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    y0, x0 = rng.integers(0, h), rng.integers(0, w)
    y1, x1 = rng.integers(y0, h + 1), rng.integers(x0, w + 1)
    mask[y0:y1, x0:x1] = True
    return mask


def shifted(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    dy, dx = rng.integers(-1, 2, size=2) if rng.random() < 0.6 else (0, 0)
    out = np.roll(mask, (int(dy), int(dx)), axis=(0, 1))
    if rng.random() < 0.2:
        out = out | random_box(rng, *mask.shape) if rng.random() < 0.5 else out & random_box(rng, *mask.shape)
    return out


def random_case(seed: int, ovis: bool = False, big: bool | None = None) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    big = rng.random() < 0.15 if big is None else big
    low, high = (120, 270) if big else (4, 12)
    h, w = int(rng.integers(low, high)), int(rng.integers(low, high))
    cat_ids = sorted(rng.choice(np.arange(1, 60), size=int(rng.integers(1, 4)), replace=False).tolist())
    vid_ids = rng.choice(np.arange(0, 40), size=int(rng.integers(1, 4)), replace=False).tolist()
    videos, annotations, results = [], [], []
    ann_ids = iter(rng.choice(np.arange(1, 10_000), size=1000, replace=False).tolist())
    for vid in vid_ids:
        length = int(rng.integers(1, 5))
        videos.append({"id": vid, "height": h, "width": w, "length": length, "file_names": ["f"] * length})
        gt_masks = []
        for _ in range(int(rng.integers(0, 5))):
            cat = int(rng.choice(cat_ids))
            masks = [random_box(rng, h, w) if rng.random() > 0.25 else None for _ in range(length)]
            segs, areas = [], []
            for m in masks:
                if m is None:
                    segs.append(None)
                    areas.append(None)
                    continue
                kind = rng.integers(0, 3)
                ys, xs = np.nonzero(m)
                if kind == 2 and len(ys):  # polygon of the box outline
                    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
                    segs.append([[float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]])
                else:
                    segs.append(uncompressed_rle(m) if kind == 1 else rle(m))
                choice = rng.random()
                true_area = int(m.sum())
                areas.append(
                    true_area if choice < 0.6 else int(rng.choice([16384, 65536, 16383, 65537, 0, 40000, 7]))
                )
            ann = {
                "id": next(ann_ids),
                "video_id": vid,
                "category_id": cat,
                "iscrowd": int(rng.random() < 0.15),
                "segmentations": segs,
                "areas": areas,
                "bboxes": [None] * length,
                "height": h,
                "width": w,
                "length": length,
            }
            if ovis:
                labels = [str(rng.choice(OCCLUSION)) if rng.random() > 0.2 else None for _ in range(length)]
                labels[0] = labels[0] or "no_occlusion"
                ann["occlusion"] = labels
            annotations.append(ann)
            gt_masks.append((cat, masks))
        many = rng.random() < 0.1
        for _ in range(int(rng.integers(101, 115)) if many else int(rng.integers(0, 12))):
            if gt_masks and rng.random() < 0.7:
                cat, masks = gt_masks[int(rng.integers(len(gt_masks)))]
                cat = cat if rng.random() < 0.85 else int(rng.choice(cat_ids))
                masks = [shifted(rng, m) if m is not None else None for m in masks]
            else:
                cat = int(rng.choice(cat_ids))
                masks = [random_box(rng, h, w) for _ in range(length)]
            segs = [rle(m) if m is not None and rng.random() > 0.15 else None for m in masks]
            score = float(rng.integers(1, 10)) / 10 if rng.random() < 0.7 else float(rng.random())
            results.append({"video_id": vid, "category_id": cat, "score": score, "segmentations": segs})
    rng.shuffle(results)
    categories = [{"id": c, "name": f"c{c}", "supercategory": "x"} for c in cat_ids]
    return {"videos": videos, "categories": categories, "annotations": annotations}, results
