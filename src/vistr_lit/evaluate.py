"""Score a YouTube-VIS results file: ``python -m vistr_lit.evaluate --gt GT.json --results RESULTS.json``.

Prints the official statistics as a table, or with ``--json`` one JSON object keyed ``AP``, ``AP50``, ...
(fractions in [0, 1]; -1 where a statistic has no ground truth to score). ``--per-class`` adds the AP of
each category. Exit status 2 on an invalid file, with the message naming the video, annotation and field.
"""

import argparse
import json
import sys
import time

from rich.console import Console
from rich.table import Table

from vistr_lit.evaluation.inputs import YTVISFormatError
from vistr_lit.evaluation.ytvis_eval import YTVISEval


def per_class_ap(evaluator: YTVISEval) -> dict[int, float]:
    """AP (IoU .50:.95, all areas, 100 dets) per category id; -1 for categories without ground truth."""
    precision = evaluator.precision[:, :, :, 0, -1]  # [T, 101, K]
    out = {}
    for k, cat in enumerate(evaluator.category_ids):
        values = precision[:, :, k]
        out[cat] = float(values.mean()) if (values > -1).all() else -1.0
    return out


def _table(stats: dict[str, float], title: str) -> Table:
    table = Table(title=title)
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for name, value in stats.items():
        table.add_row(name, "-" if value < 0 else f"{100 * value:.1f}")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vistr_lit.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, help="ground-truth json (YouTube-VIS or OVIS format)")
    parser.add_argument("--results", required=True, help="results json (a list of per-track entries)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--per-class", action="store_true", help="also report the AP of each category")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        evaluator = YTVISEval(args.gt, args.results)
        stats = evaluator.run()
    except YTVISFormatError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    per_class = per_class_ap(evaluator) if args.per_class else None
    if args.json:
        out = dict(stats)
        if per_class is not None:
            out["per_class_AP"] = {str(k): v for k, v in per_class.items()}
        print(json.dumps(out))
        return 0
    console = Console()
    console.print(f"YouTube-VIS video mask AP, {len(evaluator.video_ids)} videos, {seconds:.1f} s")
    console.print(_table(stats, ""))
    if per_class is not None:
        names = evaluator.gt.category_names
        rows = {f"{names.get(c, '')} ({c})": v for c, v in sorted(per_class.items(), key=lambda kv: -kv[1])}
        console.print(_table(rows, "AP per category"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
