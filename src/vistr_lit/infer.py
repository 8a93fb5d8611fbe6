"""``python -m vistr_lit.infer ckpt_path=CKPT input=PATH [output_dir=DIR] [key=value ...]``: videos → tracks.

``input`` is a video file (anything PyAV decodes), a folder of frames, or a YouTube-VIS annotation/test json
(then every video in it). Each video of any length is predicted in windows of the model's T frames stitched
into tracks (``conf/inference/default.yaml``), streamed: decode → model → stitching → RLE, then a second pass
decodes again to draw. Writes ``results.json`` (YouTube-VIS results format, original category ids) and, per
video, ``<video>/overlay.mp4`` (or ``.gif``) and ``<video>/masks/<frame>.png`` instance-id masks on request.
``ckpt_path`` is a Lightning checkpoint, or an authors' ``.pth`` (converted on the fly).
"""

import json
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from vistr_lit.data.transforms import build_eval_transform
from vistr_lit.evaluation.results import write_results_json
from vistr_lit.inference import (
    InputError,
    VideoPredictor,
    VideoSource,
    open_input,
    transformed_frames,
    write_visual_outputs,
)
from vistr_lit.models.postprocess import PostProcessVideo

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parent / "conf"
RESULTS_FILE = "results.json"
VIDEOS_FILE = "videos.json"  # video_id → input name, for inputs that have no annotation file
AUTHORS_SUFFIX = ".pth"


def load_model(ckpt_path: str) -> tuple[torch.nn.Module, list[int], list[str]]:
    """The checkpoint's VisTR (eval mode) and its category ids and names, in class-index order."""
    module = load_module(ckpt_path)
    return module.model.eval(), list(module.hparams.category_ids), list(module.hparams.category_names)


def load_module(ckpt_path: str):
    """The checkpoint's ``VisTRLitModule``; its hyper-parameters include the post-processing of its run."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path: no such checkpoint file {path}")
    if path.suffix == AUTHORS_SUFFIX:
        from vistr_lit.convert_checkpoint import convert

        module = convert(path)
    else:
        from vistr_lit.lit_module import VisTRLitModule

        module = VisTRLitModule.load_from_checkpoint(path, map_location="cpu")
    return module


def check_categories(json_map, category_ids: list[int], input_path: str) -> None:
    """A json input's categories must be the checkpoint's, or the results would name the wrong ones."""
    if json_map is not None and json_map.num_classes and list(json_map.ids) != category_ids:
        raise ValueError(
            f"{input_path}: its category ids {list(json_map.ids)} differ from the checkpoint's {category_ids}"
        )


def predict_source(
    source: VideoSource,
    predictor: VideoPredictor,
    transform,
    cfg: DictConfig,
    class_names: list[str],
    out: Path,
):
    """One video: tracks (streamed), then the overlay video and PNG masks if asked for."""
    tracks = predictor.predict_stream(transformed_frames(source.frames(), transform), source.size)
    video_format = cfg.video_format if cfg.save_video else None
    if video_format or cfg.save_png:
        video_dir = out / source.name
        video_dir.mkdir(parents=True, exist_ok=True)
        path = write_visual_outputs(
            source.frames(),
            tracks,
            source.size,
            class_names,
            video_dir,
            source.fps,
            score_threshold=cfg.inference.score_threshold,
            video_format=video_format,
            png_dir=video_dir / "masks" if cfg.save_png else None,
            frame_names=source.frame_names,
        )
        if path is not None:
            log.info("%s: overlay %s", source.name, path)
    return tracks


def run_inference(cfg: DictConfig, output_dir: Path) -> Path:
    """Predict every video of ``cfg.input``; returns the path of ``results.json``."""
    if cfg.num_threads is not None:
        torch.set_num_threads(int(cfg.num_threads))
    model, category_ids, class_names = load_model(cfg.ckpt_path)
    model.to(torch.device(cfg.device))
    inference = cfg.inference
    sources, json_map = open_input(cfg.input, fps=inference.fps, frames_root=inference.frames_root)
    check_categories(json_map, category_ids, cfg.input)
    predictor = VideoPredictor(
        model,
        PostProcessVideo(**OmegaConf.to_container(inference.postprocess)),
        overlap=inference.overlap,
        match_iou=inference.match_iou,
        first_window_only=inference.first_window_only,
        batch_size=inference.batch_size,
        track_nms_iou=inference.track_nms_iou,
        track_nms_decay=inference.track_nms_decay,
        classes_per_track=inference.classes_per_track,
        tta=list(inference.tta),
    )
    transform = build_eval_transform(inference.short_side, inference.max_size)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for source in sources:
        tracks = predict_source(source, predictor, transform, cfg, class_names, output_dir)
        results.extend(predictor.results(tracks, source.video_id, category_ids))
        log.info("%s (video %d): %d tracks", source.name, source.video_id, len(tracks))
    videos = {
        source.video_id: str(source.path if source.frame_paths is None else source.name) for source in sources
    }
    (output_dir / VIDEOS_FILE).write_text(json.dumps(videos, indent=1))
    return write_results_json(results, output_dir / RESULTS_FILE)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="infer")
def main(cfg: DictConfig) -> None:
    try:
        path = run_inference(cfg, Path(cfg.output_dir))
    except InputError as error:
        raise SystemExit(f"error: {error}") from error
    log.info("results: %s", path)


if __name__ == "__main__":
    main()
