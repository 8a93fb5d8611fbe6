"""Turn finished training runs into the paper-style ablation table (Markdown).

    python scripts/ablation_table.py RUNS_DIR [RUNS_DIR ...] [--baseline ablate_baseline] [--out table.md]
                                     [--[no-]wandb]

Every directory under RUNS_DIR (any depth) that holds ``metrics.json`` and ``.hydra/config.yaml`` is one
run; runs are grouped by ``experiment_name`` and summarised over their seeds as mean ± sample std of
``val/AP``, ``val/AP50`` and ``val/AP75`` (in AP points, ×100), with ΔAP against the baseline's mean and
against the baseline's run of the same seed (mean ± std, and in how many seeds the row is lower). Given
a folder of Hydra sweeps (e.g. ``multirun/``), the newest sweep is read. ``make ablations`` runs ``python -m
vistr_lit.train --multirun '+experiment=glob(ablate_*)' seed=1,2`` and then this script on ``multirun``.
Several RUNS_DIRs (sweeps run side by side, e.g. one per core) make one table; a run found twice is an error.

When the runs logged to W&B (``logger=wandb``; or ``--wandb``), the table is also logged as a W&B table
``ablation_table`` in the sweep's group (``sweep-<sweep dir name>``, where the runs are), offline unless the
runs were online: ``wandb sync <sweep>/wandb/offline-run-*`` uploads it.
"""

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml

COLUMNS = ("val/AP", "val/AP50", "val/AP75")
POINTS = 100.0  # fractions -> AP points


def latest_sweep(root: Path) -> Path:
    """``root`` if it is one sweep (or plain runs), else its newest sweep (a folder with multirun.yaml)."""
    if (root / "multirun.yaml").is_file():
        return root
    sweeps = sorted(p.parent for p in root.glob("*/multirun.yaml"))
    return sweeps[-1] if sweeps else root


def read_runs(root: Path) -> dict[str, list[dict]]:
    """experiment_name -> list of {"seed", "metrics", "dir"}; raises on a missing or partial file."""
    runs: dict[str, list[dict]] = defaultdict(list)
    for metrics_file in sorted(root.rglob("metrics.json")):
        run_dir = metrics_file.parent
        config_file = run_dir / ".hydra" / "config.yaml"
        if not config_file.is_file():
            raise FileNotFoundError(
                f"{run_dir}: metrics.json without .hydra/config.yaml (not a vistr_lit.train run?)"
            )
        config = yaml.safe_load(config_file.read_text())
        metrics = json.loads(metrics_file.read_text())
        for key in ("experiment_name", "seed"):
            if key not in config:
                raise KeyError(f"{config_file}: no {key!r}")
        missing = [c for c in COLUMNS if c not in metrics]
        if missing:
            raise KeyError(f"{metrics_file}: missing {missing} (keys: {sorted(metrics)})")
        runs[config["experiment_name"]].append({"seed": config["seed"], "metrics": metrics, "dir": run_dir})
    return runs


def mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def format_cell(values: list[float]) -> str:
    mean, std = mean_std([v * POINTS for v in values])
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def same_seed_deltas(group: list[dict], base: list[dict]) -> list[float]:
    """AP − the baseline's AP at the same seed (AP points), over the seeds both ran: the runs of one seed
    share their start, data order and initialization, so these differences hold less of the seed noise."""
    base_ap = {r["seed"]: r["metrics"]["val/AP"] * POINTS for r in base}
    return [r["metrics"]["val/AP"] * POINTS - base_ap[r["seed"]] for r in group if r["seed"] in base_ap]


def format_same_seed(deltas: list[float]) -> str:
    """``-1.7 ± 1.1, 3/3 lower``: mean ± std of the same-seed differences and how many are negative."""
    if not deltas:
        return "—"
    mean, std = mean_std(deltas)
    lower = f"{sum(d < 0 for d in deltas)}/{len(deltas)} lower"
    return f"{mean:+.1f}, {lower}" if std is None else f"{mean:+.1f} ± {std:.1f}, {lower}"


