"""Frame sources: video files, frame folders, YouTube-VIS files; count, order, frame rate, clear errors."""

import json
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vistr_lit.inference.video_io import InputError, open_input, transformed_frames

NUM_FRAMES, HEIGHT, WIDTH = 11, 32, 48


def numbered_frames(count: int = NUM_FRAMES) -> torch.Tensor:
    """uint8 ``[V, 3, H, W]``: frame v is a flat grey of level 20·v (its index survives lossy coding)."""
    levels = torch.arange(count, dtype=torch.uint8) * 20
    return levels[:, None, None, None].expand(count, 3, HEIGHT, WIDTH).clone()


def frame_level(frame: torch.Tensor) -> int:
    return round(frame.float().mean().item() / 20)


def write_mp4(path, frames: torch.Tensor, fps: int = 12) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for frame in frames:
            image = av.VideoFrame.from_ndarray(frame.permute(1, 2, 0).numpy(), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_file_keeps_count_order_and_frame_rate(tmp_path):
    write_mp4(tmp_path / "clip.mp4", numbered_frames())
    (source,), category_map = open_input(tmp_path / "clip.mp4", fps=6)
    assert category_map is None and source.size == (HEIGHT, WIDTH) and source.fps == Fraction(12)
    for _ in range(2):  # a source can be read twice (the overlay pass)
        assert [frame_level(f) for f in source.frames()] == list(range(NUM_FRAMES))


def test_frame_folder_orders_numbers_naturally_and_allows_gaps(tmp_path):
    frames = numbered_frames(4)
    for name, frame in zip(["f2.png", "f10.png", "f33.png", "f100.png"], frames):
        Image.fromarray(frame.permute(1, 2, 0).numpy()).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a frame")
    (source,), _ = open_input(tmp_path, fps=5)
    assert source.frame_names == ["f2", "f10", "f33", "f100"] and source.fps == Fraction(5)
    assert [frame_level(f) for f in source.frames()] == [0, 1, 2, 3]


def test_ytvis_file_gives_every_video_with_its_id(tmp_path):
    root = tmp_path / "valid" / "JPEGImages"
    videos = []
    for video_id, count in ((4, 3), (9, 2)):
        (root / f"v{video_id}").mkdir(parents=True)
        names = [f"v{video_id}/{i:05d}.jpg" for i in range(0, 5 * count, 5)]
        for name, frame in zip(names, numbered_frames(count)):
            Image.fromarray(frame.permute(1, 2, 0).numpy()).save(root / name)
        videos.append(
            {"id": video_id, "width": WIDTH, "height": HEIGHT, "length": count, "file_names": names}
        )
    ann = {"videos": videos, "categories": [{"id": 2, "name": "cat"}], "annotations": []}
    (tmp_path / "valid.json").write_text(json.dumps(ann))
    sources, category_map = open_input(tmp_path / "valid.json", fps=6)
    assert [s.video_id for s in sources] == [4, 9] and list(category_map.ids) == [2]
    assert [len(list(s.frames())) for s in sources] == [3, 2]


def test_unreadable_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(InputError, match="input not found"):
        open_input(tmp_path / "missing.mp4", fps=6)
    (tmp_path / "garbage.mp4").write_bytes(b"this is not a video" * 100)
    with pytest.raises(InputError, match="garbage.mp4"):
        open_input(tmp_path / "garbage.mp4", fps=6)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        open_input(tmp_path / "empty", fps=6)
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(folder / "0.jpg")
    (folder / "1.jpg").write_bytes(b"broken jpeg")
    (source,), _ = open_input(folder, fps=6)
    with pytest.raises(InputError, match=r"1\.jpg"):
        list(source.frames())
    Image.fromarray(np.zeros((HEIGHT + 2, WIDTH, 3), np.uint8)).save(folder / "1.jpg")
    with pytest.raises(InputError, match=r"1\.jpg: size"):
        list(source.frames())
    (tmp_path / "no_frames.json").write_text(json.dumps({"videos": [], "categories": []}))
    with pytest.raises(InputError, match="set frames_root"):
        open_input(tmp_path / "no_frames.json", fps=6)


def test_transformed_frames_resize_and_normalize():
    from vistr_lit.data.transforms import build_eval_transform

    out = list(transformed_frames(numbered_frames(2), build_eval_transform(16, None)))
    assert [tuple(f.shape) for f in out] == [(3, 16, 24)] * 2 and out[0].dtype == torch.float32
    assert (out[0] < 0).all() and (out[1] > out[0]).all()  # ImageNet-normalized: black is negative
