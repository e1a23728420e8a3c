"""Every notebook in ``notebooks/`` runs top to bottom on CPU with its small settings.

The notebooks read ``OPTORTH_NB_SMALL=1`` (set here) and shrink their models and fits; a cell
that raises fails the test with the cell's traceback. Same as
``OPTORTH_NB_SMALL=1 pytest --nbmake notebooks/``, but part of the one test command.
"""

import pathlib

import nbclient
import nbformat
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_found():
    assert {"quickstart.ipynb", "learn_coefficients.ipynb"} <= {p.name for p in NOTEBOOKS}


@pytest.mark.extensive  # a kernel per notebook, minutes in all
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_small_settings(path, tmp_path, monkeypatch):
    monkeypatch.setenv("OPTORTH_NB_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # plt.show() without a display
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    errors = [out for cell in notebook.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, errors
