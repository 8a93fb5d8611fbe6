"""Overlays and writers: stable colours, masks drawn where they are, MP4/GIF at the input rate, PNG ids."""

from fractions import Fraction

import av
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from vistr_lit.inference.track import Track, encode_mask
from vistr_lit.inference.visualize import (
    OverlayWriter,
    draw_tracks,
    instance_id_image,
    track_colour,
    write_visual_outputs,
)

HEIGHT, WIDTH = 30, 41  # odd width: the MP4 writer must pad it


def square(x: int, y: int = 5, side: int = 10) -> torch.Tensor:
    mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    mask[y : y + side, x : x + side] = True
    return mask


def test_track_colours_are_stable_and_distinct():
    colours = [track_colour(i) for i in range(12)]
    assert colours == [track_colour(i) for i in range(12)]
    assert len(set(colours)) == 12


def test_draw_tracks_tints_the_mask_only():
    frame = torch.zeros(3, HEIGHT, WIDTH, dtype=torch.uint8)
    drawn = draw_tracks(frame, square(5, side=20)[None], [3], ["cat 0.90"])
    colour = torch.tensor(track_colour(3), dtype=torch.float32)
    inside = drawn[:, 21, 15].float()  # below the caption, inside the box
    torch.testing.assert_close(inside, colour * 0.5, atol=1.0, rtol=0)
    assert drawn[:, 28, 38].tolist() == [0, 0, 0]  # far from mask, box and caption
    assert draw_tracks(frame, torch.zeros(1, HEIGHT, WIDTH, dtype=torch.bool), [3], ["x"]).equal(frame)


def test_instance_ids_overlap_goes_to_the_best_score():
    image = instance_id_image(torch.stack([square(0), square(5)]), [4, 7], [0.9, 0.2], (HEIGHT, WIDTH))
    assert image[10, 2] == 5 and image[10, 7] == 5 and image[10, 13] == 8 and image[0, 0] == 0


@pytest.mark.parametrize("video_format", ["mp4", "gif"])
def test_overlay_video_has_every_frame_at_the_input_rate(tmp_path, video_format):
    writer = OverlayWriter(tmp_path / "overlay", Fraction(15, 2), video_format)
    frames = [torch.full((3, HEIGHT, WIDTH), 25 * v, dtype=torch.uint8) for v in range(7)]
    for frame in frames:
        writer.write(frame)
    path = writer.close()
    assert path.suffix == f".{video_format}"
    if video_format == "mp4":
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.average_rate == Fraction(15, 2)
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert decoded[0].shape == (HEIGHT, WIDTH + 1, 3)
    else:
        decoded = list(iio.imiter(path))
        assert iio.immeta(path)["duration"] == pytest.approx(1000 / 7.5, abs=10)
    levels = [round(float(np.asarray(f)[..., :3].mean()) / 25) for f in decoded]
    assert levels == list(range(7))


def test_visual_outputs_show_tracks_above_the_threshold(tmp_path):
    shown, hidden = Track(0, 0), Track(1, 0)
    for x in range(3):
        shown.append(encode_mask(square(2 + 5 * x)), 0.9, 1)
        hidden.append(encode_mask(square(20, y=15)), 0.1, 0)
    frames = [torch.zeros(3, HEIGHT, WIDTH, dtype=torch.uint8)] * 3
    path = write_visual_outputs(
        frames, [shown, hidden], (HEIGHT, WIDTH), ["cat", "dog"], tmp_path, Fraction(6),
        score_threshold=0.5, video_format="gif", png_dir=tmp_path / "masks", frame_names=["a", "b", "c"],
    )  # fmt: skip
    assert path == tmp_path / "overlay.gif"
    pngs = [np.asarray(Image.open(tmp_path / "masks" / f"{name}.png")) for name in "abc"]
    for x, png in enumerate(pngs):
        assert set(np.unique(png)) == {0, 1}  # only the shown track, as id + 1
        assert png[10, 2 + 5 * x] == 1 and png[20, 25] == 0
    assert len(list(iio.imiter(path))) == 3


def test_training_overlays_draw_tracks_in_the_same_colours():
    """One palette: the W&B validation overlays colour a track as ``infer`` does (``track_colour``)."""
    from vistr_lit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from vistr_lit.overlays import draw_video

    track = Track(5, 0)
    track.append(encode_mask(square(2)), 0.9, 0)
    black = (-torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD))[None, :, None, None]  # normalized 0
    image = draw_video(black.expand(1, 3, HEIGHT, WIDTH), (HEIGHT, WIDTH), [track], max_frames=1)
    pixel = image[:, 8, 6]  # inside the square (rows 5-14, columns 2-11); one frame: no grid padding
    expected = torch.tensor([0.5 * c for c in track_colour(5)])  # half-transparent over black
    assert (pixel.float() - expected).abs().max() <= 1, (pixel, expected)
