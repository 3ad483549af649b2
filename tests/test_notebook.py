"""notebooks/attention_maps.ipynb: stored without outputs, and runs end to end on a tiny checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "attention_maps.ipynb"


def read():
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(NOTEBOOK, as_version=4)


def test_stored_without_outputs_and_colab_ready():
    nb = read()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    setup = code[0].source
    assert "pip" in setup and "install" in setup and "VITJAX_GIT_URL" in setup and "VITJAX_NOTEBOOK_CKPT" in setup
    text = "\n".join(c.source for c in nb.cells)
    for needle in ("jax.devices()", "resolve_checkpoint", "compute_maps", "summary_figure", "layer_grid",
                   "head_grid"):
        assert needle in text
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_notebook_runs_on_a_tiny_checkpoint(tiny_checkpoint, monkeypatch, tmp_path):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = read()
    monkeypatch.setenv("VITJAX_NOTEBOOK_CKPT", str(tiny_checkpoint))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("VITJAX_NOTEBOOK_IMAGES", raising=False)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=180,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) >= 5  # summary (heatmap, mask), cumulative grid, layer grid, head grid
    assert not (NOTEBOOK.parent / "checkpoints").exists()  # nothing downloaded
