"""VisTRLitModule: the VisTR network, its set criterion and whole-video validation as a LightningModule.

Everything is built from plain hyper-parameters (dicts of constructor arguments and the dataset's
categories), so ``VisTRLitModule.load_from_checkpoint(path, map_location="cpu")`` needs nothing else.
Training consumes the batches of ``collate_clips`` (clips of T frames); validation consumes whole videos of
any length, runs them through the ``VideoPredictor`` (windows of T frames stitched into tracks) and scores
the tracks with ``YTVISVideoAP``.
"""

import math
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from vistr_lit.evaluation import YTVISVideoAP
from vistr_lit.inference import VideoPredictor
from vistr_lit.models import build_vistr
from vistr_lit.models.checkpoint_import import use_authors_class_head
from vistr_lit.models.criterion import LOSS_NAMES, SetCriterion
from vistr_lit.models.lean import apply_lean
from vistr_lit.models.matcher import HungarianMatcher
from vistr_lit.models.postprocess import PostProcessVideo
from vistr_lit.models.vistr import MASK_BRANCH

SCHEDULES = ("step", "cosine", "wsd")
RNG_STATE_KEY = "vistr_rng_states"
POINT_LOSS_KEYS = ("mask_loss_points", "point_oversample_ratio", "point_importance_ratio")
FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # where torch.optim.AdamW(fused=True) runs


class NonFiniteLossError(RuntimeError):
    """Raised by the entry point when training stopped on a non-finite loss."""


def loss_weights(criterion: dict, num_aux_layers: int) -> dict[str, float]:
    """DETR-style ``weight_dict``: ``loss_ce`` .. ``loss_dice``, the same weights for aux layers ``_{i}``."""
    # loss_ce: criterion["ce_weight"], ..., loss_dice: criterion["dice_weight"]
    base = {name: criterion[f"{name.removeprefix('loss_')}_weight"] for name in LOSS_NAMES}
    weights = dict(base)
    for i in range(num_aux_layers):
        weights.update({f"{name}_{i}": w for name, w in base.items()})
    return weights