def ablation_table(runs: dict[str, list[dict]], baseline: str) -> str:
    """Markdown: baseline first, then the other experiments by name; ΔAP = mean AP − baseline mean AP; the
    same-seed column pairs each run with the baseline's run of its seed (``same_seed_deltas``)."""
    if baseline not in runs:
        raise KeyError(f"baseline experiment {baseline!r} has no finished run (found: {sorted(runs)})")
    base_ap = mean_std([r["metrics"]["val/AP"] * POINTS for r in runs[baseline]])[0]
    header = "| experiment | seeds | AP | ΔAP | ΔAP same seed | AP50 | AP75 |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for name in [baseline] + sorted(set(runs) - {baseline}):
        group = runs[name]
        seeds = ",".join(str(s) for s in sorted(r["seed"] for r in group))
        cells = {c: format_cell([r["metrics"][c] for r in group]) for c in COLUMNS}
        ap = mean_std([r["metrics"]["val/AP"] * POINTS for r in group])[0]
        delta = "—" if name == baseline else f"{ap - base_ap:+.1f}"
        paired = "—" if name == baseline else format_same_seed(same_seed_deltas(group, runs[baseline]))
        lines.append(
            f"| {name} | {seeds} | {cells['val/AP']} | {delta} | {paired} | {cells['val/AP50']} "
            f"| {cells['val/AP75']} |"
        )
    return "\n".join(lines) + "\n"


def table_rows(runs: dict[str, list[dict]], baseline: str) -> tuple[list[str], list[list]]:
    """The table as columns and rows of numbers (AP points), baseline first, for a W&B table."""
    base_ap = mean_std([r["metrics"]["val/AP"] * POINTS for r in runs[baseline]])[0]
    columns = ["experiment", "seeds"]
    for c in COLUMNS:
        columns += [f"{c} mean", f"{c} std"]
    columns += ["ΔAP", "ΔAP same seed mean", "ΔAP same seed std"]
    rows = []
    for name in [baseline] + sorted(set(runs) - {baseline}):
        group = runs[name]
        row = [name, ",".join(str(s) for s in sorted(r["seed"] for r in group))]
        for c in COLUMNS:
            row += list(mean_std([r["metrics"][c] * POINTS for r in group]))
        row.append(row[2] - base_ap)
        deltas = [] if name == baseline else same_seed_deltas(group, runs[baseline])
        row += list(mean_std(deltas)) if deltas else [None, None]
        rows.append(row)
    return columns, rows


def wandb_settings(runs: dict[str, list[dict]]) -> dict | None:
    """The runs' ``logger.wandb`` block (project, offline), or None when none logged to W&B."""
    for group in runs.values():
        for run in group:
            config = yaml.safe_load((run["dir"] / ".hydra" / "config.yaml").read_text())
            block = (config.get("logger") or {}).get("wandb")
            if block:
                return block
    return None


def log_wandb_table(sweep: Path, runs: dict[str, list[dict]], baseline: str, settings: dict | None) -> Path:
    """Log the table to W&B in the sweep's group; returns the W&B run directory."""
    import wandb

    from vistr_lit.train import sweep_group

    settings = settings or {}
    columns, rows = table_rows(runs, baseline)
    run = wandb.init(
        project=settings.get("project", "vistr-lit"),
        group=sweep_group(sweep),
        job_type="ablation_table",
        name="ablation_table",
        dir=str(sweep),
        mode="offline" if settings.get("offline", True) else "online",
    )
    run.log({"ablation_table": wandb.Table(columns=columns, data=rows)})
    run_dir = Path(run.dir).parent
    run.finish()
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "runs_dirs", type=Path, nargs="+", help="multirun directories (or any folders of training runs)"
    )
    parser.add_argument("--baseline", default="ablate_baseline", help="experiment_name of the reference row")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    parser.add_argument(
        "--wandb",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log the table to W&B (default: when the runs did)",
    )
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = defaultdict(list)
    sweeps = []
    for runs_dir in args.runs_dirs:
        if not runs_dir.is_dir():
            parser.error(f"{runs_dir} is not a directory")
        sweeps.append(latest_sweep(runs_dir))
        print(f"runs from {sweeps[-1]}", file=sys.stderr)
        for name, group in read_runs(sweeps[-1]).items():
            runs[name] += group
    for name, group in runs.items():
        seeds = [r["seed"] for r in group]
        twice = sorted({s for s in seeds if seeds.count(s) > 1})
        if twice:
            dirs = [str(r["dir"]) for r in group if r["seed"] in twice]
            parser.error(f"{name} seed {twice} found more than once: {dirs}")
    if not runs:
        parser.error(f"no finished run (metrics.json) under {' '.join(map(str, args.runs_dirs))}")
    sweep = sweeps[0]
    table = ablation_table(runs, args.baseline)
    print(table, end="")
    if args.out is not None:
        args.out.write_text(table)
    settings = wandb_settings(runs)
    if args.wandb or (args.wandb is None and settings is not None):
        run_dir = log_wandb_table(sweep, runs, args.baseline, settings)
        print(f"W&B table logged: {run_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
