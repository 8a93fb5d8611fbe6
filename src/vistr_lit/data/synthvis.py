"""synthvis: a small synthetic video instance segmentation dataset in the exact YouTube-VIS 2019 format.

``generate_synthvis(DIR, SynthvisConfig(...))`` (CLI: ``python -m vistr_lit.data.synthetic``) writes
``DIR/{train,valid}/JPEGImages/<video>/<frame>.jpg`` (frame numbers skip: 00000, 00005, ...) and
``DIR/{train,valid}.json`` (uncompressed RLE, ``null`` for absent frames), deterministic for a seed.
``ensure_synthvis(root, **params)`` generates it on first use (atomically, safe when several processes race).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from vistr_lit.data.layout import DataError
from vistr_lit.data.synthvis_render import CATEGORIES, render_video

FORMAT_VERSION = 1
STAMP_FILE = "synthvis.json"
SPLITS = ("train", "valid")
DATASET_DIR_MODE = 0o755
VIDEOS_PER_WORKER = 64  # below this a process costs more than it saves
CHUNKS_PER_WORKER = 4  # videos go to the workers in this many chunks each


@dataclass(frozen=True)
class SynthvisConfig:
    """Every knob of the generator; ``sizes`` are (height, width) pairs, one drawn per video."""

    train_videos: int = 150
    valid_videos: int = 30
    min_length: int = 4
    max_length: int = 30
    sizes: tuple[tuple[int, int], ...] = ((96, 128), (112, 160), (128, 128), (144, 176))
    min_objects: int = 1
    max_objects: int = 4
    frame_step: int = 5
    cross_prob: float = 0.3
    enter_leave_prob: float = 0.35
    jpeg_quality: int = 90
    seed: int = 0

    def __post_init__(self):
        sizes = tuple(tuple(int(x) for x in s) for s in self.sizes)
        object.__setattr__(self, "sizes", sizes)
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if not sizes or any(len(s) != 2 or min(s) < 8 for s in sizes):
            raise ValueError(f"sizes must be (height, width) pairs of at least 8 px, got {self.sizes}")
        if self.train_videos < 0 or self.valid_videos < 0 or self.frame_step < 1:
            raise ValueError("video counts must be >= 0 and frame_step >= 1")


def encode_uncompressed_rle(mask: np.ndarray) -> dict:
    """bool ``[H, W]`` -> ``{"size": [H, W], "counts": [int, ...]}``: column-major runs, zeros first."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO ``[x, y, w, h]`` of a non-empty mask (same convention as pycocotools ``toBbox``)."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _write_video(out: Path, split: str, index: int, cfg: SynthvisConfig) -> tuple[dict, list[dict]]:
    """Render video ``index`` of ``split``, write its frames, and return its ``videos`` entry and its
    annotations (without ids: they are numbered across the split)."""
    # a video depends only on (seed, split, index), not on the others
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), index])
    height, width = cfg.sizes[int(rng.integers(len(cfg.sizes)))]
    length = int(rng.integers(cfg.min_length, cfg.max_length + 1))
    num_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    frames, tracks = render_video(
        rng, height, width, length, num_objects, cfg.cross_prob, cfg.enter_leave_prob
    )
    video_id = index + 1
    folder = f"{split}{video_id:04d}"
    file_names = [f"{folder}/{t * cfg.frame_step:05d}.jpg" for t in range(length)]
    (out / split / "JPEGImages" / folder).mkdir(parents=True)
    for name, frame in zip(file_names, frames):
        Image.fromarray(frame).save(out / split / "JPEGImages" / name, quality=cfg.jpeg_quality)
    video = {"id": video_id, "width": width, "height": height, "length": length, "file_names": file_names}
    annotations = []
    for track in tracks:
        present = [bool(m.any()) for m in track.masks]
        annotations.append(
            {
                "video_id": video_id,
                "category_id": track.category + 1,
                "iscrowd": 0,
                "height": height,
                "width": width,
                "length": 1,  # as in the published YouTube-VIS 2019 files
                "segmentations": [
                    encode_uncompressed_rle(m) if p else None for m, p in zip(track.masks, present)
                ],
                "bboxes": [mask_bbox(m) if p else None for m, p in zip(track.masks, present)],
                "areas": [float(m.sum()) if p else None for m, p in zip(track.masks, present)],
            }
        )
    return video, annotations


