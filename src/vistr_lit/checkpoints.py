"""Checkpoints given to ``train``, ``eval`` and ``infer``: read safely, recognised, or refused in one line.

A vistr-lit checkpoint (``train.py`` or ``convert_checkpoint.py``) holds ``state_dict`` and
``hyper_parameters``; an authors' file holds ``model``. Files are read with ``torch.load(weights_only=True)``
only; anything else is a :class:`CheckpointFileError` naming the path and what is missing.

A checkpoint also carries the settings it was trained and evaluated with: post-processing
(``hyper_parameters.postprocess``), whole-video prediction (``hyper_parameters.predictor``) and the frame size
of evaluation (``datamodule_hyper_parameters.eval_short_side`` / ``eval_max_size``). ``eval`` and ``infer``
use them; a key the user names on the command line (Hydra's task overrides) replaces the checkpoint's
value, and every difference from the checkpoint is logged (:func:`settings_from_checkpoint`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from vistr_lit.errors import UserError

log = logging.getLogger(__name__)
LIGHTNING_KEYS = ("state_dict", "hyper_parameters")
HPARAM_KEYS = ("net", "category_ids", "category_names")
AUTHORS_KEY = "model"
DATAMODULE_KEY = "datamodule_hyper_parameters"
NOT_OURS = "is not a vistr-lit or authors' checkpoint"


class CheckpointFileError(UserError):
    """A checkpoint path that does not exist or does not hold a vistr-lit or authors' checkpoint."""


class CategoryMismatchError(UserError, ValueError):
    """A checkpoint's categories are not those of the data or input it is run on."""


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict:
    """The checkpoint at ``path`` as a dict, read with ``weights_only=True`` (never anything unsafe).

    ``key`` is the config key that named the file, for messages. Raises :class:`CheckpointFileError`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointFileError(f"{key}: no such checkpoint file {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # the authors' files hold their args
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (whatever torch says, the file is not one we read safely)
        raise CheckpointFileError(
            f"{key}: {path} {NOT_OURS} (torch cannot read it as a file of weights: {type(err).__name__})"
        ) from err
    if not isinstance(obj, dict):
        raise CheckpointFileError(f"{key}: {path} {NOT_OURS} (it holds a {type(obj).__name__}, not a dict)")
    return obj


def checkpoint_kind(obj: Mapping, path: str | Path, key: str = "ckpt_path") -> str:
    """``"lightning"`` (vistr-lit) or ``"authors"``; else :class:`CheckpointFileError` naming a key."""
    if isinstance(obj.get(AUTHORS_KEY), dict) and "state_dict" not in obj:
        return "authors"
    missing = [k for k in LIGHTNING_KEYS if k not in obj]
    if missing:
        found = ", ".join(repr(k) for k in list(obj)[:8]) or "none"
        ours = " and ".join(repr(k) for k in LIGHTNING_KEYS)
        raise CheckpointFileError(
            f"{key}: {path} {NOT_OURS}: no {missing[0]!r} key (vistr-lit checkpoints hold {ours}, the "
            f"authors' {AUTHORS_KEY!r}; keys found: {found})"
        )
    hparams = obj["hyper_parameters"]
    absent = [k for k in HPARAM_KEYS if not isinstance(hparams, Mapping) or k not in hparams]
    if absent:
        raise CheckpointFileError(f"{key}: {path} {NOT_OURS}: no 'hyper_parameters.{absent[0]}' key")
    return "lightning"


def check_checkpoint(path: str | Path, key: str = "ckpt_path") -> tuple[dict, str]:
    """Read ``path`` and recognise it: (the checkpoint dict, its kind)."""
    obj = read_checkpoint(path, key)
    return obj, checkpoint_kind(obj, path, key)


def load_module(path: str | Path, key: str = "ckpt_path", **hparams_overrides):
    """The checkpoint's ``VisTRLitModule`` (an authors' file converted), after :func:`check_checkpoint`.

    ``hparams_overrides`` (e.g. ``postprocess``, ``predictor``) replace hyper-parameters of a vistr-lit
    checkpoint; an authors' file gets them on its converted module.
    """
    from vistr_lit.lit_module import VisTRLitModule

    _, kind = check_checkpoint(path, key)
    if kind == "authors":
        from vistr_lit.convert_checkpoint import convert

        converted = convert(path)
        if not hparams_overrides:
            return converted
        module = VisTRLitModule(**{**dict(converted.hparams), **hparams_overrides})
        module.load_state_dict(converted.state_dict())
        return module
    return VisTRLitModule.load_from_checkpoint(path, map_location="cpu", **hparams_overrides)


@dataclass(frozen=True)
class Setting:
    """One setting a checkpoint carries: where it is in the checkpoint and in the config."""

    checkpoint: tuple[str, ...]  # path in the checkpoint dict
    config: str  # dotted key in the run's config
    aliases: tuple[str, ...] = ()  # other keys that set it from the command line (interpolations)


def named_keys() -> list[str]:
    """The config keys the user named on the command line (Hydra's task overrides), ``+``/``~`` stripped."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [override.split("=", 1)[0].lstrip("+~") for override in HydraConfig.get().overrides.task]


def _is_named(keys: Iterable[str], named: Sequence[str]) -> bool:
    return any(k == n or k.startswith(n + ".") for k in keys for n in named)


def _lookup(tree: Any, path: Sequence[str]) -> tuple[bool, Any]:
    for part in path:
        if not isinstance(tree, Mapping) or part not in tree:
            return False, None
        tree = tree[part]
    return True, tree


def _plain(value: Any) -> Any:
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return list(value) if isinstance(value, tuple) else value


def settings_from_checkpoint(
    checkpoint: Mapping, cfg, settings: Sequence[Setting], named: Sequence[str]
) -> dict[str, Any]:
    """Each setting's value for this run: the checkpoint's, unless the user named its key (or an alias).

    Args:
        checkpoint: the checkpoint dict.
        cfg: the run's config (``DictConfig``), where each ``Setting.config`` is looked up.
        settings: the settings to decide.
        named: the keys the user named (:func:`named_keys`).
    Returns:
        the value of each setting by ``Setting.config``. A setting the checkpoint lacks (an older checkpoint,
        an authors' file) keeps the config's value.
    """
    chosen = {}
    for setting in settings:
        config_value = _plain(OmegaConf.select(cfg, setting.config))
        found, ckpt_value = _lookup(checkpoint, setting.checkpoint)
        ckpt_value = _plain(ckpt_value)
        if not found:
            chosen[setting.config] = config_value
        elif _is_named([setting.config, *setting.aliases], named):
            chosen[setting.config] = config_value
            if config_value != ckpt_value:
                log.warning("%s=%r (the checkpoint's: %r)", setting.config, config_value, ckpt_value)
        else:
            chosen[setting.config] = ckpt_value
            if config_value != ckpt_value:
                log.warning(
                    "%s=%r from the checkpoint (the config says %r: name it on the command line to use it)",
                    setting.config,
                    ckpt_value,
                    config_value,
                )
    return chosen
