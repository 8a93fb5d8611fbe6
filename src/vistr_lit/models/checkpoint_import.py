"""Import of the authors' checkpoints: released VisTR models and the 384-wide DETR COCO initializations.

The authors' files hold ``{'model': state_dict, 'args': argparse.Namespace, ...}``. Their keys carry the
prefix ``vistr.`` (``detr.`` in DETR files) on the detector and none on the mask branch; their class head
has one logit per YouTube-VIS category id (index 0 unused) plus no-object last. Our model uses contiguous
class indices ``0..K-1`` with no-object at ``K``: importing keeps the rows of the chosen category ids, in
order, then the no-object row, so loaded weights predict the same categories.
"""

import argparse
import pickle
import re
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import torch
from torch import Tensor, nn

from vistr_lit.models.backbone import RESNET_ARCHS
from vistr_lit.models.vistr import NUM_INSTANCES

DEFAULT_NUM_INSTANCES = NUM_INSTANCES  # the released models: 10 instance slots per frame
DEFAULT_NHEADS = 8  # not recoverable from shapes when the mask branch has no attention maps
DETECTOR_PREFIXES = ("vistr.", "detr.")
AUTHOR_RENAMES = (("backbone.0.body.", "backbone.body."),)
# Present in DETR's segmentation head only (its last two layers, replaced by VisTR's DCN and 3-D head).
DETR_ONLY = ("mask_head.lay5.", "mask_head.out_lay.")
# Parameters main.py re-initializes or that DETR lacks; they keep the model's own initialization.
DETR_INIT_FRESH = (
    "class_embed.",
    "query_embed.",
    "mask_head.conv_offset.",
    "mask_head.dcn.",
    "insmask_head.",
    "group_query_embed.",
)
# Training-only parameters no published checkpoint has (Group DETR's extra query groups): a file without
# them still loads, and they keep the model's initialization.
TRAINING_ONLY = ("group_query_embed.",)
StateDict = dict[str, Tensor]


class AuthorsClassHead(nn.Linear):
    """The authors' class head: K kept rows, U rows of logits no kept class uses, no-object last.

    ``forward`` returns K + 1 logits: the K kept ones and ``logsumexp`` of the U unused and the no-object
    logit, so that a softmax over them gives each kept class exactly its probability under the softmax over
    all K + U + 1 logits (the original's normalization), and the no-object probability the rest.

    Args:
        in_features: the decoder width (hidden_dim).
        num_classes: K, the kept classes.
        num_unused: U, logits in the normalization only (the authors' unused index 0, categories not kept).
    """

    def __init__(self, in_features: int, num_classes: int, num_unused: int) -> None:
        super().__init__(in_features, num_classes + num_unused + 1)
        self.num_classes, self.num_unused = num_classes, num_unused

    def forward(self, x: Tensor) -> Tensor:
        """x ``[..., hidden_dim]`` -> logits ``[..., K+1]`` (no-object last)."""
        logits = super().forward(x)  # ... x (K + U + 1)
        kept, rest = logits.split([self.num_classes, self.num_unused + 1], dim=-1)
        return torch.cat([kept, rest.logsumexp(dim=-1, keepdim=True)], dim=-1)


def use_authors_class_head(model: nn.Module, num_unused: int) -> None:
    """Replace ``model.class_embed`` (``Linear(d, K+1)``) by an ``AuthorsClassHead`` with ``num_unused`` more
    rows (a fresh initialization: meant for loading an authors' file)."""
    old = model.class_embed
    model.class_embed = AuthorsClassHead(old.in_features, old.out_features - 1, num_unused)


class CheckpointError(ValueError):
    """A checkpoint does not fit the model (missing, unexpected or mis-shaped entries) or cannot be read."""


