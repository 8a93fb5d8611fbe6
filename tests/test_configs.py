"""Every config composes; every experiment changes exactly what it says (values asserted, nothing else)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "src" / "vistr_lit" / "conf")

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
BOOKKEEPING = {"experiment_name", "tags"}

# experiment -> {dotted key: value it must set}; every other key must equal the defaults (data.* where noted).
EXPECTED = {
    "ablate_baseline": {},
    "ablate_perframe_match": {"model.matcher.mode": "per_frame"},
    "ablate_enc3": {"model.net.enc_layers": 3},
    "ablate_clip18": {"clip.len": 18},
    "ablate_mask_concat": {"model.net.mask_fusion": "concat"},
    "vistr_r50": {},
    "vistr_r101": {"model.net.backbone": "resnet101"},
}
# the paper rows train lean (exact: docs/paper-scale.md)
LEAN = {
    "model.lean.checkpoint": ["backbone", "encoder", "mask_head"],
    "model.lean.mask_head_chunk": 1,
    "model.lean.fold_frozen_bn": True,
}
PLAIN = {"checkpoint": [], "mask_head_chunk": None, "fold_frozen_bn": False}
for _row in ("vistr_r50", "vistr_r101"):
    EXPECTED[_row] = {**EXPECTED[_row], **LEAN}
DATA_CHANGES = {"vistr_r50": "ytvis2019", "vistr_r101": "ytvis2019"}


def compose_train(overrides: list[str] = (), config_name: str = "train"):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def flatten(cfg) -> dict:
    flat = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return flat


def test_every_experiment_has_an_expectation():
    assert set(EXPERIMENTS) == set(EXPECTED) | {"quickstart", "paper_small_start"}  # the CPU presets' own


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_experiment_changes_exactly_what_it_says(name):
    exp_cfg = compose_train([f"+experiment={name}"])
    base, exp = flatten(compose_train()), flatten(exp_cfg)
    changed = {k for k in base.keys() | exp.keys() if base.get(k, "<absent>") != exp.get(k, "<absent>")}
    changed -= BOOKKEEPING
    expected = set(EXPECTED[name])
    if name in DATA_CHANGES:
        data_keys = {k for k in changed if k.startswith("data.")}
        assert data_keys, f"{name} must switch the dataset"
        assert DATA_CHANGES[name] in str(exp["data.root"])
        changed -= data_keys
    assert changed == expected, f"{name} changes {sorted(changed)}, expected {sorted(expected)}"
    for key, value in EXPECTED[name].items():
        assert OmegaConf.select(exp_cfg, key) == value  # resolved (ablate_clip18 reads clip.ablation_len)
    assert exp["experiment_name"] == name


@pytest.mark.parametrize(
    ("overrides", "lean"),
    [
        ([], PLAIN),
        (["+experiment=quickstart"], PLAIN),
        (["trainer=gpu"], {k.removeprefix("model.lean."): v for k, v in LEAN.items()}),
        (["trainer=gpu", "model/lean=none"], PLAIN),
    ],
)
def test_trainer_gpu_turns_the_lean_settings_on(overrides, lean):
    assert OmegaConf.to_container(compose_train(overrides).model.lean) == lean


def test_ablations_compose_on_the_quickstart_preset():
    cfg = compose_train(["+experiment=ablate_enc3", "preset=quickstart"])
    quick = compose_train(["+experiment=quickstart"])
    assert cfg.model.net.enc_layers == 3
    assert quick.model.net.enc_layers != 3
    assert cfg.model.net.hidden_dim == quick.model.net.hidden_dim
    assert cfg.experiment_name == "ablate_enc3"


def makefile_quickstart_overrides() -> list[str]:
    """The Hydra overrides of the Makefile's QUICKSTART_DDP (what `make train` adds to the preset)."""
    text = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    value = text.split("QUICKSTART_DDP :=", 1)[1].split("\n\n", 1)[0]
    return value.replace("\\\n", " ").split()


def test_make_train_takes_the_single_process_forms_steps():
    """`make train` (2 DDP processes) and `python -m vistr_lit.train +experiment=quickstart` step alike:
    the same global batch, epochs and guard, so their optimizer steps and schedules are the same."""
    single = compose_train(["+experiment=quickstart"])
    overrides = makefile_quickstart_overrides()
    assert "trainer=ddp" in overrides
    ddp = compose_train(["+experiment=quickstart", *overrides])
    assert ddp.trainer.devices * ddp.data.batch_size == single.data.batch_size
    for key in ("max_epochs", "max_steps", "max_time", "limit_train_batches", "accumulate_grad_batches"):
        assert ddp.trainer[key] == single.trainer[key], key
    assert ddp.model == single.model


