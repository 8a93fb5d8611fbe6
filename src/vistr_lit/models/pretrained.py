"""Where a training run's weights start: the paper's pretrained starts, checked before any work is done.

The paper initializes VisTR from the authors' COCO-trained DETR (``model.init_from=PATH``). Without that
file, the backbone starts from torchvision's ImageNet weights (``model.net.pretrained_backbone``, e.g.
``IMAGENET1K_V1``), fetched through torchvision's weights API into the torch hub cache
(``$TORCH_HOME/hub/checkpoints``), whose download checks the file's SHA-256 against the hash in its name.
A backbone with frozen batch norm (FrozenBatchNorm2d: identity statistics at random initialization) would
train unnormalized from random weights, so that start is refused unless asked for explicitly.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import torch
import torchvision
from torch import Tensor, nn
from torch.hub import HASH_REGEX

from vistr_lit.errors import UserError
from vistr_lit.models.checkpoint_import import CheckpointError

NO_WEIGHTS = (None, "none")  # model.net.pretrained_backbone values meaning "random initialization"
BACKBONE_PREFIX = "backbone.body."
RESNET_CLASSIFIER = ("fc.",)  # torchvision ResNet keys VisTR's backbone does not have
HASH_CHUNK = 1 << 20


class PretrainedWeightsError(UserError, RuntimeError):
    """A run's pretrained start is unavailable or refused; the message says what to do."""


@dataclass(frozen=True)
class Start:
    """A training run's initial weights.

    Attributes:
        kind: ``"init_from"`` (a file given by the user: DETR, VisTR, torchvision ResNet or Lightning
            checkpoint), ``"torchvision"`` (ImageNet backbone from the torch hub cache) or ``"random"``.
        path: the file, or None for ``"random"``.
        description: one line for the training log.
    """

    kind: str
    path: Path | None
    description: str


def torchvision_weights(backbone: str, weights_name: str) -> torchvision.models.WeightsEnum:
    """torchvision's weights entry: ("resnet50", "IMAGENET1K_V1") -> ``ResNet50_Weights.IMAGENET1K_V1``."""
    try:
        enum = torchvision.models.get_model_weights(backbone)
    except ValueError as err:
        raise PretrainedWeightsError(
            f"model.net.backbone={backbone!r} has no published torchvision weights: set "
            "model.net.pretrained_backbone=none with a trainable batch norm (model.net.backbone_norm=batch)"
        ) from err
    names = [w.name for w in enum]
    if weights_name not in names:
        raise PretrainedWeightsError(
            f"model.net.pretrained_backbone={weights_name!r}: {enum.__name__} has {names}"
        )
    return enum[weights_name]


def cache_file(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torchvision keeps (and looks for) the weights file: ``<torch hub dir>/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def hash_matches(path: Path) -> bool:
    """Whether the file's SHA-256 starts with the hash in its name (``resnet50-0676ba61.pth``), as
    torch.hub checks a download; a file placed by hand gets the same check."""
    match = HASH_REGEX.search(path.name)
    if match is None:
        return True
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest().startswith(match.group(1))


def fetch_torchvision_weights(backbone: str, weights_name: str) -> Path:
    """The cached weights file, downloaded once through torchvision (hash checked) when absent.

    Raises:
        PretrainedWeightsError: no cached file and no download (naming the file and where to put it), or a
            cached file whose hash does not match its name.
    """
    weights = torchvision_weights(backbone, weights_name)
    path = cache_file(weights)
    if path.is_file():
        if not hash_matches(path):
            raise PretrainedWeightsError(
                f"{path}: its SHA-256 does not start with the hash in its name (a partial or different "
                f"file); delete it and rerun to download {weights.url}"
            )
        return path
    try:
        weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except (URLError, OSError, RuntimeError) as err:
        raise PretrainedWeightsError(
            f"the run starts from torchvision's {type(weights).__name__}.{weights.name} "
            f"(model.net.pretrained_backbone={weights_name}), which is not in the torch cache and could "
            f"not be downloaded ({err}). Download {weights.url} on a machine with network access and put "
            f"it at {path} (the torch hub cache: $TORCH_HOME/hub/checkpoints, TORCH_HOME defaults to "
            "~/.cache/torch), or start from the authors' DETR: model.init_from=PATH (docs/ablations.md)"
        ) from err
    return path


def resolve_start(net: dict, init_from: str | None, allow_random_frozen_bn: bool) -> Start:
    """Decide (and fetch) a training run's start, before any other work.

    Args:
        net: ``build_vistr`` arguments; reads ``backbone``, ``pretrained_backbone`` and ``backbone_norm``.
        init_from: a user's weights file (``model.init_from``); it wins over the ImageNet backbone.
        allow_random_frozen_bn: accept a randomly initialized backbone with frozen batch norm.
    Raises:
        PretrainedWeightsError: see ``fetch_torchvision_weights``; ``init_from`` not a file; or a random
            frozen-BN backbone not allowed.
    """
    if init_from is not None:
        if not Path(init_from).is_file():
            raise PretrainedWeightsError(
                f"model.init_from: no such file {init_from} (preset=paper_small's start is made by "
                "`make paper-small-start`; other starts: docs/ablations.md)"
            )
        return Start("init_from", Path(init_from), f"model.init_from={init_from}")
    backbone, weights_name = net.get("backbone", "resnet50"), net.get("pretrained_backbone")
    if weights_name not in NO_WEIGHTS:
        path = fetch_torchvision_weights(backbone, weights_name)
        return Start("torchvision", path, f"{backbone} {weights_name} (torchvision ImageNet) from {path}")
    if net.get("backbone_norm", "frozen") == "frozen" and not allow_random_frozen_bn:
        raise PretrainedWeightsError(
            f"model.net.backbone={backbone} starts from random weights with frozen batch norm "
            "(model.net.pretrained_backbone=none, model.net.backbone_norm=frozen): its identity statistics "
            "leave the ResNet unnormalized. Start from pretrained weights (model.net.pretrained_backbone="
            "IMAGENET1K_V1, or the authors' DETR with model.init_from=PATH), train the batch norm "
            "(model.net.backbone_norm=batch), or add model.allow_random_frozen_bn=true to train it anyway"
        )
    return Start("random", None, f"{backbone} from random weights ({net.get('backbone_norm', 'frozen')} BN)")


def load_torchvision_backbone(
    model: nn.Module, sd: dict[str, Tensor], source: str, backbone: str = "the backbone"
) -> list[str]:
    """Load a torchvision ResNet state dict into ``model.backbone.body``, strictly (classifier ignored).

    Returns:
        the model keys loaded.
    Raises:
        CheckpointError: when the file's keys or shapes do not fit the backbone (named ``backbone``).
    """
    body = {BACKBONE_PREFIX + k: v for k, v in sd.items() if not k.startswith(RESNET_CLASSIFIER)}
    body = {k: v for k, v in body.items() if not k.endswith("num_batches_tracked")}
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(BACKBONE_PREFIX)}
    missing, unexpected = sorted(set(expected) - set(body)), sorted(set(body) - set(expected))
    shapes = sorted(k for k in set(body) & set(expected) if body[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{source}: a torchvision ResNet that does not fit backbone {backbone}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, mis-shaped {shapes[:5]} ({len(missing)}, {len(unexpected)}, "
            f"{len(shapes)} in all)"
        )
    model.load_state_dict(body, strict=False)
    return sorted(body)


def load_torchvision_file(model: nn.Module, path: Path, backbone: str) -> list[str]:
    """``load_torchvision_backbone`` from a cached torchvision file (``weights_only=True``)."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return load_torchvision_backbone(model, sd, str(path), backbone)
