"""``python -m vistr_lit.train [+experiment=NAME] [key=value ...]``: train VisTR, then evaluate it.

Each run's output directory holds ``.hydra/config.yaml`` (as composed), ``config_resolved.yaml`` (every
interpolation resolved), ``checkpoints/`` (``last.ckpt``, and the best by ``val/AP`` when validation runs
during training) and ``metrics.json`` (the final validation statistics: keys as logged, such as ``val/AP``;
values as fractions).
"""

import json
import logging
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from vistr_lit.atomic_files import atomic_write
from vistr_lit.checkpoints import CheckpointFileError, check_checkpoint, read_checkpoint
from vistr_lit.data.layout import DataError
from vistr_lit.errors import exit_on_user_error
from vistr_lit.lit_module import NonFiniteLossError, VisTRLitModule
from vistr_lit.models.pretrained import Start, load_torchvision_file, resolve_start
from vistr_lit.outputs import AtomicCheckpointIO, claim_output_dir, write_run_record

log = logging.getLogger(__name__)
CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")
METRICS_FILE = "metrics.json"
RESOLVED_CONFIG_FILE = "config_resolved.yaml"


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """The configured datamodule, prepared and set up so that its categories and ground truth are known."""
    if cfg.data.get("root", "") is None:  # data=custom: before instantiate, which would wrap the error
        raise DataError("data.root is not set: name the dataset folder with data.root=DIR")
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def prepare_start(cfg: DictConfig) -> Start | None:
    """The run's initial weights (docs/ablations.md), decided and fetched before any other work: the
    authors' DETR via ``model.init_from``, else torchvision's ImageNet backbone, else random weights (refused
    for a frozen-BN backbone unless ``model.allow_random_frozen_bn``). None when the run does not train from
    fresh weights (evaluation only, or a resume: the checkpoint holds them)."""
    if not cfg.train or cfg.ckpt_path is not None:
        return None
    net = OmegaConf.to_container(cfg.model.net, resolve=True)
    return resolve_start(net, cfg.model.init_from, cfg.model.allow_random_frozen_bn)


