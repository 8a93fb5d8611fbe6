"""The dot-product mask head (``models/extensions/dot_product.py``, not in the paper) composed into VisTR:
its masks and its options (stride 2 and 1, auxiliary masks, temporal fusion, relative coordinates)."""

import torch
from vistr_cases import TINY, predict_padded_and_alone, tiny_vistr


def test_dot_product_masks_are_query_embeddings_times_pixel_embeddings():
    model = tiny_vistr(num_frames=2, num_instances=3, mask_fusion="dot_product", mask_dim=16)
    assert model.bbox_attention is None and model.insmask_head is None
    head = model.mask_extension
    assert head.pixel_decoder.out_channels == 16  # mask_dim is the embedding width
    default = tiny_vistr(mask_fusion="dot_product").mask_extension
    assert default.pixel_decoder.out_channels == TINY["hidden_dim"] // 8
    captured = {}
    head.pixel_decoder.register_forward_hook(lambda module, args, out: captured.update(pixels=out))
    head.mask_embed.register_forward_hook(lambda module, args, out: captured.update(embed=out))
    with torch.no_grad():
        masks = model(torch.randn(1, 2, 3, 32, 48))["pred_masks"]  # 1 x T·N x 8 x 12
    pixels, embed = captured["pixels"], captured["embed"]  # T x D x 8 x 12, T x N x D
    for t in range(2):
        for i in range(3):
            expected = (embed[t, i][:, None, None] * pixels[t]).sum(0)
            torch.testing.assert_close(masks[0, t * 3 + i], expected, atol=1e-5, rtol=1e-4)


def test_mask_stride_2_adds_the_stem_level():
    model = tiny_vistr(mask_fusion="dot_product", mask_stride=2)
    decoder = model.mask_extension.pixel_decoder
    assert (
        decoder.out_stride == 2
        and tiny_vistr(mask_fusion="dot_product").mask_extension.pixel_decoder.out_stride == 4
    )
    with torch.no_grad():
        masks = model(torch.randn(1, 3, 3, 40, 52))["pred_masks"]
    assert masks.shape == (1, 6, 20, 26)
    # the stem reaches the masks: without its adapter's contribution they change
    frames = torch.randn(1, 3, 3, 40, 52)
    with torch.no_grad():
        base = model(frames)["pred_masks"]
        decoder.stem_adapter.weight.zero_()
        decoder.stem_adapter.bias.zero_()
        without = model(frames)["pred_masks"]
    assert (without - base).abs().max() > 1e-3


def test_aux_masks_supervise_every_decoder_layer():
    model = tiny_vistr(mask_fusion="dot_product", dec_layers=3, aux_masks=True).train()
    out = model(torch.randn(1, 3, 3, 32, 32))
    assert [aux["pred_masks"].shape for aux in out["aux_outputs"]] == [out["pred_masks"].shape] * 2
    assert (
        "pred_masks"
        not in tiny_vistr(mask_fusion="dot_product").train()(torch.randn(1, 3, 3, 32, 32))["aux_outputs"][0]
    )


def test_dot_product_temporal_fusion_mixes_frames():
    """conv3d: a frame's masks depend on its neighbours' pixels; none: they do not."""
    frames = torch.randn(1, 3, 3, 32, 32)
    changed = frames.clone()
    changed[0, 1] = torch.randn(3, 32, 32)  # only frame 1 differs, the neighbour of frame 0
    for temporal, mixes in (("conv3d", True), ("none", False)):
        model = tiny_vistr(mask_fusion="dot_product", temporal_fusion=temporal, enc_layers=0)
        with torch.no_grad():
            first = model(frames)["pred_masks"][0, 0]  # frame 0, instance 0
            other = model(changed)["pred_masks"][0, 0]
        assert (first - other).abs().max() > 1e-4  # the decoder reads every frame: queries change too
        embed = model.mask_extension.mask_embed
        embed.register_forward_hook(lambda m, a, out: out.detach().zero_().add_(1.0))
        with torch.no_grad():  # equal mask embeddings: only the pixel embeddings differ
            first, other = model(frames)["pred_masks"][0, 0], model(changed)["pred_masks"][0, 0]
        assert ((first - other).abs().max() > 1e-4) == mixes, temporal


