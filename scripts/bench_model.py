"""Forward time and peak memory of one VisTR clip, with a per-module breakdown.

Examples:
    python scripts/bench_model.py                                  # R50, T=36, 300x540, fp32 + bf16, CPU
    python scripts/bench_model.py --frames 72 --device cuda
    python scripts/bench_model.py --backbone resnet50 --frames 6 --height 150 --width 270 --dtype fp32

With ``--variants`` (a comma-separated subset of ``LEAN_VARIANTS``, or all) the rows are the memory options
of ``model/lean`` (docs/paper-scale.md) alone and combined instead of the dtypes:
    python scripts/bench_model.py --variants all --frames 36 --threads 2

Each dtype (variant) runs in its own subprocess so that CPU peak memory (max RSS growth during the forward
passes, and the fresh process's peak RSS) is measured per configuration; on CUDA the peak is
``torch.cuda.max_memory_allocated``. Weights are random (timing does not depend on them). The per-module
times come from forward hooks and are inclusive (summed over the mask head's instance chunks).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torchvision

from vistr_lit.models import build_vistr, mask_head
from vistr_lit.models.lean import apply_lean

MODULES = (
    "backbone",
    "input_proj",
    "transformer.encoder",
    "transformer.decoder",
    "bbox_attention",
    "mask_head",
    "insmask_head",
)
DTYPES = {"fp32": None, "bf16": torch.bfloat16}
# variant -> (apply_lean keyword arguments, dtype); checkpointing does nothing without autograd
LEAN_ALL = {"checkpoint": ("backbone", "encoder", "mask_head"), "mask_head_chunk": 1, "fold_frozen_bn": True}
LEAN_VARIANTS = {
    "plain-tvdcn": ({}, "fp32"),  # the plain path before the sampled DCN: torchvision's CPU deform_conv2d
    "plain": ({}, "fp32"),
    "bf16": ({}, "bf16"),
    "bf16+fold": ({"fold_frozen_bn": True}, "bf16"),
    "chunk-1": ({"mask_head_chunk": 1}, "fp32"),
    "chunk-2": ({"mask_head_chunk": 2}, "fp32"),
    "chunk-5": ({"mask_head_chunk": 5}, "fp32"),
    "fold": ({"fold_frozen_bn": True}, "fp32"),
    "lean": (LEAN_ALL, "fp32"),
    "lean+bf16": (LEAN_ALL, "bf16"),
}
# modules whose work the model calls through methods other than forward (the paper's mask head is called per
# frame, then per instance chunk)
METHODS = {"mask_head": ("frame_features", "instance_features")}
TORCHVISION_DCN_VARIANTS = {"plain-tvdcn"}
KIB = 1024


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--height", type=int, default=300)
    parser.add_argument("--width", type=int, default=540)
    parser.add_argument("--hidden-dim", type=int, default=384)
    parser.add_argument("--nheads", type=int, default=8)
    parser.add_argument("--dim-feedforward", type=int, default=2048)
    parser.add_argument("--enc-layers", type=int, default=6)
    parser.add_argument("--dec-layers", type=int, default=6)
    parser.add_argument("--num-classes", type=int, default=40)
    parser.add_argument("--dtype", default="fp32,bf16", help="comma-separated subset of fp32,bf16 (autocast)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=None, help="default: 1 on CUDA, 0 on CPU")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: torch's)")
    parser.add_argument("--variants", default=None, help=f"subset of {list(LEAN_VARIANTS)}, or all")
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # one variant, in its subprocess
    parser.add_argument("--json", action="store_true", help="print one JSON line (used for the subprocesses)")
    return parser.parse_args(argv)


class ModuleTimer:
    """Inclusive wall time of named submodules, via forward pre/post hooks and the ``METHODS`` they are
    called through (synchronizing on CUDA)."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...], device: torch.device) -> None:
        self.totals = {name: 0.0 for name in names}
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.starts: dict[str, float] = {}
        modules = dict(model.named_modules())
        for name in names:
            if modules.get(name) is None:
                continue
            modules[name].register_forward_pre_hook(self._start(name))
            modules[name].register_forward_hook(self._stop(name))
            for method in METHODS.get(name, ()):
                setattr(modules[name], method, self._timed(name, getattr(modules[name], method)))

    def _start(self, name):
        def hook(module, args):
            self.sync()
            self.starts[name] = time.perf_counter()

        return hook

    def _timed(self, name, method):
        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            out = method(*args, **kwargs)
            self.sync()
            self.totals[name] += time.perf_counter() - start
            return out

        return timed

    def _stop(self, name):
        def hook(module, args, output):
            self.sync()
            self.totals[name] += time.perf_counter() - self.starts[name]

        return hook


def rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB


def bench_one(args: argparse.Namespace, dtype_name: str, lean: dict | None = None) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_vistr(
        args.num_classes,
        args.frames,
        args.instances,
        backbone=args.backbone,
        hidden_dim=args.hidden_dim,
        nheads=args.nheads,
        dim_feedforward=args.dim_feedforward,
        enc_layers=args.enc_layers,
        dec_layers=args.dec_layers,
    )
    if lean:
        apply_lean(model, **lean)
    model = model.to(device).eval()
    frames = torch.randn(1, args.frames, 3, args.height, args.width, device=device)
    timer = ModuleTimer(model, MODULES, device)
    warmup = args.warmup if args.warmup is not None else int(device.type == "cuda")
    autocast = DTYPES[dtype_name]

    def forward():
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=autocast, enabled=autocast is not None),
        ):
            return model(frames)

    for _ in range(warmup):
        forward()
    timer.totals = dict.fromkeys(timer.totals, 0.0)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = rss_mib()
    times = []
    cpu_start = time.process_time()  # CPU seconds of all threads: robust to other processes on the cores
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = forward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / KIB**2
        peak_kind = "cuda max_memory_allocated"
    else:
        peak = rss_mib() - rss_before
        peak_kind = "RSS growth during forward"
    return {
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "dtype", "variant", "variants")},
        "dtype": dtype_name if args.variant is None else args.variant,
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "times_s": times,
        "mean_s": sum(times) / len(times),
        "cpu_s": (time.process_time() - cpu_start) / len(times),
        "fps": args.frames * len(times) / sum(times),
        "peak_mib": peak,
        "peak_kind": peak_kind,
        "process_peak_rss_mib": rss_mib(),
        "modules_s": {k: v / len(times) for k, v in timer.totals.items()},
        "pred_masks": list(out["pred_masks"].shape),
        "load_avg_1min": os.getloadavg()[0],
    }


def print_table(results: list[dict], label: str = "dtype") -> None:
    cfg = results[0]["config"]
    print(
        f"VisTR {cfg['backbone']} T={cfg['frames']} N={cfg['instances']} {cfg['height']}x{cfg['width']} "
        f"on {results[0]['device_name']}, {results[0]['threads']} threads, "
        f"load {results[0]['load_avg_1min']:.1f}, repeats {cfg['repeats']}"
    )
    print(
        f"| {label} | forward s/clip | CPU s/clip | frames/s | peak MiB | process peak RSS MiB | "
        + " | ".join(MODULES)
        + " |"
    )
    print("|---" * (6 + len(MODULES)) + "|")
    for r in results:
        modules = " | ".join(f"{r['modules_s'][m]:.2f}" for m in MODULES)
        peaks = f"{r['peak_mib']:.0f} | {r['process_peak_rss_mib']:.0f}"
        print(
            f"| {r['dtype']} | {r['mean_s']:.2f} | {r['cpu_s']:.1f} | {r['fps']:.2f} | {peaks} | {modules} |"
        )
    print(f"(peak: {results[0]['peak_kind']}; module times in s, inclusive)")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.variant is not None:  # one variant, in its subprocess
        lean, dtype = LEAN_VARIANTS[args.variant]
        if args.variant in TORCHVISION_DCN_VARIANTS:
            mask_head.deform_conv2d = torchvision.ops.deform_conv2d
        print(json.dumps(bench_one(args, dtype, lean)))
        return
    if args.variants is not None:
        names = list(LEAN_VARIANTS) if args.variants == "all" else args.variants.split(",")
        unknown = set(names) - set(LEAN_VARIANTS)
        if unknown:
            raise SystemExit(f"--variants: unknown {sorted(unknown)}; choose from {list(LEAN_VARIANTS)}")
        base = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--json"]
        results = []
        for name in names:
            cmd = [sys.executable, os.path.abspath(__file__), *base, "--variant", name]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print_table(results, "variant")
        return
    dtypes = [d.strip() for d in args.dtype.split(",")]
    unknown = set(dtypes) - set(DTYPES)
    if unknown:
        raise SystemExit(f"--dtype: unknown {sorted(unknown)}; choose from {list(DTYPES)}")
    if len(dtypes) == 1:
        result = bench_one(args, dtypes[0])
        if args.json:
            print(json.dumps(result))
        else:
            print_table([result])
        return
    results = []
    base = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--json"]
    for dtype in dtypes:
        cmd = [sys.executable, os.path.abspath(__file__), *base, "--dtype", dtype, "--json"]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print_table(results)


if __name__ == "__main__":
    main()
