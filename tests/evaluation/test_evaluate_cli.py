"""``python -m vistr_lit.evaluate``: table, one JSON line, per-class AP, and a clear error on a bad file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ytvis_cases import random_case

import vistr_lit
from vistr_lit.evaluate import main
from vistr_lit.evaluation import evaluate_ytvis


@pytest.fixture
def files(tmp_path):
    gt, results = random_case(2)  # AP 25.3
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    return tmp_path / "gt.json", tmp_path / "results.json", evaluate_ytvis(gt, results)


def test_json_output(files, capsys):
    gt, results, expected = files
    assert main(["--gt", str(gt), "--results", str(results), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == expected and all(v == -1 or 0 <= v <= 1 for v in out.values())


def test_table_and_per_class(files, capsys):
    gt, results, expected = files
    assert main(["--gt", str(gt), "--results", str(results), "--per-class"]) == 0
    out = capsys.readouterr().out
    assert "AR100" in out and "AP per category" in out
    assert f"{100 * expected['AP']:.1f}" in out


def test_bad_results_file(files, capsys):
    gt, results, _ = files
    entries = json.loads(results.read_text())
    entries[0]["segmentations"] = entries[0]["segmentations"][:-1] + [None, None]
    results.write_text(json.dumps(entries))
    assert main(["--gt", str(gt), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "results[0]" in err and "'segmentations'" in err


@pytest.mark.slow
def test_module_entry_point(files):
    gt, results, expected = files
    cmd = [sys.executable, "-m", "vistr_lit.evaluate", "--gt", str(gt), "--results", str(results), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    assert json.loads(out) == expected


def test_scoring_never_imports_torch(files):
    """``python -m vistr_lit.evaluate`` scores with numpy and pycocotools: importing torch would be most of
    its time on a few hundred videos. Run in a fresh interpreter on this tree's package."""
    gt, results, expected = files
    code = (
        "import json, sys; from vistr_lit.evaluate import main; "
        f"main(['--gt', {str(gt)!r}, '--results', {str(results)!r}, '--json']); "
        "print(json.dumps(sorted(m for m in ('torch', 'torchmetrics', 'lightning') if m in sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(vistr_lit.__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    stats_line, modules_line = proc.stdout.strip().splitlines()[-2:]
    assert json.loads(stats_line) == expected
    assert json.loads(modules_line) == []
