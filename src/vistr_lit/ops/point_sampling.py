"""Point-sampled mask supervision (PointRend, Mask2Former): losses on K points a mask instead of every pixel.

Points are ``(x, y)`` fractions of a mask's canvas in ``[0, 1]``, the convention of
``F.interpolate(..., align_corners=False)``: a prediction at any stride and its full-resolution target are
sampled at the same places of the same canvas. A point's label is that of the pixel it falls in
(Mask2Former interpolates the labels bilinearly instead), so with uniform points a point loss is an unbiased
estimate of the upsampled-prediction loss over every pixel.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(masks: Tensor, points: Tensor) -> Tensor:
    """Bilinear samples of each mask at its own points.

    Args:
        masks: ``[P, H, W]`` float logits.
        points: ``[P, K, 2]`` ``(x, y)`` in ``[0, 1]`` of the mask's extent.

    Returns:
        ``[P, K]``; beyond the outermost pixel centres the border value, as ``F.interpolate`` clamps.
    """
    grid = (points * 2).sub_(1)[:, None]  # P x 1 x K x 2, grid_sample's [-1, 1]
    return F.grid_sample(masks[:, None], grid, "bilinear", "border", align_corners=False)[:, 0, 0]


def point_labels(masks: Tensor, points: Tensor) -> Tensor:
    """The label of the pixel each point falls in (a gather: bool masks are never copied to float).

    Args:
        masks: ``[P, H, W]`` bool (or float) targets.
        points: ``[P, K, 2]`` ``(x, y)`` in ``[0, 1]``.

    Returns:
        float32 ``[P, K]``.
    """
    height, width = masks.shape[-2:]
    cols = (points[..., 0] * width).long().clamp_(0, width - 1)
    rows = (points[..., 1] * height).long().clamp_(0, height - 1)
    return masks.flatten(1).gather(1, rows * width + cols).float()


def uncertain_points(
    logits: Tensor, num_points: int, oversample_ratio: float, importance_ratio: float, extent: Tensor
) -> Tensor:
    """Mask2Former's training points: ``importance_ratio · K`` of the most uncertain (logit nearest 0) among
    ``oversample_ratio · K`` uniform candidates, and the rest uniform, all inside each mask's valid extent.

    Args:
        logits: ``[P, h, w]`` mask logits (any stride; detached here).
        num_points: K.
        oversample_ratio: candidates per point (>= 1).
        importance_ratio: fraction of the K points taken by uncertainty, in ``[0, 1]``.
        extent: ``[P, 2]`` the valid ``(x, y)`` fraction of each mask's canvas (1 without padding).

    Returns:
        ``[P, K, 2]`` points.
    """
    num_masks, device = logits.shape[0], logits.device
    num_uncertain = int(num_points * importance_ratio)
    extent = extent.to(device=device, dtype=torch.float32)[:, None]  # P x 1 x 2
    uniform = torch.rand(num_masks, num_points - num_uncertain, 2, device=device).mul_(extent)
    if num_uncertain == 0:
        return uniform
    num_candidates = max(num_points, int(num_points * oversample_ratio))
    candidates = torch.rand(num_masks, num_candidates, 2, device=device).mul_(extent)
    with torch.no_grad():
        certainty = point_sample(logits.detach().float(), candidates).abs_()  # P x K·r
    # unsorted: the points' order does not matter, and CPU topk is ~2x faster without the sort
    chosen = certainty.topk(num_uncertain, dim=1, largest=False, sorted=False).indices  # P x K_u
    picked = candidates.gather(1, chosen[..., None].expand(-1, -1, 2))
    return torch.cat([picked, uniform], dim=1)
