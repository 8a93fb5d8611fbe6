"""Bring your own YouTube-VIS-format data (docs/custom-data.md): the recipe end to end, errors a user can act
on, runs that never overwrite earlier results, and results files without entries that cannot score."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from train_helpers import CONFIG_DIR, compose_run, custom_data_overrides
from vistr_lit.checkpoints import CheckpointFileError, check_checkpoint, settings_from_checkpoint
from vistr_lit.data.datamodule import EmptySplitError, YTVISDataModule
from vistr_lit.data.layout import DataError, find_frames
from vistr_lit.data.ytvis import load_ytvis
from vistr_lit.errors import UserError, exit_on_user_error
from vistr_lit.eval import apply_checkpoint_settings, checkpoint_settings, run_evaluation
from vistr_lit.evaluation.results import has_mask, select_results, write_results_json
from vistr_lit.infer import run_inference
from vistr_lit.outputs import RunExistsError
from vistr_lit.train import build_datamodule, run_training

CATEGORY_OFFSET = 100  # the custom set's category ids: synthvis's + 100 (not 1..K), kept in results.json
ANN = "annotations.json"
RECIPE = [f"data.train_ann={ANN}", "data.val_fraction=0.5"]  # 6 videos: 10 % would leave no validation
TRAIN_STEPS = ["trainer.max_steps=2", "logger=none"]
RECORD_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")  # Hydra's record of a run, in .hydra/
SLOW = pytest.mark.slow  # a subprocess each: the same errors are asserted in-process elsewhere


@pytest.fixture(scope="module")
def custom_root(tmp_path_factory, synthvis_root) -> Path:
    """synthvis's training videos laid out as most custom sets are: ``annotations.json`` and
    ``JPEGImages/<video>/<frame>.jpg`` in one folder, category ids 101.. instead of 1.."""
    root = tmp_path_factory.mktemp("custom") / "my_data"
    shutil.copytree(synthvis_root / "train" / "JPEGImages", root / "JPEGImages")
    raw = json.loads((synthvis_root / "train.json").read_text())
    for category in raw["categories"]:
        category["id"] += CATEGORY_OFFSET
    for annotation in raw["annotations"]:
        annotation["category_id"] += CATEGORY_OFFSET
    (root / ANN).write_text(json.dumps(raw))
    return root


def run_custom(config, name, root, tmp_path, synthvis_params, overrides, named=None):
    """The recipe in-process: ``python -m vistr_lit.<config> data=custom data.root=ROOT ...``."""
    out = tmp_path / name
    base = custom_data_overrides(root, synthvis_params, *RECIPE)
    cfg = compose_run(config, out, overrides, Path("unused"), synthvis_params, base=base)
    if config == "train":
        return run_training(cfg, out), out
    return run_evaluation(cfg, out, named=named), out


@pytest.fixture(scope="module")
def trained(custom_root, tmp_path_factory, synthvis_params) -> Path:
    """The recipe's training run on the custom set (2 steps, then the final evaluation)."""
    tmp = tmp_path_factory.mktemp("trained")
    metrics, out = run_custom("train", "run", custom_root, tmp, synthvis_params, TRAIN_STEPS)
    assert 0.0 <= metrics["val/AP"] <= 1.0
    return out


def test_quickstart_preset_keeps_the_data_group_the_user_chose():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        quickstart = compose("train", overrides=["+experiment=quickstart"])
        own = compose("train", overrides=["+experiment=quickstart", "data=ytvis2019", "data.root=/my/data"])
        custom = compose("train", overrides=["+experiment=quickstart", "data=custom", "data.root=/my/data"])
    root = OmegaConf.to_container(quickstart.data, resolve=False)["root"]
    assert root.endswith("synthvis-1k") and quickstart.data.synthvis.train_videos == 1000
    for cfg in (own, custom):
        assert cfg.data.root == "/my/data" and cfg.data.synthvis is None  # nothing generated there
        assert cfg.data.batch_size == quickstart.data.batch_size == 24  # the preset's sizes stay
        assert cfg.data.train_frames is None and cfg.data.val_split == "hash"


@pytest.mark.parametrize("layout", ["JPEGImages", "train/JPEGImages", "train", "."])
def test_frames_are_found_in_the_common_layouts(tmp_path, synthvis_root, layout):
    data = load_ytvis(shutil.copy(synthvis_root / "train.json", tmp_path / ANN))
    frames = tmp_path / layout
    shutil.copytree(synthvis_root / "train" / "JPEGImages", frames, dirs_exist_ok=True)
    assert find_frames(tmp_path, data, None, "train_frames") == frames
    assert find_frames(tmp_path, data, layout, "train_frames") == frames


