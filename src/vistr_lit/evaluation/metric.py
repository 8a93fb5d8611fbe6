"""``YTVISVideoAP``: the YouTube-VIS statistics as a torchmetrics ``Metric`` that works under DDP.

Each ``update`` stores one record (the predicted video ids and their results entries) as the uint8 bytes of
one JSON line; torchmetrics gathers these list states from every rank on ``compute``, which then decodes
the records, keeps the first record of each video id (DistributedSampler pads by repeating videos, so a
video may be predicted on two ranks) and evaluates the ground truth of exactly those videos once.
"""

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from vistr_lit.evaluation.inputs import GroundTruth, load_ground_truth
from vistr_lit.evaluation.results import jsonable_results
from vistr_lit.evaluation.ytvis_eval import OVIS_STATS, YTVIS_STATS, evaluate_ytvis

RECORD_END = b"\n"  # json.dumps never writes a raw newline, so it can end each record


class YTVISVideoAP(Metric):
    """Video mask AP of YouTube-VIS over the videos seen by ``update`` on all ranks.

    Args:
        gt: ground-truth dict or json path (loaded on first ``compute``, so a path pickles cheaply).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, gt: dict | str | Path | GroundTruth, **kwargs: Any):
        super().__init__(**kwargs)
        self._gt_source = gt
        self._gt: GroundTruth | None = gt if isinstance(gt, GroundTruth) else None
        self.add_state("records", default=[], dist_reduce_fx="cat")

    @property
    def ground_truth(self) -> GroundTruth:
        if self._gt is None:
            self._gt = load_ground_truth(self._gt_source)
        return self._gt

    def update(self, video_ids: list[int], results: list[dict]) -> None:
        """Add predictions.

        Args:
            video_ids: every video that was predicted, including those with no results entry.
            results: YouTube-VIS results entries (``results.py``) of those videos.
        """
        ids = [int(v) for v in video_ids]
        stray = sorted({int(r["video_id"]) for r in results} - set(ids))
        if stray:
            raise ValueError(f"results for videos {stray} that are not in video_ids {ids}")
        line = json.dumps({"video_ids": ids, "results": jsonable_results(results)}).encode() + RECORD_END
        self.records.append(torch.frombuffer(bytearray(line), dtype=torch.uint8).to(self.device))

    def _sync_dist(self, *args: Any, **kwargs: Any) -> None:
        # A rank that saw no video would send torchmetrics' empty float placeholder beside other ranks'
        # uint8 bytes; an empty uint8 tensor keeps every rank's gather the same dtype.
        if not self.records:
            self.records.append(torch.zeros(0, dtype=torch.uint8, device=self.device))
        super()._sync_dist(*args, **kwargs)

    def compute(self) -> dict[str, Tensor]:
        """Statistics keyed ``AP``, ``AP50``, ... (float64 scalars; -1 where there is nothing to score)."""
        records = self.records if isinstance(self.records, list) else [self.records]
        data = b"".join(bytes(r.cpu().numpy()) for r in records)
        video_ids: list[int] = []
        results: list[dict] = []
        seen: set[int] = set()
        for line in data.split(RECORD_END)[:-1]:
            record = json.loads(line)
            fresh = [v for v in record["video_ids"] if v not in seen]
            seen.update(fresh)
            video_ids.extend(fresh)
            fresh_set = set(fresh)
            results.extend(r for r in record["results"] if r["video_id"] in fresh_set)
        if not video_ids:
            names = OVIS_STATS if self.ground_truth.has_occlusion else YTVIS_STATS
            return {name: torch.tensor(-1.0, dtype=torch.float64) for name in names}
        stats = evaluate_ytvis(self.ground_truth, results, video_ids)
        return {name: torch.tensor(value, dtype=torch.float64) for name, value in stats.items()}
