"""Whole-video inference speed and memory on CPU: frames per second end to end and model-only, peak RSS.

    python scripts/bench_infer.py --model quickstart --frames 120 --threads 2
    python scripts/bench_infer.py --model r50 --frames 36 --size 300x533 --threads 2
    python scripts/bench_infer.py --model quickstart --lengths 100,1000      # peak memory vs video length

End to end = decode an MP4 → eval transform → model (windows of T, ``--overlap`` shared) → post-processing →
stitching → RLE, then the second pass: decode again → overlay → MP4 (libx264). Model-only = frames through the
forward pass per second of forward time (T·windows / Σ forward time), the figure the VisTR README reports.
Weights are random: speed does not depend on them. With ``--masks full`` (default) the last mask layer's bias
is set high so every slot predicts a mask in every frame: the worst case for stitching, RLE and drawing.
Each length runs in its own process so that peak RSS (``ru_maxrss``) is per run.
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vistr_lit.data.transforms import build_eval_transform
from vistr_lit.inference import VideoPredictor, open_input, transformed_frames, write_visual_outputs
from vistr_lit.inference.visualize import OverlayWriter
from vistr_lit.models import build_vistr
from vistr_lit.models.postprocess import PostProcessVideo

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "src" / "vistr_lit" / "conf")
EXPERIMENTS = {"quickstart": "quickstart", "r50": "vistr_r50"}
NUM_CLASSES = 40  # YouTube-VIS 2019
NUM_OBJECTS = 4
FULL_MASK_LOGIT = 20.0
FPS = Fraction(6)
KIB = 1024  # ru_maxrss is in KiB on Linux


def synthetic_video(path: Path, frames: int, height: int, width: int) -> Path:
    """An MP4 of discs moving across a grey background (not timed)."""
    writer = OverlayWriter(path, FPS, "mp4")
    ys, xs = np.mgrid[0:height, 0:width]
    radius = min(height, width) / 8
    for v in range(frames):
        image = np.full((height, width, 3), 90, dtype=np.uint8)
        for k in range(NUM_OBJECTS):
            phase = 2 * math.pi * (v / 60 + k / NUM_OBJECTS)
            cx, cy = (
                width / 2 + width / 3 * math.cos(phase),
                height / 2 + height / 3 * math.sin(phase * (k + 1)),
            )
            image[(xs - cx) ** 2 + (ys - cy) ** 2 < radius**2] = (60 * k, 255 - 50 * k, 40 + 50 * k)
        writer.write(torch.from_numpy(image).permute(2, 0, 1))
    return writer.close()


def build_model(name: str, masks: str) -> tuple[torch.nn.Module, dict]:
    """The experiment's VisTR (random weights) and its resolved ``inference`` config block."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="infer", overrides=[f"+experiment={EXPERIMENTS[name]}", "ckpt_path=x", "input=x"]
        )
    net = dict(cfg.model.net)
    net["pretrained_backbone"] = None  # no download; speed does not depend on the weights
    model = build_vistr(num_classes=NUM_CLASSES, **net).eval()
    if masks == "full":
        with torch.no_grad():
            if model.mask_extension is not None:  # dot-product masks: constant embeddings, logit D · c²
                head = model.mask_extension
                last_linear, pixel_out = head.mask_embed.layers[-1], head.pixel_decoder.out
                scale = math.sqrt(FULL_MASK_LOGIT / last_linear.out_features)
                for layer in (last_linear, pixel_out):
                    layer.weight.zero_()
                    layer.bias.fill_(scale)
            else:  # the paper's head: the last convolution's bias
                convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d | torch.nn.Conv2d)]
                convs[-1].bias.fill_(FULL_MASK_LOGIT)
    inference = OmegaConf.to_container(cfg.inference, resolve=True)
    return model, inference


def run_once(args) -> dict:
    """One video of ``args.frames`` frames; returns the figures as a dict."""
    torch.set_num_threads(args.threads)
    height, width = (int(s) for s in args.size.split("x"))
    model, inference = build_model(args.model, args.masks)
    forward_time, forward_frames = 0.0, 0
    original_forward = model.forward

    def timed_forward(frames, pad_mask=None):
        nonlocal forward_time, forward_frames
        start = time.perf_counter()
        out = original_forward(frames, pad_mask)
        forward_time += time.perf_counter() - start
        forward_frames += frames.shape[0] * frames.shape[1]
        return out

    model.forward = timed_forward
    with tempfile.TemporaryDirectory() as tmp:
        path = synthetic_video(Path(tmp) / "bench.mp4", args.frames, height, width)
        (source,), _ = open_input(path, fps=float(FPS))
        if args.postprocess == "experiment":  # the experiment's post-processing and stitching options
            options = {
                k: inference[k]
                for k in ("match_iou", "track_nms_iou", "track_nms_decay", "classes_per_track", "tta")
            }
            predictor = VideoPredictor(
                model, PostProcessVideo(**inference["postprocess"]), overlap=args.overlap, **options
            )
        else:
            predictor = VideoPredictor(model, PostProcessVideo(), overlap=args.overlap, match_iou=0.5)
        transform = build_eval_transform(inference["short_side"], inference["max_size"])
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        tracks = predictor.predict_stream(transformed_frames(source.frames(), transform), source.size)
        predicted = time.perf_counter()
        write_visual_outputs(source.frames(), tracks, source.size, ["x"] * NUM_CLASSES, Path(tmp), source.fps)
        total = time.perf_counter() - start
    return {
        "model": args.model,
        "frames": args.frames,
        "size": args.size,
        "window": model.num_frames,
        "overlap": predictor.overlap,
        "threads": args.threads,
        "postprocess": args.postprocess,
        "tracks": len(tracks),
        "fps_end_to_end": args.frames / total,
        "fps_predict_only": args.frames / (predicted - start),
        "fps_model_only": forward_frames / forward_time,
        "seconds": total,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB,
        "rss_before_run_mib": rss_before / KIB,
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(EXPERIMENTS), default="quickstart")
    parser.add_argument("--frames", type=int, default=120, help="video length V")
    parser.add_argument("--lengths", default=None, help="comma-separated V values, one process each")
    parser.add_argument(
        "--size", default="360x640", help="input frame size HxW (resized by the eval transform)"
    )
    parser.add_argument("--overlap", type=int, default=None, help="frames shared by windows (default T // 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--postprocess",
        choices=("default", "experiment"),
        default="default",
        help="PostProcessVideo() and the stitcher's defaults, or the experiment's model.postprocess and "
        "model.predictor options (the quickstart: mask refinement, track NMS, 3 classes per track)",
    )
    parser.add_argument("--masks", choices=("full", "model"), default="full")
    parser.add_argument("--json", type=Path, default=None, help="append the results as JSON lines here")
    args = parser.parse_args()
    if args.lengths:
        common = [
            "--model",
            args.model,
            "--size",
            args.size,
            "--threads",
            str(args.threads),
            "--masks",
            args.masks,
            "--postprocess",
            args.postprocess,
        ]
        common += ["--overlap", str(args.overlap)] if args.overlap is not None else []
        common += ["--json", str(args.json)] if args.json is not None else []
        for length in args.lengths.split(","):
            subprocess.run([sys.executable, __file__, *common, "--frames", length], check=True)
        return
    result = run_once(args)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}))
    if args.json is not None:
        with args.json.open("a") as file:
            file.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
