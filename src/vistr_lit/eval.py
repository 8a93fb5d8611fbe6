"""``python -m vistr_lit.eval ckpt_path=CKPT [+experiment=NAME] [key=value ...]``: a checkpoint → statistics.

Runs whole-video validation (the same ``VideoPredictor`` as training) on the configured data's validation
split and writes ``metrics.json`` (``val/AP`` ..., fractions), ``results.json`` (YouTube-VIS results format,
original category ids) and ``results.zip`` (the CodaLab submission) into the run's output directory. The
checkpoint's own hyper-parameters rebuild the network; the config provides data, predictor and trainer
(devices, precision).
"""

import json
import logging
from pathlib import Path

import hydra
import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from vistr_lit.evaluation import write_codalab_zip, write_results_json
from vistr_lit.lit_module import VisTRLitModule
from vistr_lit.train import (
    CONFIG_DIR,
    METRICS_FILE,
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_trainer,
    finish_loggers,
    validation_metrics,
    write_run_config,
)

log = logging.getLogger(__name__)
RESULTS_FILE = "results.json"
CODALAB_FILE = "results.zip"


def load_module(ckpt_path: str, cfg: DictConfig) -> VisTRLitModule:
    """The checkpoint's module with the config's post-processing and predictor settings."""
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path: no such checkpoint file {ckpt_path}")
    return VisTRLitModule.load_from_checkpoint(
        ckpt_path,
        map_location="cpu",
        postprocess=dict(cfg.model.postprocess),
        predictor=dict(cfg.model.predictor),
    )


def check_categories(module: VisTRLitModule, datamodule: L.LightningDataModule, ckpt_path: str) -> None:
    ids = list(datamodule.category_map.ids)
    if list(module.hparams.category_ids) != ids:
        raise ValueError(
            f"{ckpt_path}: the checkpoint's category_ids {list(module.hparams.category_ids)} differ from the "
            f"dataset's {ids}; its class indices would name the wrong categories"
        )


def gather_results(results: list[dict]) -> list[dict]:
    """Every rank's results entries (each video was validated on exactly one rank)."""
    if not (dist.is_available() and dist.is_initialized()):
        return results
    gathered: list[list[dict]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, results)
    return [entry for part in gathered for entry in part]


class ResultsWriter(Callback):
    """Writes ``results.json`` and ``results.zip`` after validation, with every rank's entries.

    It runs inside the training processes, so spawned ranks (``ddp_spawn``) are gathered too: their module
    state never returns to the launching process.
    """

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: VisTRLitModule) -> None:
        results = gather_results(pl_module.val_results)
        if trainer.is_global_zero:
            write_results_json(results, self.output_dir / RESULTS_FILE)
            write_codalab_zip(results, self.output_dir / CODALAB_FILE)
            log.info("%d results entries written to %s", len(results), self.output_dir / RESULTS_FILE)


def run_evaluation(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    if cfg.num_threads is not None:
        torch.set_num_threads(int(cfg.num_threads))
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    module = load_module(cfg.ckpt_path, cfg)
    check_categories(module, datamodule, cfg.ckpt_path)
    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg, has_logger=bool(loggers))
    if cfg.write_results:
        callbacks.append(ResultsWriter(output_dir))
    trainer = build_trainer(cfg, callbacks, loggers)
    if trainer.is_global_zero:
        write_run_config(cfg, output_dir)
    try:
        trainer.validate(module, datamodule=datamodule, verbose=trainer.is_global_zero)
        metrics = validation_metrics(trainer)
        if trainer.is_global_zero:
            (output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
            log.info("%s: %s", cfg.ckpt_path, metrics)
    finally:
        finish_loggers(loggers)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> float | None:
    output_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    return run_evaluation(cfg, output_dir).get("val/AP")


if __name__ == "__main__":
    main()
