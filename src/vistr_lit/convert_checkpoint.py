"""Authors' checkpoints → Lightning checkpoints, and ``model.init_from`` weight initialization.

    python -m vistr_lit.convert_checkpoint IN.pth OUT.ckpt [--ann train.json | --category-ids 1 2 ...]
                                           [--num-instances 10] [--nheads 8]

``IN.pth`` is a released VisTR model (``{'model': state_dict, 'args': ...}``, ``vistr.``-prefixed keys, 42
logits). ``OUT.ckpt`` loads with ``VisTRLitModule.load_from_checkpoint(OUT, map_location="cpu")`` and works
with ``python -m vistr_lit.eval ckpt_path=OUT.ckpt`` and ``python -m vistr_lit.infer``. The classes kept are
the categories of ``--ann`` (a YouTube-VIS json, ids and names) or ``--category-ids`` (default: every id in
the file). Training, post-processing and predictor settings are the config tree's defaults (conf/model/).
"""

import argparse
import sys
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf

from vistr_lit.lit_module import VisTRLitModule
from vistr_lit.models.build import upgrade_state_dict
from vistr_lit.models.checkpoint_import import (
    DEFAULT_NHEADS,
    DEFAULT_NUM_INSTANCES,
    CheckpointError,
    ImportReport,
    convert_vistr_state_dict,
    init_from_detr,
    load_checkpoint_file,
    state_dict_mismatches,
)
from vistr_lit.models.pretrained import RESNET_CLASSIFIER, load_torchvision_backbone

CONFIG_DIR = Path(__file__).resolve().parent / "conf"


def default_hparams() -> dict:
    """matcher / criterion / optim / postprocess / predictor blocks of the config tree's defaults."""
    model = OmegaConf.load(CONFIG_DIR / "model" / "vistr.yaml")
    matcher = OmegaConf.load(CONFIG_DIR / "model" / "matcher" / "sequence.yaml")
    blocks = {k: OmegaConf.to_container(model[k]) for k in ("criterion", "optim", "postprocess", "predictor")}
    return {"matcher": OmegaConf.to_container(matcher), **blocks}


def convert(
    in_path: str | Path,
    category_ids: list[int] | None = None,
    category_names: list[str] | None = None,
    num_instances: int = DEFAULT_NUM_INSTANCES,
    nheads: int | None = None,
) -> VisTRLitModule:
    """An authors' VisTR file → a ``VisTRLitModule`` holding exactly its weights (strict), every logit of
    the file's class head included, so that its class probabilities are the original's (``AuthorsClassHead``:
    the rows no kept category uses stay in the softmax's normalization)."""
    sd = load_checkpoint_file(in_path)
    ours, net = convert_vistr_state_dict(
        sd, category_ids=category_ids, num_instances=num_instances, source=str(in_path), keep_unused=True
    )
    num_classes = net.pop("num_classes")
    net["unused_class_logits"] = ours["class_embed.weight"].shape[0] - num_classes - 1
    if nheads is not None:
        net["nheads"] = nheads
    ids = list(category_ids) if category_ids is not None else list(range(1, num_classes + 1))
    names = list(category_names) if category_names is not None else [str(i) for i in ids]
    module = VisTRLitModule(net=net, category_ids=ids, category_names=names, **default_hparams())
    module.model.load_state_dict(ours, strict=True)
    return module


def save_lightning_checkpoint(module: VisTRLitModule, out_path: str | Path) -> None:
    """What ``Trainer.save_checkpoint`` writes for weights and hyper-parameters (no optimizer state)."""
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": L.__version__,
        "epoch": 0,
        "global_step": 0,
    }
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out_path)


def _is_lightning_checkpoint(obj: object) -> bool:
    return isinstance(obj, dict) and "state_dict" in obj and "pytorch-lightning_version" in obj


def _is_torchvision_resnet(sd: dict) -> bool:
    return "conv1.weight" in sd and "layer1.0.conv1.weight" in sd


# What a detector start gives (``model.init_scope=detector``): the parts of a DETR that the original main.py
# carries over into VisTR. The class head, the queries and the mask head keep the model's initialization.
DETECTOR_PARTS = ("backbone.", "input_proj.", "transformer.", "bbox_embed.")
INIT_SCOPES = ("all", "detector")


