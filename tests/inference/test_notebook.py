"""The demo notebook runs top to bottom (tiny model trained for a few seconds) and shows overlay frames."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "demo.ipynb"
CELL_TIMEOUT_S = 120
TRAIN_SECONDS = "3"  # the demo's default is longer; here only the pipeline is checked


def test_demo_notebook_executes_and_shows_an_image(monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "strip outputs"
    )
    monkeypatch.setenv("VISTR_DEMO_CKPT", "")  # always the tiny model: no dependence on local checkpoints
    monkeypatch.setenv("VISTR_DEMO_TRAIN_SECONDS", TRAIN_SECONDS)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) == 1
    text = "".join(out.get("text", "") for out in outputs)
    assert "tracks over 14 frames (windows of 4)" in text
