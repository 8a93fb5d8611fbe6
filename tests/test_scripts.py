"""The benchmark scripts that time the training system run on the tiny synthvis (figures not asserted)."""

import importlib.util
import json
import sys
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


def test_bench_infer_runs_the_quickstart_with_its_post_processing(capsys, monkeypatch):
    """Every slot predicts a mask in every frame (``--masks full``), so the preset's refinement, track NMS and
    classes per track all run; the figures themselves are not asserted."""
    bench = _load("bench_infer")
    for postprocess in ("default", "experiment"):
        argv = ["bench_infer", "--frames", "7", "--size", "48x64", "--threads", "1"]
        monkeypatch.setattr(sys, "argv", [*argv, "--postprocess", postprocess])
        bench.main()
        result = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert result["postprocess"] == postprocess and result["window"] == 3
        assert result["tracks"] == 5  # N = 5 slots, each a track over the whole video
