"""``python -m vistr_lit.eval ckpt_path=CKPT [+experiment=NAME] [key=value ...]``: a checkpoint → statistics.

Runs whole-video validation (the same ``VideoPredictor`` as training) on the configured data's validation
split and writes ``metrics.json`` (``val/AP`` ..., fractions), ``results.json`` (YouTube-VIS results format,
original category ids; entries that cannot score dropped, ``evaluation/results.py``) and ``results.zip`` (the
CodaLab submission) into the run directory (``hydra.run.dir=DIR``; an earlier evaluation there is kept unless
``overwrite=true``). The checkpoint rebuilds the network and gives the post-processing, predictor and frame
size it was run with; a key named on the command line (``model.postprocess.*``, ``model.predictor.*``,
``data.eval_short_side``, ``data.eval_max_size``) overrides it, and the difference is logged. The config
provides the data and the trainer (devices, precision).
"""

import logging
from pathlib import Path

import hydra
import lightning as L
import torch
import torch.distributed as dist
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from vistr_lit.checkpoints import (
    DATAMODULE_KEY,
    CategoryMismatchError,
    Setting,
    check_checkpoint,
    load_module,
    named_keys,
    settings_from_checkpoint,
)
from vistr_lit.errors import exit_on_user_error
from vistr_lit.evaluation import write_codalab_zip, write_results_json
from vistr_lit.lit_module import VisTRLitModule
from vistr_lit.outputs import claim_output_dir, write_run_record
from vistr_lit.train import (
    CONFIG_DIR,
    METRICS_FILE,
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_trainer,
    finish_loggers,
    validation_metrics,
    write_metrics,
    write_run_config,
)

log = logging.getLogger(__name__)
RESULTS_FILE = "results.json"
CODALAB_FILE = "results.zip"
FRAME_SIZE_KEYS = ("eval_short_side", "eval_max_size")


def checkpoint_settings(cfg: DictConfig) -> list[Setting]:
    """The post-processing, predictor and frame-size settings of ``eval`` that a checkpoint carries."""
    settings = [
        Setting(("hyper_parameters", block, key), f"model.{block}.{key}")
        for block in ("postprocess", "predictor")
        for key in cfg.model[block]
    ]
    return settings + [Setting((DATAMODULE_KEY, key), f"data.{key}") for key in FRAME_SIZE_KEYS]


def apply_checkpoint_settings(cfg: DictConfig, checkpoint: dict, named: list[str]) -> None:
    """Set ``cfg``'s post-processing, predictor and frame size to the checkpoint's, except named keys."""
    chosen = settings_from_checkpoint(checkpoint, cfg, checkpoint_settings(cfg), named)
    with open_dict(cfg):
        for key, value in chosen.items():
            OmegaConf.update(cfg, key, value, merge=False)


def load_module_for(cfg: DictConfig) -> VisTRLitModule:
    """The checkpoint's module with the run's post-processing and predictor settings."""
    return load_module(
        cfg.ckpt_path,
        postprocess=dict(cfg.model.postprocess),
        predictor=dict(cfg.model.predictor),
    )


def check_categories(module: VisTRLitModule, datamodule: L.LightningDataModule, ckpt_path: str) -> None:
    ids = list(datamodule.category_map.ids)
    if list(module.hparams.category_ids) != ids:
        raise CategoryMismatchError(
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
        if trainer.is_global_zero:  # pl_module.val_results are already select_results' (no empty entries)
            write_results_json(results, self.output_dir / RESULTS_FILE)
            write_codalab_zip(results, self.output_dir / CODALAB_FILE)
            log.info("%d results entries written to %s", len(results), self.output_dir / RESULTS_FILE)


def run_evaluation(cfg: DictConfig, output_dir: Path, named: list[str] | None = None) -> dict[str, float]:
    """Evaluate ``cfg.ckpt_path``; ``named``: the keys the user named (default: Hydra's task overrides)."""
    if cfg.num_threads is not None:
        torch.set_num_threads(int(cfg.num_threads))
    if rank_zero_only.rank == 0:
        claim_output_dir(output_dir, (METRICS_FILE, RESULTS_FILE, CODALAB_FILE), overwrite=cfg.overwrite)
        write_run_record(output_dir, cfg)
    checkpoint, _ = check_checkpoint(cfg.ckpt_path)
    apply_checkpoint_settings(cfg, checkpoint, named_keys() if named is None else named)
    del checkpoint
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    datamodule.check_validation()
    module = load_module_for(cfg)
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
            write_metrics(metrics, output_dir)
            log.info("%s: %s", cfg.ckpt_path, metrics)
    finally:
        finish_loggers(loggers)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    output_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    return run_evaluation(cfg, output_dir).get("val/AP")


if __name__ == "__main__":
    main()
