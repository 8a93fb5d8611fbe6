"""Whole-video inference: windows of T frames stitched into tracks, streaming frame sources, visual output."""

from vistr_lit.inference.predictor import VideoPredictor, window_starts
from vistr_lit.inference.stitching import TrackStitcher, mask_iou
from vistr_lit.inference.track import Track, decode_mask, encode_mask
from vistr_lit.inference.video_io import InputError, VideoSource, open_input, transformed_frames
from vistr_lit.inference.visualize import OverlayWriter, draw_tracks, track_colour, write_visual_outputs

__all__ = [
    "InputError",
    "OverlayWriter",
    "Track",
    "TrackStitcher",
    "VideoPredictor",
    "VideoSource",
    "decode_mask",
    "draw_tracks",
    "encode_mask",
    "mask_iou",
    "open_input",
    "track_colour",
    "transformed_frames",
    "window_starts",
    "write_visual_outputs",
]