@dataclass
class ImportReport:
    """What an import did: keys loaded, keys left at the model's initialization, file keys ignored."""

    loaded: list[str] = field(default_factory=list)
    initialized: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a log: per list its count and the top-level modules its keys belong to."""

        def modules(keys: list[str]) -> str:
            return ", ".join(sorted({k.split(".")[0] for k in keys}))

        parts = [f"{len(keys)} {name} ({modules(keys)})" for name, keys in self.__dict__.items() if keys]
        return "; ".join(parts) or "nothing"


def load_checkpoint_file(path: str | PathLike) -> StateDict:
    """Read a checkpoint safely (``weights_only=True``; the authors' ``args`` Namespace is allow-listed).

    Returns:
        the state dict: the file's ``model`` entry, or the file itself when it is a plain state dict.
    Raises:
        CheckpointError: naming the file, when it cannot be read safely or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path}: cannot be loaded safely with weights_only=True: {err}") from err
    return _state_dict_of(obj, str(path))


def _state_dict_of(obj: object, source: str) -> StateDict:
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{source}: expected a state dict or a dict with a 'model' state dict, got {keys}"
        )
    return obj


def _resolve(path_or_sd: str | PathLike | dict) -> tuple[StateDict, str]:
    if isinstance(path_or_sd, dict):
        return _state_dict_of(path_or_sd, "state dict"), "state dict"
    return load_checkpoint_file(path_or_sd), str(path_or_sd)


def rename_author_keys(sd: StateDict, source: str = "state dict") -> StateDict:
    """Authors' key names -> ours (strip ``vistr.``/``detr.``, ``backbone.0.body.`` -> ``backbone.body.``)."""
    if not any(k.startswith(DETECTOR_PREFIXES) for k in sd):
        raise CheckpointError(
            f"{source}: no key starts with {DETECTOR_PREFIXES}; not an authors' VisTR/DETR file"
        )
    renamed = {}
    for key, value in sd.items():
        for prefix in DETECTOR_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        for old, new in AUTHOR_RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
        renamed[key] = value
    return renamed


def _count(sd: StateDict, pattern: str) -> int:
    indices = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(indices) + 1 if indices else 0


def _require(sd: StateDict, key: str, source: str) -> Tensor:
    if key not in sd:
        raise CheckpointError(f"{source}: missing key {key!r} needed to infer the architecture")
    return sd[key]


def infer_build_kwargs(
    sd: StateDict, num_instances: int = DEFAULT_NUM_INSTANCES, source: str = "state dict"
) -> dict:
    """``build_vistr`` arguments that fit a state dict in our naming (heads are not inferable unless the
    mask branch uses attention maps; T and N are split assuming ``num_instances`` slots per frame)."""
    bottleneck = "backbone.body.layer1.0.conv3.weight" in sd
    blocks = tuple(_count(sd, rf"backbone\.body\.layer{i}\.(\d+)\.") for i in range(1, 5))
    names = [
        n
        for n, (block, layers) in RESNET_ARCHS.items()
        if layers == blocks and (block.expansion > 1) == bottleneck
    ]
    if not names:
        raise CheckpointError(
            f"{source}: backbone with blocks {blocks} (bottleneck={bottleneck}) is not a known ResNet"
        )
    hidden_dim = _require(sd, "input_proj.weight", source).shape[0]
    enc_layers = _count(sd, r"transformer\.encoder\.layers\.(\d+)\.")
    dec_layers = _count(sd, r"transformer\.decoder\.layers\.(\d+)\.")
    ffn_key = f"transformer.{'encoder' if enc_layers else 'decoder'}.layers.0.linear1.weight"
    num_queries = _require(sd, "query_embed.weight", source).shape[0]
    if num_queries % num_instances:
        raise CheckpointError(
            f"{source}: {num_queries} queries is not a multiple of num_instances={num_instances}"
        )
    attention = "bbox_attention.q_linear.weight" in sd
    lay1_in = _require(sd, "mask_head.lay1.weight", source).shape[1]
    # Options beyond the original appear only when a state dict needs them (the authors' never do).
    extra: dict = {}
    if "mask_head.conv_offset.weight" not in sd:
        extra["mask_deformable"] = False
    if any(k.startswith("backbone.") and k.endswith("num_batches_tracked") for k in sd):
        extra["backbone_norm"] = "batch"
    return extra | {
        "num_classes": _require(sd, "class_embed.weight", source).shape[0] - 1,
        "num_frames": num_queries // num_instances,
        "num_instances": num_instances,
        "backbone": names[0],
        "hidden_dim": hidden_dim,
        "nheads": lay1_in - hidden_dim if attention else DEFAULT_NHEADS,
        "enc_layers": enc_layers,
        "dec_layers": dec_layers,
        "dim_feedforward": _require(sd, ffn_key, source).shape[0],
        "mask_fusion": "attention" if attention else "concat",
        "temporal_fusion": "conv3d" if _require(sd, "insmask_head.0.weight", source).shape[2] > 1 else "none",
    }


