"""The lean execution (models/lean.py): checkpointing and instance chunks change memory, never results."""

import copy

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from vistr_lit.convert_checkpoint import default_hparams
from vistr_lit.lit_module import VisTRLitModule
from vistr_lit.models import build_vistr
from vistr_lit.models.lean import CHECKPOINT_PARTS, apply_lean, fold_frozen_batch_norm

TINY = dict(hidden_dim=48, nheads=4, enc_layers=2, dec_layers=2, dim_feedforward=64, dropout=0.1)
FRAMES, INSTANCES = 3, 4
ALL = dict(checkpoint=CHECKPOINT_PARTS, mask_head_chunk=1, fold_frozen_bn=True)
# bf16 autocast against float32, on mask probabilities and boxes of the tiny model (measured: ~1e-2)
BF16_ATOL = 0.05


def tiny_vistr(seed=0, backbone="resnet10", **kwargs):
    """A tiny VisTR whose frozen batch norms hold random statistics (a pretrained backbone's are not the
    identity, and folding them must be exact for any)."""
    torch.manual_seed(seed)
    width = {"resnet50": 16}.get(backbone, 64)  # a narrow R50: Bottleneck blocks at a test's cost
    model = build_vistr(3, FRAMES, INSTANCES, backbone=backbone, backbone_width=width, **{**TINY, **kwargs})
    for norm in model.modules():
        if isinstance(norm, FrozenBatchNorm2d):
            norm.running_mean.normal_(0, 0.1)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0, 0.1)
    return model


def padded_batch():
    """Two clips (50x70 and 64x96) padded into one [2, T, 3, 64, 96] batch, and the clips alone."""
    gen = torch.Generator().manual_seed(1)
    clips = [torch.randn(FRAMES, 3, 50, 70, generator=gen), torch.randn(FRAMES, 3, 64, 96, generator=gen)]
    frames = torch.zeros(2, FRAMES, 3, 64, 96)
    pad_mask = torch.ones(2, 64, 96, dtype=torch.bool)
    for b, clip in enumerate(clips):
        frames[b, :, :, : clip.shape[-2], : clip.shape[-1]] = clip
        pad_mask[b, : clip.shape[-2], : clip.shape[-1]] = False
    return frames, pad_mask, clips


def train_step(model, frames, pad_mask):
    """Outputs and parameter gradients of one training forward/backward (dropout seeded)."""
    model.train().zero_grad(set_to_none=True)
    torch.manual_seed(7)
    out = model(frames, pad_mask)
    aux = sum(layer["pred_boxes"].sum() for layer in out["aux_outputs"])
    loss = out["pred_masks"].sigmoid().square().mean() + out["pred_logits"].logsumexp(-1).mean() + aux
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out, grads


def saved_activation_bytes(model, frames, pad_mask) -> int:
    """Bytes autograd keeps for backward outside checkpointed regions (what a plain step would hold)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(frames, pad_mask)
    return total


@pytest.mark.parametrize(
    ("backbone", "lean"),
    [
        ("resnet10", dict(checkpoint=["backbone"])),
        ("resnet50", dict(checkpoint=["backbone"])),  # Bottleneck blocks (narrow), as the paper's R50
        ("resnet10", dict(checkpoint=["encoder"])),
        ("resnet10", dict(checkpoint=["mask_head"])),
        ("resnet10", dict(mask_head_chunk=1)),
        ("resnet10", dict(mask_head_chunk=3)),  # chunks of 3 and 1 slots
        ("resnet10", dict(fold_frozen_bn=True)),
        ("resnet50", dict(fold_frozen_bn=True)),
        ("resnet10", ALL),
    ],
)
def test_lean_options_leave_outputs_and_gradients_equal(backbone, lean):
    plain = tiny_vistr(backbone=backbone)
    lean_model = apply_lean(copy.deepcopy(plain), **lean)
    frames, pad_mask, _ = padded_batch()
    out_plain, grads_plain = train_step(plain, frames, pad_mask)
    out_lean, grads_lean = train_step(lean_model, frames, pad_mask)
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        torch.testing.assert_close(out_lean[key], out_plain[key], atol=1e-5, rtol=1e-5)
    assert grads_lean.keys() == grads_plain.keys() and len(grads_plain) > 0
    # folding sums the convolutions in another order: float32 rounding, ~3e-5 of a gradient's largest value
    relative = 1e-4 if lean.get("fold_frozen_bn") else 0.0
    for name, grad in grads_plain.items():
        atol = max(1e-5, relative * grad.abs().max().item())
        torch.testing.assert_close(grads_lean[name], grad, atol=atol, rtol=1e-4, msg=name)
    # dropout is on: a different random draw would not pass the checks above
    with torch.no_grad():
        torch.manual_seed(8)
        other = plain.train()(frames, pad_mask)
    assert (other["pred_logits"] - out_plain["pred_logits"]).abs().max() > 1e-4


@pytest.mark.parametrize("chunk", [None, 1])
def test_instance_chunks_run_the_mask_heads_frame_work_once(chunk):
    """The adapters and lay1's memory part run per frame, not per chunk (it would be N times the work)."""
    model = apply_lean(tiny_vistr(), mask_head_chunk=chunk, checkpoint=["mask_head"]).train()
    calls = {"adapters": 0, "instance": 0}
    head = model.mask_head
    head.adapter1.register_forward_hook(lambda *_: calls.__setitem__("adapters", calls["adapters"] + 1))
    instance_features = head.instance_features

    def counted(*args, **kwargs):
        calls["instance"] += 1
        return instance_features(*args, **kwargs)

    head.instance_features = counted
    frames, pad_mask, _ = padded_batch()
    model(frames, pad_mask)["pred_masks"].sum().backward()  # backward recomputes the chunks, not the frames
    chunks = 1 if chunk is None else INSTANCES // chunk
    assert calls == {"adapters": 1, "instance": 2 * chunks}


