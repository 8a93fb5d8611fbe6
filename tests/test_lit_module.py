"""VisTRLitModule: optimizer groups and schedule as the paper writes them; hyper-parameters rebuild it."""

import math

import pytest
import torch

from vistr_lit.convert_checkpoint import default_hparams, save_lightning_checkpoint
from vistr_lit.lit_module import POINT_LOSS_KEYS, VisTRLitModule, loss_weights

NET = dict(
    num_frames=2,
    num_instances=2,
    backbone="resnet18",
    hidden_dim=48,
    nheads=4,
    enc_layers=1,
    dec_layers=2,
    dim_feedforward=32,
)


def make_module(**optim) -> VisTRLitModule:
    hparams = default_hparams()
    hparams["optim"].update(optim)
    return VisTRLitModule(net=dict(NET), category_ids=[3, 7], category_names=["cat", "dog"], **hparams)


class FakeTrainer:
    def __init__(self, epoch: int = 0, steps: int = 100, precision: str = "32-true"):
        self.current_epoch = epoch
        self.estimated_stepping_batches = steps
        self.precision = precision


def test_adamw_is_fused_except_under_a_gradient_scaler():
    module = make_module()
    for precision, fused in (("32-true", True), ("bf16-mixed", True), ("16-mixed", None)):
        module._trainer = FakeTrainer(precision=precision)
        assert module.configure_optimizers()["optimizer"].defaults["fused"] is fused, precision


@pytest.mark.parametrize(("algorithm", "check"), [("norm", "norm"), (None, "norm"), ("value", "value")])
def test_fused_optimizer_gradients_are_clipped_like_lightning_clips_them(algorithm, check):
    """Lightning refuses to clip for a fused optimizer under bf16-mixed; the module clips them itself."""
    module = make_module()
    module._trainer = FakeTrainer(precision="bf16-mixed")
    optimizer = module.configure_optimizers()["optimizer"]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p in params:
        p.grad = torch.full_like(p, 3.0)
    module.configure_gradient_clipping(optimizer, gradient_clip_val=0.1, gradient_clip_algorithm=algorithm)
    if check == "norm":
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        assert total == pytest.approx(0.1, rel=1e-3)
    else:
        assert all(torch.all(p.grad == 0.1) for p in params)


def test_param_groups_backbone_and_rest():
    module = make_module()
    module._trainer = FakeTrainer()
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["transformer_heads"]["lr"] == 1e-4 and groups["backbone"]["lr"] == 1e-5
    assert all(g["weight_decay"] == 1e-4 for g in optimizer.param_groups)
    named = dict(module.model.named_parameters())
    backbone_ids = {id(p) for n, p in named.items() if n.startswith("backbone.") and p.requires_grad}
    assert {id(p) for p in groups["backbone"]["params"]} == backbone_ids
    trainable = {id(p) for p in module.model.parameters() if p.requires_grad}
    in_groups = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert len(in_groups) == len(set(in_groups)) and set(in_groups) == trainable  # each trained param once
    frozen = [n for n, p in named.items() if not p.requires_grad]
    assert any(n.startswith("backbone.body.conv1") for n in frozen)  # the paper freezes conv1 and layer1
    assert set(groups) == {"transformer_heads", "backbone"}  # lr_mask_head: null keeps the original's two


def test_mask_branch_gets_its_own_learning_rate():
    module = make_module(lr_mask_head=2e-3)
    module._trainer = FakeTrainer()
    groups = {g["name"]: g for g in module.configure_optimizers()["optimizer"].param_groups}
    assert groups["mask_head"]["lr"] == 2e-3 and groups["transformer_heads"]["lr"] == 1e-4
    mask_branch = {
        id(p)
        for n, p in module.model.named_parameters()
        if n.split(".")[0] in ("bbox_attention", "mask_head", "insmask_head")  # VisTR's mask branch
    }
    assert mask_branch and {id(p) for p in groups["mask_head"]["params"]} == mask_branch
    assert not mask_branch & {id(p) for p in groups["transformer_heads"]["params"]}


def test_step_schedule_drops_at_lr_drop():
    module = make_module(schedule="step", lr_drop=12, gamma=0.1, warmup_steps=0)
    for epoch, factor in ((0, 1.0), (11, 1.0), (12, 0.1), (17, 0.1)):
        module._trainer = FakeTrainer(epoch=epoch)
        assert module._lr_factor(step=5) == pytest.approx(factor)


def test_cosine_schedule_with_warmup():
    module = make_module(schedule="cosine", warmup_steps=10)
    module._trainer = FakeTrainer(steps=110)
    assert module._lr_factor(0) == pytest.approx(0.1)
    assert module._lr_factor(9) == pytest.approx(1.0)
    assert module._lr_factor(60) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert module._lr_factor(110) == pytest.approx(0.0)


def test_a_longer_schedule_ends_the_run_part_way_down_the_cosine():
    module = make_module(schedule="cosine", warmup_steps=10, schedule_steps=210)
    module._trainer = FakeTrainer(steps=110)  # the run's 110 steps are not the schedule's
    assert module._lr_factor(110) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert module._lr_factor(210) == pytest.approx(0.0)


