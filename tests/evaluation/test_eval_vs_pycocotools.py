"""Cross-check with a well-kept library: pycocotools' COCOeval on the "tall image" conversion.

Each video becomes one image with its frames stacked (absent frames empty) and each track one mask, so
COCO's mask IoU equals the spatio-temporal IoU; areas are set to the YouTube-VIS ``avg_area`` and the
area ranges to 128² / 256². Without crowd ground truth (COCO uses I / area(d) for crowd, YouTube-VIS does
not) COCOeval must give our 12 statistics (ytvis_metric.md, section 5).
"""

import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from ytvis_cases import random_case

from vistr_lit.evaluation import YTVIS_STATS, evaluate_ytvis
from vistr_lit.evaluation.inputs import truthy_mean

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


def _tall(segmentations: list, h: int, w: int) -> dict:
    frames = []
    for s in segmentations:
        if not s:
            frames.append(np.zeros((h, w), dtype=np.uint8))
        elif isinstance(s, list):
            frames.append(mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(s, h, w))))
        elif isinstance(s["counts"], list):
            frames.append(mask_utils.decode(mask_utils.frPyObjects(s, h, w)))
        else:
            frames.append(mask_utils.decode(s))
    rle = mask_utils.encode(np.asfortranarray(np.concatenate(frames, axis=0)))
    return {"size": [int(x) for x in rle["size"]], "counts": rle["counts"]}


def cocoeval_stats(gt: dict, results: list[dict]) -> dict[str, float]:
    videos = {v["id"]: v for v in gt["videos"]}
    images = [{"id": v["id"], "height": v["height"] * v["length"], "width": v["width"]} for v in gt["videos"]]
    anns = []
    for a in gt["annotations"]:
        v = videos[a["video_id"]]
        seg = _tall(a["segmentations"], v["height"], v["width"])
        anns.append(
            {
                "id": a["id"],
                "image_id": a["video_id"],
                "category_id": a["category_id"],
                "iscrowd": a["iscrowd"],
                "segmentation": seg,
                "area": truthy_mean(a["areas"]),
                "bbox": list(mask_utils.toBbox(seg)),
            }
        )
    coco_gt, coco_dt = COCO(), COCO()
    coco_gt.dataset = {"images": images, "categories": gt["categories"], "annotations": anns}
    dts = []
    for i, r in enumerate(results):
        v = videos[r["video_id"]]
        seg = _tall(r["segmentations"], v["height"], v["width"])
        areas = [int(mask_utils.area(s)) if s else None for s in r["segmentations"]]
        dts.append(
            {
                "id": i + 1,
                "image_id": r["video_id"],
                "category_id": r["category_id"],
                "score": r["score"],
                "segmentation": seg,
                "area": truthy_mean(areas),
                "bbox": list(mask_utils.toBbox(seg)),
                "iscrowd": 0,
            }
        )
    coco_dt.dataset = {"images": images, "categories": gt["categories"], "annotations": dts}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.params.areaRng = [[0, 1e5**2], [0, 128**2], [128**2, 256**2], [256**2, 1e5**2]]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(YTVIS_STATS, (float(s) for s in ev.stats)))


@pytest.mark.parametrize("block", range(2))
def test_equals_pycocotools_on_the_tall_image_conversion(block):
    for seed in range(5000 + block * 40, 5000 + (block + 1) * 40):
        gt, results = random_case(seed)
        for a in gt["annotations"]:
            a["iscrowd"] = 0
        assert evaluate_ytvis(gt, results) == cocoeval_stats(gt, results), seed  # bit-identical


def test_crowd_is_where_the_conversion_differs():
    """Why we do not delegate to COCOeval: a detection inside a crowd region has plain IoU 25/100 (a FP for
    YouTube-VIS) but COCO's crowd IoU I / area(d) = 1 (ignored)."""
    h, w = 20, 20
    regular, crowd, inside = np.zeros((3, h, w), dtype=np.uint8)
    regular[0:4, 0:4], crowd[10:20, 10:20], inside[12:17, 12:17] = 1, 1, 1

    def rle(m):
        out = mask_utils.encode(np.asfortranarray(m))
        return {"size": [h, w], "counts": out["counts"].decode()}

    gt = {
        "videos": [{"id": 1, "height": h, "width": w, "length": 1}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {
                "id": 1,
                "video_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentations": [rle(regular)],
                "areas": [16],
            },
            {
                "id": 2,
                "video_id": 1,
                "category_id": 1,
                "iscrowd": 1,
                "segmentations": [rle(crowd)],
                "areas": [100],
            },
        ],
    }
    results = [
        {"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [rle(regular)]},
        {"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [rle(inside)]},
    ]
    assert evaluate_ytvis(gt, results)["AP50"] == pytest.approx(0.5)
    assert cocoeval_stats(gt, results)["AP50"] == pytest.approx(1.0)