def test_frames_elsewhere_are_named_by_one_key(tmp_path, synthvis_root):
    data = load_ytvis(shutil.copy(synthvis_root / "train.json", tmp_path / ANN))
    shutil.copytree(synthvis_root / "train" / "JPEGImages", tmp_path / "my_frames")
    with pytest.raises(DataError, match="data.train_frames=DIR"):
        find_frames(tmp_path, data, None, "train_frames")
    assert find_frames(tmp_path, data, "my_frames", "train_frames") == tmp_path / "my_frames"


def test_custom_layout_trains_and_evaluates_with_the_documented_recipe(
    trained, custom_root, tmp_path, synthvis_params
):
    ckpt = trained / "checkpoints" / "last.ckpt"
    assert json.loads((trained / "metrics.json").read_text())["val/AP"] >= 0.0
    # a low mask threshold: a 2-step model's masks sit near probability 0.5, so some are not empty
    overrides = [f"ckpt_path={ckpt}", "model.postprocess.mask_threshold=0.05"]
    metrics, out = run_custom("eval", "eval", custom_root, tmp_path, synthvis_params, overrides)
    assert 0.0 <= metrics["val/AP"] <= 1.0
    results = json.loads((out / "results.json").read_text())
    ids = {c["id"] for c in json.loads((custom_root / ANN).read_text())["categories"]}
    assert results and min(ids) > CATEGORY_OFFSET
    assert {r["category_id"] for r in results} <= ids
    assert all(has_mask(r) for r in results)  # no entry without a mask in some frame


def test_an_empty_validation_split_is_an_error(trained, custom_root, tmp_path, synthvis_params):
    empty = ["data.val_fraction=0.0"]
    with pytest.raises(EmptySplitError, match=r"puts 0 of the 6 videos .* data.val_fraction=F"):
        run_custom("train", "train", custom_root, tmp_path, synthvis_params, [*TRAIN_STEPS, *empty])
    assert not (tmp_path / "train" / "checkpoints").exists()  # refused before training
    ckpt = f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}"
    with pytest.raises(EmptySplitError, match="data.val_split=file"):
        run_custom("eval", "eval", custom_root, tmp_path, synthvis_params, [ckpt, *empty])
    assert not (tmp_path / "eval" / "metrics.json").exists()
    with pytest.raises(EmptySplitError, match="data.val_split=none"):
        run_custom("eval", "none", custom_root, tmp_path, synthvis_params, [ckpt, "data.val_split=none"])


def test_a_small_dataset_says_how_to_lengthen_its_epochs(custom_root, caplog):
    datamodule = YTVISDataModule(
        root=str(custom_root),
        train_ann=ANN,
        train_frames=None,
        val_split="none",
        batch_size=24,
        num_workers=0,
    )
    with caplog.at_level(logging.WARNING, logger="vistr_lit.data.datamodule"):
        assert len(datamodule.train_dataloader()) == 1
    assert "data.clips_per_video" in caplog.text


def test_rerunning_into_a_run_directory_refuses_unless_resumed_or_overwrite(
    trained, custom_root, tmp_path, synthvis_params
):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = (out / "checkpoints" / "last.ckpt").read_bytes()
    record = {name: (out / ".hydra" / name).read_text() for name in RECORD_FILES}
    with pytest.raises(RunExistsError, match="overwrite=true.*ckpt_path=last"):
        run_custom("train", "run", custom_root, tmp_path, synthvis_params, TRAIN_STEPS)
    assert (out / "checkpoints" / "last.ckpt").read_bytes() == before
    assert {name: (out / ".hydra" / name).read_text() for name in RECORD_FILES} == record
    steps = ["trainer.max_steps=1", "logger=none", "final_eval=false", "overwrite=true"]
    run_custom("train", "run", custom_root, tmp_path, synthvis_params, steps)
    assert "overwrite=true" in (out / ".hydra" / "overrides.yaml").read_text()  # this run's record now
    replaced = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert replaced["global_step"] == 1
    assert not (out / "metrics.json").exists()  # the earlier run's, removed: this run wrote none

    ckpt = f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"
    run_custom("eval", "eval", custom_root, tmp_path, synthvis_params, [ckpt])
    written = (tmp_path / "eval" / "metrics.json").read_text()
    with pytest.raises(RunExistsError, match="metrics.json"):
        run_custom("eval", "eval", custom_root, tmp_path, synthvis_params, [ckpt])
    assert (tmp_path / "eval" / "metrics.json").read_text() == written
    run_custom("eval", "eval", custom_root, tmp_path, synthvis_params, [ckpt, "overwrite=true"])


