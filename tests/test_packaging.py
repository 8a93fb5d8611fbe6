"""The wheel ships the Hydra configs, and an install of it (not editable) composes them from any directory."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "src" / "vistr_lit" / "conf"
BUILD_FILES = ("pyproject.toml", "README.md")


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (building in place would leave build/ in the tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, source / name)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    _run([*pip_wheel, "--wheel-dir", str(tmp / "dist"), str(source)], cwd=tmp)
    (built,) = (tmp / "dist").glob("vistr_lit-*.whl")
    return built


def test_the_wheel_holds_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"vistr_lit/conf/{p.relative_to(CONF).as_posix()}" for p in CONF.rglob("*.yaml")}
    assert "vistr_lit/conf/experiment/quickstart.yaml" in configs
    assert configs <= names, sorted(configs - names)


def test_an_install_of_the_wheel_composes_the_quickstart_from_another_directory(wheel, tmp_path):
    site = tmp_path / "site"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(wheel),
        ],
        tmp_path,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HYDRA_FULL_ERROR": "1"}
    where = _run([sys.executable, "-c", "import vistr_lit; print(vistr_lit.__file__)"], elsewhere, env)
    assert Path(where.strip()).is_relative_to(site)  # the installed copy, not this tree
    cfg = _run(
        [sys.executable, "-m", "vistr_lit.train", "+experiment=quickstart", "--cfg", "job"], elsewhere, env
    )
    assert "experiment_name: quickstart" in cfg
    assert "mask_fusion: dot_product" in cfg  # the preset's groups composed too
    assert not (elsewhere / "outputs").exists()  # --cfg job runs nothing