class VisTRLitModule(L.LightningModule):
    """VisTR training and whole-video validation.

    Args:
        net: ``build_vistr`` keyword arguments except ``num_classes`` (taken from ``category_ids``), and
            ``unused_class_logits`` (an authors' converted file: see ``AuthorsClassHead``; default 0).
        matcher: ``HungarianMatcher`` keyword arguments (``mode``, cost weights).
        criterion: ``eos_coef``, ``{ce,bbox,giou,mask,dice}_weight``, ``mask_loss_resolution`` (and for
            ``"points"``: ``mask_loss_points``, ``point_oversample_ratio``, ``point_importance_ratio``),
            ``normalizer``.
        optim: ``lr``, ``lr_backbone``, ``weight_decay``, ``schedule`` (step | cosine | wsd), ``lr_drop``
            (epochs), ``gamma``, ``warmup_steps``, ``cooldown_fraction`` (wsd), ``schedule_steps``.
            ``cosine`` and ``wsd`` follow the optimizer steps alone, never the wall clock: they span
            ``schedule_steps`` steps (None: the run's, the trainer's ``estimated_stepping_batches``), so a
            larger ``schedule_steps`` ends the run part-way down the schedule.
            ``wsd`` (warmup-stable-decay; Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training
            Beyond Fixed Training Durations"): the peak rate until the last ``cooldown_fraction`` of the
            steps, then a (1 - sqrt) cool-down to 0.
        postprocess: ``PostProcessVideo`` keyword arguments.
        predictor: ``VideoPredictor`` keyword arguments (``overlap``, ``match_iou``, ``first_window_only``).
        category_ids: the dataset's category ids, in contiguous class-index order (K of them).
        category_names: their names, same order.
        lean: ``apply_lean`` keyword arguments (``checkpoint``, ``mask_head_chunk``: memory strategies that
            leave outputs and gradients unchanged, docs/paper-scale.md), or None (the plain model).
    """

    def __init__(
        self,
        net: dict,
        matcher: dict,
        criterion: dict,
        optim: dict,
        postprocess: dict,
        predictor: dict,
        category_ids: list[int],
        category_names: list[str],
        lean: dict | None = None,
    ) -> None:
        super().__init__()
        if len(category_ids) != len(category_names):
            raise ValueError(
                f"category_ids ({len(category_ids)}) and category_names ({len(category_names)}) "
                "differ in length"
            )
        if optim["schedule"] not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {optim['schedule']!r}")
        cooldown = optim.get("cooldown_fraction")
        if optim["schedule"] == "wsd" and not (isinstance(cooldown, float | int) and 0 < cooldown <= 1):
            raise ValueError(f"optim.cooldown_fraction must be in (0, 1] for schedule wsd, got {cooldown!r}")
        self.save_hyperparameters()
        net = dict(net)
        unused_class_logits = net.pop("unused_class_logits", 0)  # an authors' file's (convert_checkpoint)
        self.model = build_vistr(num_classes=len(category_ids), **net)
        if unused_class_logits:
            use_authors_class_head(self.model, unused_class_logits)
        if lean:
            apply_lean(self.model, **lean)
        num_aux_layers = len(self.model.transformer.decoder.layers) - 1 if self.model.aux_loss else 0
        self.criterion = SetCriterion(
            num_classes=len(category_ids),
            matcher=HungarianMatcher(**matcher),
            weight_dict=loss_weights(criterion, num_aux_layers),
            eos_coef=criterion["eos_coef"],
            mask_loss_resolution=criterion["mask_loss_resolution"],
            normalizer=criterion["normalizer"],
            # checkpoints saved before these keys existed used SetCriterion's defaults (the original's)
            **{k: criterion[k] for k in ("focal_alpha", "focal_gamma", *POINT_LOSS_KEYS) if k in criterion},
        )
        self.postprocess = PostProcessVideo(**postprocess)
        self.predictor = VideoPredictor(self.model, self.postprocess, **predictor)
        self.val_metric: YTVISVideoAP | None = None  # needs the validation ground truth: see `setup`
        self.val_results: list[dict] = []  # this rank's results entries of the last validation
        self.nonfinite_message: str | None = None

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self.val_metric is None:
            datamodule = self.trainer.datamodule
            if datamodule is None:
                raise ValueError(
                    "VisTRLitModule validation needs a datamodule that provides the ground truth"
                )
            if datamodule.val_gt is not None:  # None: the datamodule has no validation split
                self.val_metric = YTVISVideoAP(datamodule.val_gt)

    # ------------------------------------------------------------------ training
    def forward(self, frames: Tensor, pad_mask: Tensor | None = None) -> dict:
        """frames ``[B, T, 3, H, W]``, pad_mask ``[B, H, W]`` → the VisTR output dict (docs/design.md)."""
        return self.model(frames, pad_mask)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        """batch: ``frames [B, T, 3, Hp, Wp]``, ``pad_mask [B, Hp, Wp]``, ``targets`` (B dicts)."""
        batch_size = batch["frames"].shape[0]
        outputs = self.model(batch["frames"], batch["pad_mask"])
        losses = self.criterion(outputs, batch["targets"])
        loss = self.criterion.weighted_total(losses)
        if self._any_rank_nonfinite(loss):
            detail = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items() if k in LOSS_NAMES)
            self.nonfinite_message = (
                f"non-finite loss at epoch {self.current_epoch}, global step {self.global_step} "
                f"(batch {batch_idx}; this rank: total={loss.item():.4g}, {detail}); training stopped before "
                "this step's update, so the weights and last checkpoint are the last good ones"
            )
            self.print(f"ERROR: {self.nonfinite_message}")
            self.trainer.should_stop = True
            return None  # skips backward and the optimizer step on every rank
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=batch_size)
        return loss

    def _any_rank_nonfinite(self, loss: Tensor) -> bool:
        bad = not bool(torch.isfinite(loss.detach()))
        return bool(self.trainer.strategy.reduce_boolean_decision(bad, all=False))

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self.val_metric.reset()
        self.val_results = []

    def validation_step(self, batch: list[dict], batch_idx: int) -> dict:
        """batch: whole videos, each ``frames [V, 3, H, W]``, ``video_id``, ``orig_size`` (height, width), ...

        Returns ``{"videos": batch, "tracks": list (per video) of Track lists}`` for callbacks (overlays).
        """
        video_ids, results, tracks_per_video = [], [], []
        for video in batch:
            tracks = self.predictor.predict_video(video["frames"], tuple(int(s) for s in video["orig_size"]))
            video_id = int(video["video_id"])
            video_ids.append(video_id)
            results.extend(self.predictor.results(tracks, video_id, self.hparams.category_ids))
            tracks_per_video.append(tracks)
        self.val_metric.update(video_ids, results)
        self.val_results.extend(results)
        return {"videos": batch, "tracks": tracks_per_video}

    def on_validation_epoch_end(self) -> None:
        stats = self.val_metric.compute()
        # The metric has gathered every rank's videos already: the values are identical on all ranks.
        self.log_dict({f"val/{k}": torch.as_tensor(v, dtype=torch.float32) for k, v in stats.items()})

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict:
        """AdamW groups: backbone (``lr_backbone``), the mask branch when ``lr_mask_head`` is set (else it
        stays with the rest: the original's two groups) and the rest (``lr``); warm-up, then step or
        cosine decay."""
        optim = self.hparams.optim
        lrs = {"transformer_heads": optim["lr"], "backbone": optim["lr_backbone"]}
        if optim.get("lr_mask_head") is not None:
            lrs["mask_head"] = optim["lr_mask_head"]
        members: dict[str, list] = {name: [] for name in lrs}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith("backbone."):
                members["backbone"].append(param)
            elif name.startswith(MASK_BRANCH) and "mask_head" in members:
                members["mask_head"].append(param)
            else:
                members["transformer_heads"].append(param)
        groups = [{"params": members[name], "lr": lr, "name": name} for name, lr in lrs.items()]
        params = [p for g in groups for p in g["params"]]
        # One fused kernel for all parameters: ~4x faster than the per-parameter loop on CPU. Not under a
        # gradient scaler (16-mixed): a fused step unscales the gradients itself, after they were clipped.
        precision = str(getattr(self._trainer, "precision", ""))
        fused = not precision.startswith("16") and all(
            p.device.type in FUSED_ADAMW_DEVICES and p.dtype.is_floating_point for p in params
        )
        optimizer = torch.optim.AdamW(
            [g for g in groups if g["params"]],
            lr=optim["lr"],
            weight_decay=optim["weight_decay"],
            fused=fused or None,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Lightning's clipping, except for a fused optimizer under bf16-mixed, which Lightning refuses
        although bf16 has no gradient scaler: its gradients are true gradients, clipped here directly."""
        if not gradient_clip_val or not optimizer.defaults.get("fused"):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if gradient_clip_algorithm in (None, "norm"):
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)

    def _lr_factor(self, step: int) -> float:
        """Multiplier of the base learning rates after ``step`` optimizer steps."""
        optim = self.hparams.optim
        warmup = optim["warmup_steps"]
        factor = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        if optim["schedule"] == "step":
            return factor * optim["gamma"] ** (self.trainer.current_epoch // optim["lr_drop"])
        span = optim.get("schedule_steps") or int(
            self.trainer.estimated_stepping_batches
        )  # older hparams: none
        total = max(1, span - warmup)
        progress = min(1.0, max(0, step - warmup) / total)
        if optim["schedule"] == "wsd":
            cooldown = optim["cooldown_fraction"]
            into_cooldown = max(0.0, progress - (1.0 - cooldown)) / cooldown
            return factor * (1.0 - math.sqrt(into_cooldown))
        return factor * 0.5 * (1.0 + math.cos(math.pi * progress))

    # ------------------------------------------------------------------ exact resumption
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning does not store the global RNG states; without them a resumed run draws other clips and
        # augmentations.
        checkpoint[RNG_STATE_KEY] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state_to_plain(np.random.get_state()),  # noqa: NPY002
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get(RNG_STATE_KEY)
        if states is not None and self._trainer is not None and self.trainer.state.fn == "fit":
            torch.set_rng_state(states["torch"])
            np.random.set_state(  # noqa: NPY002 (the legacy global state is what users' code seeds)
                _numpy_state_from_plain(states["numpy"])
            )
            random.setstate(states["python"])


def _numpy_state_to_plain(state: tuple) -> tuple:
    """numpy's MT19937 state, its key array as a tensor (loadable with ``torch.load(weights_only=True)``)."""
    name, keys, pos, has_gauss, cached = state
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


def _numpy_state_from_plain(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, keys.numpy().astype(np.uint32), pos, has_gauss, cached
