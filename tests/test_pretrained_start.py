"""Paper rows start from pretrained weights; the start is decided and fetched before any other work.

torchvision's weights API and torch.hub run for real; only the download (``torch.hub.download_url_to_file``)
and, for a stand-in file, its hash check are replaced.
"""

from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from vistr_lit.models import build_vistr
from vistr_lit.models import pretrained as pretrained_mod
from vistr_lit.models.checkpoint_import import CheckpointError
from vistr_lit.models.pretrained import PretrainedWeightsError, load_torchvision_file, resolve_start
from vistr_lit.train import prepare_start, run_training

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "src" / "vistr_lit" / "conf")
PAPER_ROWS = ["vistr_r50", "vistr_r101"] + sorted(
    p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("ablate_*.yaml")
)
ROW_WEIGHTS = {"vistr_r101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1}


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def cached(weights, torch_home: Path) -> Path:
    return torch_home / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch cache, and no network: a download attempt fails as it would offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, *args, **kwargs):
        raise URLError("network unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path


@pytest.mark.parametrize("row", PAPER_ROWS)
def test_every_paper_row_starts_from_the_cached_imagenet_backbone(row, torch_home, monkeypatch, tmp_path):
    weights = ROW_WEIGHTS.get(row, torchvision.models.ResNet50_Weights.IMAGENET1K_V1)
    path = cached(weights, torch_home)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"stand-in for the released file")
    monkeypatch.setattr(pretrained_mod, "hash_matches", lambda p: p == path)
    cfg = compose_train([f"+experiment={row}"])
    assert cfg.model.net.backbone_norm == "frozen" and cfg.model.init_from is None
    start = prepare_start(cfg)
    assert (start.kind, start.path) == ("torchvision", path)
    # the authors' DETR, when given, wins and needs no ImageNet file
    detr_file = tmp_path / "384_coco_r50.pth"
    detr_file.write_bytes(b"stand-in")
    detr = compose_train([f"+experiment={row}", f"model.init_from={detr_file}"])
    assert prepare_start(detr).kind == "init_from"


def test_paper_small_without_its_start_stops_before_any_work(monkeypatch, tmp_path):
    cfg = compose_train(
        ["+experiment=ablate_baseline", "preset=paper_small", f"paths.log_dir={tmp_path / 'outputs'}"]
    )
    assert cfg.model.init_scope == "detector"

    def reached(*args, **kwargs):
        raise AssertionError("data was built before the start was checked")

    monkeypatch.setattr("vistr_lit.train.build_datamodule", reached)
    with pytest.raises(PretrainedWeightsError, match="no such file .*paper_small.*make paper-small-start"):
        run_training(cfg, tmp_path / "run")


def test_no_file_and_no_network_stops_before_any_work(torch_home, monkeypatch, tmp_path):
    cfg = compose_train(["+experiment=vistr_r50", f"paths.data_dir={tmp_path / 'data'}"])

    def reached(*args, **kwargs):
        raise AssertionError("data was built before the start was checked")

    monkeypatch.setattr("vistr_lit.train.build_datamodule", reached)
    expected = cached(torchvision.models.ResNet50_Weights.IMAGENET1K_V1, torch_home)
    with pytest.raises(PretrainedWeightsError) as error:
        run_training(cfg, tmp_path / "run")
    message = str(error.value)
    assert str(expected) in message and "ResNet50_Weights.IMAGENET1K_V1" in message
    assert torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url in message and "model.init_from" in message
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_a_cached_file_whose_hash_does_not_match_its_name_is_refused(torch_home):
    path = cached(torchvision.models.ResNet50_Weights.IMAGENET1K_V1, torch_home)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a truncated download")
    with pytest.raises(PretrainedWeightsError, match="SHA-256 does not start with the hash"):
        prepare_start(compose_train(["+experiment=vistr_r50"]))


