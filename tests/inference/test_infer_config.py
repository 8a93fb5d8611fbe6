"""conf/infer.yaml composes with every experiment and takes its frame size and stitching settings from it."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[2] / "src" / "vistr_lit" / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def compose_infer(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="infer", overrides=["ckpt_path=a.ckpt", "input=v.mp4", *overrides])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_for_inference(experiment):
    cfg = compose_infer(f"+experiment={experiment}")
    inference = OmegaConf.to_container(cfg.inference, resolve=True)
    assert inference["short_side"] == cfg.data.eval_short_side
    assert inference["overlap"] == cfg.model.predictor.overlap
    assert inference["postprocess"] == OmegaConf.to_container(cfg.model.postprocess, resolve=True)


def test_quickstart_frame_size_and_inference_overrides():
    cfg = compose_infer("+experiment=quickstart", "inference.overlap=2", "video_format=gif", "save_png=true")
    assert (cfg.inference.short_side, cfg.inference.max_size) == (112, 180)  # the preset's evaluation size
    assert cfg.inference.overlap == 2
    assert list(cfg.inference.tta) == ["hflip", "vflip"]  # the preset's test-time augmentations, as its eval
    assert (cfg.video_format, cfg.save_png, cfg.save_video) == ("gif", True, True)
