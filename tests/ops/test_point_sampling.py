"""Point sampling for mask losses: the coordinate convention, and where Mask2Former's points fall."""

import pytest
import torch
import torch.nn.functional as F

from vistr_lit.ops.point_sampling import point_labels, point_sample, uncertain_points


@pytest.mark.parametrize(("small", "large"), [((3, 4), (12, 16)), ((5, 7), (18, 27))])
def test_point_sample_at_pixel_centres_is_bilinear_upsampling(small, large):
    """A point at a pixel's centre reads what F.interpolate(bilinear, align_corners=False) puts there, for
    canvases that are and are not a multiple of the grid: a prediction and its target are sampled at the
    same place of the same canvas."""
    masks = torch.randn(2, *small, generator=torch.Generator().manual_seed(0))
    upsampled = F.interpolate(masks[:, None], size=large, mode="bilinear", align_corners=False)[:, 0]
    rows, cols = torch.meshgrid(torch.arange(large[0]), torch.arange(large[1]), indexing="ij")
    centres = torch.stack([(cols + 0.5) / large[1], (rows + 0.5) / large[0]], dim=-1).flatten(0, 1)
    sampled = point_sample(masks, centres.expand(2, -1, -1))
    torch.testing.assert_close(sampled, upsampled.flatten(1), atol=1e-5, rtol=1e-5)


def test_point_labels_read_the_pixel_a_point_falls_in():
    labels = torch.arange(12.0).reshape(1, 3, 4)
    points = torch.tensor([[[0.0, 0.0], [0.26, 0.0], [0.99, 0.99], [0.55, 0.34], [1.0, 1.0]]])  # (x, y)
    assert point_labels(labels, points).tolist() == [[0.0, 1.0, 11.0, 6.0, 11.0]]
    # as grid_sample's nearest pixel (align_corners=False), without turning bool masks into float
    inside = torch.rand(1, 500, 2, generator=torch.Generator().manual_seed(0))
    grid = (2 * inside - 1)[:, None]
    nearest = F.grid_sample(labels[:, None], grid, "nearest", align_corners=False)
    assert torch.equal(point_labels(labels, inside), nearest[:, 0, 0])
    assert point_labels(labels > 5, points).dtype == torch.float32


def test_uncertain_points_stay_inside_the_extent_and_favour_uncertain_logits():
    torch.manual_seed(0)
    logits = torch.full((2, 8, 8), 20.0)
    logits[:, :, 4:] = -20.0
    logits[:, :, 3:5] = 0.0  # an uncertain band over columns 3-4 (x in [3/8, 5/8) of the canvas)
    extent = torch.tensor([[1.0, 1.0], [0.75, 0.5]])  # the second mask's canvas is padded
    points = uncertain_points(logits, 400, oversample_ratio=3.0, importance_ratio=0.75, extent=extent)
    assert points.shape == (2, 400, 2)
    assert (points >= 0).all() and (points[0] <= 1).all()
    assert (points[1, :, 0] <= 0.75).all() and (points[1, :, 1] <= 0.5).all()
    in_band = ((points[..., 0] > 3 / 8) & (points[..., 0] < 5 / 8)).float().mean(1)
    # the 300 uncertain points land in (or next to) the band, the 100 uniform ones anywhere: far above the
    # band's 25 % share of a uniform draw
    assert (in_band > 0.7).all()
    uniform = uncertain_points(logits, 400, oversample_ratio=3.0, importance_ratio=0.0, extent=extent)
    assert ((uniform[0, :, 0] > 3 / 8) & (uniform[0, :, 0] < 5 / 8)).float().mean() < 0.35
