"""Exit 0 when CUDA GPUs are visible; otherwise say so, name the CPU alternative and exit 2.

    python scripts/require_gpu.py WHAT INSTEAD

``make ablations`` runs it first: the paper-size sweep (ResNet-50, T = 36) is meant for GPUs, and on a CPU
it would run for weeks.
"""

import sys

import torch

NO_GPU_EXIT = 2


def main(argv: list[str] | None = None) -> int:
    what, instead = argv if argv is not None else sys.argv[1:3]
    if torch.cuda.is_available():
        print(f"{what}: {torch.cuda.device_count()} CUDA GPU(s) visible", file=sys.stderr)
        return 0
    print(
        f"{what}: no CUDA GPU is visible (torch.cuda.is_available() is False). This is the paper-size sweep "
        f"(ResNet-50, 36-frame clips, DDP over the visible GPUs): on a CPU it would take weeks. Run "
        f"`{instead}` instead: the paper-shaped CPU table (docs/ablations.md).",
        file=sys.stderr,
    )
    return NO_GPU_EXIT


if __name__ == "__main__":
    sys.exit(main())