def module_arguments(cfg: DictConfig) -> dict:
    """``VisTRLitModule`` keyword arguments from ``cfg.model``, less the categories (the data's) and the
    start (``init_from``, ``init_scope``, ``allow_random_frozen_bn``, ``net.pretrained_backbone``: weights
    loaded after building, never stored as hyper-parameters)."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    for key in ("init_from", "init_scope", "allow_random_frozen_bn"):
        model_cfg.pop(key, None)
    model_cfg["net"].pop("pretrained_backbone", None)
    target = model_cfg.pop("_target_")
    if target != "vistr_lit.lit_module.VisTRLitModule":
        raise ValueError(f"model._target_ must be vistr_lit.lit_module.VisTRLitModule, got {target!r}")
    return model_cfg


def build_module(
    cfg: DictConfig, datamodule: L.LightningDataModule, start: Start | None = None
) -> VisTRLitModule:
    """VisTRLitModule from ``cfg.model`` and the datamodule's categories, ``model.init_from`` loaded, and
    the ImageNet backbone when ``start`` says so (``net.pretrained_backbone`` is a start, not a module
    argument: a checkpoint's hyper-parameters never download anything)."""
    model_cfg = module_arguments(cfg)
    init_from = cfg.model.init_from
    category_map = datamodule.category_map
    module = VisTRLitModule(
        **model_cfg, category_ids=list(category_map.ids), category_names=list(category_map.names)
    )
    if init_from is not None:
        from vistr_lit.convert_checkpoint import initialize_from

        read_checkpoint(init_from, key="model.init_from")  # a clear error for a file that is no checkpoint

        report = initialize_from(module, init_from, cfg.model.init_scope)
        log.info("initialized from %s: %s", init_from, report.summary())
    elif start is not None and start.kind == "torchvision":
        load_torchvision_file(module.model, start.path, model_cfg["net"]["backbone"])
        log.info("initialized the backbone from %s", start.description)
    return module


def validates_while_training(trainer_cfg: DictConfig) -> bool:
    """Whether ``trainer.fit`` runs validation before its end (the quickstart validates only afterwards).

    Decided from the config alone: with unbounded epochs (a run bounded by ``max_steps``) the answer depends
    on the epoch length, so it is taken to be yes and a monitored checkpoint is kept.
    """
    if trainer_cfg.get("limit_val_batches") == 0:
        return False
    every = trainer_cfg.get("check_val_every_n_epoch", 1)
    max_epochs = trainer_cfg.get("max_epochs")
    bounded = isinstance(max_epochs, int) and max_epochs > 0
    return not (isinstance(every, int) and bounded and every > max_epochs)


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[Callback]:
    """The configured callbacks, less those that cannot act in this run.

    A checkpoint that monitors ``val/AP`` is dropped when no validation runs during training (Lightning would
    warn at every epoch that the metric is missing); the final evaluation then uses the last weights.
    """
    validates = validates_while_training(cfg.trainer)
    callbacks = []
    for name, conf in (cfg.get("callbacks") or {}).items():
        if conf is None:
            continue
        if "_target_" not in conf:
            raise ValueError(f"callbacks.{name} has no _target_")
        callback = hydra.utils.instantiate(conf, _convert_="all")
        if isinstance(callback, LearningRateMonitor) and not has_logger:
            log.info("callbacks.%s skipped: the run has no logger", name)
            continue
        if isinstance(callback, ModelCheckpoint) and callback.monitor and not validates:
            log.info(
                "callbacks.%s skipped: no validation before the end of training (check_val_every_n_epoch=%s, "
                "max_epochs=%s), so there is no best %s; the final evaluation uses the last weights",
                name,
                cfg.trainer.get("check_val_every_n_epoch"),
                cfg.trainer.get("max_epochs"),
                callback.monitor,
            )
            continue
        callbacks.append(callback)
    return callbacks


def best_checkpoint(trainer: L.Trainer) -> str:
    """The path of the best checkpoint by a monitored metric, or "" when there is none."""
    for callback in trainer.checkpoint_callbacks:
        if callback.monitor and callback.best_model_path:
            return callback.best_model_path
    return ""


def sweep_group(sweep_dir: str | Path) -> str:
    """The W&B group of every run of one Hydra sweep (and of its ablation table)."""
    return f"sweep-{Path(sweep_dir).name}"


def wandb_group() -> str | None:
    """This run's sweep group under ``--multirun``; None for a single run (its experiment_name then)."""
    if not hydra.core.hydra_config.HydraConfig.initialized():
        return None
    hydra_cfg = hydra.core.hydra_config.HydraConfig.get()
    return sweep_group(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None


def build_loggers(cfg: DictConfig) -> list[Logger]:
    loggers = []
    for name, conf in (cfg.get("logger") or {}).items():
        if conf is None:
            continue
        if "_target_" not in conf:
            raise ValueError(f"logger.{name} has no _target_")
        group = {}
        if conf["_target_"].endswith("WandbLogger") and conf.get("group") is None:
            group = {"group": wandb_group() or cfg.experiment_name}  # a sweep's runs compare in one group
        loggers.append(hydra.utils.instantiate(conf, **group, _convert_="all"))
    if not loggers:
        warnings.warn(
            "this run has no logger (logger=none): only metrics.json records its results", stacklevel=2
        )
    return loggers


def build_trainer(cfg: DictConfig, callbacks: list[Callback], loggers: list[Logger]) -> L.Trainer:
    """The configured Trainer; checkpoints are written atomically (``outputs.AtomicCheckpointIO``)."""
    return hydra.utils.instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        _convert_="all",
    )


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last``: this run directory's ``checkpoints/last.ckpt`` (resume with ``hydra.run.dir=<old run>``)."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        path = output_dir / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise CheckpointFileError(
                f"ckpt_path=last: no {path}; resume a run with hydra.run.dir=<its output dir> ckpt_path=last"
            )
        ckpt_path = str(path)
    _, kind = check_checkpoint(ckpt_path)
    if kind != "lightning":
        raise CheckpointFileError(
            f"ckpt_path: {ckpt_path} is an authors' checkpoint, which cannot resume a training; start "
            "from its weights with model.init_from=PATH"
        )
    return ckpt_path


STEP_BOUNDED_RESUME_WARNING = (
    "resuming a run bounded by trainer.max_steps: Lightning restarts step-bounded runs inside the "
    "checkpoint's epoch, but last.ckpt is saved at an epoch's end, so the resumed run takes one extra step "
    "in that epoch and shifts every later epoch boundary: it will not end with exactly the weights of an "
    "uninterrupted run. Bound the run with trainer.max_epochs (and trainer.max_steps=-1) to resume exactly."
)


def warn_if_inexact_resume(cfg: DictConfig) -> None:
    """Exact resumption holds for epoch-bounded runs only (tests/test_train.py checks both cases)."""
    if cfg.train and cfg.ckpt_path is not None and cfg.trainer.get("max_steps", -1) not in (-1, None):
        log.warning(STEP_BOUNDED_RESUME_WARNING)


SLOW_BF16_WARNING = (
    "trainer.precision=bf16-mixed on a CPU without native bf16 (AVX512-BF16 or AMX): bf16 convolutions are "
    "emulated there and may be slower than float32; add trainer.precision=32-true"
)


