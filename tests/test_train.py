"""End-to-end runs of the training system on a tiny synthvis (CPU, 1-3 steps each)."""

import csv
import json
import logging
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import vistr_lit.train as train_module
from train_helpers import compose_run, tiny_overrides
from vistr_lit.checkpoints import CheckpointFileError
from vistr_lit.data.datamodule import EpochShuffle
from vistr_lit.eval import run_evaluation
from vistr_lit.lit_module import NonFiniteLossError, VisTRLitModule
from vistr_lit.train import (
    CUT_SHORT_WARNING,
    SLOW_BF16_WARNING,
    STEP_BOUNDED_RESUME_WARNING,
    run_training,
    warn_if_slow_bf16,
)

LEARNING_STEPS = 2000
LEARNED_AP = 0.3  # measured 0.59 after 2,000 steps; an untrained model scores ~0
LOSS_DROP = 0.85  # 100 steps: measured 17.7 -> 13.8 (mean of the first vs last 10); lr = 0 stays at ~1.0
STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@pytest.fixture
def run(tmp_path, synthvis_root, synthvis_params):
    """run(overrides, name="run", config="train") -> (metrics, output_dir)."""

    def _run(overrides, name="run", config="train"):
        output_dir = tmp_path / name
        cfg = compose_run(config, output_dir, overrides, synthvis_root, synthvis_params)
        runner = run_training if config == "train" else run_evaluation
        return runner(cfg, output_dir), output_dir

    return _run


def test_fast_dev_run_writes_config_and_metrics(run, synthvis_params):
    metrics, out = run(["trainer.fast_dev_run=true", "logger=none"])
    assert set(metrics) == {f"val/{s}" for s in STATS}
    assert 0.0 <= metrics["val/AP"] <= 1.0
    assert json.loads((out / "metrics.json").read_text()) == metrics
    resolved = (out / "config_resolved.yaml").read_text()
    assert "${" not in resolved and str(out) in resolved


def test_training_from_a_detector_start_of_another_head(run, caplog):
    """paper_small's path: a start trained with the dot-product head, loaded by a run of the paper's head
    with model.init_scope=detector (backbone, input projection, transformer and box head)."""
    _, start_out = run(["trainer.max_steps=1", "logger=none", "final_eval=false"], name="start")
    ckpt = start_out / "checkpoints" / "last.ckpt"
    overrides = [f"model.init_from={ckpt}", "model.init_scope=detector", "trainer.max_steps=1"]
    overrides += ["model/mask_head=attention", "~model.net.mask_classifier", "~model.net.mask_coords"]
    with caplog.at_level(logging.INFO, logger="vistr_lit.train"):
        run([*overrides, "logger=none", "final_eval=false"], name="paper_head")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("initialized from"))
    assert "loaded (backbone, bbox_embed, input_proj, transformer)" in line
    assert "initialized (" in line and "class_embed" in line and "mask_head" in line
    assert "ignored (" in line and "mask_extension" in line  # the start's dot-product head


def test_eval_writes_statistics_results_and_codalab_zip(run, synthvis_root):
    _, train_out = run(["trainer.max_steps=2", "logger=none", "final_eval=false"], name="train")
    ckpt = train_out / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    metrics, out = run([f"ckpt_path={ckpt}", "trainer.fast_dev_run=true"], name="eval", config="eval")
    assert set(metrics) == {f"val/{s}" for s in STATS}
    results = json.loads((out / "results.json").read_text())
    valid = json.loads((synthvis_root / "valid.json").read_text())
    lengths = {v["id"]: len(v["file_names"]) for v in valid["videos"]}
    category_ids = {c["id"] for c in valid["categories"]}
    for entry in results:
        assert entry["category_id"] in category_ids
        assert len(entry["segmentations"]) == lengths[entry["video_id"]]
    with zipfile.ZipFile(out / "results.zip") as archive:
        assert json.loads(archive.read("results.json")) == results