def infer_config(ckpt: Path, input_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            "infer",
            overrides=[
                f"ckpt_path={ckpt}",
                f"input={input_path}",
                "num_threads=1",
                "video_format=gif",
                *overrides,
            ],
        )


def test_infer_refuses_to_overwrite_and_overwrite_removes_the_earlier_outputs(trained, custom_root, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    video = sorted((custom_root / "JPEGImages").iterdir())[0]
    out = tmp_path / "infer"
    threshold = "model.postprocess.mask_threshold"
    cfg = infer_config(ckpt, video, f"{threshold}=0.05", "inference.score_threshold=0")
    run_inference(cfg, out, named=[threshold])
    assert all(has_mask(entry) for entry in json.loads((out / "results.json").read_text()))
    assert (out / "results.json").is_file() and (out / video.name / "overlay.gif").is_file()
    stale = out / "other_video" / "overlay.gif"  # an earlier run's overlay of another input
    stale.parent.mkdir()
    stale.write_bytes(b"GIF89a")
    with pytest.raises(RunExistsError, match="overwrite=true"):
        run_inference(cfg, out, named=[threshold])
    assert stale.is_file()
    run_inference(infer_config(ckpt, video, "overwrite=true"), out, named=[])
    assert not stale.parent.exists() and (out / "results.json").is_file()


def test_eval_takes_its_settings_from_the_checkpoint_unless_named(trained, caplog):
    checkpoint, kind = check_checkpoint(trained / "checkpoints" / "last.ckpt")
    assert kind == "lightning"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=["ckpt_path=x", "model.postprocess.mask_threshold=0.25"])
    trained_with = checkpoint["hyper_parameters"]["postprocess"]["mask_threshold"]
    frame = checkpoint["datamodule_hyper_parameters"]["eval_short_side"]
    assert trained_with != 0.25 and cfg.data.eval_short_side != frame
    with caplog.at_level(logging.WARNING, logger="vistr_lit.checkpoints"):
        chosen = settings_from_checkpoint(checkpoint, cfg, checkpoint_settings(cfg), named=[])
    assert chosen["model.postprocess.mask_threshold"] == trained_with  # not named: the checkpoint's
    assert chosen["data.eval_short_side"] == frame
    assert "model.postprocess.mask_threshold=0.5 from the checkpoint (the config says 0.25" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vistr_lit.checkpoints"):
        apply_checkpoint_settings(cfg, checkpoint, named=["model.postprocess.mask_threshold"])
    assert cfg.model.postprocess.mask_threshold == 0.25 and cfg.data.eval_short_side == frame
    assert "model.postprocess.mask_threshold=0.25 (the checkpoint's: 0.5)" in caplog.text


def test_a_file_that_is_no_checkpoint_names_the_path_and_the_missing_key(tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointFileError, match="garbage.ckpt is not a vistr-lit or authors' checkpoint"):
        check_checkpoint(garbage)
    weights = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}}, weights)
    with pytest.raises(CheckpointFileError, match="weights.ckpt .* no 'hyper_parameters' key"):
        check_checkpoint(weights)
    with pytest.raises(CheckpointFileError, match="no such checkpoint file"):
        check_checkpoint(tmp_path / "missing.ckpt")


