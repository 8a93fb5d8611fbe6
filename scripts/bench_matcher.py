"""Time Hungarian matching and the set-prediction loss on the paper's clip size, on CPU.

Defaults: B=8 clips, T=36 frames, N=10 slots, M=10 instances (10% of instance-frames absent), predicted masks
75x134 and padded targets 300x536, 5 auxiliary layers without masks (as the original).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_matcher.py --threads 1
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from vistr_lit.models.criterion import SetCriterion
from vistr_lit.models.matcher import HungarianMatcher


def make_batch(batch, frames, slots, instances, classes, pred_size, target_size, aux_layers, absent, seed=0):
    gen = torch.Generator().manual_seed(seed)
    queries = frames * slots

    def layer(with_masks):
        out = {
            "pred_logits": torch.randn(batch, queries, classes + 1, generator=gen).requires_grad_(),
            "pred_boxes": torch.rand(batch, queries, 4, generator=gen).mul(0.5).add(0.2).requires_grad_(),
        }
        if with_masks:
            out["pred_masks"] = torch.randn(batch, queries, *pred_size, generator=gen).requires_grad_()
        return out

    outputs = layer(True)
    outputs["aux_outputs"] = [layer(False) for _ in range(aux_layers)]
    targets = []
    for _ in range(batch):
        valid = torch.rand(instances, frames, generator=gen) > absent
        coarse = torch.rand(instances, frames, target_size[0] // 8, target_size[1] // 8, generator=gen) > 0.7
        masks = torch.nn.functional.interpolate(coarse.float(), size=target_size, mode="nearest") > 0
        targets.append(
            {
                "labels": torch.randint(0, classes, (instances,), generator=gen),
                "boxes": torch.rand(instances, frames, 4, generator=gen).mul(0.5).add(0.2) * valid[..., None],
                "valid": valid,
                "masks": masks & valid[..., None, None],
            }
        )
    return outputs, targets


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--pred-size", type=int, nargs=2, default=(75, 134))
    parser.add_argument("--target-size", type=int, nargs=2, default=(300, 536))
    parser.add_argument("--aux-layers", type=int, default=5)
    parser.add_argument("--absent", type=float, default=0.1, help="fraction of absent instance-frames")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--points", type=int, default=12544, help="mask_loss_points of the 'points' rows")
    parser.add_argument(
        "--target-resolution-batch",
        type=int,
        default=1,
        help="batch for the mask_loss_resolution='target' rows (upsampling B·T·N masks to 300x536 needs "
        "~2 GB per clip); 0 skips them",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores, "
        f"T={args.frames} N={args.slots} M={args.instances} masks {args.pred_size} -> {args.target_size}, "
        f"{args.aux_layers} aux layers"
    )

    def run(name, batch, matcher, resolution, backward):
        outputs, targets = make_batch(
            batch, args.frames, args.slots, args.instances, args.classes, tuple(args.pred_size),
            tuple(args.target_size), args.aux_layers, args.absent,
        )  # fmt: skip
        resolution_kwargs = dict(mask_loss_resolution=resolution) if resolution else {}
        if resolution == "points":
            resolution_kwargs["mask_loss_points"] = args.points
        criterion = SetCriterion(args.classes, matcher, num_aux_layers=args.aux_layers, **resolution_kwargs)

        def step():
            if resolution is None:  # matching alone
                return matcher(outputs, targets)
            total = criterion.weighted_total(criterion(outputs, targets))
            if backward:
                total.backward()
            return total

        median, best = timed(step, args.repeats)
        print(f"{name:<58} B={batch}  median {median * 1000:8.1f} ms  min {best * 1000:8.1f} ms", flush=True)

    b = args.batch
    run("matcher sequence (class+L1+GIoU)", b, HungarianMatcher("sequence"), None, False)
    run("matcher per_frame (class+L1+GIoU)", b, HungarianMatcher("per_frame"), None, False)
    run(
        "matcher sequence original_vistr (class+L1+IoU, count)",
        b,
        HungarianMatcher.original_vistr(),
        None,
        False,
    )
    run(
        "matcher sequence + dice and focal mask costs",
        b,
        HungarianMatcher(cost_mask=1, cost_dice=1),
        None,
        False,
    )
    run("criterion fwd, 6 layers, masks at prediction res", b, HungarianMatcher(), "prediction", False)
    run("criterion fwd+bwd, 6 layers, masks at prediction res", b, HungarianMatcher(), "prediction", True)
    run("criterion fwd, 6 layers, masks at points", b, HungarianMatcher(), "points", False)
    run("criterion fwd+bwd, 6 layers, masks at points", b, HungarianMatcher(), "points", True)
    if args.target_resolution_batch:
        tb = args.target_resolution_batch
        run("criterion fwd, 6 layers, masks at target res", tb, HungarianMatcher(), "target", False)
        run("criterion fwd+bwd, 6 layers, masks at target res", tb, HungarianMatcher(), "target", True)


if __name__ == "__main__":
    main()