def _auto_workers(count: int) -> int:
    """Processes for ``count`` videos: one per available core, none beyond one per ``VIDEOS_PER_WORKER``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, count // VIDEOS_PER_WORKER))


def _write_split(out: Path, split: str, count: int, cfg: SynthvisConfig, workers: int | None = None) -> dict:
    workers = _auto_workers(count) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (or None: one per core), got {workers}")
    if workers == 1 or count == 0:
        rendered = [_write_video(out, split, index, cfg) for index in range(count)]
    else:  # videos are independent and rendered in order of index: the same files and json as one process
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)  # fork: no re-import
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            chunk = max(1, count // (CHUNKS_PER_WORKER * workers))
            rendered = list(
                pool.map(partial(_write_video, out, split, cfg=cfg), range(count), chunksize=chunk)
            )
    videos, annotations = [], []
    for video, tracks in rendered:
        videos.append(video)
        for track in tracks:
            annotations.append({"id": len(annotations) + 1, **track})
    info = {"description": f"synthvis {split}", "version": FORMAT_VERSION, "seed": cfg.seed}
    categories = [
        {"id": k + 1, "name": name, "supercategory": "shape"} for k, (name, _, _) in enumerate(CATEGORIES)
    ]
    ann = {
        "info": info,
        "licenses": [],
        "videos": videos,
        "categories": categories,
        "annotations": annotations,
    }
    (out / f"{split}.json").write_text(json.dumps(ann))
    return ann


def generate_synthvis(out: str | Path, cfg: SynthvisConfig | None = None, workers: int | None = None) -> Path:
    """Write the dataset into ``out`` (which must not exist or be empty) and a stamp of its parameters.

    ``workers``: processes that render and write the videos (None: one per available core, for splits of at
    least ``VIDEOS_PER_WORKER`` videos each); the output does not depend on it."""
    cfg = cfg or SynthvisConfig()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new or empty folder for --out")
    out.mkdir(parents=True, exist_ok=True)
    for split, count in zip(SPLITS, (cfg.train_videos, cfg.valid_videos)):
        _write_split(out, split, count, cfg, workers)
    (out / STAMP_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **_stamp(cfg)}, indent=1))
    return out


def _stamp(cfg: SynthvisConfig) -> dict:
    params = asdict(cfg)
    params["sizes"] = [list(s) for s in cfg.sizes]
    return params


def ensure_synthvis(root: str | Path, workers: int | None = None, **params) -> Path:
    """Generate synthvis into ``root`` unless it is already there with the same parameters.

    ``params`` are :class:`SynthvisConfig`'s; ``workers`` as for :func:`generate_synthvis`.

    Generation goes to a temporary sibling folder renamed into place, so concurrent callers (DDP ranks,
    DataLoader workers) never see a half-written dataset. Raises if ``root`` holds a dataset made with
    other parameters (nothing is overwritten).
    """
    root = Path(root)
    cfg = SynthvisConfig(**params)
    stamp_path = root / STAMP_FILE
    if not stamp_path.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        try:
            generate_synthvis(tmp, cfg, workers)
            tmp.chmod(DATASET_DIR_MODE)  # mkdtemp makes it owner-only; the dataset is meant to be shared
            try:
                os.rename(tmp, root)  # atomic; fails if another process finished first
            except OSError as err:
                if not stamp_path.exists():
                    raise DataError(
                        f"data.root: {root} holds other files, not a generated synthvis (no {STAMP_FILE}); "
                        "synthvis is generated into a new folder (another data.root), and a dataset of "
                        "your own is read with data=custom data.root=DIR (docs/custom-data.md)"
                    ) from err
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    found = json.loads(stamp_path.read_text())
    wanted = {"format_version": FORMAT_VERSION, **_stamp(cfg)}
    if found != wanted:
        diff = {k: (found.get(k), v) for k, v in wanted.items() if found.get(k) != v}
        raise ValueError(
            f"{stamp_path}: synthvis there was made with other parameters (found, wanted): {diff}"
        )
    return root
