"""Ideas beside the paper, each in its own module behind a small interface (``interface.MaskExtension``).

- ``dot_product``: dot-product masks (``DotProductMaskHead``) and its options, built from
  ``pixel_decoder``, ``mask_upsampler``, ``mask_coords`` and ``mask_classifier``.
- ``query_groups``: Group DETR's extra query groups in training.
"""

from vistr_lit.models.extensions.dot_product import DotProductMaskHead
from vistr_lit.models.extensions.interface import MaskExtension, MaskInputs
from vistr_lit.models.extensions.query_groups import QueryGroups

__all__ = ["DotProductMaskHead", "MaskExtension", "MaskInputs", "QueryGroups"]