def cpu_has_native_bf16() -> bool:
    """Whether this x86 CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16-mixed pays off."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def warn_if_slow_bf16(cfg: DictConfig) -> None:
    """The quickstart trains in bf16-mixed on CPU: 1.28x the steps a minute here, a slowdown elsewhere."""
    trainer = cfg.trainer
    on_cpu = trainer.get("accelerator") == "cpu" and str(trainer.get("precision")) == "bf16-mixed"
    if on_cpu and not cpu_has_native_bf16():
        log.warning(SLOW_BF16_WARNING)


CUT_SHORT_WARNING = (
    "training stopped at optimizer step %d of the %d planned (the trainer.max_time safety net, or a callback "
    "or an interruption, ended it): its schedule did not finish, so its results are not the configured run's"
)


def warn_if_cut_short(trainer: L.Trainer) -> None:
    """A run is defined by its optimizer steps: say so when fewer ran than it planned."""
    planned = trainer.estimated_stepping_batches
    if trainer.global_step < planned:
        log.warning(CUT_SHORT_WARNING, trainer.global_step, planned)


def write_run_config(cfg: DictConfig, output_dir: Path) -> None:
    atomic_write(output_dir / RESOLVED_CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))


def write_metrics(metrics: dict[str, float], output_dir: Path) -> None:
    atomic_write(output_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")


def validation_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val/")}


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs: the jobs of a multirun would otherwise merge into one run."""
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()


def drop_requeue_checkpoints(trainer: L.Trainer) -> None:
    """Remove the ``hpc_ckpt_*.ckpt`` that Lightning's SLURM requeue (SIGUSR1) saved once fit has finished:
    under SLURM, ``validate`` and a rerun would otherwise load them instead of the final weights."""
    if trainer.is_global_zero:
        for path in Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt"):
            log.info("fit finished: removing the requeue checkpoint %s", path)
            path.unlink()
    trainer.strategy.barrier()


def run_training(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    """Train (``cfg.train``) and evaluate (``cfg.final_eval``); returns the final validation statistics."""
    if cfg.num_threads is not None:
        torch.set_num_threads(int(cfg.num_threads))
    warn_if_inexact_resume(cfg)
    warn_if_slow_bf16(cfg)
    # a requeued SLURM job reruns its command and Lightning restores its hpc_ckpt_*.ckpt: a resume too
    requeued = any(Path(output_dir).glob("hpc_ckpt_*.ckpt"))
    resume = cfg.train and (cfg.ckpt_path == "last" or requeued)
    if rank_zero_only.rank == 0:  # before anything is written (re-launched DDP ranks find the same)
        claim_output_dir(output_dir, (METRICS_FILE,), overwrite=cfg.overwrite, resume=resume)
    start = prepare_start(cfg)  # refuses, or fetches the weights, before any data is made or read
    if rank_zero_only.rank == 0:  # the run goes ahead in this directory: Hydra's record of it
        write_run_record(output_dir, cfg)
    if start is not None:
        log.info("start: %s", start.description)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    if cfg.train:
        datamodule.check_train()
    if cfg.final_eval:
        datamodule.check_validation()
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, output_dir) if cfg.train else None
    module = build_module(cfg, datamodule, start)
    loggers = build_loggers(cfg)
    trainer = build_trainer(cfg, build_callbacks(cfg, has_logger=bool(loggers)), loggers)
    if trainer.is_global_zero:
        write_run_config(cfg, output_dir)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    try:
        if cfg.train:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
            drop_requeue_checkpoints(trainer)
            if module.nonfinite_message is not None:
                last = output_dir / "checkpoints" / "last.ckpt"
                kept = (
                    f"last good checkpoint: {last}" if last.is_file() else "no checkpoint had been saved yet"
                )
                raise NonFiniteLossError(f"{module.nonfinite_message}; {kept}")
            warn_if_cut_short(trainer)
        metrics: dict[str, float] = {}
        if cfg.final_eval:
            ckpt = None
            best = best_checkpoint(trainer)
            if cfg.eval_weights == "best" and best:
                ckpt = best
            elif cfg.eval_weights not in ("best", "last"):
                raise ValueError(f"eval_weights must be best or last, got {cfg.eval_weights!r}")
            trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt, verbose=trainer.is_global_zero)
            metrics = validation_metrics(trainer)
            if trainer.is_global_zero:
                write_metrics(metrics, output_dir)
                log.info("final validation (%s weights): %s", "best" if ckpt else "current", metrics)
    finally:
        finish_loggers(loggers)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    output_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    metrics = run_training(cfg, output_dir)
    return metrics.get("val/AP")  # the objective of Hydra sweepers (e.g. Optuna)


if __name__ == "__main__":
    main()
