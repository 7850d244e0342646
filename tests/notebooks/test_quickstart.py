"""notebooks/quickstart.ipynb runs top to bottom (nbclient) on a tiny model file the test makes."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow  # a subprocess or a whole training chain: `make test-fast` skips it
def test_quickstart_executes(tmp_path, monkeypatch):
    from grain_pl.codec import GrainModule
    from grain_pl.weights.grain_checkpoint import save_grain

    model_file = save_grain(GrainModule(network="tiny-32-lr8").grain, tmp_path / "tiny.safetensors")
    monkeypatch.setenv("GRAIN_CHECKPOINT", str(model_file))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                   ).execute()
    outputs = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.get("outputs", []))
    assert "HR 32 px -> LR 8 px (4x)" in outputs
    assert "LR PNG:" in outputs and "grain {" in outputs and "bicubic {" in outputs
    images = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
              if "image/png" in output.get("data", {})]
    assert images, "the grid cell shows a picture"
