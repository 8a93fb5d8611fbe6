"""The paper's query/memory attention maps at the frame's cell scale (not in the paper).

The paper's mask head concatenates each query's attention maps to the memory features. The maps sum to 1
over heads × cells, so a fresh map holds ~1/(heads·h·w) a cell beside features of order 1, and the mask head
hardly sees which instance it is segmenting until the maps have grown sharp. The paper's maps come trained
(from DETR's segmentation model); a mask head trained with fresh maps (``preset=paper_small``) starts with
them multiplied by the frame's number of valid cells, a mean of 1/heads a cell. On frames of one size this is
the paper's network with the mask head's first-conv weights on the map channels h·w times larger: another
start of the same function, with the same parameters and state-dict keys.
"""

from torch import Tensor

from vistr_lit.models.mask_head import MHAttentionMap


class CellScaledAttentionMap(MHAttentionMap):
    """``MHAttentionMap`` whose maps are multiplied by each frame's number of valid memory cells."""

    def forward(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """As ``MHAttentionMap.forward``; each query's maps sum to the frame's number of valid cells."""
        weights = super().forward(q, k, mask)
        if mask is None:
            return weights * (k.shape[-2] * k.shape[-1])
        valid = (~mask).sum(dim=(-2, -1)).to(weights.dtype)  # B'
        return weights * valid[:, None, None, None, None]
