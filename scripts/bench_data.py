"""Training-clip throughput of the data pipeline: T=36 clips at the paper's training scale, 0/1/2 workers.

A cached synthvis with YouTube-VIS-sized frames (default 720x1280, 3-4 objects, 36-48 frames) is generated
once into ``--data``. Each clip: decode 36 JPEG frames and their RLE masks, random crop 384-600 measured at
short side 400/500/600, resize to short side 300 (max 540), flip, per-frame photometric distortion, normalize,
collate (B=1).

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_data.py [--quickstart]
"""

import argparse
import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vistr_lit.data.clips import ClipSampler, YTVISClipDataset, collate_clips
from vistr_lit.data.synthvis import ensure_synthvis
from vistr_lit.data.transforms import build_train_transform
from vistr_lit.data.ytvis import load_ytvis


def clips_per_second(dataset, workers: int, clips: int, warmup: int) -> float:
    loader = DataLoader(dataset, batch_size=1, shuffle=True, num_workers=workers, collate_fn=collate_clips)
    it = iter(loader)
    for _ in range(warmup):  # worker start-up and first reads are not counted
        next(it)
    start = time.perf_counter()
    for _ in range(clips):
        next(it)
    elapsed = time.perf_counter() - start
    del it
    return clips / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/bench_synthvis", help="cached benchmark dataset folder")
    parser.add_argument("--size", default="720x1280", help="frame size HxW of the benchmark videos")
    parser.add_argument("--frames", type=int, default=36, help="T, frames per clip")
    parser.add_argument(
        "--clips", type=int, default=None, help="timed clips per setting (12; 400 quickstart)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed clips per setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the main process")
    parser.add_argument(
        "--quickstart",
        action="store_true",
        help="instead: the default synthvis at the quickstart's scale (T=6, short side 80, max 128, no crop)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quickstart:
        root = ensure_synthvis("data/synthvis")  # the default set the quickstart trains on
        transform = build_train_transform(
            scales=[80], max_size=128, crop_prescales=None, crop_size=None, photometric_prob=0.2
        )
        args.frames, source = 6, "synthvis (96-176 px)"
        args.clips = args.clips or 400
    else:
        root, transform, source = paper_data(args), build_train_transform(), f"{args.size} JPEG"
        args.clips = args.clips or 12
    data = load_ytvis(root / "train.json")
    dataset = YTVISClipDataset(
        data, root / "train" / "JPEGImages", ClipSampler(args.frames), transform, clips_per_video=100
    )
    frames, target = dataset[0]
    print(
        f"clip T={args.frames} from {source} -> {tuple(frames.shape[-2:])} after the transforms; "
        f"{target['labels'].numel()} instances; torch threads {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for workers in args.workers:
        rate = clips_per_second(dataset, workers, args.clips, args.warmup)
        print(f"workers={workers}: {rate:.2f} clips/s ({rate * args.frames:.0f} frames/s)")


def paper_data(args) -> Path:
    """The cached benchmark synthvis with YouTube-VIS-sized frames."""
    height, width = (int(x) for x in args.size.lower().split("x"))
    return ensure_synthvis(
        args.data,
        train_videos=6,
        valid_videos=0,
        min_length=args.frames,
        max_length=args.frames + 12,
        sizes=((height, width),),
        min_objects=3,
        max_objects=4,
        enter_leave_prob=0.0,
    )


if __name__ == "__main__":
    main()
