"""Group DETR's extra query groups (not in the paper; Chen et al., ICCV 2023).

In training, G - 1 extra groups of Q = T·N queries decode the same memory, each attending only to itself
(``TransformerDecoderLayer``'s ``groups``) and matched on its own (``SetCriterion`` averages the groups'
losses): more positive matches per step for a cheap decoder. In eval mode only the main group runs, so the
outputs are those of G = 1.
"""

import torch
from torch import Tensor, nn


class QueryGroups(nn.Embedding):
    """The learned query positions of the G - 1 extra groups, ``weight [(G-1)·Q, C]``.

    Args:
        groups: G >= 2, the main group included.
        num_queries: Q per group.
        hidden_dim: C.
    """

    def __init__(self, groups: int, num_queries: int, hidden_dim: int) -> None:
        if groups < 2:
            raise ValueError(f"QueryGroups needs groups >= 2, got {groups}")
        super().__init__((groups - 1) * num_queries, hidden_dim)
        self.groups = groups

    def extend(self, queries: Tensor) -> tuple[Tensor, int]:
        """The main group's ``[Q, C]`` queries followed by the extra groups': ``[G·Q, C]``, and G."""
        return torch.cat([queries, self.weight]), self.groups

    @staticmethod
    def merge(outputs: list[dict]) -> dict:
        """The main group's prediction dict, the other groups' under ``group_outputs``."""
        main = outputs[0]
        main["group_outputs"] = outputs[1:]
        return main
