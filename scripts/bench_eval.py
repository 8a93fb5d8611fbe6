"""Time the YouTube-VIS evaluator on a validation-sized synthetic set.

Default: 300 videos x 36 frames at 720x1280, 1-5 ground-truth tracks per video (40 categories) and 10
predicted tracks per video (jittered copies of the ground truth plus false positives, some frames absent),
all as compressed RLE. Masks are polygons rasterised by pycocotools, so generating the set is quick.

    python scripts/bench_eval.py [--videos 300 --frames 36 --height 720 --width 1280 --preds 10 --repeat 3]

Prints the median wall and CPU time of ``evaluate_ytvis`` on in-memory lists and on json files (parsing
included), and of ``YTVISVideoAP`` (update per video + compute), with the thread count and the machine's load
(CPU time is the figure to compare when other work shares the cores).
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from vistr_lit.evaluation import YTVISVideoAP, evaluate_ytvis

NUM_CATEGORIES = 40  # YouTube-VIS 2019
POLYGON_VERTICES = 16


def _polygon(
    cx: float, cy: float, rx: float, ry: float, rng: np.random.Generator, jitter: float
) -> list[float]:
    angles = np.linspace(0, 2 * np.pi, POLYGON_VERTICES, endpoint=False)
    radius = 1 + jitter * rng.standard_normal(POLYGON_VERTICES)
    xy = np.stack([cx + rx * radius * np.cos(angles), cy + ry * radius * np.sin(angles)], axis=1)
    return xy.ravel().tolist()


def _rle(poly: list[float], h: int, w: int) -> dict:
    rle = mask_utils.merge(mask_utils.frPyObjects([poly], h, w))
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def _track(rng, h, w, frames, start, velocity, jitter, absent_prob):
    """Per frame: the polygon of (cx, cy, rx, ry) moving by ``velocity`` from ``start``; None where absent."""
    cx, cy, rx, ry = start
    vx, vy = velocity
    out = []
    for f in range(frames):
        if rng.random() < absent_prob:
            out.append(None)
            continue
        out.append(_rle(_polygon(cx + vx * f, cy + vy * f, rx, ry, rng, jitter), h, w))
    return out


def make_dataset(videos: int, frames: int, h: int, w: int, preds: int, seed: int) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    gt = {"videos": [], "categories": [{"id": c, "name": f"c{c}"} for c in range(1, NUM_CATEGORIES + 1)]}
    annotations, results = [], []
    for vid in range(1, videos + 1):
        gt["videos"].append({"id": vid, "height": h, "width": w, "length": frames})
        objects = []
        for _ in range(int(rng.integers(1, 6))):
            start = (
                rng.uniform(0.2, 0.8) * w,
                rng.uniform(0.2, 0.8) * h,
                rng.uniform(20, w / 5),
                rng.uniform(20, h / 5),
            )
            velocity = (rng.normal(0, w / 200), rng.normal(0, h / 200))
            segs = _track(rng, h, w, frames, start, velocity, jitter=0.05, absent_prob=0.1)
            areas = [int(mask_utils.area(s)) if s else None for s in segs]
            category = int(rng.integers(1, NUM_CATEGORIES + 1))
            ann_id = len(annotations) + 1
            annotations.append(
                {
                    "id": ann_id,
                    "video_id": vid,
                    "category_id": category,
                    "iscrowd": 0,
                    "segmentations": segs,
                    "areas": areas,
                }
            )
            objects.append((start, velocity, category))
        for p in range(preds):
            if p < 2 * len(objects):  # two guesses per object: one close, one loose
                (cx, cy, rx, ry), velocity, category = objects[p % len(objects)]
                shift = 0.05 if p < len(objects) else 0.25
                start = (cx + shift * rx, cy - shift * ry, rx * (1 + shift), ry)
                category = category if rng.random() < 0.8 else int(rng.integers(1, NUM_CATEGORIES + 1))
            else:  # a false positive somewhere else
                start = (
                    rng.uniform(0.1, 0.9) * w,
                    rng.uniform(0.1, 0.9) * h,
                    rng.uniform(10, w / 8),
                    rng.uniform(10, h / 8),
                )
                category = int(rng.integers(1, NUM_CATEGORIES + 1))
                velocity = (rng.normal(0, w / 200), rng.normal(0, h / 200))
            segs = _track(rng, h, w, frames, start, velocity, jitter=0.05, absent_prob=0.05)
            results.append(
                {
                    "video_id": vid,
                    "category_id": category,
                    "score": float(rng.random()),
                    "segmentations": segs,
                }
            )
    gt["annotations"] = annotations
    return gt, results


def _time(fn, repeat: int) -> tuple[float, float, object]:
    """Median wall and CPU (this process) seconds of ``fn()`` over ``repeat`` runs, and its output."""
    wall, cpu, out = [], [], None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--preds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    gt, results = make_dataset(args.videos, args.frames, args.height, args.width, args.preds, args.seed)
    generate_s = time.perf_counter() - start
    in_memory_s, in_memory_cpu, stats = _time(lambda: evaluate_ytvis(gt, results), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "results.json"
        gt_path.write_text(json.dumps(gt))
        res_path.write_text(json.dumps(results))
        sizes_mb = (gt_path.stat().st_size / 2**20, res_path.stat().st_size / 2**20)
        files_s, files_cpu, stats_files = _time(lambda: evaluate_ytvis(gt_path, res_path), args.repeat)
    assert stats_files == stats

    def metric_run():
        metric = YTVISVideoAP(gt)
        by_video: dict[int, list[dict]] = {}
        for r in results:
            by_video.setdefault(r["video_id"], []).append(r)
        for v in gt["videos"]:
            metric.update([v["id"]], by_video.get(v["id"], []))
        return {k: float(t) for k, t in metric.compute().items()}

    metric_s, metric_cpu, stats_metric = _time(metric_run, args.repeat)
    assert stats_metric == stats
    report = {
        "videos": args.videos,
        "frames": args.frames,
        "size": [args.height, args.width],
        "gt_tracks": len(gt["annotations"]),
        "pred_tracks": len(results),
        "json_mb": [round(s, 1) for s in sizes_mb],
        "generate_s": round(generate_s, 1),
        "evaluate_in_memory_s": round(in_memory_s, 2),
        "evaluate_in_memory_cpu_s": round(in_memory_cpu, 2),
        "evaluate_from_json_files_s": round(files_s, 2),
        "evaluate_from_json_files_cpu_s": round(files_cpu, 2),
        "metric_update_compute_s": round(metric_s, 2),
        "metric_update_compute_cpu_s": round(metric_cpu, 2),
        "AP": round(stats["AP"], 4),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "repeat": args.repeat,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