def test_wsd_schedule_holds_the_peak_then_cools_down_to_zero():
    module = make_module(schedule="wsd", warmup_steps=10, cooldown_fraction=0.25)
    module._trainer = FakeTrainer(steps=110)  # 100 steps after the warm-up; the last 25 cool down
    assert module._lr_factor(0) == pytest.approx(0.1)
    assert module._lr_factor(50) == module._lr_factor(85) == pytest.approx(1.0)  # stable
    assert module._lr_factor(85 + 4) == pytest.approx(1 - math.sqrt(4 / 25))  # 1 - sqrt cool-down
    assert module._lr_factor(110) == pytest.approx(0.0)


@pytest.mark.parametrize("fraction", [0.0, 1.5, None])
def test_wsd_schedule_needs_a_cooldown_fraction(fraction):
    with pytest.raises(ValueError, match="cooldown_fraction"):
        make_module(schedule="wsd", cooldown_fraction=fraction)


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="optim.schedule"):
        make_module(schedule="linear")


def test_loss_weights_cover_auxiliary_layers():
    weights = loss_weights(default_hparams()["criterion"], num_aux_layers=2)
    assert weights["loss_bbox"] == 5.0 and weights["loss_bbox_1"] == 5.0 and weights["loss_giou_0"] == 2.0
    assert "loss_ce_2" not in weights
    assert make_module().criterion.weight_dict == loss_weights(default_hparams()["criterion"], 1)


def test_focal_and_point_settings_reach_the_criterion_and_older_hparams_keep_the_defaults():
    hparams = default_hparams()
    assert hparams["criterion"]["focal_alpha"] == 0.25 and hparams["criterion"]["focal_gamma"] == 2.0
    hparams["criterion"].update(focal_alpha=0.5, focal_gamma=1.0)
    module = VisTRLitModule(net=dict(NET), category_ids=[3, 7], category_names=["cat", "dog"], **hparams)
    assert (module.criterion.focal_alpha, module.criterion.focal_gamma) == (0.5, 1.0)
    points = dict(mask_loss_resolution="points", mask_loss_points=99, point_importance_ratio=0.0)
    hparams["criterion"].update(points)
    module = VisTRLitModule(net=dict(NET), category_ids=[3, 7], category_names=["cat", "dog"], **hparams)
    assert (module.criterion.mask_loss_points, module.criterion.point_importance_ratio) == (99, 0.0)
    hparams["criterion"]["mask_loss_resolution"] = "target"
    for key in ("focal_alpha", "focal_gamma", *POINT_LOSS_KEYS):  # hparams saved before these keys existed
        del hparams["criterion"][key]
    module = VisTRLitModule(net=dict(NET), category_ids=[3, 7], category_names=["cat", "dog"], **hparams)
    assert (module.criterion.focal_alpha, module.criterion.focal_gamma) == (0.25, 2.0)
    assert (module.criterion.point_oversample_ratio, module.criterion.point_importance_ratio) == (3.0, 0.75)


def test_load_from_checkpoint_rebuilds_everything(tmp_path):
    module = make_module().eval()
    path = tmp_path / "m.ckpt"
    save_lightning_checkpoint(module, path)
    loaded = VisTRLitModule.load_from_checkpoint(path, map_location="cpu").eval()
    assert loaded.hparams.category_ids == [3, 7] and loaded.hparams.category_names == ["cat", "dog"]
    assert loaded.model.num_frames == 2 and loaded.model.num_instances == 2 and loaded.model.num_classes == 2
    frames = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        a, b = module(frames), loaded(frames)
    torch.testing.assert_close(a["pred_masks"], b["pred_masks"], rtol=0, atol=0)


def test_training_step_logs_every_loss_and_returns_the_weighted_total(synthvis_root, synthvis_params):
    from vistr_lit.data.datamodule import YTVISDataModule

    datamodule = YTVISDataModule(
        root=str(synthvis_root),
        num_frames=2,
        batch_size=2,
        num_workers=0,
        train_scales=[48],
        crop_prescales=None,
        crop_size=None,
        synthvis=synthvis_params,
    )
    datamodule.setup("fit")
    hparams = default_hparams()
    module = VisTRLitModule(
        net=dict(NET),
        category_ids=datamodule.category_map.ids,
        category_names=datamodule.category_map.names,
        **hparams,
    )
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, value)
    module.log_dict = lambda values, **kw: logged.update(values)

    class Strategy:
        @staticmethod
        def reduce_boolean_decision(decision, all=True):
            return decision

    module._trainer = type("T", (), {"strategy": Strategy(), "should_stop": False})()
    batch = next(iter(datamodule.train_dataloader()))
    loss = module.training_step(batch, 0)
    names = {"loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "loss_ce_0", "loss_bbox_0"}
    assert {f"train/{n}" for n in names} <= set(logged)
    expected = sum(module.criterion.weight_dict[k[6:]] * v for k, v in logged.items() if k != "train/loss")
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert module.model.class_embed.weight.grad is not None
