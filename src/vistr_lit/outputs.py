"""Run directories: where ``train``, ``eval`` and ``infer`` write, and the refusal to overwrite a run.

Every entry point writes into Hydra's run directory, named with ``hydra.run.dir=DIR`` (default
``outputs/<task>/<experiment>/<time>``; ``hydra.sweep.dir`` for multiruns). A run whose directory already
holds an earlier run's results (checkpoints, ``metrics.json``, ``results.json``, overlays) stops with a
:class:`RunExistsError` before doing anything, unless the user resumes (``train ... ckpt_path=last``) or
says ``overwrite=true``: then the earlier results are removed first, so none is left beside the new ones.
Only then is the run's Hydra record (``.hydra/``) written (:func:`write_run_record`): Hydra, which would write
it before the run starts, is told not to (``hydra.output_subdir: null``), so a refused run changes nothing.
Checkpoints are written atomically (:class:`AtomicCheckpointIO`), like every results file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.plugins import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from vistr_lit.atomic_files import atomic_path, atomic_write
from vistr_lit.errors import UserError

CHECKPOINT_DIR = "checkpoints"
RECORD_DIR = ".hydra"  # config.yaml (as composed), hydra.yaml, overrides.yaml: Hydra's own layout
OVERLAY_STEM = "overlay"  # <video>/overlay.<mp4|gif> of infer
PNG_DIR = "masks"  # <video>/masks/<frame>.png of infer


class RunExistsError(UserError):
    """The run directory holds an earlier run's results; neither resuming nor overwrite=true was asked."""


def earlier_outputs(output_dir: Path, files: tuple[str, ...], videos: bool = False) -> list[Path]:
    """What of an earlier run is in ``output_dir``: the ``files`` that exist, the checkpoints, and
    (``videos``) infer's per-video overlays and PNG folders."""
    found = [output_dir / name for name in files if (output_dir / name).is_file()]
    found += sorted((output_dir / CHECKPOINT_DIR).glob("*.ckpt"))
    if videos and output_dir.is_dir():
        for folder in sorted(p for p in output_dir.iterdir() if p.is_dir()):
            found += sorted(folder.glob(f"{OVERLAY_STEM}.*"))
            if (folder / PNG_DIR).is_dir():
                found.append(folder / PNG_DIR)
    return found


def claim_output_dir(
    output_dir: Path, files: tuple[str, ...], overwrite: bool, resume: bool = False, videos: bool = False
) -> None:
    """Refuse to write over an earlier run's results, or remove them (``overwrite``); ``resume`` keeps them.

    Raises:
        RunExistsError: naming the directory, what is there, and the three ways on.
    """
    output_dir = Path(output_dir)
    found = earlier_outputs(output_dir, files, videos)
    if not found or resume:
        return
    if not overwrite:
        shown = ", ".join(str(p.relative_to(output_dir)) for p in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        resume_hint = ", or resume that training with ckpt_path=last"
        raise RunExistsError(
            f"{output_dir} holds an earlier run's results ({shown}{more}); nothing was changed: write this "
            "run elsewhere with hydra.run.dir=DIR, replace them with overwrite=true"
            + (resume_hint if any(p.suffix == ".ckpt" for p in found) else "")
        )
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    for folder in {p.parent for p in found if p.parent != output_dir}:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def write_run_record(output_dir: Path, cfg: DictConfig) -> None:
    """Hydra's record of this run in ``output_dir/.hydra``, as Hydra writes it: ``config.yaml`` (``cfg`` as
    composed), ``hydra.yaml`` and ``overrides.yaml`` (the command line's overrides). Call it once the
    directory is this run's (after :func:`claim_output_dir`). Nothing is written outside a Hydra run."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    record = Path(output_dir) / RECORD_DIR
    record.mkdir(parents=True, exist_ok=True)
    atomic_write(record / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write(record / "hydra.yaml", OmegaConf.to_yaml({"hydra": hydra_cfg}))
    atomic_write(record / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.overrides.task))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, saving to a file beside the target renamed over it when complete.

    Lightning's own ``_atomic_save`` stages local files in the system temporary folder and moves them, which
    is a copy (not atomic) when that folder is on another file system than the run directory.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):  # remote file systems: Lightning's own way
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
        return None
