"""CLI of the synthvis generator: ``python -m vistr_lit.data.synthetic --out DIR [--videos N --seed S ...]``.

Every field of :class:`SynthvisConfig` is a flag (``--valid-videos``, ``--sizes 96x128,128x160``, ...).
Re-running with the same parameters is a no-op; a folder holding anything else is an error (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from vistr_lit.data.layout import DataError
from vistr_lit.data.synthvis import (  # noqa: F401  (re-exported: the generator's public names)
    STAMP_FILE,
    SynthvisConfig,
    encode_uncompressed_rle,
    ensure_synthvis,
    generate_synthvis,
    mask_bbox,
)


def _parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return tuple(tuple(int(x) for x in part.lower().split("x")) for part in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--sizes must look like 96x128,128x160 (HxW), got {text!r}"
        ) from err


def main(argv: list[str] | None = None) -> None:
    defaults = SynthvisConfig()
    parser = argparse.ArgumentParser(description="Generate synthvis in the YouTube-VIS 2019 format.")
    parser.add_argument(
        "--out", required=True, type=Path, help="new or empty folder (or one holding this very dataset)"
    )
    parser.add_argument(
        "--videos", "--train-videos", dest="train_videos", type=int, default=defaults.train_videos
    )
    parser.add_argument("--valid-videos", type=int, default=defaults.valid_videos)
    parser.add_argument("--sizes", type=_parse_sizes, default=defaults.sizes, help="frame sizes HxW,HxW,...")
    for f in fields(SynthvisConfig):
        if f.name not in ("train_videos", "valid_videos", "sizes"):
            parser.add_argument(
                f"--{f.name.replace('_', '-')}",
                type=type(getattr(defaults, f.name)),
                default=getattr(defaults, f.name),
            )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes rendering the videos (default: one per available core; the output is the same)",
    )
    args = vars(parser.parse_args(argv))
    out, workers = args.pop("out"), args.pop("workers")
    try:
        cfg = SynthvisConfig(**args)
    except ValueError as err:
        parser.error(str(err))
    try:
        if (out / STAMP_FILE).exists():  # idempotent: the same dataset is already there
            ensure_synthvis(out, **args)
            print(f"synthvis already present in {out} with these parameters: nothing to do")
            return
        generate_synthvis(out, cfg, workers)
    except (ValueError, FileExistsError, DataError) as err:
        sys.exit(f"error: {err}")
    print(f"synthvis written to {out}: {cfg.train_videos} train / {cfg.valid_videos} valid, seed {cfg.seed}")


if __name__ == "__main__":
    main()
