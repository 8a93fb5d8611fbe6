"""scripts/ablation_table.py on finished runs (metrics.json + .hydra/config.yaml), without training."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

SCRIPT = Path(__file__).parents[1] / "scripts" / "ablation_table.py"


def fake_run(root: Path, name: str, seed: int, ap: float) -> None:
    run = root / f"{name}_seed{seed}"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"experiment_name": name, "seed": seed}))
    (run / "metrics.json").write_text(json.dumps({"val/AP": ap, "val/AP50": 2 * ap, "val/AP75": ap / 2}))


def table(*dirs: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), *map(str, dirs), "--no-wandb"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_sweeps_run_side_by_side_make_one_table(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    fake_run(first, "ablate_baseline", 1, 0.10)
    fake_run(first, "ablate_baseline", 2, 0.20)
    fake_run(second, "ablate_perframe_match", 1, 0.05)
    fake_run(second, "ablate_baseline", 3, 0.30)
    proc = table(first, second)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in proc.stdout.splitlines()[2:]}
    assert [c.strip() for c in rows["ablate_baseline"][:3]] == ["1,2,3", "20.0 ± 10.0", "—"]
    assert [c.strip() for c in rows["ablate_perframe_match"][:4]] == ["1", "5.0", "-15.0", "-5.0, 1/1 lower"]


def test_same_seed_column_pairs_each_run_with_the_baselines_run_of_its_seed(tmp_path):
    for seed, (base, ablated) in enumerate([(0.30, 0.10), (0.10, 0.05), (0.20, 0.25)], start=1):
        fake_run(tmp_path, "ablate_baseline", seed, base)
        fake_run(tmp_path, "ablate_enc3", seed, ablated)
    fake_run(tmp_path, "ablate_clip18", 4, 0.01)  # no baseline run of seed 4: nothing to pair
    proc = table(tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in proc.stdout.splitlines()[2:]}
    assert [c.strip() for c in rows["ablate_enc3"][2:4]] == ["-6.7", "-6.7 ± 12.6, 2/3 lower"]
    assert [c.strip() for c in rows["ablate_clip18"][2:4]] == ["-19.0", "—"]
    assert rows["ablate_baseline"][3].strip() == "—"


def test_a_run_found_twice_is_an_error(tmp_path):
    fake_run(tmp_path / "a", "ablate_baseline", 1, 0.10)
    fake_run(tmp_path / "b", "ablate_baseline", 1, 0.12)
    proc = table(tmp_path / "a", tmp_path / "b")
    assert proc.returncode != 0
    assert "ablate_baseline seed [1] found more than once" in proc.stderr
