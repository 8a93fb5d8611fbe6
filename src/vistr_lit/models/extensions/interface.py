"""The one interface between the paper's network and a mask head beside it.

``VisTR`` runs the paper's path (backbone, 3-D position encoding, transformer, class and box heads). Its mask
branch is the paper's attention-map head unless the network is built with a ``MaskExtension``; the
extension then gets the clip's memory and backbone features once (``prepare``), may restrict the decoder's
cross-attention layer by layer (``decoder_masks``), and turns the decoder outputs into mask logits
(``forward``).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn


@dataclass(frozen=True)
class MaskInputs:
    """What the network hands a mask head, once per forward pass (B clips of T frames).

    Attributes:
        memory: ``[B, T·h·w, C]`` encoder memory, frame-major (token ``t·h·w + y·w + x``).
        memory_size: (h, w), the memory's grid at the backbone's last stride.
        features: the backbone's ``[layer1, layer2, layer3, layer4]``, each ``[B·T, C_l, h_l, w_l]``.
        stem: ``[B·T, C_s, h_s, w_s]`` the backbone's stem (stride 2), only for a head with ``uses_stem``.
        frames: ``[B·T, 3, H, W]`` the normalized frames, zero-padded bottom/right.
        sizes: int64 ``[B, 2]`` valid (height, width) of each clip, or None (nothing padded).
        token_mask: bool ``[B, T·h·w]``, True on padded memory tokens, or None.
    """

    memory: Tensor
    memory_size: tuple[int, int]
    features: Sequence[Tensor]
    stem: Tensor | None
    frames: Tensor
    sizes: Tensor | None
    token_mask: Tensor | None


class MaskExtension(nn.Module):
    """A mask head that replaces the paper's attention-map head (``models/extensions``).

    Attributes:
        mask_stride: s, the stride of the ``pred_masks`` it predicts.
        uses_stem: it reads ``MaskInputs.stem`` (the backbone then returns its stem too).
    """

    mask_stride: int
    uses_stem: bool = False

    def prepare(self, inputs: MaskInputs) -> Any:
        """The state computed once per forward pass and shared by every decoder layer and query group
        (e.g. pixel embeddings); ``decoder_masks`` and ``forward`` receive it."""
        raise NotImplementedError

    def decoder_masks(self, state: Any) -> Callable[[Tensor], Tensor] | None:
        """The decoder's cross-attention hook: a function from one decoder layer's normed outputs
        ``[B, G·Q, C]`` to the next layer's bool ``[B, G·Q, T·h·w]`` (True where a query may see a memory
        token), or None: every layer sees the whole memory, as in the paper."""
        return None

    def forward(self, state: Any, hs: Tensor, layers: Sequence[dict]) -> list[dict]:
        """Mask logits from the decoder outputs.

        Args:
            state: from ``prepare``.
            hs: ``[L', B, Q, C]`` the decoder outputs of the L' layers whose predictions the network returns
                (the last alone without auxiliary outputs), Q = T·N queries, ``q = t·N + i``.
            layers: their L' prediction dicts, ``pred_logits [B, Q, K+1]`` and ``pred_boxes [B, Q, 4]``.
        Returns:
            L' dicts of entries to set in the layers' predictions: ``pred_masks [B, Q, ⌈H/s⌉, ⌈W/s⌉]`` mask
            logits for the last layer (and any other it supervises), optionally a refined ``pred_logits``.
        """
        raise NotImplementedError