def _cli(module: str, args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environ.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **env)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.parametrize(
    ("module", "args", "says"),
    [
        ("vistr_lit.eval", ["ckpt_path={garbage}"], "{garbage} is not a vistr-lit or authors' checkpoint"),
        ("vistr_lit.infer", ["ckpt_path={garbage}", "input={root}"], "{garbage} is not a vistr-lit"),
        # train reads ckpt_path through the same check_checkpoint (in-process: test_train.py's resume test)
        pytest.param("vistr_lit.train", ["ckpt_path={garbage}"], "{garbage} is not", marks=SLOW),
        ("vistr_lit.train", ["data.root={root}/nowhere"], "data.root: no such folder {root}/nowhere"),
        pytest.param("vistr_lit.train", ["data.train_ann={garbage}"], "{garbage}: not valid", marks=SLOW),
    ],
)
def test_user_errors_print_one_line_without_a_traceback(tmp_path, custom_root, module, args, says):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(4096))
    fill = {"garbage": garbage, "root": custom_root}
    data = ["data=custom", f"data.root={custom_root}", f"data.train_ann={ANN}", "data.val_fraction=0.5"]
    runs = ["logger=none", "trainer.max_steps=1"] if module != "vistr_lit.infer" else []
    if module == "vistr_lit.train":  # a small model from random weights: no ImageNet file to fetch first
        runs.append("preset=quickstart")
    command = [*data, *runs, f"hydra.run.dir={tmp_path / 'out'}", *(a.format(**fill) for a in args)]
    proc = _cli(module, command, tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and says.format(**fill) in last, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "weights_only" not in proc.stderr


def test_a_refused_run_leaves_the_earlier_runs_hydra_record_alone(tmp_path):
    """Hydra writes no ``.hydra/`` before the run claims its directory; a refused run writes nothing there."""
    out = tmp_path / "out"
    (out / ".hydra").mkdir(parents=True)
    (out / "metrics.json").write_text('{"val/AP": 0.5}')
    earlier = {name: f"the earlier run's {name}\n" for name in RECORD_FILES}
    for name, text in earlier.items():
        (out / ".hydra" / name).write_text(text)
    proc = _cli("vistr_lit.train", ["preset=quickstart", "logger=none", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 1 and "holds an earlier run's results" in proc.stderr, proc.stderr[-3000:]
    assert {name: (out / ".hydra" / name).read_text() for name in RECORD_FILES} == earlier


def test_bugs_keep_their_traceback_and_the_debug_switch_shows_user_errors(monkeypatch):
    @exit_on_user_error
    def entry(error):
        raise error

    with pytest.raises(SystemExit, match="^error: data.root: no such folder"):
        entry(UserError("data.root: no such folder /x"))
    with pytest.raises(SystemExit, match="^error: ckpt_path is required: add ckpt_path=... to the command"):
        entry(_missing("ckpt_path"))
    with pytest.raises(KeyError):  # a bug: not turned into a one-line exit
        entry(KeyError("bug"))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(UserError):
        entry(UserError("data.root: no such folder /x"))


def _missing(key: str) -> Exception:
    try:
        OmegaConf.create({key: "???"})[key]
    except MissingMandatoryValue as error:
        return error
    raise AssertionError("no error")


def test_custom_data_without_a_root_says_which_key_to_set(synthvis_params):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["data=custom"])
    with pytest.raises(DataError, match=r"^data.root is not set: name the dataset folder with data.root=DIR"):
        build_datamodule(cfg)


def test_select_results_drops_entries_without_a_mask_and_keeps_100_per_video_and_category(tmp_path):
    empty = torch.zeros(2, 4, 4, dtype=torch.bool)
    full = torch.ones(2, 4, 4, dtype=torch.bool)
    from vistr_lit.evaluation.results import make_result

    null = make_result(1, 3, 0.9, empty, present=torch.tensor([False, False]))
    blank = make_result(1, 3, 0.8, empty)  # every frame an empty mask
    many = [make_result(1, 3, 0.001 * k, full) for k in range(105)]
    other = make_result(1, 4, 0.0001, full)
    kept = select_results([null, blank, *many, other])
    assert len(kept) == 101 and kept[-1] is other
    assert [e["score"] for e in kept[:-1]] == [0.001 * k for k in range(5, 105)]  # the best, in order
    path = write_results_json(kept, tmp_path / "results.json")
    assert all(any(s is not None for s in e["segmentations"]) for e in json.loads(path.read_text()))


def recipe_commands() -> list[tuple[str, list[str]]]:
    """(module, overrides) of every ``python -m vistr_lit.*`` command in docs/custom-data.md's recipe."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "custom-data.md").read_text()
    recipe = text.split("## 3. Recipe", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = []
    for line in recipe.replace("\\\n", " ").splitlines():
        words = line.split()
        if words[:2] == ["python", "-m"] and words[2] != "vistr_lit.data.check":
            commands.append((words[2].removeprefix("vistr_lit."), words[3:]))
    return commands


def test_the_documented_recipe_composes_to_the_custom_data(tmp_path):
    commands = recipe_commands()
    assert [module for module, _ in commands] == ["train", "train", "eval", "infer"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for module, overrides in commands:
            overrides = [o.replace("MY_DATA", str(tmp_path)) for o in overrides]
            cfg = compose(module, overrides=overrides, return_hydra_config=True)
            assert cfg.hydra.run.dir.startswith("runs/my_data")
            if module == "infer":  # infer reads no dataset: the checkpoint and the input only
                assert cfg.ckpt_path.endswith("last.ckpt") and cfg.input
                continue
            assert cfg.data.root == str(tmp_path) and cfg.data.synthvis is None, (module, overrides)
            assert cfg.data.val_fraction == 0.25  # eval holds out the videos its training held out