def test_eval_rejects_a_checkpoint_with_other_categories(run, tmp_path):
    _, train_out = run(["trainer.max_steps=1", "logger=none", "final_eval=false"], name="train")
    ckpt = torch.load(train_out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["category_ids"] = [i + 100 for i in ckpt["hyper_parameters"]["category_ids"]]
    other = tmp_path / "other.ckpt"
    torch.save(ckpt, other)
    with pytest.raises(ValueError, match="category_ids"):
        run([f"ckpt_path={other}", "trainer.fast_dev_run=true"], name="eval", config="eval")


def _final_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


class SimulatedCrash(RuntimeError):
    pass


def _interrupt_and_resume(run, monkeypatch, common):
    """Run ``common`` straight, then crashed at the second epoch's start and resumed from last.ckpt.

    Returns the straight run's final weights, the resumed run's weights after its first epoch and at its end.
    """
    _, straight = run(common, name="straight")

    def crash_at_second_epoch(self):
        if self.current_epoch == 1:
            raise SimulatedCrash("killed after the first epoch's checkpoint")

    with monkeypatch.context() as patch:
        patch.setattr(VisTRLitModule, "on_train_epoch_start", crash_at_second_epoch, raising=False)
        with pytest.raises(SimulatedCrash):
            run(common, name="resumed")
    resumed_ckpt = straight.parent / "resumed" / "checkpoints" / "last.ckpt"
    first_epoch = _final_weights(resumed_ckpt)
    run([*common, "ckpt_path=last"], name="resumed")
    return _final_weights(straight / "checkpoints" / "last.ckpt"), first_epoch, _final_weights(resumed_ckpt)


@pytest.mark.parametrize("grouped", [False, True])
def test_interrupted_and_resumed_run_ends_with_the_same_weights(run, monkeypatch, grouped):
    common = [
        "trainer.limit_train_batches=2",
        "trainer.max_epochs=2",
        "logger=none",
        "final_eval=false",
        "data.clips_per_video=2",
        f"data.group_by_aspect_ratio={grouped}",
    ]
    expected, first_epoch, got = _interrupt_and_resume(run, monkeypatch, common)
    assert expected.keys() == got.keys()
    assert any(not torch.equal(first_epoch[k], got[k]) for k in got), "the resumed run did not train"
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_grouped_batches_reshuffle_every_epoch_of_a_run(run, monkeypatch):
    """Lightning reaches the grouped sampler's order through ``batch_sampler.sampler`` and sets its epoch."""
    epochs = []
    set_epoch = EpochShuffle.set_epoch
    monkeypatch.setattr(EpochShuffle, "set_epoch", lambda self, e: (epochs.append(e), set_epoch(self, e)))
    common = ["trainer.limit_train_batches=1", "trainer.max_epochs=3", "logger=none", "final_eval=false"]
    run([*common, "data.group_by_aspect_ratio=true"], name="grouped")
    assert epochs == [0, 1, 2]


def test_resuming_a_step_bounded_run_warns_that_it_is_not_exact(run, monkeypatch, caplog):
    """Lightning resumes step-bounded runs mid-epoch: the warning states it, and the weights do differ."""
    common = ["trainer.max_epochs=-1", "trainer.max_steps=6", "logger=none", "final_eval=false"]
    with caplog.at_level("WARNING", logger="vistr_lit.train"):
        expected, _, got = _interrupt_and_resume(run, monkeypatch, common)
    warnings = [r.getMessage() for r in caplog.records if "trainer.max_steps" in r.getMessage()]
    assert warnings == [STEP_BOUNDED_RESUME_WARNING]  # once: by the resumed run only
    assert any(not torch.equal(expected[k], got[k]) for k in expected)  # the warning is still needed


@pytest.mark.parametrize(("every", "best_kept"), [(1000, False), (1, True)])
def test_the_best_checkpoint_needs_validation_during_training(run, every, best_kept):
    """The quickstart validates only after training: no best-by-val/AP callback, no warning at every epoch."""
    overrides = [
        "trainer.limit_train_batches=1",
        "trainer.max_epochs=1",
        f"trainer.check_val_every_n_epoch={every}",
        "logger=none",
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics, out = run(overrides, name=f"every{every}")
    assert not [w for w in caught if "could not find the monitored key" in str(w.message)]
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == (["best-epoch000.ckpt", "last.ckpt"] if best_kept else ["last.ckpt"])
    assert "val/AP" in metrics


@pytest.mark.parametrize(
    ("trainer", "validates"),
    [
        ({"check_val_every_n_epoch": 1000, "max_epochs": 52}, False),
        ({"check_val_every_n_epoch": 5, "max_epochs": 52}, True),
        ({"check_val_every_n_epoch": 1, "max_epochs": 52, "limit_val_batches": 0}, False),
        ({"check_val_every_n_epoch": 1000, "max_epochs": -1, "max_steps": 100}, True),  # unknown: kept
        ({"check_val_every_n_epoch": None, "val_check_interval": 50, "max_epochs": 2}, True),
    ],
)
def test_validates_while_training(trainer, validates):
    assert train_module.validates_while_training(OmegaConf.create(trainer)) is validates


def test_resume_last_without_a_checkpoint_is_a_clear_error(run):
    with pytest.raises(CheckpointFileError, match="ckpt_path=last"):
        run(["ckpt_path=last", "logger=none"], name="fresh")


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(run, monkeypatch):
    from vistr_lit.models.criterion import SetCriterion

    calls = {"n": 0}
    original = SetCriterion.forward

    def poisoned(self, outputs, targets):
        losses = original(self, outputs, targets)
        calls["n"] += 1
        if calls["n"] == 2:  # the second step: the first epoch's checkpoint exists
            losses["loss_ce"] = losses["loss_ce"] * float("nan")
        return losses

    # a poisoned loss: what the guard sees, whichever layer produced the first NaN
    monkeypatch.setattr(SetCriterion, "forward", poisoned)
    overrides = ["trainer.limit_train_batches=1", "trainer.max_epochs=3", "logger=none", "final_eval=false"]
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 1") as error:
        run(overrides, name="nan")
    last = Path(error.value.args[0].split("last good checkpoint: ")[1])
    assert last.is_file()
    weights = _final_weights(last)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert calls["n"] == 2  # stopped: the third epoch never ran


def test_wandb_offline_writes_a_run_directory_with_overlays(run):
    metrics, out = run(["trainer.max_steps=1", "logger=wandb", "trainer.limit_val_batches=1"], name="wb")
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("files/media/images/val/overlays*")), "no prediction overlay was logged"
    assert "val/AP" in metrics


def _cli(module: str, args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _cli_overrides(synthvis_root: Path, synthvis_params: dict) -> list[str]:
    return [o for o in tiny_overrides(synthvis_root, synthvis_params)] + [
        "~callbacks.rich_progress_bar",
        "logger=csv",
        "trainer.max_steps=1",
        "trainer.limit_val_batches=2",
    ]


def test_eval_with_spawned_ranks_writes_every_ranks_results(run):
    """ddp_spawn: the ranks' module state never returns to the launcher, so results are gathered in them."""
    _, train_out = run(["trainer.max_steps=2", "logger=none", "final_eval=false"], name="train")
    # a 2-step model's masks sit near probability 0.5: a low threshold keeps them from all being empty
    ckpt = [f"ckpt_path={train_out / 'checkpoints' / 'last.ckpt'}", "model.postprocess.mask_threshold=0.05"]
    single, single_out = run([*ckpt, "logger=none"], name="single", config="eval")
    spawn = ["trainer=ddp_spawn", "trainer.devices=2", "trainer.accelerator=cpu", "logger=none"]
    spawned, spawned_out = run([*ckpt, *spawn], name="spawned", config="eval")
    expected = json.loads((single_out / "results.json").read_text())
    got = json.loads((spawned_out / "results.json").read_text())
    assert expected, "the checkpoint predicts nothing: the comparison would be empty"

    def key(entry):
        return entry["video_id"], entry["score"]

    assert {e["video_id"] for e in got} == {e["video_id"] for e in expected}
    assert len(got) == len(expected)
    for a, b in zip(sorted(got, key=key), sorted(expected, key=key)):
        assert (a["video_id"], a["category_id"]) == (b["video_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    assert spawned["val/AP"] == pytest.approx(single["val/AP"], abs=1e-6)


def test_ddp_two_processes_on_cpu(tmp_path, synthvis_root, synthvis_params):
    """`trainer=ddp` as a user runs it: Lightning re-executes the command in a second rank (gloo on CPU)."""
    out = tmp_path / "ddp"
    _cli(
        "vistr_lit.train",
        [
            *_cli_overrides(synthvis_root, synthvis_params),
            "trainer=ddp",
            "trainer.devices=2",
            "trainer.accelerator=cpu",
            f"hydra.run.dir={out}",
        ],
        cwd=tmp_path,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["val/AP"] <= 1.0
    assert (out / "checkpoints" / "last.ckpt").is_file()
    hparams = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert hparams["hyper_parameters"]["category_ids"]


def test_multirun_two_jobs_and_the_ablation_table(tmp_path, synthvis_root, synthvis_params):
    sweep = tmp_path / "sweep"
    _cli(
        "vistr_lit.train",
        [
            "--multirun",
            "+experiment=ablate_baseline,ablate_enc3",
            *_cli_overrides(synthvis_root, synthvis_params),
            "logger=wandb",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert [p.name for p in jobs] == ["0_ablate_baseline_seed42", "1_ablate_enc3_seed42"]
    wandb_runs = [list((job / "wandb").glob("offline-run-*")) for job in jobs]
    assert [len(r) for r in wandb_runs] == [1, 1]  # wandb.finish() between jobs: one run each
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parents[1] / "scripts" / "ablation_table.py"),
            str(sweep),
            "--no-wandb",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ablate_")]
    assert [r.split("|")[1].strip() for r in rows] == ["ablate_baseline", "ablate_enc3"]
    assert rows[0].split("|")[4].strip() == "—"


LEARNING_OVERRIDES = [
    "data.val_ann=train.json",  # validate on the training videos: fitting them is the evidence of learning
    "data.val_frames=train/JPEGImages",
    "data.hflip_prob=0",
    "model.predictor.tta=[]",  # trained without flips: mirrored passes would see videos it never saw
    "data.photometric_prob=0",
    "data.clips_per_video=4",
    "model.optim.lr=1e-3",
    "model.optim.lr_backbone=1e-3",
    "model.optim.warmup_steps=5",
    "trainer.log_every_n_steps=1",
]


def test_short_training_lowers_the_loss(run):
    """Optimisation works end to end: 100 steps on the tiny training videos cut the set loss clearly."""
    overrides = [*LEARNING_OVERRIDES, "trainer.max_steps=100", "logger=csv", "final_eval=false"]
    _, out = run(overrides, name="loss")
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 100
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < LOSS_DROP * first, (first, last)


def test_a_run_that_max_time_ends_early_says_so(run, caplog):
    """The max_time guard is a safety net: a run it ends before its planned steps warns that its results are
    not the configured run's; a run that takes all its steps does not."""
    cut = CUT_SHORT_WARNING.split(" %d")[0]
    common = ["logger=none", "final_eval=false"]
    with caplog.at_level("WARNING", logger="vistr_lit.train"):
        run(["trainer.max_steps=2", *common], name="whole")
    assert cut not in caplog.text
    with caplog.at_level("WARNING", logger="vistr_lit.train"):
        run(["trainer.max_time=00:00:00:02", "trainer.max_epochs=1000", *common], name="cut")
    assert cut in caplog.text and "planned" in caplog.text


@pytest.mark.slow
def test_short_training_learns_the_training_videos(run):
    """Learning, not just running: a short training fits the tiny training videos to a non-trivial AP."""
    steps = [f"trainer.max_steps={LEARNING_STEPS}", "trainer.max_epochs=-1"]  # steps bound it, not epochs
    overrides = [*LEARNING_OVERRIDES, *steps, "logger=none"]
    metrics, _ = run(overrides, name="learn")
    assert metrics["val/AP"] >= LEARNED_AP, metrics


def test_bf16_mixed_precision_on_cpu(run):
    overrides = ["trainer.fast_dev_run=true", "trainer.precision=bf16-mixed", "logger=none"]
    metrics, _ = run(overrides, name="bf16")
    assert 0.0 <= metrics["val/AP"] <= 1.0


@pytest.mark.parametrize(
    ("accelerator", "precision", "native", "warned"),
    [
        ("cpu", "bf16-mixed", False, True),
        ("cpu", "bf16-mixed", True, False),
        ("cpu", "32-true", False, False),
        ("gpu", "bf16-mixed", False, False),
    ],
)
def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch, caplog, accelerator, precision, native, warned):
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: native)
    cfg = OmegaConf.create({"trainer": {"accelerator": accelerator, "precision": precision}})
    with caplog.at_level("WARNING", logger="vistr_lit.train"):
        warn_if_slow_bf16(cfg)
    assert [r.getMessage() for r in caplog.records] == ([SLOW_BF16_WARNING] if warned else [])


def test_native_bf16_probe_answers_a_bool():
    assert isinstance(train_module.cpu_has_native_bf16(), bool)