def _randomize_coord_mlp(model, seed=1):
    """Give the relative-coordinate MLP's generator random last-layer rows (they start at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = model.mask_extension.mask_coord_mlp.generator.weight
        weight.copy_(torch.randn(weight.shape, generator=gen) * 0.5)
        model.mask_extension.mask_coord_mlp.generator.bias.copy_(torch.randn(weight.shape[0], generator=gen))


def test_mask_coords_start_as_the_plain_dot_product_and_then_move_the_masks():
    plain = tiny_vistr(num_frames=2, num_instances=3, mask_fusion="dot_product")
    coords = tiny_vistr(num_frames=2, num_instances=3, mask_fusion="dot_product", mask_coords=True)
    missing = coords.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("mask_extension.mask_coord_mlp.") for key in missing)
    frames = torch.randn(1, 2, 3, 40, 56)
    with torch.no_grad():
        base = plain(frames)["pred_masks"]
        torch.testing.assert_close(coords(frames)["pred_masks"], base)  # zero last layer: nothing added
        _randomize_coord_mlp(coords)
        moved = coords(frames)["pred_masks"]
    assert (moved - base).abs().max() > 1e-2


def test_mask_coords_read_each_query_box():
    """The added logits depend on the query's own box: move the box and the masks change with it."""
    model = tiny_vistr(num_frames=1, num_instances=2, mask_fusion="dot_product", mask_coords=True)
    _randomize_coord_mlp(model)
    frames = torch.randn(1, 1, 3, 48, 48)
    with torch.no_grad():
        base = model(frames)["pred_masks"]
        model.bbox_embed.layers[-1].bias.add_(torch.tensor([2.0, -2.0, 0.0, 0.0]))  # move every centre
        shifted = model(frames)
    assert (shifted["pred_masks"] - base).abs().max() > 1e-2


def test_axis_offsets_are_from_the_box_centre_in_frame_fractions_and_box_sizes():
    from vistr_lit.models.extensions.mask_coords import REL_BOX_CLAMP, REL_MIN_BOX, RelativeCoordMaskMLP

    centre, size = torch.tensor([[0.5, 0.1]]), torch.tensor([[0.2, 0.0]])  # F=1, N=2 (the 2nd degenerate)
    grid = torch.tensor([[0.1, 0.5, 0.9]])
    offset, in_boxes = RelativeCoordMaskMLP.axis_offsets(centre, size, grid)  # 1 x 2 x 3 each
    torch.testing.assert_close(offset[0, 0], torch.tensor([-0.4, 0.0, 0.4]))
    torch.testing.assert_close(in_boxes[0, 0], torch.tensor([-2.0, 0.0, 2.0]))
    torch.testing.assert_close(
        in_boxes[0, 1], torch.tensor([0.0, 0.4 / REL_MIN_BOX, 0.8 / REL_MIN_BOX]).clamp(max=REL_BOX_CLAMP)
    )
    assert in_boxes[0, 1, 2] == REL_BOX_CLAMP


def test_mask_coord_mlp_is_the_mlp_over_stacked_pixels_and_coordinates():
    """The separable first layer equals the plain MLP over [pixel embedding; dx, dy, dx/w, dy/h] per pixel."""
    from vistr_lit.models.extensions.mask_coords import RelativeCoordMaskMLP

    torch.manual_seed(0)
    mlp = RelativeCoordMaskMLP(12, 6, hidden_dim=5)
    torch.nn.init.normal_(mlp.generator.weight, std=0.5)
    queries, pixels = torch.randn(2, 3, 12), torch.randn(2, 6, 4, 5)
    boxes = torch.rand(2, 3, 4) * 0.5 + 0.1
    rows, cols = torch.rand(2, 4), torch.rand(2, 5)
    with torch.no_grad():
        out = mlp(queries, pixels, boxes, rows, cols)
        w1, b1, w2, b2, w3, b3 = (
            p.view(2, 3, *s) / fan**0.5
            for p, s, fan in zip(mlp.generator(queries).split(mlp.sizes, -1), mlp.shapes, mlp.fan_ins)
        )
        for f in range(2):
            for n in range(3):
                dx, dxb = mlp.axis_offsets(boxes[f, n, 0:1][None], boxes[f, n, 2:3][None], cols[f][None])
                dy, dyb = mlp.axis_offsets(boxes[f, n, 1:2][None], boxes[f, n, 3:4][None], rows[f][None])
                along_x, along_y = (
                    (lambda c: c[0, 0][None, :].expand(4, 5)),
                    (lambda c: c[0, 0][:, None].expand(4, 5)),
                )
                coords = torch.stack([along_x(dx), along_y(dy), along_x(dxb), along_y(dyb)])  # 4 x h x w
                x = torch.cat([pixels[f], coords]).flatten(1)  # (D + 4) x P
                x = torch.relu(w1[f, n] @ x + b1[f, n][:, None])
                x = torch.relu(w2[f, n] @ x + b2[f, n][:, None])
                expected = (w3[f, n] @ x + b3[f, n][:, None]).view(4, 5)
                torch.testing.assert_close(out[f, n], expected, atol=1e-5, rtol=1e-4)


def test_mask_coords_on_a_padded_clip_predict_like_the_clip_alone():
    """Pixel coordinates are fractions of each clip's valid size, as its boxes: padding changes nothing."""
    model = tiny_vistr(mask_fusion="dot_product", mask_coords=True, dilation=True)
    _randomize_coord_mlp(model)
    batched, _ = predict_padded_and_alone(model, check_all=False)
    masks = batched["pred_masks"]  # clip 0 is 50x70 -> 13x18 at stride 4, clip 1 is 96x64 -> 24x16
    assert (
        (masks[0, :, 13:] == 0).all()
        and (masks[0, :, :, 18:] == 0).all()
        and (masks[1, :, :, 16:] == 0).all()
    )
