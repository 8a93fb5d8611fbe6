"""A per-query mask MLP over relative coordinates (not in the paper: CondInst's dynamic mask head).

The dot-product head's ``mask_coords=True``.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

COORD_CHANNELS = 4  # (dx, dy) from the box centre in frame fractions and in box sizes
REL_BOX_CLAMP = 4.0  # the offsets in box sizes are clamped to +-4
REL_MIN_BOX = 0.02  # and measured in boxes at least 2 % of the frame wide and high


class RelativeCoordMaskMLP(nn.Module):
    """A per-query mask MLP over pixel embeddings and coordinates relative to the query's own box (not in the
    paper: CondInst's dynamic mask head, Tian et al., ECCV 2020, added to the dot-product masks).

    A dot product of a query's embedding with pixel embeddings cannot tell two instances of the same
    appearance apart: two overlapping crosses of one texture light up together. Here each query also
    generates the weights of a small MLP that reads, at every pixel, the pixel embedding and where the pixel
    lies relative to the query's predicted box, so a mask can prefer the instance around its own box. Its
    output is added to the dot-product logits. The generator's rows of the last layer start at zero, so an
    untrained MLP adds nothing and the head starts as the plain dot product.

    Coordinates (``COORD_CHANNELS``): the offset from the box centre in frame fractions and the same offset
    in box sizes (clamped to ``±REL_BOX_CLAMP``). The box is detached: the masks do not move the boxes.

    Args:
        query_dim: C, width of the decoder outputs.
        pixel_dim: D, width of the pixel embeddings.
        hidden_dim: width of the MLP's two hidden layers (8, as CondInst's). The generated weights are
            scaled by 1 / sqrt(fan-in), so that a generator of standard init gives layers of standard init.
    """

    def __init__(self, query_dim: int, pixel_dim: int, hidden_dim: int = 8) -> None:
        super().__init__()
        self.pixel_dim = pixel_dim
        fan_in = pixel_dim + COORD_CHANNELS
        # (weights, biases) of layers [D + 4 -> h], [h -> h], [h -> 1]
        self.shapes = [
            (hidden_dim, fan_in),
            (hidden_dim,),
            (hidden_dim, hidden_dim),
            (hidden_dim,),
            (1, hidden_dim),
            (1,),
        ]
        self.fan_ins = [fan_in, 1, hidden_dim, 1, hidden_dim, 1]
        sizes = [math.prod(s) for s in self.shapes]
        self.generator = nn.Linear(query_dim, sum(sizes))
        with torch.no_grad():  # the last layer's weights and bias start at zero
            last = sizes[-1] + sizes[-2]
            self.generator.weight[-last:].zero_()
            self.generator.bias[-last:].zero_()
        self.sizes = sizes

    @staticmethod
    def axis_offsets(centre: Tensor, size: Tensor, grid: Tensor) -> tuple[Tensor, Tensor]:
        """Offsets along one axis (x or y) from each query's box centre.

        Args:
            centre, size: ``[F, N]`` the boxes' centres and sizes along the axis (normalized).
            grid: ``[F, L]`` pixel centres along the axis in fractions of each frame's valid size.
        Returns:
            ``[F, N, L]`` twice: the offsets in frame fractions, then in box sizes (clamped).
        """
        offset = grid[:, None, :] - centre[..., None]
        in_boxes = offset / size.clamp(min=REL_MIN_BOX)[..., None]
        return offset, in_boxes.clamp(-REL_BOX_CLAMP, REL_BOX_CLAMP)

    def forward(self, queries: Tensor, pixels: Tensor, boxes: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """Args:
            queries: ``[F, N, C]`` each frame's N decoder outputs.
            pixels: ``[F, D, h, w]`` that frame's pixel embeddings.
            boxes: ``[F, N, 4]`` the queries' normalized cxcywh boxes (detached: masks do not move boxes).
            rows, cols: ``[F, h]`` and ``[F, w]`` the pixel centres in fractions of each frame's valid size.
        Returns:
            ``[F, N, h, w]`` mask logits to add to the dot product's.
        """
        f, n = queries.shape[:2]
        h, w = pixels.shape[-2:]
        params = self.generator(queries).split(self.sizes, dim=-1)
        w1, b1, w2, b2, w3, b3 = (
            p.view(f, n, *s) / math.sqrt(fan) for p, s, fan in zip(params, self.shapes, self.fan_ins)
        )
        d = self.pixel_dim
        x = torch.einsum("fnkd,fdhw->fnkhw", w1[..., :d], pixels.to(w1.dtype))
        # the coordinate channels (dx, dy, dx/w, dy/h) enter the first layer linearly and each depends on one
        # axis: their term is a per-column plus a per-row term, never an [F, N, 4, h, w] tensor
        cx, cy, bw, bh = boxes.float().unbind(-1)
        dx, dxb = self.axis_offsets(cx, bw, cols.float())  # F x N x w
        dy, dyb = self.axis_offsets(cy, bh, rows.float())  # F x N x h
        wc = w1[..., d:, None]  # F x N x k x 4 x 1
        x_term = wc[..., 0, :] * dx[:, :, None].to(wc.dtype) + wc[..., 2, :] * dxb[:, :, None].to(wc.dtype)
        y_term = wc[..., 1, :] * dy[:, :, None].to(wc.dtype) + wc[..., 3, :] * dyb[:, :, None].to(wc.dtype)
        x = F.relu(x + (y_term + b1[..., None])[..., None] + x_term[..., None, :])  # F x N x k x h x w
        x = F.relu(torch.einsum("fnjk,fnkhw->fnjhw", w2, x) + b2[..., None, None])
        return torch.einsum("fnk,fnkhw->fnhw", w3[:, :, 0], x) + b3[..., None]