def test_random_frozen_bn_is_refused_unless_asked_for(torch_home):
    random_r50 = ["+experiment=vistr_r50", "model.net.pretrained_backbone=none"]
    with pytest.raises(PretrainedWeightsError, match="allow_random_frozen_bn=true"):
        prepare_start(compose_train(random_r50))
    start = prepare_start(compose_train([*random_r50, "model.allow_random_frozen_bn=true"]))
    assert (start.kind, start.path) == ("random", None)
    trained_bn = compose_train([*random_r50, "model.net.backbone_norm=batch"])
    assert prepare_start(trained_bn).kind == "random"


def test_the_quickstart_trains_its_batch_norm_from_random_weights(torch_home):
    cfg = compose_train(["+experiment=quickstart"])
    assert cfg.model.net.pretrained_backbone is None and cfg.model.net.backbone_norm == "batch"
    assert prepare_start(cfg).kind == "random"


def test_evaluation_and_resumes_fetch_nothing(torch_home):
    assert prepare_start(compose_train(["+experiment=vistr_r50", "train=false"])) is None
    assert prepare_start(compose_train(["+experiment=vistr_r50", "ckpt_path=last"])) is None


def test_a_downloaded_file_is_loaded_into_the_backbone(tmp_path, monkeypatch):
    """The first run downloads through torchvision (the download replaced here) and loads the weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet18()
    downloads = []

    def download(url, dst, hash_prefix=None, progress=True):
        downloads.append((url, hash_prefix))
        torch.save(imagenet.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    monkeypatch.setattr(pretrained_mod, "hash_matches", lambda path: True)
    net = {"backbone": "resnet18", "pretrained_backbone": "IMAGENET1K_V1", "backbone_norm": "frozen"}
    start = resolve_start(net, init_from=None, allow_random_frozen_bn=False)
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    assert downloads == [(weights.url, weights.url.rsplit("-", 1)[-1].split(".")[0])]
    assert start.path == cached(weights, tmp_path) and start.path.is_file()
    assert resolve_start(net, None, False).path == start.path and len(downloads) == 1  # cached now

    model = build_vistr(num_classes=2, num_frames=2, backbone="resnet18", hidden_dim=48, nheads=4,
                        enc_layers=1, dec_layers=1, dim_feedforward=16)  # fmt: skip
    load_torchvision_file(model, start.path, "resnet18")
    assert torch.equal(model.backbone.body.layer3[1].conv2.weight, imagenet.layer3[1].conv2.weight)
    assert torch.equal(model.backbone.body.bn1.running_mean, imagenet.bn1.running_mean)
    other = build_vistr(num_classes=2, num_frames=2, backbone="resnet10", hidden_dim=48, nheads=4,
                        enc_layers=1, dec_layers=1, dim_feedforward=16)  # fmt: skip
    with pytest.raises(CheckpointError, match="does not fit backbone resnet10"):
        load_torchvision_file(other, start.path, "resnet10")


def test_a_backbone_without_published_weights_says_so():
    with pytest.raises(PretrainedWeightsError, match="no published torchvision weights"):
        resolve_start({"backbone": "resnet10", "pretrained_backbone": "IMAGENET1K_V1"}, None, False)
    with pytest.raises(PretrainedWeightsError, match="IMAGENET1K_V2"):
        resolve_start({"backbone": "resnet50", "pretrained_backbone": "IMAGENET9K"}, None, False)


def test_build_module_does_not_pass_the_start_to_the_checkpoint(torch_home):
    """A trained checkpoint's hyper-parameters never ask for a download when it is loaded."""
    from vistr_lit.train import build_module

    cfg = compose_train(["+experiment=quickstart", "model.net.backbone=resnet18"])
    with open_dict(cfg):
        cfg.model.net.pretrained_backbone = "IMAGENET1K_V1"

    class Categories:
        category_map = type("M", (), {"ids": [1, 2], "names": ["a", "b"]})()

    module = build_module(cfg, Categories(), start=None)
    assert "pretrained_backbone" not in module.hparams.net
