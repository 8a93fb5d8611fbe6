"""Test-wide settings (one thread per process: two cores, tests may run beside other work) and fixtures."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import torch  # noqa: E402

torch.set_num_threads(1)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# A tiny synthvis shared by every test package: small frames, videos shorter and longer than a 4-frame clip.
SYNTHVIS_TEST_PARAMS = {
    "train_videos": 6,
    "valid_videos": 3,
    "min_length": 3,
    "max_length": 10,
    "sizes": [[48, 64], [64, 80]],
    "max_objects": 3,
    "seed": 0,
}


@pytest.fixture(scope="session")
def synthvis_params() -> dict:
    """The generator parameters of ``synthvis_root`` (pass as ``YTVISDataModule(synthvis=...)``)."""
    return dict(SYNTHVIS_TEST_PARAMS)


@pytest.fixture(scope="session")
def synthvis_root(tmp_path_factory) -> Path:
    """A tiny synthvis (6 train / 3 valid videos of 3-10 frames, 48x64 and 64x80) generated once per session:
    ``root/train.json``, ``root/valid.json``, ``root/{train,valid}/JPEGImages``."""
    from vistr_lit.data.synthvis import ensure_synthvis

    return ensure_synthvis(tmp_path_factory.mktemp("synthvis") / "synthvis", **SYNTHVIS_TEST_PARAMS)
