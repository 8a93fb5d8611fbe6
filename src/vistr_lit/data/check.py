"""Dataset checker: ``python -m vistr_lit.data.check --root FRAMES_DIR --ann ANN.json``.

Checks the annotation file (fields, list lengths = video length, RLE sizes = video size, referenced videos and
categories exist, no duplicate ids) and every frame file (exists, decodes, has the video's size). Prints a
summary, or every problem naming the file, video id, annotation id and field; exits 1 if there are problems.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from vistr_lit.data.ytvis import parse_ytvis
from vistr_lit.ytvis_format import validate_ytvis


@dataclass
class CheckReport:
    """Counts of a dataset and the problems found (empty if the dataset is valid)."""

    videos: int = 0
    frames: int = 0
    instances: int = 0
    instance_frames: int = 0
    categories: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (
            f"videos {self.videos}, frames {self.frames}, instances {self.instances}, "
            f"instance-frames {self.instance_frames}, categories {self.categories}"
        )


def _check_frame(path: Path, video: dict, t: int) -> str | None:
    where = f"{path} (video {video['id']}, field 'file_names[{t}]')"
    if not path.is_file():
        return f"{where}: frame file does not exist"
    try:
        with Image.open(path) as image:
            image.load()  # a full decode catches truncated files, not only bad headers
            size = image.size
    except (OSError, SyntaxError, ValueError) as err:
        return f"{where}: frame does not decode ({err})"
    if size != (video["width"], video["height"]):
        w, h = video["width"], video["height"]
        return f"{where}: frame is {size[0]}x{size[1]} (width x height), the video says {w}x{h}"
    return None


def check_dataset(root: str | Path, ann: str | Path, check_frames: bool = True) -> CheckReport:
    """Validate ``ann`` and the frames under ``root``, collecting every problem (not only the first)."""
    root, ann = Path(root), Path(ann)
    report = CheckReport()
    if not ann.is_file():
        report.problems.append(f"{ann}: annotation file does not exist")
        return report
    try:
        raw = json.loads(ann.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # text that is no JSON, or no text
        report.problems.append(f"{ann}: not valid JSON ({err})")
        return report
    report.problems.extend(validate_ytvis(raw, ann, dataset=True))  # the evaluator's rules, and frames
    if not root.is_dir():
        report.problems.append(f"{root}: frames folder does not exist")
        check_frames = False
    videos = raw.get("videos") if isinstance(raw, dict) else None
    if check_frames and isinstance(videos, list):
        for video in videos:
            if not isinstance(video, dict) or not isinstance(video.get("file_names"), list):
                continue  # already reported by validate_ytvis
            for t, name in enumerate(video["file_names"]):
                if isinstance(name, str):
                    why = _check_frame(root / name, video, t)
                    if why:
                        report.problems.append(why)
    if report.problems:
        return report
    data = parse_ytvis(raw, ann)
    report.videos = len(data.videos)
    report.frames = sum(v.length for v in data.videos)
    report.categories = data.category_map.num_classes
    tracks = [a for anns in data.annotations.values() for a in anns]
    report.instances = len(tracks)
    report.instance_frames = sum(s is not None for a in tracks for s in a.segmentations)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate a YouTube-VIS/OVIS-format dataset.")
    parser.add_argument(
        "--root", required=True, type=Path, help="frames folder (file_names are relative to it)"
    )
    parser.add_argument("--ann", required=True, type=Path, help="annotation json")
    parser.add_argument("--skip-frames", action="store_true", help="only check the json, not the frame files")
    args = parser.parse_args(argv)
    report = check_dataset(args.root, args.ann, check_frames=not args.skip_frames)
    if report.ok:
        print(f"OK {args.ann}: {report.summary()}")
        return 0
    print(f"{len(report.problems)} problem(s) in {args.ann} / {args.root}:", file=sys.stderr)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
