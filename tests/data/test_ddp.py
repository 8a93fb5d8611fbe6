"""Real two-process DDP on CPU (gloo, ddp_spawn): validation videos split across ranks, none lost or twice."""

import json

import lightning as L
import pytest
import torch

from vistr_lit.data.datamodule import YTVISDataModule


class RecordVideos(L.LightningModule):
    """Records which videos each rank sees; the loss only keeps the optimizer busy."""

    def __init__(self, out_dir: str):
        super().__init__()
        self.out_dir = out_dir
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        self.seen["train"] += [t["video_id"] for t in batch["targets"]]
        return (self.weight - batch["frames"].mean()) ** 2

    def validation_step(self, batch, batch_idx):
        self.seen["val"] += [sample["video_id"] for sample in batch]

    def on_fit_end(self):
        path = f"{self.out_dir}/rank{self.global_rank}.json"
        with open(path, "w") as f:
            json.dump(self.seen, f)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.slow
def test_ddp_spawn_two_ranks(synthvis_root, synthvis_params, tmp_path):
    dm = YTVISDataModule(
        root=str(synthvis_root),
        synthvis=synthvis_params,
        num_frames=2,
        batch_size=1,
        num_workers=0,
        train_scales=[32],
        crop_prescales=None,
        crop_size=None,
        eval_short_side=32,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=1,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(RecordVideos(str(tmp_path)), datamodule=dm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert sorted(ranks[0]["val"] + ranks[1]["val"]) == [1, 2, 3]
    assert not set(ranks[0]["val"]) & set(ranks[1]["val"])
    assert sorted(ranks[0]["train"] + ranks[1]["train"]) == [1, 2, 3, 4, 5, 6]