def convert_vistr_state_dict(
    sd: StateDict,
    num_classes_out: int | None = None,
    category_ids: list[int] | None = None,
    num_instances: int = DEFAULT_NUM_INSTANCES,
    source: str = "state dict",
    keep_unused: bool = False,
) -> tuple[StateDict, dict]:
    """Convert an authors' VisTR state dict to our naming and class convention.

    Args:
        sd: the authors' state dict (``vistr.``-prefixed detector, 1 + ids + no-object logits).
        num_classes_out: keep category ids ``1..num_classes_out`` (default: all the file has).
        category_ids: or the file's logit indices (= YouTube-VIS category ids) to keep, in our class order.
        num_instances: N slots per frame, to split the file's T·N queries.
        keep_unused: also keep the file's other rows (index 0, ids not kept), in file order, between the
            kept rows and no-object: the layout of ``AuthorsClassHead``. False drops them.
    Returns:
        (state dict for our model, ``build_vistr`` keyword arguments that fit it; ``num_classes`` is the
        number of kept categories, the unused rows are ``class_embed.weight``'s others).
    """
    ours = rename_author_keys(sd, source)
    num_logits = _require(ours, "class_embed.weight", source).shape[0]
    max_id = num_logits - 2  # index 0 unused, no-object last
    if num_classes_out is not None and category_ids is not None:
        raise ValueError("pass num_classes_out or category_ids, not both")
    ids = list(range(1, (num_classes_out or max_id) + 1)) if category_ids is None else list(category_ids)
    bad = [i for i in ids if not 1 <= i <= max_id]
    if bad or len(set(ids)) != len(ids) or not ids:
        raise CheckpointError(f"{source}: category ids must be distinct in 1..{max_id}, got {ids}")
    unused = [i for i in range(num_logits - 1) if i not in ids] if keep_unused else []
    rows = torch.tensor([*ids, *unused, num_logits - 1])
    ours["class_embed.weight"] = ours["class_embed.weight"][rows].clone()
    ours["class_embed.bias"] = _require(ours, "class_embed.bias", source)[rows].clone()
    return ours, infer_build_kwargs(ours, num_instances, source) | {"num_classes": len(ids)}


