"""W&B compares runs as the ablation table does: one group per sweep, the table logged there (offline)."""

import importlib.util
import json
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import WandbLogger
from omegaconf import open_dict

from vistr_lit.train import build_loggers, sweep_group

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(ROOT / "src" / "vistr_lit" / "conf")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wandb_cfg(tmp_path: Path, mode: RunMode, experiment: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", [f"+experiment={experiment}", "logger=wandb"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = mode
        cfg.hydra.sweep.dir = str(tmp_path / "multirun" / "2026-12-04_21-00-00")
        cfg.paths.output_dir = str(tmp_path / "run")
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def test_runs_of_one_sweep_share_a_wandb_group(tmp_path):
    groups = []
    for experiment in ("ablate_baseline", "ablate_enc3"):
        (logger,) = build_loggers(wandb_cfg(tmp_path, RunMode.MULTIRUN, experiment))
        assert isinstance(logger, WandbLogger) and logger._offline
        groups.append(logger._wandb_init["group"])
    assert groups == ["sweep-2026-12-04_21-00-00"] * 2
    (single,) = build_loggers(wandb_cfg(tmp_path, RunMode.RUN, "ablate_enc3"))
    assert single._wandb_init["group"] == "ablate_enc3"  # a single run: its experiment


def fake_run(sweep: Path, job: str, experiment: str, seed: int, ap: float) -> None:
    run = sweep / job
    (run / ".hydra").mkdir(parents=True)
    config = {
        "experiment_name": experiment,
        "seed": seed,
        "logger": {"wandb": {"project": "p", "offline": True}},
    }
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {"val/AP": ap, "val/AP50": ap + 0.1, "val/AP75": ap - 0.1}
    (run / "metrics.json").write_text(json.dumps(metrics))


def test_the_ablation_table_is_logged_as_a_wandb_table_offline(tmp_path, capsys, monkeypatch):
    import wandb

    inits, real_init = [], wandb.init  # the real offline run, its arguments recorded
    monkeypatch.setattr(
        wandb, "init", lambda *args, **kwargs: inits.append(kwargs) or real_init(*args, **kwargs)
    )
    sweep = tmp_path / "multirun" / "2026-12-04_22-00-00"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}\n")
    fake_run(sweep, "0_ablate_baseline_seed1", "ablate_baseline", 1, 0.40)
    fake_run(sweep, "1_ablate_baseline_seed2", "ablate_baseline", 2, 0.30)
    fake_run(sweep, "2_ablate_enc3_seed1", "ablate_enc3", 1, 0.25)
    assert load_script("ablation_table").main([str(tmp_path / "multirun")]) == 0
    assert "| ablate_enc3 | 1 | 25.0 | -10.0 | -15.0, 1/1 lower |" in capsys.readouterr().out
    (run_dir,) = (sweep / "wandb").glob("offline-run-*")
    (table_file,) = run_dir.glob("files/media/table/ablation_table_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"][:3] == ["experiment", "seeds", "val/AP mean"] and table["columns"][-3] == "ΔAP"
    rows = {row[0]: row for row in table["data"]}
    assert rows["ablate_baseline"][2] == 35.0 and round(rows["ablate_enc3"][-3], 6) == -10.0
    assert table["columns"][-2:] == ["ΔAP same seed mean", "ΔAP same seed std"]
    assert round(rows["ablate_enc3"][-2], 6) == -15.0 and rows["ablate_enc3"][-1] is None  # one shared seed
    assert sweep_group(sweep) == "sweep-2026-12-04_22-00-00"
    assert [kwargs["group"] for kwargs in inits] == ["sweep-2026-12-04_22-00-00"]  # the runs' group
