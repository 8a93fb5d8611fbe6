"""AP on the videos longer than T of an annotation file: window stitching vs the original's first window only.

    python scripts/long_video_ap.py CKPT [--ann data/synthvis/valid.json] [--short-side S --max-size M]
                                         [--postprocess checkpoint|paper] [--overlap 3] [--match-iou 0.5]
                                         [--json out.json]

CKPT is a Lightning checkpoint (e.g. the quickstart's) or an authors' ``.pth``. Both modes use the
checkpoint's own post-processing and predictor settings (``model.postprocess``, ``model.predictor`` of its
run: the quickstart's mask scoring, refinement, stitching threshold, track NMS and classes per track) unless
``--postprocess paper`` asks for the paper's; ``--overlap`` and ``--match-iou`` override the checkpoint's
stitching. Frames are resized as the quickstart preset's evaluation data unless ``--short-side`` /
``--max-size`` say otherwise. Prints one table row per mode with the official YouTube-VIS statistics
(percent) computed on the same videos.
"""

import argparse
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from vistr_lit.data import YTVISVideoDataset, build_eval_transform, load_ytvis
from vistr_lit.infer import CONFIG_DIR, load_module
from vistr_lit.inference.long_video import long_video_ap
from vistr_lit.models.postprocess import PostProcessVideo

SHOWN = ("AP", "AP50", "AP75", "AR1", "AR10")
QUICKSTART_DATA = OmegaConf.load(CONFIG_DIR / "preset" / "quickstart.yaml").data  # its evaluation frame size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("--ann", type=Path, default=Path("data/synthvis/valid.json"))
    parser.add_argument(
        "--frames-root", type=Path, default=None, help="default: <ann dir>/<ann stem>/JPEGImages"
    )
    parser.add_argument("--short-side", type=int, default=QUICKSTART_DATA.eval_short_side, help="%(default)s")
    parser.add_argument("--max-size", type=int, default=QUICKSTART_DATA.eval_max_size, help="%(default)s")
    parser.add_argument(
        "--postprocess",
        choices=("checkpoint", "paper"),
        default="checkpoint",
        help="the checkpoint's own post-processing and predictor settings, or the paper's (the defaults)",
    )
    parser.add_argument("--overlap", type=int, default=None, help="default: the checkpoint's (null: T // 2)")
    parser.add_argument("--match-iou", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    module = load_module(str(args.ckpt))
    model, category_ids = module.model.eval(), list(module.hparams.category_ids)
    postprocess, options = PostProcessVideo(), {}
    if args.postprocess == "checkpoint":
        postprocess = module.postprocess  # built from the checkpoint's hyper-parameters
        options = {k: v for k, v in module.hparams.predictor.items() if k != "first_window_only"}
    if args.overlap is not None:
        options["overlap"] = args.overlap
    if args.match_iou is not None:
        options["match_iou"] = args.match_iou
    data = load_ytvis(args.ann)
    if list(data.category_map.ids) != category_ids:
        raise SystemExit(
            f"{args.ann}: categories {data.category_map.ids} differ from the checkpoint's {category_ids}"
        )
    frames_root = args.frames_root or args.ann.parent / args.ann.stem / "JPEGImages"
    videos = YTVISVideoDataset(data, frames_root, build_eval_transform(args.short_side, args.max_size))
    stats = long_video_ap(model, data, videos, postprocess, category_ids=category_ids, **options)
    lengths = [v.length for v in data.videos if v.length > model.num_frames]
    print(
        f"{stats['videos']} videos longer than T = {model.num_frames} (lengths {min(lengths)}-{max(lengths)})"
    )
    print(f"| mode | {' | '.join(SHOWN)} |\n|---|{'---|' * len(SHOWN)}")
    for mode in ("stitched", "first_window"):
        print(f"| {mode} | " + " | ".join(f"{100 * stats[mode][k]:.1f}" for k in SHOWN) + " |")
    if args.json is not None:
        args.json.write_text(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
