"""Time of one training step (forward, losses, backward, gradient clipping, AdamW) on real batches.

Examples:
    python scripts/bench_train_step.py                                   # the quickstart: fp32 and bf16
    python scripts/bench_train_step.py --batch-size 16 --threads 2 -- model.net.mask_stride=2

The config is the training config composed with ``--experiment`` and the overrides after ``--``; the batches
come from its training DataModule (preloaded, so loading is not timed). The step mirrors ``VisTRLitModule``'s:
the criterion's weighted total, ``clip_grad_norm_`` at the trainer's ``gradient_clip_val`` and AdamW with the
module's learning rate and weight decay, fused where the module fuses it, under ``torch.autocast`` for bf16.
Reported: the mean of the fastest half of the timed steps.

With ``--variants`` it instead times the experiment's model on a synthetic clip of ``--frames`` frames of
``--height`` × ``--width`` (B = 1, ``--targets`` instances) under each memory option of ``model/lean``
(docs/paper-scale.md), each variant in a fresh subprocess, and prints a markdown table of the seconds of the
forward (model and losses), the backward and the optimizer step, and the peak memory: the peak resident set
of the fresh process (and its growth over the built model and batch) on CPU, ``max_memory_allocated`` on CUDA:
    python scripts/bench_train_step.py --experiment vistr_r50 --variants all --frames 36 --width 540
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from torch import Tensor

from vistr_lit.lit_module import FUSED_ADAMW_DEVICES, VisTRLitModule
from vistr_lit.models import mask_head
from vistr_lit.train import CONFIG_DIR, build_datamodule, build_module, module_arguments

DTYPES = {"fp32": None, "bf16": torch.bfloat16}
# variant -> (model/lean overrides, autocast dtype); every variant starts from model/lean=none
LEAN_VARIANTS = {
    "plain-tvdcn": ([], "fp32"),  # the plain path before the sampled DCN: torchvision's CPU deform_conv2d
    "plain": ([], "fp32"),
    "bf16": ([], "bf16"),
    "ckpt-backbone": (["model.lean.checkpoint=[backbone]"], "fp32"),
    "ckpt-encoder": (["model.lean.checkpoint=[encoder]"], "fp32"),
    "chunk-1": (["model.lean.mask_head_chunk=1"], "fp32"),
    "ckpt-mask-head": (["model.lean.checkpoint=[mask_head]"], "fp32"),
    "ckpt-mask-head+chunk-1": (["model.lean.checkpoint=[mask_head]", "model.lean.mask_head_chunk=1"], "fp32"),
    "fold": (["model.lean.fold_frozen_bn=true"], "fp32"),
    "lean": (["model/lean=all"], "fp32"),
    "lean+bf16": (["model/lean=all"], "bf16"),
}
TORCHVISION_DCN_VARIANTS = {"plain-tvdcn"}
KIB = 1024


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
    parser.add_argument(
        "--variants", default=None, help=f"comma-separated subset of {list(LEAN_VARIANTS)}, or all"
    )
    parser.add_argument("--frames", type=int, default=36, help="--variants: T of the synthetic clip")
    parser.add_argument("--height", type=int, default=300, help="--variants: frame height")
    parser.add_argument("--width", type=int, default=540, help="--variants: frame width")
    parser.add_argument("--targets", type=int, default=3, help="--variants: ground-truth instances")
    parser.add_argument("--num-classes", type=int, default=40, help="--variants: K")
    parser.add_argument("--device", default="cpu", help="--variants: cpu or cuda")
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # one variant, in its subprocess
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


def synthetic_clip(args: argparse.Namespace, device: torch.device) -> tuple[Tensor, list[dict]]:
    """Frames ``[1, T, 3, H, W]`` and one clip's targets: ``--targets`` boxes (as masks), all visible."""
    gen = torch.Generator().manual_seed(0)
    frames = torch.randn(1, args.frames, 3, args.height, args.width, generator=gen)
    m, t = args.targets, args.frames
    centre = 0.3 + 0.4 * torch.rand(m, t, 2, generator=gen)
    size = 0.1 + 0.2 * torch.rand(m, t, 2, generator=gen)
    boxes = torch.cat([centre, size], dim=-1)  # M x T x 4 (cxcywh)
    ys = (torch.arange(args.height) + 0.5) / args.height
    xs = (torch.arange(args.width) + 0.5) / args.width
    low, high = centre - size / 2, centre + size / 2  # M x T x 2 (x, y)
    inside_x = (xs > low[..., :1]) & (xs < high[..., :1])  # M x T x W
    inside_y = (ys > low[..., 1:]) & (ys < high[..., 1:])  # M x T x H
    target = {
        "labels": torch.randint(0, args.num_classes, (m,), generator=gen),
        "boxes": boxes,
        "valid": torch.ones(m, t, dtype=torch.bool),
        "masks": inside_y[..., :, None] & inside_x[..., None, :],  # M x T x H x W
    }
    return frames.to(device), [{k: v.to(device) for k, v in target.items()}]


