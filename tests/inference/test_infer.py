"""``python -m vistr_lit.infer`` end to end with a real (tiny, untrained) VisTR checkpoint."""

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from inference_fakes import drifting_squares
from PIL import Image

from vistr_lit.convert_checkpoint import default_hparams, save_lightning_checkpoint
from vistr_lit.evaluation import evaluate_ytvis
from vistr_lit.infer import run_inference
from vistr_lit.inference.video_io import InputError
from vistr_lit.lit_module import VisTRLitModule

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "src" / "vistr_lit" / "conf")
T, V = 4, 11  # V > 2T: three windows
CATEGORY_IDS, CATEGORY_NAMES = [3, 7], ["cat", "dog"]
FULL_MASK_LOGIT = 20.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny VisTR whose masks cover every frame (final mask bias +20), so every slot gives a track."""
    torch.manual_seed(0)
    net = dict(
        num_frames=T, num_instances=3, backbone="resnet10", hidden_dim=48, nheads=4, enc_layers=1,
        dec_layers=1, dim_feedforward=64, dropout=0.0, trainable_stages=["layer4"],
    )  # fmt: skip
    module = VisTRLitModule(
        net=net, category_ids=CATEGORY_IDS, category_names=CATEGORY_NAMES, **default_hparams()
    )
    last_conv = [m for m in module.model.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    with torch.no_grad():
        last_conv.bias.fill_(FULL_MASK_LOGIT)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    save_lightning_checkpoint(module, path)
    return path


def write_mp4(path: Path, frames: torch.Tensor, fps: int = 10) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width, stream.pix_fmt = frames.shape[-2], frames.shape[-1], "yuv420p"
        for frame in frames:
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(frame.permute(1, 2, 0).numpy(), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def infer_config(checkpoint: Path, input_path: Path, output_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            config_name="infer",
            overrides=[
                f"ckpt_path={checkpoint}", f"input={input_path}", f"hydra.run.dir={output_dir}",
                "data.eval_short_side=32", "data.eval_max_size=64", "inference.overlap=2",
                "inference.score_threshold=0", "num_threads=1", *overrides,
            ],
        )  # fmt: skip


def test_video_file_to_results_overlay_and_pngs(checkpoint, tmp_path):
    write_mp4(tmp_path / "squares.mp4", drifting_squares(V))
    cfg = infer_config(checkpoint, tmp_path / "squares.mp4", tmp_path / "out", "save_png=true")
    results = json.loads(run_inference(cfg, tmp_path / "out").read_text())
    assert results, "the full-mask model must give tracks"
    for entry in results:
        assert entry["video_id"] == 1 and entry["category_id"] in CATEGORY_IDS
        assert len(entry["segmentations"]) == V and 0 <= entry["score"] <= 1
        assert all(s is None or s["size"] == [48, 64] for s in entry["segmentations"])
    with av.open(str(tmp_path / "out" / "squares" / "overlay.mp4")) as container:
        assert container.streams.video[0].average_rate == 10
        assert sum(1 for _ in container.decode(video=0)) == V
    pngs = sorted((tmp_path / "out" / "squares" / "masks").glob("*.png"))
    assert [p.stem for p in pngs] == [f"{v:05d}" for v in range(V)]
    assert np.asarray(Image.open(pngs[0])).max() >= 1


def test_ytvis_json_input_scores_with_the_evaluator(checkpoint, tmp_path):
    frames = drifting_squares(V)
    root = tmp_path / "valid" / "JPEGImages" / "vid"
    root.mkdir(parents=True)
    names = [f"vid/{v:05d}.png" for v in range(V)]
    for name, frame in zip(names, frames):
        Image.fromarray(frame.permute(1, 2, 0).numpy()).save(root.parent / name)
    video = {"id": 5, "width": 64, "height": 48, "length": V, "file_names": names}
    categories = [{"id": i, "name": n} for i, n in zip(CATEGORY_IDS, CATEGORY_NAMES)]
    gt = {"videos": [video], "categories": categories, "annotations": []}
    (tmp_path / "valid.json").write_text(json.dumps(gt))
    cfg = infer_config(checkpoint, tmp_path / "valid.json", tmp_path / "out", "save_video=false")
    results = json.loads(run_inference(cfg, tmp_path / "out").read_text())
    assert results and {r["video_id"] for r in results} == {5}
    assert not (tmp_path / "out" / "vid").exists()  # no overlay asked for
    assert set(evaluate_ytvis(gt, results)) >= {"AP", "AR10"}


def test_category_mismatch_and_unreadable_input_are_reported(checkpoint, tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError, match="broken.mp4"):
        run_inference(infer_config(checkpoint, tmp_path / "broken.mp4", tmp_path / "out"), tmp_path / "out")
    gt = {"videos": [], "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "other.json").write_text(json.dumps(gt))
    with pytest.raises(ValueError, match="differ from the checkpoint"):
        run_inference(infer_config(checkpoint, tmp_path / "other.json", tmp_path / "out"), tmp_path / "out")


def test_authors_pth_checkpoint_is_converted_on_the_fly(tmp_path):
    from vistr_lit.infer import load_model
    from vistr_lit.models.checkpoint_import import random_reference_state_dict

    key_list = Path(__file__).resolve().parents[1] / "models" / "reference" / "vistr_r50_state_dict.txt"
    torch.save({"model": random_reference_state_dict(key_list)}, tmp_path / "vistr_r50.pth")
    model, category_ids, names = load_model(str(tmp_path / "vistr_r50.pth"))
    assert (model.num_frames, model.num_instances, model.num_classes) == (36, 10, 40)
    assert category_ids == list(range(1, 41)) and len(names) == 40 and not model.training
