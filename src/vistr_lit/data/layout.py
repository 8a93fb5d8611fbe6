"""Where a dataset's files are: the data root, the annotation file and the frames folder of a split.

YouTube-VIS-format datasets are laid out in a few common ways (the public train split: ``train.json`` with
``train/JPEGImages/<video>/<frame>.jpg``; most custom sets: ``JPEGImages/<video>/...`` beside the json;
OVIS: ``train/<video>/...``). With no frames folder configured, :func:`find_frames` tries the
:data:`FRAME_FOLDERS` under the root and beside the annotation file, and takes the first that holds the first
video's first frame; any other layout is named by ``data.train_frames`` / ``data.val_frames``.
"""

from __future__ import annotations

from pathlib import Path

from vistr_lit.data.ytvis import YTVISData
from vistr_lit.errors import UserError

# Tried in this order, relative to data.root, then to the annotation file's folder.
FRAME_FOLDERS = (
    "JPEGImages",
    "train/JPEGImages",
    "valid/JPEGImages",
    "val/JPEGImages",
    "train",
    "valid",
    "val",
    "frames",
    ".",
)


class DataError(UserError):
    """A dataset that cannot be found or used as configured (the message names the path and the key)."""


def resolve(root: Path, path: str | Path) -> Path:
    """``path`` relative to ``root`` unless absolute."""
    return Path(path) if Path(path).is_absolute() else root / path


def check_root(root: Path) -> None:
    if not root.is_dir():
        raise DataError(
            f"data.root: no such folder {root} (set data.root=DIR, or the dataset's environment variable "
            "such as YTVIS_ROOT; docs/custom-data.md)"
        )


def annotation_file(root: Path, path: str | Path, key: str) -> Path:
    """The annotation file ``path`` (relative to ``root``), which must exist."""
    check_root(root)
    file = resolve(root, path)
    if not file.is_file():
        raise DataError(
            f"data.{key}: no such annotation file {file} (set data.{key}=FILE, relative to data.root)"
        )
    return file


def find_frames(root: Path, data: YTVISData, folder: str | None, key: str) -> Path:
    """The folder that ``data``'s ``file_names`` are relative to.

    Args:
        root: the data root.
        data: the split's annotations (the first video with frames is probed).
        folder: the configured folder (relative to ``root`` unless absolute), or None to search
            :data:`FRAME_FOLDERS` under ``root`` and beside the annotation file.
        key: the config key that names the folder (``train_frames`` or ``val_frames``), for messages.
    """
    if folder is not None:
        path = resolve(root, folder)
        if not path.is_dir():
            raise DataError(f"data.{key}: no such frames folder {path} (relative to data.root {root})")
        return path
    if not data.videos:
        return root
    first = data.videos[0].file_names[0]
    bases = [root] + ([Path(data.path).parent] if Path(data.path).parent != root else [])
    tried = []
    for base in bases:
        for name in FRAME_FOLDERS:
            candidate = (base / name) if name != "." else base
            if (candidate / first).is_file():
                return candidate
            tried.append(str(candidate))
    raise DataError(
        f"{data.path}: video {data.videos[0].id}'s first frame {first} is in none of the usual folders "
        f"({', '.join(tried)}); name the folder its file_names are relative to with data.{key}=DIR"
    )
