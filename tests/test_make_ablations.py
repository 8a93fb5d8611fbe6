"""`make ablations` is the paper-size GPU sweep: it refuses on a machine without a GPU, before any work."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def run_make(target: str, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    """The Makefile's recipe with this interpreter, its install step satisfied, no GPU visible."""
    stamp = tmp_path / ".installed"
    stamp.touch()  # newer than pyproject.toml: make does not reinstall
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT / "src"))
    command = ["make", "-C", str(ROOT), *flags, target, f"PY={sys.executable}", f"STAMP={stamp}"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_make_ablations_refuses_without_a_gpu(tmp_path):
    before = set((ROOT / "multirun").glob("*")) if (ROOT / "multirun").is_dir() else set()
    result = run_make("ablations", tmp_path)
    assert result.returncode != 0
    assert "no CUDA GPU is visible" in result.stderr and "make ablations-cpu" in result.stderr
    assert "vistr_lit.train" not in result.stdout  # stopped before the sweep's command
    after = set((ROOT / "multirun").glob("*")) if (ROOT / "multirun").is_dir() else set()
    assert after == before


def test_make_ablations_is_the_gpu_ddp_sweep_and_the_cpu_table_is_paper_small(tmp_path):
    gpu = run_make("ablations", tmp_path, "--dry-run").stdout
    assert "scripts/require_gpu.py" in gpu.split("vistr_lit.train")[0]  # the check comes first
    assert "trainer=gpu" in gpu and "trainer.devices=-1" in gpu and "ddp_spawn" in gpu
    cpu = run_make("ablations-cpu", tmp_path, "--dry-run").stdout
    assert "preset=paper_small" in cpu and "seed=1,2,3" in cpu and "require_gpu" not in cpu
    assert "scripts/ablation_table.py" in cpu
    forced = run_make("ablations-cpu", tmp_path, "--dry-run", "-B").stdout  # as on a fresh clone
    assert forced.index("+experiment=paper_small_start") < forced.index("preset=paper_small seed=1,2,3")


def test_the_gpu_sweep_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "src" / "vistr_lit" / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            [
                "+experiment=ablate_clip18",
                "trainer=gpu",
                "++trainer.strategy=ddp_spawn",
                "trainer.devices=-1",
            ],
        )
    assert (cfg.trainer.accelerator, cfg.trainer.strategy, cfg.trainer.devices) == ("gpu", "ddp_spawn", -1)
    assert cfg.clip.len == 18
