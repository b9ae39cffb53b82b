"""notebooks/pyro_inference.ipynb, executed headless in a fresh Jupyter kernel as a user would run it."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.slow  # trains three models for 1000 steps in all: about 2 minutes
def test_pyro_inference_notebook_runs_headless_and_is_saved_with_its_outputs():
    notebook = nbformat.read(NOTEBOOKS / "pyro_inference.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs for cell in code), "save the notebook with its outputs (it is read on a code host)"
    # A fresh kernel in notebooks/; MMVAE_DATA_ROOT (set for every test) keeps the data out of the user's cache.
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()  # raises on any cell's error
    printed = "".join(out.get("text", "") for cell in code for out in cell.outputs)
    assert "parameter tensors in Pyro's param store" in printed and "q_Agg - q_True" in printed