def bench_variant(args: argparse.Namespace) -> dict:
    """One training step of ``args.variant`` (after ``--warmup`` untimed ones), in this fresh process."""
    lean_overrides, dtype_name = LEAN_VARIANTS[args.variant]
    if args.variant in TORCHVISION_DCN_VARIANTS:
        mask_head.deform_conv2d = torchvision.ops.deform_conv2d
    cfg = compose_config(
        argparse.Namespace(
            experiment=args.experiment,
            batch_size=1,
            overrides=[f"clip.len={args.frames}", "model/lean=none", *lean_overrides, *args.overrides],
        )
    )
    torch.manual_seed(cfg.seed)
    device = torch.device(args.device)
    ids = list(range(1, args.num_classes + 1))  # random weights: the step's cost does not depend on the start
    model_cfg = module_arguments(cfg)
    module = VisTRLitModule(**model_cfg, category_ids=ids, category_names=[str(i) for i in ids])
    model, criterion = module.model.to(device).train(), module.criterion.to(device)
    frames, targets = synthetic_clip(args, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = module.hparams.optim
    fused = device.type in FUSED_ADAMW_DEVICES
    optimizer = torch.optim.AdamW(params, lr=optim["lr"], weight_decay=optim["weight_decay"], fused=fused)
    clip = float(cfg.trainer.gradient_clip_val or 0.0)
    dtype = DTYPES[dtype_name]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> list[float]:
        """Wall seconds of the forward, backward and optimizer step, then their CPU seconds (all threads:
        robust to other processes sharing the cores)."""
        marks = [(time.perf_counter(), time.process_time())]
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = criterion.weighted_total(criterion(model(frames), targets))
        sync()
        marks.append((time.perf_counter(), time.process_time()))
        loss.backward()
        sync()
        marks.append((time.perf_counter(), time.process_time()))
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        marks.append((time.perf_counter(), time.process_time()))
        return [b[i] - a[i] for i in (0, 1) for a, b in zip(marks, marks[1:])]

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB
    times = [step() for _ in range(args.steps)]
    best = min(times, key=lambda t: sum(t[:3]))
    result = {
        "variant": args.variant,
        "lean": model_cfg["lean"],
        "dtype": dtype_name,
        "forward_s": best[0],
        "backward_s": best[1],
        "step_s": best[2],
        "total_s": sum(best[:3]),
        "cpu_s": best[3:],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB,
        "rss_before_mib": before,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0],
    }
    if device.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / KIB**2
    return result


def variants_table(args: argparse.Namespace, argv: list[str]) -> None:
    """Run every variant of ``--variants`` in a fresh subprocess and print the markdown table."""
    names = list(LEAN_VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = set(names) - set(LEAN_VARIANTS)
    if unknown:
        raise SystemExit(f"--variants: unknown {sorted(unknown)}; choose from {list(LEAN_VARIANTS)} or all")
    results = []
    for name in names:
        split = argv.index("--") if "--" in argv else len(argv)  # the Hydra overrides follow "--"
        cmd = [sys.executable, os.path.abspath(__file__), *argv[:split], "--variant", name, *argv[split:]]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            print(f"| {name} | failed: {done.stderr.strip().splitlines()[-1:]} |")
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if not results:
        raise SystemExit("every variant failed")
    first = results[0]
    print(
        f"{args.experiment} {' '.join(args.overrides)}: training step, B = 1, T = {args.frames}, "
        f"{args.height}x{args.width}, {args.targets} targets, on {first['device']}, {first['threads']} "
        f"thread(s), load {first['load_avg_1min']:.1f}, best of {args.steps} after {args.warmup} warm-up"
    )
    cuda = "cuda_peak_mib" in first
    print(
        "| variant | dtype | forward s | backward s | step s | total s | CPU s fwd / bwd / step "
        "| peak RSS MiB | RSS growth MiB |" + (" cuda peak MiB |" if cuda else "")
    )
    print("|---" * (9 + cuda) + "|")
    for r in results:
        seconds = " | ".join(f"{r[k]:.2f}" for k in ("forward_s", "backward_s", "step_s", "total_s"))
        growth = r["peak_rss_mib"] - r["rss_before_mib"]
        cpu = " / ".join(f"{c:.1f}" for c in r["cpu_s"])
        row = (
            f"| {r['variant']} | {r['dtype']} | {seconds} | {cpu} | {r['peak_rss_mib']:.0f} | {growth:.0f} |"
        )
        print(row + (f" {r['cuda_peak_mib']:.0f} |" if cuda else ""))


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.variant is not None:
        torch.set_num_threads(args.threads)
        print(json.dumps(bench_variant(args)))
        return
    if args.variants is not None:
        variants_table(args, argv)
        return
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