def state_dict_mismatches(model: nn.Module, sd: StateDict, skip: tuple[str, ...]) -> tuple[list, list, list]:
    """Keys of ``model`` missing from ``sd``, keys of ``sd`` the model lacks, and ``"key: file [..] vs model
    [..]"`` for mis-shaped ones; keys starting with a ``skip`` prefix are left out on both sides."""
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
    given = {k: v for k, v in sd.items() if not k.startswith(skip)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(
        f"{k}: file {list(given[k].shape)} vs model {list(expected[k].shape)}"
        for k in set(expected) & set(given)
        if given[k].shape != expected[k].shape
    )
    return missing, unexpected, shapes


def _raise_if_mismatched(source: str, missing: list, unexpected: list, shapes: list) -> None:
    if missing or unexpected or shapes:
        parts = [f"{source} does not fit the model:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
            if items:
                parts.append(f"  {len(items)} {title}: " + ", ".join(items))
        raise CheckpointError("\n".join(parts))


def load_vistr_checkpoint(
    model: nn.Module, path_or_sd: str | PathLike | dict, category_ids: list[int] | None = None
) -> ImportReport:
    """Load a full VisTR checkpoint strictly: every key consumed, every parameter and buffer filled
    (except training-only extra query groups, which keep their initialization when the file lacks them).

    Accepts the authors' files/state dicts (converted, see ``convert_vistr_state_dict``; ``category_ids``
    selects their classes, default ``1..model.num_classes``; a model with an ``AuthorsClassHead`` keeps the
    file's other logits, for the original's normalization) or a state dict already in our naming.
    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped key.
    """
    sd, source = _resolve(path_or_sd)
    if any(k.startswith(DETECTOR_PREFIXES) for k in sd):
        num_logits = sd.get("vistr.class_embed.weight", sd.get("detr.class_embed.weight"))
        if category_ids is None and num_logits is not None and num_logits.shape[0] - 2 != model.num_classes:
            raise CheckpointError(
                f"{source}: the file has {num_logits.shape[0] - 2} categories, "
                f"the model {model.num_classes}; pass category_ids to choose the file's categories to keep"
            )
        num_instances = getattr(model, "num_instances", DEFAULT_NUM_INSTANCES)
        keep_unused = isinstance(getattr(model, "class_embed", None), AuthorsClassHead)
        sd, _ = convert_vistr_state_dict(
            sd, category_ids=category_ids, num_instances=num_instances, source=source, keep_unused=keep_unused
        )
    fresh = sorted(k for k in model.state_dict() if k.startswith(TRAINING_ONLY) and k not in sd)
    missing, unexpected, shapes = state_dict_mismatches(model, sd, ())
    _raise_if_mismatched(source, [k for k in missing if k not in fresh], unexpected, shapes)
    model.load_state_dict(sd, strict=not fresh)
    return ImportReport(loaded=sorted(sd), initialized=fresh)


def init_from_detr(model: nn.Module, path_or_sd: str | PathLike | dict) -> ImportReport:
    """Initialize from the authors' 384-wide COCO DETR (segmentation) checkpoint, as the original main.py.

    The class head and query embeddings are dropped (they keep the model's initialization), DETR's
    ``mask_head.lay5``/``out_lay`` are ignored, and ``conv_offset``, ``dcn`` and ``insmask_head`` are new.
    Every other parameter must be in the file with the model's shape.
    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped key.
    """
    sd, source = _resolve(path_or_sd)
    sd = rename_author_keys(sd, source)
    ignored = sorted(k for k in sd if k.startswith(DETR_ONLY + DETR_INIT_FRESH))
    _raise_if_mismatched(source, *state_dict_mismatches(model, sd, DETR_ONLY + DETR_INIT_FRESH))
    loaded = {k: v for k, v in sd.items() if k not in ignored}
    result = model.load_state_dict(loaded, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # guaranteed by the check above
    return ImportReport(loaded=sorted(loaded), initialized=sorted(result.missing_keys), ignored=ignored)


def random_reference_state_dict(key_list: str | PathLike, seed: int = 0) -> StateDict:
    """A random state dict with the keys and shapes of a ``key [d0,d1,...]`` list (one key per line).

    Batch-norm variances are positive so the result is usable; meant for tests and benchmarks.
    """
    generator = torch.Generator().manual_seed(seed)
    sd = {}
    for line_no, line in enumerate(Path(key_list).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        match = re.fullmatch(r"(\S+) \[([\d,]*)\]", line.strip())
        if not match:
            raise ValueError(f"{key_list}:{line_no}: expected 'key [d0,d1,...]', got {line!r}")
        shape = [int(d) for d in match.group(2).split(",") if d]
        value = torch.randn(shape, generator=generator) * 0.02
        if match.group(1).endswith("running_var"):
            value = value.abs() + 1.0
        sd[match.group(1)] = value
    return sd