def test_quickstart_is_cpu_sized_and_bounded_by_steps():
    cfg = compose_train(["+experiment=quickstart"])
    assert cfg.model.net.backbone == "resnet10"
    assert cfg.model.net.hidden_dim <= 128
    assert cfg.clip.len == 2 and cfg.data.batch_size == 24  # 48 frames a step: beat T = 3 x 16 on two seeds
    assert cfg.trainer.accelerator == "cpu"
    # a fixed 50 epochs of 42 steps, the cosine annealed over exactly them; max_time only a safety net
    assert cfg.trainer.max_epochs == 50 and cfg.trainer.max_steps == -1
    assert cfg.model.optim.schedule == "cosine"
    hours, minutes = (int(x) for x in cfg.trainer.max_time.split(":")[1:3])
    assert 60 * hours + minutes >= 30  # well above the ~12 min of training on an idle 2-core machine
    assert cfg.model.optim.lr_backbone == cfg.model.optim.lr  # trained from scratch
    assert cfg.data.synthvis.train_videos == 1000  # the 150-video default is memorised, not learned
    assert cfg.model.net.mask_fusion == "dot_product"  # the paper's head learns ~2x slower per minute
    assert cfg.model.net.mask_classifier == "clip"  # class corrections read from each slot's own masks
    assert cfg.model.net.mask_coords is True  # masks also read offsets from each query's own box
    assert compose_train(["model/mask_head=dot_product"]).model.net.mask_coords is False  # off by default
    # evaluation averages each window with its mirror images (synthvis has no up and down)
    assert list(cfg.model.predictor.tta) == ["hflip", "vflip"]
    assert list(compose_train([]).model.predictor.tta) == []  # off by default: one plain pass, as the paper
    # about half the quickstart's slots hold an object, against ~7 % of the paper's queries
    assert cfg.model.criterion.eos_coef == 1.0 > compose_train().model.criterion.eos_coef
    assert compose_train().model.net.get("mask_classifier", False) is False  # not in the paper's rows
    # tracks continue across windows on any overlap (the paper's rows keep 0.5)
    assert cfg.model.predictor.match_iou < compose_train().model.predictor.match_iou == 0.5
    root, default_root = (
        OmegaConf.to_container(c.data, resolve=False)["root"] for c in (cfg, compose_train())
    )
    assert root != default_root  # its own folder: never clashes with the default synthvis


def test_paper_defaults():
    cfg = compose_train()
    net, optim = cfg.model.net, cfg.model.optim
    assert (net.backbone, net.hidden_dim, net.enc_layers, net.dec_layers, net.num_instances) == (
        "resnet50",
        384,
        6,
        6,
        10,
    )
    assert cfg.clip.len == 36 and net.num_frames == 36
    assert (optim.lr, optim.lr_backbone, optim.weight_decay, optim.lr_drop) == (1e-4, 1e-5, 1e-4, 12)
    assert cfg.trainer.max_epochs == 18 and cfg.trainer.gradient_clip_val == 0.1
    assert cfg.trainer.use_distributed_sampler is False
    assert cfg.model.matcher.mode == "sequence" and cfg.model.net.mask_fusion == "attention"
    assert "experiment" not in cfg


@pytest.mark.parametrize(
    ("override", "key", "value"),
    [
        ("data=ytvis2019", "data.val_split", "hash"),
        ("data=ytvis2021", "data.train_ann", "train/instances.json"),
        ("data=ovis", "data.train_ann", "annotations_train.json"),
        ("clip=len18", "model.net.num_frames", 18),
        ("model/backbone=r101", "model.net.backbone", "resnet101"),
        ("model/backbone=r18", "model.net.backbone", "resnet18"),
        ("model/transformer=enc3", "model.net.enc_layers", 3),
        ("model/transformer=tiny", "model.net.hidden_dim", 96),
        ("model/matcher=per_frame", "model.matcher.mode", "per_frame"),
        ("model/mask_head=concat", "model.net.mask_fusion", "concat"),
        ("model/mask_head=per_frame", "model.net.temporal_fusion", "none"),
        ("model/mask_head=dot_product", "model.net.mask_fusion", "dot_product"),
        ("trainer=cpu", "trainer.accelerator", "cpu"),
        ("trainer=gpu", "trainer.accelerator", "gpu"),
        ("trainer=ddp", "trainer.strategy", "ddp"),
        ("trainer=ddp_spawn", "trainer.strategy", "ddp_spawn"),
        ("logger=wandb", "logger.wandb.offline", True),
        ("logger=tensorboard", "logger.tensorboard._target_", "lightning.pytorch.loggers.TensorBoardLogger"),
        ("logger=many", "logger.csv._target_", "lightning.pytorch.loggers.CSVLogger"),
        ("logger=none", "logger", {}),
        ("callbacks=none", "callbacks", {}),
    ],
)
def test_group_options_compose(override, key, value):
    cfg = compose_train([override])
    assert OmegaConf.select(cfg, key) == value


def test_trainer_group_maps_onto_lightning_trainer_arguments():
    import inspect

    import lightning as L

    accepted = set(inspect.signature(L.Trainer.__init__).parameters)
    for option in ("default", "cpu", "gpu", "ddp", "ddp_spawn"):
        cfg = compose_train([f"trainer={option}"])
        keys = set(cfg.trainer) - {"_target_"}
        assert keys <= accepted, f"trainer={option}: not Trainer arguments: {sorted(keys - accepted)}"


def test_eval_config_composes_with_an_experiment():
    cfg = compose_train(["+experiment=quickstart", "ckpt_path=x.ckpt"], config_name="eval")
    assert cfg.experiment_name == "quickstart" and cfg.ckpt_path == "x.ckpt"
    assert cfg.clip.len == compose_train(["+experiment=quickstart"]).clip.len