@pytest.mark.parametrize("part", [*CHECKPOINT_PARTS, "all"])
def test_checkpointing_keeps_fewer_activations_for_backward(part):
    plain = tiny_vistr()
    lean = apply_lean(copy.deepcopy(plain), **(ALL if part == "all" else dict(checkpoint=[part])))
    frames, pad_mask, _ = padded_batch()
    kept_plain = saved_activation_bytes(plain, frames, pad_mask)
    kept_lean = saved_activation_bytes(lean, frames, pad_mask)
    # the tiny encoder is a small share of the whole; everything together keeps a fraction
    assert kept_lean < (0.5 if part == "all" else 1.0) * kept_plain, (kept_lean, kept_plain)


def test_lean_padded_clip_predicts_exactly_like_the_clip_alone():
    model = apply_lean(tiny_vistr(), **ALL).eval()
    frames, pad_mask, clips = padded_batch()
    with torch.no_grad():
        batched = model(frames, pad_mask)
        for b, clip in enumerate(clips):
            alone = model(clip[None])
            h, w = alone["pred_masks"].shape[-2:]
            for key in ("pred_logits", "pred_boxes"):
                torch.testing.assert_close(batched[key][b], alone[key][0], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(
                batched["pred_masks"][b, :, :h, :w], alone["pred_masks"][0], atol=1e-4, rtol=1e-4
            )


def test_lean_bf16_is_within_its_tolerance_of_float32():
    plain = tiny_vistr().eval()
    lean = apply_lean(copy.deepcopy(plain), **ALL).eval()
    frames, pad_mask, _ = padded_batch()
    with torch.no_grad():
        reference = plain(frames, pad_mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = lean(frames, pad_mask)
    assert low["pred_masks"].dtype == torch.bfloat16  # autocast did run in bf16
    for key, fn in (
        ("pred_masks", torch.sigmoid),
        ("pred_logits", lambda x: x.softmax(-1)),
        ("pred_boxes", None),
    ):
        a, b = low[key].float(), reference[key]
        a, b = (fn(a), fn(b)) if fn else (a, b)
        assert (a - b).abs().max() < BF16_ATOL, key


def test_dot_product_head_checkpoints_its_pixel_decoder_and_ignores_chunks():
    plain = tiny_vistr(mask_fusion="dot_product")
    lean = apply_lean(copy.deepcopy(plain), **ALL)
    frames, pad_mask, _ = padded_batch()
    out_plain, grads_plain = train_step(plain, frames, pad_mask)
    out_lean, grads_lean = train_step(lean, frames, pad_mask)
    torch.testing.assert_close(out_lean["pred_masks"], out_plain["pred_masks"], atol=1e-5, rtol=1e-5)
    relative = 1e-4  # ALL folds the batch norms: float32 rounding (as above)
    for name, grad in grads_plain.items():
        atol = max(1e-5, relative * grad.abs().max().item())
        torch.testing.assert_close(grads_lean[name], grad, atol=atol, rtol=1e-4, msg=name)


def test_apply_lean_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown"):
        apply_lean(tiny_vistr(), checkpoint=["decoder"])
    with pytest.raises(ValueError, match="mask_head_chunk"):
        apply_lean(tiny_vistr(), mask_head_chunk=0)
    model = apply_lean(tiny_vistr(), **ALL)
    with pytest.raises(ValueError, match="already lean"):
        apply_lean(model, **ALL)


def test_lit_module_builds_lean_and_keeps_the_state_dict():
    hparams = default_hparams()
    net = dict(num_frames=FRAMES, num_instances=INSTANCES, backbone="resnet10", **TINY)
    args = dict(net=net, category_ids=[3, 7], category_names=["cat", "dog"], **hparams)
    torch.manual_seed(0)
    plain = VisTRLitModule(**args)
    torch.manual_seed(0)
    lean = VisTRLitModule(
        **args,
        lean=dict(checkpoint=["backbone", "encoder", "mask_head"], mask_head_chunk=1, fold_frozen_bn=True),
    )
    assert lean.model.lean == {"checkpoint": CHECKPOINT_PARTS, "mask_head_chunk": 1, "fold_frozen_bn": True}
    assert lean.hparams.lean["mask_head_chunk"] == 1  # saved: a checkpoint reloads lean
    plain_state, lean_state = plain.state_dict(), lean.state_dict()
    assert list(plain_state) == list(lean_state)  # same keys, same order: checkpoints load either way
    assert all(torch.equal(plain_state[k], lean_state[k]) for k in plain_state)  # same random init


def test_folding_frozen_batch_norm_keeps_the_parameters_and_skips_trainable_norms():
    model = tiny_vistr()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert fold_frozen_batch_norm(model) == 12  # ResNet-10: stem, 2 per block, 3 downsamples
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    frames = padded_batch()[0][:1, :, :, :48, :64]
    with torch.no_grad():
        folded = model.eval()(frames)["pred_masks"]
        unfolded = tiny_vistr().eval()(frames)["pred_masks"]
    torch.testing.assert_close(folded, unfolded, atol=1e-5, rtol=1e-5)
    assert fold_frozen_batch_norm(tiny_vistr(backbone_norm="batch")) == 0  # training statistics: not frozen
