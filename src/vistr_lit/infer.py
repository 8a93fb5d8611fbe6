"""``python -m vistr_lit.infer ckpt_path=CKPT input=PATH [hydra.run.dir=DIR] [key=value ...]``: videos→tracks.

``input`` is a video file (anything PyAV decodes), a folder of frames, or a YouTube-VIS annotation/test json
(then every video in it). Each video of any length is predicted in windows of the model's T frames stitched
into tracks (``conf/inference/default.yaml``), streamed: decode → model → stitching → RLE, then a second pass
decodes again to draw. Writes into the run directory (``hydra.run.dir``; an earlier inference there is kept
unless ``overwrite=true``, which removes it first) ``results.json`` (YouTube-VIS results format, original
category ids, tracks with no mask in any frame left out) and, per video, ``<video>/overlay.mp4`` (or ``.gif``)
and ``<video>/masks/<frame>.png`` instance-id masks on request. ``ckpt_path`` is a Lightning checkpoint, or an
authors' ``.pth`` (converted on the fly). The checkpoint gives the frame size and the post-processing and
predictor settings it was run with; a key named on the command line (``inference.*``, ``model.postprocess.*``,
``model.predictor.*``, ``data.eval_*``) overrides it, and the difference is logged.
"""

import json
import logging
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vistr_lit.atomic_files import atomic_write
from vistr_lit.checkpoints import (
    DATAMODULE_KEY,
    CategoryMismatchError,
    Setting,
    check_checkpoint,
    load_module,
    named_keys,
    settings_from_checkpoint,
)
from vistr_lit.data.transforms import build_eval_transform
from vistr_lit.errors import exit_on_user_error
from vistr_lit.evaluation.results import has_mask, write_results_json
from vistr_lit.inference import (
    Track,
    VideoPredictor,
    VideoSource,
    open_input,
    transformed_frames,
    write_visual_outputs,
)
from vistr_lit.models.postprocess import PostProcessVideo
from vistr_lit.outputs import claim_output_dir, write_run_record

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parent / "conf"
RESULTS_FILE = "results.json"
VIDEOS_FILE = "videos.json"  # video_id → input name, for inputs that have no annotation file
PREDICTOR_KEYS = (
    "overlap",
    "match_iou",
    "first_window_only",
    "track_nms_iou",
    "track_nms_decay",
    "classes_per_track",
    "tta",
)


def load_model(ckpt_path: str) -> tuple[torch.nn.Module, list[int], list[str]]:
    """The checkpoint's VisTR (eval mode) and its category ids and names, in class-index order."""
    module = load_module(ckpt_path)
    return module.model.eval(), list(module.hparams.category_ids), list(module.hparams.category_names)


def checkpoint_settings(cfg: DictConfig) -> list[Setting]:
    """The settings of ``infer`` that a checkpoint carries, each also set by its ``model.``/``data.`` key."""
    postprocess = [
        Setting(
            ("hyper_parameters", "postprocess", key),
            f"inference.postprocess.{key}",
            (f"model.postprocess.{key}",),
        )
        for key in cfg.inference.postprocess
    ]
    predictor = [
        Setting(("hyper_parameters", "predictor", key), f"inference.{key}", (f"model.predictor.{key}",))
        for key in PREDICTOR_KEYS
    ]
    size = [
        Setting((DATAMODULE_KEY, "eval_short_side"), "inference.short_side", ("data.eval_short_side",)),
        Setting((DATAMODULE_KEY, "eval_max_size"), "inference.max_size", ("data.eval_max_size",)),
    ]
    return postprocess + predictor + size


def check_categories(json_map, category_ids: list[int], input_path: str) -> None:
    """A json input's categories must be the checkpoint's, or the results would name the wrong ones."""
    if json_map is not None and json_map.num_classes and list(json_map.ids) != category_ids:
        raise CategoryMismatchError(
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
    """One video: tracks with a mask in some frame (streamed), then the overlay video and PNG masks if asked
    for."""
    tracks = predictor.predict_stream(transformed_frames(source.frames(), transform), source.size)
    tracks = [track for track in tracks if track_has_mask(track)]
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


def track_has_mask(track: Track) -> bool:
    """Whether the track has a non-empty mask in some frame (others match nothing: left out)."""
    return has_mask({"segmentations": track.segmentations})


def run_inference(cfg: DictConfig, output_dir: Path, named: list[str] | None = None) -> Path:
    """Predict every video of ``cfg.input`` into ``output_dir``; returns the path of ``results.json``.

    ``named``: the keys the user named, which override the checkpoint's settings (default: Hydra's task
    overrides).
    """
    if cfg.num_threads is not None:
        torch.set_num_threads(int(cfg.num_threads))
    claim_output_dir(output_dir, (RESULTS_FILE, VIDEOS_FILE), overwrite=cfg.overwrite, videos=True)
    write_run_record(output_dir, cfg)
    checkpoint, _ = check_checkpoint(cfg.ckpt_path)
    chosen = settings_from_checkpoint(
        checkpoint, cfg, checkpoint_settings(cfg), named_keys() if named is None else named
    )
    del checkpoint
    model, category_ids, class_names = load_model(cfg.ckpt_path)
    model.to(torch.device(cfg.device))
    inference = cfg.inference
    sources, json_map = open_input(cfg.input, fps=inference.fps, frames_root=inference.frames_root)
    check_categories(json_map, category_ids, cfg.input)
    postprocess = {key: chosen[f"inference.postprocess.{key}"] for key in inference.postprocess}
    predictor = VideoPredictor(
        model,
        PostProcessVideo(**postprocess),
        batch_size=inference.batch_size,
        **{key: chosen[f"inference.{key}"] for key in PREDICTOR_KEYS},
    )
    transform = build_eval_transform(chosen["inference.short_side"], chosen["inference.max_size"])
    output_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for source in sources:
        tracks = predict_source(source, predictor, transform, cfg, class_names, output_dir)
        results.extend(predictor.results(tracks, source.video_id, category_ids))
        log.info("%s (video %d): %d tracks", source.name, source.video_id, len(tracks))
    videos = {
        source.video_id: str(source.path if source.frame_paths is None else source.name) for source in sources
    }
    atomic_write(output_dir / VIDEOS_FILE, json.dumps(videos, indent=1))
    return write_results_json(results, output_dir / RESULTS_FILE)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="infer")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    path = run_inference(cfg, Path(HydraConfig.get().runtime.output_dir))
    log.info("results: %s", path)


if __name__ == "__main__":
    main()
