"""YTVISVideoAP: one process and 2-process gloo DDP both give ``evaluate_ytvis`` on the same videos."""

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ytvis_cases import random_case

from vistr_lit.evaluation import YTVISVideoAP, evaluate_ytvis


def _case(seed: int = 11, num_videos: int = 3):
    """A random case with exactly ``num_videos`` videos and results in at least two of them."""
    while True:
        gt, results = random_case(seed)
        videos = sorted(v["id"] for v in gt["videos"])
        if len(videos) == num_videos and len({r["video_id"] for r in results}) >= 2:
            return gt, results, videos
        seed += 1000


def _of(results, video_ids):
    return [r for r in results if r["video_id"] in set(video_ids)]


def _floats(stats: dict) -> dict:
    return {k: float(v) for k, v in stats.items()}


def test_batches_and_duplicates_give_each_video_once(tmp_path):
    gt, results, videos = _case()
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    metric = YTVISVideoAP(str(path))
    for v in videos:
        metric.update([v], _of(results, [v]))
    metric.update([videos[0]], _of(results, [videos[0]]))  # a padded repeat (DistributedSampler)
    expected = evaluate_ytvis(gt, results)
    assert _floats(metric.compute()) == expected
    metric.reset()
    metric.update(videos[:2], _of(results, videos[:2]))
    assert _floats(metric.compute()) == evaluate_ytvis(gt, _of(results, videos[:2]), videos[:2])


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric YTVISVideoAP was called before")
def test_zero_results_and_no_videos():
    gt, _, videos = _case()
    metric = YTVISVideoAP(gt)
    assert set(_floats(metric.compute()).values()) == {-1.0}  # nothing predicted: nothing to score
    metric.update(videos, [])  # predicted, but nothing found: every category with ground truth scores 0
    stats = _floats(metric.compute())
    assert stats == evaluate_ytvis(gt, [])
    assert stats["AP"] == 0


def test_results_outside_video_ids_are_rejected():
    gt, results, videos = _case()
    metric = YTVISVideoAP(gt)
    with pytest.raises(ValueError, match="not in video_ids"):
        metric.update([videos[0]], _of(results, videos[1:]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, gt: dict, splits: list, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out = {}
        for name, split in splits:
            metric = YTVISVideoAP(gt)
            for video_ids, results in split[rank]:
                metric.update(video_ids, results)
            out[name] = _floats(metric.compute())
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_equal_one_process(tmp_path):
    gt, results, videos = _case()
    v0, v1, v2 = videos
    # uneven: rank 0 predicts two videos, rank 1 one plus a padded repeat of rank 0's first video
    uneven = [
        [([v0], _of(results, [v0])), ([v1], _of(results, [v1]))],
        [([v2], _of(results, [v2])), ([v0], _of(results, [v0]))],
    ]
    idle_rank = [[(videos, results)], []]  # rank 1 sees no video at all
    splits = [("uneven", uneven), ("idle_rank", idle_rank)]
    # fork: the workers inherit the imported modules (spawn would re-import torch + torchmetrics, ~10 s);
    # nothing here has started threads or CUDA, and pytest is never re-run (unlike Lightning's `ddp`)
    args = (2, _free_port(), gt, splits, str(tmp_path))
    mp.start_processes(_ddp_worker, args=args, nprocs=2, join=True, start_method="fork")
    expected = evaluate_ytvis(gt, results)
    assert expected["AP"] not in (0.0, -1.0)  # a case with something to get right
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["uneven"] == expected, rank
        assert got["idle_rank"] == expected, rank
