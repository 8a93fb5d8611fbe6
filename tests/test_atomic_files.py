"""Atomic writes: an interrupted write of a results, metrics or checkpoint file leaves the old file intact."""

import json
import os

import pytest
import torch

from vistr_lit.atomic_files import atomic_write
from vistr_lit.evaluation.results import write_results_json
from vistr_lit.outputs import AtomicCheckpointIO


class Interrupted(RuntimeError):
    pass


def _no_leftovers(folder):
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name] == []


def test_an_interrupted_results_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = write_results_json([], tmp_path / "results.json")

    def fail(fd):
        raise Interrupted("disk full after the first bytes")

    monkeypatch.setattr(os, "fsync", fail)  # the new bytes are written, not yet renamed into place
    entry = {"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [None]}
    with pytest.raises(Interrupted):
        write_results_json([entry], path)
    assert json.loads(path.read_text()) == [] and _no_leftovers(tmp_path)
    monkeypatch.undo()
    write_results_json([entry], path)
    assert json.loads(path.read_text()) == [entry] and _no_leftovers(tmp_path)


def test_an_interrupted_checkpoint_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 378}, path)
    save = torch.save

    def half_save(obj, f, *args, **kwargs):
        with open(f, "wb") as file:
            file.write(b"PK\x03\x04 half a checkpoint")
        raise Interrupted("killed while saving")

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(Interrupted):
        io.save_checkpoint({"global_step": 2}, path)
    monkeypatch.setattr(torch, "save", save)
    assert torch.load(path, weights_only=True) == {"global_step": 378}
    assert _no_leftovers(path.parent)


def test_atomic_write_gives_an_ordinary_file(tmp_path):
    path = atomic_write(tmp_path / "new" / "metrics.json", "{}\n")
    assert path.read_text() == "{}\n"
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
