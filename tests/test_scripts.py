"""The benchmark scripts that time the training system run on the tiny synthvis (figures not asserted)."""

import importlib.util
from pathlib import Path

from train_helpers import tiny_overrides

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_train_step_times_both_dtypes(synthvis_root, synthvis_params, capsys):
    bench = _load("bench_train_step")
    overrides = tiny_overrides(synthvis_root, synthvis_params)
    bench.main(["--batch-size", "2", "--batches", "1", "--steps", "2", "--warmup", "1", "--", *overrides])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("quickstart ") and "frames (2, 4, 3," in lines[0]
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["fp32", "bf16"]
    assert all("ms a step" in line for line in lines[1:])
