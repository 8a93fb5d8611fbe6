"""A constructed case for inference: coloured squares drifting across a video; a fake VisTR that "sees" them.

Object c is drawn in colour channel c. The fake model returns, for each clip, object c in instance slot
``(c + shift) % N`` with ``shift`` taken from the clip's content, so slot indices change between windows and
identity across windows can only come from stitching.
"""

import torch
from torch import Tensor, nn

from vistr_lit.models.postprocess import MASK_STRIDE

NUM_OBJECTS = 3  # one per colour channel
SQUARE = 16  # side of a square, a multiple of the mask stride so that masks upsample exactly
STEP = 4  # pixels moved per frame


def drifting_squares(num_frames: int, height: int = 48, width: int = 64) -> Tensor:
    """uint8 ``[V, 3, H, W]``: square c (rows ``16c .. 16c+15``) moves right 4 px per frame, bouncing back."""
    frames = torch.zeros(num_frames, 3, height, width, dtype=torch.uint8)
    span = (width - SQUARE) // STEP
    for v in range(num_frames):
        for c in range(NUM_OBJECTS):
            step = (v + 3 * c) % (2 * span)
            x = STEP * (step if step < span else 2 * span - step)
            y = c * (height - SQUARE) // (NUM_OBJECTS - 1)
            frames[v, c, y : y + SQUARE, x : x + SQUARE] = 255
    return frames


class FakeVisTR(nn.Module):
    """Returns the contract's dict: object c (pixels of channel c > 0) in slot (c + shift) % N, class c."""

    def __init__(
        self, num_frames: int, num_instances: int = 5, num_classes: int = 4, mask_stride: int = MASK_STRIDE
    ):
        super().__init__()
        self.num_frames, self.num_instances, self.num_classes = num_frames, num_instances, num_classes
        self.mask_stride = mask_stride
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device
        self.calls = 0

    def slot_shift(self, clip: Tensor) -> int:
        """Slot offset of a clip ``[T, 3, H, W]``: the first column of object 0 in its first frame, mod N."""
        columns = (clip[0, 0] > 0).any(dim=0).nonzero().flatten()
        return int(columns[0]) % self.num_instances if len(columns) else 0

    def forward(self, frames: Tensor, pad_mask: Tensor | None = None) -> dict[str, Tensor]:
        B, T, _, H, W = frames.shape
        N, K = self.num_instances, self.num_classes
        self.calls += 1
        h, w = -(-H // self.mask_stride), -(-W // self.mask_stride)
        logits = torch.full((B, T, N, K + 1), -5.0)
        logits[..., K] = 5.0  # no-object everywhere but the objects' slots
        masks = torch.full((B, T, N, h, w), -10.0)
        small = nn.functional.interpolate(
            frames.flatten(0, 1), size=(h, w), mode="nearest"
        )  # (B·T) x 3 x h x w
        small = small.view(B, T, 3, h, w)
        for b in range(B):
            shift = self.slot_shift(frames[b])
            for c in range(NUM_OBJECTS):
                slot = (c + shift) % N
                logits[b, :, slot, :] = -5.0
                logits[b, :, slot, c] = 5.0
                masks[b, :, slot] = torch.where(small[b, :, c] > 0, 10.0, -10.0)
        return {
            "pred_logits": logits.view(B, T * N, K + 1),
            "pred_boxes": torch.full((B, T * N, 4), 0.5),
            "pred_masks": masks.view(B, T * N, h, w),
            "aux_outputs": [],
        }
