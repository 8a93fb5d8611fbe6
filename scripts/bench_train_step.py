"""Time of one training step (forward, losses, backward, gradient clipping, AdamW) on real batches.

Examples:
    python scripts/bench_train_step.py                                   # the quickstart: fp32 and bf16
    python scripts/bench_train_step.py --batch-size 16 --threads 2 -- model.net.mask_stride=2

The config is the training config composed with ``--experiment`` and the overrides after ``--``; the batches
come from its training DataModule (preloaded, so loading is not timed). The step mirrors ``VisTRLitModule``'s:
the criterion's weighted total, ``clip_grad_norm_`` at the trainer's ``gradient_clip_val`` and AdamW with the
module's learning rate and weight decay, fused where the module fuses it, under ``torch.autocast`` for bf16.
Reported: the mean of the fastest half of the timed steps.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from vistr_lit.lit_module import FUSED_ADAMW_DEVICES
from vistr_lit.train import CONFIG_DIR, build_datamodule, build_module

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="quickstart")
    parser.add_argument("--batch-size", type=int, default=8, help="clips a step (make train: 8 per rank)")
    parser.add_argument("--dtype", default="fp32,bf16", help="comma-separated subset of fp32,bf16 (autocast)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, default=6, help="distinct preloaded batches")
    parser.add_argument("--steps", type=int, default=18, help="timed steps, after the warm-up")
    parser.add_argument("--warmup", type=int, default=3, help="untimed passes over the batches")
    parser.add_argument(
        "--stat",
        choices=("fastest-half", "mean"),
        default="fastest-half",
        help="fastest-half: robust to a shared machine; mean: for batches of different sizes "
        "(data.group_by_aspect_ratio=true), with --steps a multiple of --batches",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    return parser.parse_args(argv)


def compose_config(args: argparse.Namespace):
    overrides = [
        f"+experiment={args.experiment}",
        f"data.batch_size={args.batch_size}",
        "data.num_workers=0",
        *args.overrides,
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    root = Path(CONFIG_DIR).parent
    with open_dict(cfg):  # the runtime fields @hydra.main would set (paths interpolate them)
        cfg.hydra.runtime.cwd = str(root)
        cfg.hydra.runtime.output_dir = str(root / "outputs" / "bench_train_step")
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def time_steps(
    module, batches: list[dict], dtype, clip: float, steps: int, warmup: int, stat: str = "fastest-half"
) -> float:
    model, criterion = module.model.train(), module.criterion
    params = [p for p in model.parameters() if p.requires_grad]
    optim = module.hparams.optim  # one group: the module's groups differ only in learning rate
    fused = all(p.device.type in FUSED_ADAMW_DEVICES for p in params)
    optimizer = torch.optim.AdamW(params, lr=optim["lr"], weight_decay=optim["weight_decay"], fused=fused)

    def step(batch: dict) -> None:
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            outputs = model(batch["frames"], batch["pad_mask"])
            loss = criterion.weighted_total(criterion(outputs, batch["targets"]))
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for batch in batches * warmup:  # oneDNN primitives, the allocator: the first steps are slower
        step(batch)
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(batches[i % len(batches)])
        times.append(time.perf_counter() - start)
    if stat == "mean":
        return statistics.fmean(times)
    return statistics.fmean(sorted(times)[: max(1, steps // 2)])


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = compose_config(args)
    torch.manual_seed(cfg.seed)
    datamodule = build_datamodule(cfg)
    loader = iter(datamodule.train_dataloader())
    batches = [next(loader) for _ in range(args.batches)]
    shape = ", ".join(str(s) for s in sorted({tuple(b["frames"].shape) for b in batches}))
    clip = float(cfg.trainer.gradient_clip_val or 0.0)
    print(f"{args.experiment} {' '.join(args.overrides)}: frames {shape}, {args.threads} thread(s)")
    for name in args.dtype.split(","):
        module = build_module(cfg, datamodule)  # fresh weights per dtype: the same start for each
        seconds = time_steps(module, batches, DTYPES[name], clip, args.steps, args.warmup, args.stat)
        print(f"  {name}: {seconds * 1000:.1f} ms a step ({1 / seconds:.2f} steps/s)")


if __name__ == "__main__":
    main()
