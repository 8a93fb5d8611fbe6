"""DETR's MLP: the box head, and the dot-product mask head's query embedding."""

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """Linear layers with ReLU between them.

    Args:
        input_dim, hidden_dim, output_dim: widths of the input, the hidden layers and the output.
        num_layers: linear layers (3 in DETR's box head).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs))

    def forward(self, x: Tensor) -> Tensor:
        """``[..., input_dim]`` -> ``[..., output_dim]``."""
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else torch.relu(layer(x))
        return x
