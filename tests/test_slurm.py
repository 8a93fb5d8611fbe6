"""SLURM: Hydra's submitit launcher runs a sweep's jobs, and Lightning's requeue on preemption resumes a run.

Both run here without SLURM: ``hydra/launcher=submitit_local`` starts the jobs as local processes, and the
requeue test gives a training process SLURM's environment and a stand-in ``scontrol`` on PATH.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from train_helpers import tiny_overrides

pytestmark = pytest.mark.slow  # each trains in subprocesses: ~1-3 min on 2 busy cores


def cli_overrides(synthvis_root: Path, synthvis_params: dict) -> list[str]:
    return [
        *tiny_overrides(synthvis_root, synthvis_params),
        "~callbacks.rich_progress_bar",
        "logger=csv",
        "trainer.limit_val_batches=2",
    ]


def test_submitit_local_two_job_multirun_writes_both_jobs_metrics(tmp_path, synthvis_root, synthvis_params):
    sweep = tmp_path / "sweep"
    args = ["--multirun", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "seed=1,2"]
    args += [
        *cli_overrides(synthvis_root, synthvis_params),
        "trainer.max_steps=2",
        f"hydra.sweep.dir={sweep}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "vistr_lit.train", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    jobs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert jobs == ["0_default_seed1", "1_default_seed2"]
    for job in jobs:
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert 0.0 <= metrics["val/AP"] <= 1.0
    assert list((sweep / ".submitit").glob("*/*_result.pkl")), "the jobs did not run through submitit"


def slurm_env(tmp_path: Path) -> dict:
    """SLURM's variables for one task of job 4242, and a stand-in scontrol that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    slurm = dict(SLURM_JOB_ID="4242", SLURM_JOB_NAME="vistr", SLURM_NTASKS="1", SLURM_NTASKS_PER_NODE="1")
    slurm |= dict(SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_NODELIST="localhost")
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return dict(os.environ, **slurm, PATH=path, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the training exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_sigusr1_saves_requeues_and_the_requeued_job_resumes(tmp_path, synthvis_root, synthvis_params):
    """SLURM's warning signal (``--signal=SIGUSR1@90``): Lightning saves ``hpc_ckpt_1.ckpt`` in the run
    directory and runs ``scontrol requeue <job>``; SLURM then ends the job (SIGTERM). The requeued job runs
    the same command in the same run directory and resumes from that checkpoint to the end (not exactly an
    uninterrupted run: the save falls inside an epoch; ``last.ckpt`` resumes exactly, from an epoch's end)."""
    out, max_epochs, steps_per_epoch = tmp_path / "run", 40, 3  # 6 training videos, batch 2
    command = [sys.executable, "-m", "vistr_lit.train", *cli_overrides(synthvis_root, synthvis_params)]
    command += [f"trainer.max_epochs={max_epochs}", f"hydra.run.dir={out}"]
    env, log = slurm_env(tmp_path), (tmp_path / "first.log").open("w")
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    last = out / "checkpoints" / "last.ckpt"
    wait_for(last.is_file, first, 300, "the first epoch's last.ckpt")
    first.send_signal(signal.SIGUSR1)
    hpc = out / "hpc_ckpt_1.ckpt"
    wait_for(lambda: (tmp_path / "scontrol.log").is_file(), first, 120, "scontrol requeue")
    assert hpc.is_file()
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    first.send_signal(signal.SIGTERM)  # SLURM ends the preempted job (Lightning stops: SIGTERMException)
    first.wait(timeout=120)
    assert hpc.is_file() and not (out / "metrics.json").exists()  # stopped inside fit
    saved_step = torch.load(hpc, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < saved_step < max_epochs * steps_per_epoch

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-5000:]
    assert f"Restored all states from the checkpoint at {hpc}" in output
    final = torch.load(last, map_location="cpu", weights_only=True)
    assert final["epoch"] == max_epochs - 1  # trained to the end
    # the save came inside an epoch and Lightning resumes inside it (measured once: 118 of the 120 steps of an
    # uninterrupted run): within one epoch of it
    assert saved_step < final["global_step"] and final["global_step"] > (max_epochs - 1) * steps_per_epoch
    assert not hpc.exists()  # removed after fit: the final evaluation used the final weights
    assert 0.0 <= json.loads((out / "metrics.json").read_text())["val/AP"] <= 1.0