def initialize_from(module: VisTRLitModule, path: str | Path, scope: str = "all") -> ImportReport:
    """Initialize ``module.model`` from ``path`` (``model.init_from``), recognising the file's kind:

    - a Lightning checkpoint of this project: every ``model.`` weight, strictly (fine-tuning, other data);
    - a torchvision ImageNet ResNet (``resnet50-*.pth``): the backbone, strictly (the classifier ignored);
    - an authors' DETR or VisTR file: as the original main.py (class head and queries re-initialized).

    ``scope="detector"`` (``model.init_scope``) takes from a Lightning checkpoint only ``DETECTOR_PARTS``,
    each of the model's keys there strictly, as main.py takes a DETR: a start trained with another head,
    another clip length or other classes (``experiment=paper_small_start``).
    """
    if scope not in INIT_SCOPES:
        raise ValueError(f"model.init_scope must be one of {INIT_SCOPES}, got {scope!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.init_from: no such file {path}")
    raw = torch.load(path, map_location="cpu", weights_only=True) if path.suffix == ".ckpt" else None
    if _is_lightning_checkpoint(raw):
        prefix = "model."
        sd = {k[len(prefix) :]: v for k, v in raw["state_dict"].items() if k.startswith(prefix)}
        if scope == "detector":
            return _load_detector(module.model, sd, str(path))
        return _load_strict(module.model, sd, str(path))
    if scope != "all":
        raise CheckpointError(
            f"model.init_scope={scope} takes a Lightning checkpoint of this project; {path} is not one "
            "(an authors' DETR file is already loaded as a detector start with the default scope)"
        )
    sd = load_checkpoint_file(path)
    if _is_torchvision_resnet(sd):
        backbone = module.hparams.net.get("backbone")
        loaded = load_torchvision_backbone(module.model, sd, str(path), backbone)
        return ImportReport(loaded=loaded, ignored=sorted(k for k in sd if k.startswith(RESNET_CLASSIFIER)))
    return init_from_detr(module.model, sd)


def _load_detector(model: torch.nn.Module, sd: dict, source: str) -> ImportReport:
    """``DETECTOR_PARTS`` of ``sd`` into ``model``: each of the model's keys there must be in ``sd`` with its
    shape; everything else in ``sd`` is ignored and the rest of the model keeps its initialization."""
    given = {k: v for k, v in sd.items() if k.startswith(DETECTOR_PARTS)}
    missing, _, shapes = state_dict_mismatches(model, given, ())
    missing = [k for k in missing if k.startswith(DETECTOR_PARTS)]  # the rest of the model starts fresh
    if missing or shapes:
        raise CheckpointError(
            f"{source} does not fit the model as a detector start (model.init_scope=detector): "
            f"missing {missing}, mis-shaped {shapes}"
        )
    result = model.load_state_dict(given, strict=False)
    unused = set(result.unexpected_keys)  # detector keys the model has no place for (e.g. encoder layers 4-6)
    return ImportReport(
        loaded=sorted(set(given) - unused),
        initialized=sorted(result.missing_keys),
        ignored=sorted(set(sd) - set(given) | unused),
    )


def _load_strict(model: torch.nn.Module, sd: dict, source: str) -> ImportReport:
    sd = upgrade_state_dict(model, dict(sd))  # a checkpoint saved before the split keeps loading
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    shapes = [
        f"{k}: {list(sd[k].shape)} vs {list(expected[k].shape)}"
        for k in set(sd) & set(expected)
        if sd[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{source} does not fit the model: missing {missing}, unexpected {unexpected}, "
            f"mis-shaped {shapes}"
        )
    model.load_state_dict(sd, strict=True)
    return ImportReport(loaded=sorted(sd))


def _categories_from_ann(path: Path) -> tuple[list[int], list[str]]:
    from vistr_lit.data.ytvis import load_ytvis

    category_map = load_ytvis(path).category_map
    return list(category_map.ids), list(category_map.names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="the authors' VisTR .pth")
    parser.add_argument("output", type=Path, help="the Lightning .ckpt to write")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--ann", type=Path, help="YouTube-VIS json whose categories (ids, names) to keep")
    group.add_argument("--category-ids", type=int, nargs="+", help="category ids to keep, in class order")
    parser.add_argument("--num-instances", type=int, default=DEFAULT_NUM_INSTANCES, help="slots per frame N")
    parser.add_argument(
        "--nheads", type=int, default=None, help=f"attention heads (default: inferred or {DEFAULT_NHEADS})"
    )
    args = parser.parse_args(argv)
    ids, names = _categories_from_ann(args.ann) if args.ann else (args.category_ids, None)
    try:
        module = convert(args.input, ids, names, args.num_instances, args.nheads)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    save_lightning_checkpoint(module, args.output)
    net = module.hparams.net
    print(
        f"wrote {args.output}: {net['backbone']}, T={net['num_frames']}, N={net['num_instances']}, "
        f"K={len(module.hparams.category_ids)} classes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
