"""A seeded ``build_vistr`` draws the same initial weights, in the same order, and gives the same outputs as
the code that trained the published models (the quickstart's AP depends on it).

The reference values were computed with the network before its split into the paper's ``VisTR`` and the
extensions beside it (commit 7f0e06c). Random init consumes the RNG in construction order, so any reordering
of the modules, or a parameter added or dropped, changes the digests; the exact SHA-256 is checked on the CPUs
whose vectorized RNG kernels computed it (x86 AVX2/AVX512), the digests everywhere.
"""

import hashlib

import pytest
import torch
from vistr_cases import QUICKSTART

from vistr_lit.models import build_vistr

# the paper's network at a small size
PAPER_TINY = dict(
    num_frames=3, num_instances=2, backbone="resnet10", hidden_dim=48, nheads=4, enc_layers=1, dec_layers=2,
    dim_feedforward=64,
)  # fmt: skip
# name: (build arguments, SHA-256 of the state dict's values in order, weight digest, output digests)
CASES = {
    "quickstart": (
        QUICKSTART,
        "65a87194bd6680beecad6ba4810badbf1e672c53d8c566acc79eeb9e287e1b09",
        (272724.64470835455, 10160.265923406829),
        {
            "pred_logits": (-70.09908473491669, 62.491214601500886),
            "pred_boxes": (38.42079293727875, 18.53696949177221),
            "pred_masks": (-474.5568552177865, 134.35068703612413),
        },
    ),
    "paper_tiny": (
        PAPER_TINY,
        "5999ef4977b57e029ad956a7108398d13c4564782fdbc6125cfb4abb8c1099f7",
        (299533.68674298306, 11635.750507780163),
        {
            "pred_logits": (-11.487428713589907, 8.558645951372831),
            "pred_boxes": (23.551581621170044, 11.605976903171157),
            "pred_masks": (1543.5356776118279, 1423.7306396281904),
        },
    ),
}
# the original R50 network, T = 36, 41 classes
PAPER_R50_SHA = "624c3a4ffc1a0346340eb34db689f3c0f21853a85216757ee017138d69588032"
PAPER_R50_DIGEST = (14605380.057240628, 283290.00656593544)
EXACT_RNG_CPUS = ("AVX2", "AVX512")


def digest(tensors) -> tuple[float, float]:
    """(Σ_i (i+1)·Σ t_i, Σ_i Σ t_i²) in float64: moves with any value, and with the order of the tensors."""
    values = [t.detach().double() for t in tensors]
    return (
        float(sum((i + 1) * v.sum() for i, v in enumerate(values))),
        float(sum(v.square().sum() for v in values)),
    )


def sha256(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_weights(model, expected_sha, expected_digest):
    values = list(model.state_dict().values())
    assert digest(values) == pytest.approx(expected_digest, rel=1e-6)
    if torch.backends.cpu.get_cpu_capability() in EXACT_RNG_CPUS:
        assert sha256(values) == expected_sha


@pytest.mark.parametrize("name", CASES)
def test_seeded_build_gives_the_published_weights_and_outputs(name):
    kwargs, expected_sha, weights, outputs = CASES[name]
    torch.manual_seed(0)
    model = build_vistr(num_classes=3, **kwargs).eval()
    check_weights(model, expected_sha, weights)
    frames = torch.randn(2, kwargs["num_frames"], 3, 40, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(frames)
    for key, expected in outputs.items():
        assert digest([out[key]]) == pytest.approx(expected, rel=1e-5), key


def test_seeded_paper_r50_gives_the_published_weights():
    torch.manual_seed(0)
    check_weights(build_vistr(num_classes=41, num_frames=36), PAPER_R50_SHA, PAPER_R50_DIGEST)
