"""Tiny run configurations for the training-system tests (composed from the real config tree)."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "src" / "vistr_lit" / "conf")


def tiny_overrides(synthvis_root: Path, synthvis_params: dict) -> list[str]:
    """The quickstart preset shrunk to seconds: width 48, mask embeddings 16, T = 4, N = 3, 48 px frames."""
    sizes = ",".join(f"[{h},{w}]" for h, w in synthvis_params["sizes"])
    params = ", ".join(f"{k}: {v}" for k, v in synthvis_params.items() if k != "sizes")
    return [
        "preset=quickstart",
        f"data.root={synthvis_root}",
        f"++data.synthvis={{{params}, sizes: [{sizes}]}}",
        "data.num_workers=0",
        "data.batch_size=2",
        "data.clips_per_video=1",
        "data.train_scales=[48]",
        "data.eval_short_side=48",
        "data.eval_max_size=64",
        "clip.len=4",
        "model.net.num_instances=3",
        "model.net.hidden_dim=48",
        "model.net.mask_dim=16",
        "model.net.dim_feedforward=64",
        "model.optim.warmup_steps=0",
        "num_threads=1",
        "trainer.max_time=null",
        "trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
    ]


def custom_data_overrides(root: Path, synthvis_params: dict, *data: str) -> list[str]:
    """The tiny model on a dataset of one's own (``data=custom``), as docs/custom-data.md runs it."""
    tiny = tiny_overrides(Path("unused"), synthvis_params)
    model = [o for o in tiny if not o.startswith(("data.root=", "++data.synthvis="))]
    return [*model, "data=custom", f"data.root={root}", *data]


def compose_run(
    config_name: str,
    output_dir: Path,
    overrides: list[str],
    synthvis_root: Path,
    synthvis_params: dict,
    base: list[str] | None = None,
) -> DictConfig:
    """A composed config usable in-process (Hydra's runtime fields set as ``@hydra.main`` would).

    ``base``: the overrides before ``overrides`` (default: ``tiny_overrides`` on the tiny synthvis).
    """
    base = tiny_overrides(synthvis_root, synthvis_params) if base is None else base
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name=config_name,
            overrides=base
            + (["~callbacks.rich_progress_bar"] if config_name == "train" else [])
            + list(overrides),
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.paths.root_dir = str(output_dir.parent)
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(output_dir.parent)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra  # as @hydra.main hands it to the task
    return cfg
