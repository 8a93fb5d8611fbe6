"""Test-time augmentation: mirrored and reversed passes mapped back, their slots matched, then averaged."""

import pytest
import torch
from inference_fakes import NUM_OBJECTS, FakeVisTR, drifting_squares
from test_predictor import SIZE, T, assert_same_square

from vistr_lit.inference.predictor import VideoPredictor
from vistr_lit.inference.tta import augment, match_slots, tta_outputs, unflip_mask_logits
from vistr_lit.models.postprocess import PostProcessVideo


@pytest.mark.parametrize("dim", [-1, -2])
@pytest.mark.parametrize("size", [149, 150, 151, 152])
def test_unflip_maps_the_mirrored_grid_back_onto_the_frames_own(size, dim):
    """A linear field sampled at the stride-4 cell centres of a frame of extent S mirrored along ``dim``
    (columns, then rows) comes back as the field at the frame's own cell centres (linear interpolation is
    exact on a linear field); the last cell repeats its neighbour when it lies in the padding. The other axis
    is left as it is."""
    stride = 4
    cells = -(-size // stride)
    centres = (torch.arange(cells) + 0.5) * stride

    def field(x):
        return 0.3 * x - 7.0

    def along(line):  # [n] -> [2, 3, n] (dim -1) or [2, n, 3] (dim -2); the other axis varies too
        other = torch.arange(3.0)[:, None]
        grid = line[None, :] + 100 * other  # 3 x n
        return (grid if dim == -1 else grid.T).expand(2, -1, -1)

    mirrored = field(size - centres)  # the mirrored frame's pixel x is the frame's pixel S - x
    back = unflip_mask_logits(along(mirrored), size, stride, dim=dim).movedim(dim, -1)
    expected = along(field(centres)).movedim(dim, -1)
    valid = centres < size - stride / 2  # the last cell interpolates into the padding unless S = n·s
    torch.testing.assert_close(back[..., valid], expected[..., valid])
    if size % stride == 0:
        torch.testing.assert_close(back, along(mirrored).flip(dim).movedim(dim, -1))
    with pytest.raises(ValueError, match="does not cover"):
        unflip_mask_logits(along(mirrored), size + stride, stride, dim=dim)


def test_match_slots_recovers_a_permutation():
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 2, 6, 8, generator=generator).round()
    perm = torch.tensor([3, 0, 4, 1, 2])
    noisy = (masks[perm] + 0.1 * torch.rand(5, 2, 6, 8, generator=generator)).clamp(0, 1)
    assert match_slots(masks, noisy).tolist() == torch.argsort(perm).tolist()


class BoxedFake(FakeVisTR):
    """FakeVisTR whose object slots also give their square's box, so that mirrored boxes must be undone."""

    def forward(self, frames, pad_mask=None):
        out = super().forward(frames, pad_mask)
        B, T_, _, H, W = frames.shape
        boxes = out["pred_boxes"].view(B, T_, self.num_instances, 4)
        for b in range(B):
            shift = self.slot_shift(frames[b])
            for t in range(T_):
                for c in range(NUM_OBJECTS):
                    ys, xs = (frames[b, t, c] > 0).nonzero(as_tuple=True)
                    boxes[b, t, (c + shift) % self.num_instances] = torch.stack(
                        [
                            (xs.float().mean() + 0.5) / W,
                            (ys.float().mean() + 0.5) / H,
                            xs.new_tensor(0.25),
                            xs.new_tensor(0.25),
                        ]
                    )
        return out


@pytest.mark.parametrize(
    "augmentations",
    [
        ["hflip"],
        ["reverse"],
        ["hflip", "reverse"],
        ["vflip", "reverse"],
        ["hflip", "vflip"],
        ["transpose", "reverse"],
        ["hflip", "vflip", "transpose"],
    ],
)
def test_augmented_passes_of_an_equivariant_model_average_to_the_plain_pass(augmentations):
    """The fake model is equivariant up to a permutation of its slots (set by where object 0 starts): every
    augmented pass, mapped back and matched, is the plain pass, so their average is too. Averaging slots by
    index instead of by the match would mix objects."""
    model = BoxedFake(num_frames=T, num_instances=7)  # 7: the squares move 20 px in a window, 20 % 5 == 0
    clips = (drifting_squares(2 * T)[None, :T].float() / 255).repeat(2, 1, 1, 1, 1)
    clips[1] = drifting_squares(2 * T)[T:].float() / 255
    plain = model(clips)
    shifts = {model.slot_shift(augment(clips, [a])[0]) for a in augmentations} | {model.slot_shift(clips[0])}
    assert len(shifts) > 1, "the augmented passes must permute the slots for this test to mean anything"
    model.calls = 0
    averaged = tta_outputs(model, clips, augmentations, model.mask_stride)
    assert model.calls == 2 ** len(augmentations)
    torch.testing.assert_close(averaged["pred_logits"].softmax(-1), plain["pred_logits"].softmax(-1))
    torch.testing.assert_close(averaged["pred_masks"].sigmoid(), plain["pred_masks"].sigmoid())
    torch.testing.assert_close(averaged["pred_boxes"], plain["pred_boxes"])


def test_passes_that_disagree_are_averaged():
    """An object that only the plain pass finds keeps half its class probability and mask probability."""
    model = FakeVisTR(num_frames=T)
    # class logits of an empty slot (no-object last)
    nothing = torch.tensor([-5.0] * model.num_classes + [5.0])
    empty_mask = -10.0

    def plain_only(clips):
        out = model(clips)
        if model.calls == 2:  # the mirrored pass sees nothing
            out["pred_logits"][:] = nothing
            out["pred_masks"][:] = empty_mask
        return out

    clips = drifting_squares(T)[None].float() / 255
    plain = FakeVisTR(num_frames=T)(clips)
    averaged = tta_outputs(plain_only, clips, ["hflip"], model.mask_stride)
    found = plain["pred_logits"].softmax(-1)[..., :-1].amax(-1) > 0.9  # B x Q
    expected = (plain["pred_logits"].softmax(-1) + nothing.softmax(-1)) / 2
    torch.testing.assert_close(averaged["pred_logits"].softmax(-1)[found], expected[found])
    inside = plain["pred_masks"] > 0
    torch.testing.assert_close(
        averaged["pred_masks"][inside].sigmoid(),
        (plain["pred_masks"][inside].sigmoid() + torch.sigmoid(torch.tensor(empty_mask))) / 2,
    )


def test_the_predictor_runs_every_pass_and_keeps_the_tracks():
    video = drifting_squares(2 * T + 1)
    model = FakeVisTR(num_frames=T)
    predictor = VideoPredictor(model, PostProcessVideo(), overlap=2, tta=["hflip", "reverse"])
    tracks = predictor.predict_video(video.float() / 255, SIZE)
    assert model.calls == 4 * 3  # windows at 0, 4 and 7, four passes each
    assert len(tracks) == NUM_OBJECTS
    for track in tracks:
        for frame, rle in enumerate(track.segmentations):
            assert_same_square(rle, video, track.label, frame)


@pytest.mark.parametrize("bad", [["rot90"], ["hflip", "hflip"]])
def test_unknown_or_repeated_augmentations_raise(bad):
    with pytest.raises(ValueError, match="tta must list distinct augmentations"):
        VideoPredictor(FakeVisTR(num_frames=T), PostProcessVideo(), tta=bad)
