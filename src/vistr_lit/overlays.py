"""PredictionOverlays: a few validation videos drawn with their predicted masks, logged to W&B.

Does nothing unless the trainer has a ``WandbLogger``. Each logged image is one video: up to ``max_frames``
frames side by side, every track in its own colour (``track_colour``, as ``infer`` draws it), captioned with
class name and score.
"""

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor
from torchvision.utils import draw_segmentation_masks, make_grid

from vistr_lit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vistr_lit.inference.track import Track, decode_mask
from vistr_lit.inference.visualize import MASK_ALPHA, track_colour

GRID_PADDING = 2


def denormalize(frames: Tensor) -> Tensor:
    """ImageNet-normalized float ``[V, 3, H, W]`` → uint8 ``[V, 3, H, W]``."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=frames.dtype, device=frames.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=frames.dtype, device=frames.device)[:, None, None]
    return ((frames * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)


def draw_video(frames: Tensor, orig_size: tuple[int, int], tracks: list[Track], max_frames: int) -> Tensor:
    """frames float ``[V, 3, H, W]`` (normalized), tracks (masks at ``orig_size``) → uint8 ``[3, H', W']``."""
    count = min(max_frames, frames.shape[0])
    images = F.interpolate(frames[:count].float().cpu(), size=orig_size, mode="bilinear", align_corners=False)
    drawn = []
    for t, image in enumerate(denormalize(images)):
        masks, colors = [], []
        for track in tracks:
            rle = track.segmentation(t)
            if rle is not None:
                masks.append(torch.from_numpy(decode_mask(rle)))
                colors.append(track_colour(track.track_id))
        if masks:
            image = draw_segmentation_masks(image, torch.stack(masks), alpha=MASK_ALPHA, colors=colors)
        drawn.append(image)
    return make_grid(torch.stack(drawn), nrow=count, padding=GRID_PADDING)


class PredictionOverlays(Callback):
    """Logs ``num_videos`` validation videos (the first ones of rank 0) with their tracks to W&B."""

    def __init__(self, num_videos: int = 2, max_frames: int = 8) -> None:
        if num_videos < 0 or max_frames < 1:
            raise ValueError(f"num_videos must be ≥ 0 and max_frames ≥ 1, got {num_videos}, {max_frames}")
        self.num_videos = num_videos
        self.max_frames = max_frames
        self._images: list[Tensor] = []
        self._captions: list[str] = []

    @staticmethod
    def _wandb(trainer: L.Trainer) -> WandbLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._images, self._captions = [], []

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: dict, batch, batch_idx: int, *args
    ) -> None:
        if not trainer.is_global_zero or self._wandb(trainer) is None or trainer.sanity_checking:
            return
        names = pl_module.hparams.category_names
        for video, tracks in zip(outputs["videos"], outputs["tracks"]):
            if len(self._images) >= self.num_videos:
                return
            orig_size = tuple(int(s) for s in video["orig_size"])
            self._images.append(draw_video(video["frames"], orig_size, tracks, self.max_frames))
            labels = ", ".join(f"{names[t.label]} {t.score:.2f}" for t in tracks) or "no predictions"
            self._captions.append(f"video {int(video['video_id'])}: {labels}")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._wandb(trainer)
        if logger is None or not self._images:
            return
        images = [image.permute(1, 2, 0).numpy() for image in self._images]  # [H', W', 3] for wandb.Image
        logger.log_image(key="val/overlays", images=images, caption=self._captions, step=trainer.global_step)
