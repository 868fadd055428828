"""Every notebook in notebooks/ runs end to end (quick mode), shows every figure it saves, and
is committed without outputs.

The notebooks read ``JOINTOPT_QUICK=1`` to shrink their grids. They are executed once per test
run, by the docs build (the ``docs_build`` fixture: ``sphinx-build -W`` fails on the first
failing cell); these tests read the executed notebooks it leaves in ``jupyter_execute/`` and
the figures each saved in ``notebook_figures/<name>/`` of the build folder, so a test run does
not overwrite the committed full-mode figures. The kernel runs with Jupyter's
inline backend, as in JupyterLab, so a figure that is only saved, or closed before the cell
ends, shows up as a missing image.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks under {NOTEBOOK_DIR}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path: Path, docs_build: Path):
    executed = docs_build / "jupyter_execute" / "examples" / path.name
    assert executed.is_file(), f"the docs build did not execute {path.name}"
    nb = nbformat.read(executed, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert len(code) == sum(c.cell_type == "code" for c in nbformat.read(path, 4).cells)
    assert all(cell.get("execution_count") for cell in code if cell.source.strip()), (
        f"{path.name}: not every code cell ran")
    errors = [out for cell in code for out in cell.get("outputs", [])
              if out.get("output_type") == "error"]
    assert not errors, errors
    shown = [out for cell in code for out in cell.get("outputs", [])
             if "image/png" in out.get("data", {})]
    saved = sorted(p.name for p in (docs_build / "notebook_figures" / path.stem).glob("*.png"))
    assert shown, f"{path.name} shows no figure"
    assert saved, f"{path.name} saved no figure"
    assert len(shown) == len(saved), (f"{path.name}: {len(shown)} figure(s) shown inline, "
                                      f"{len(saved)} saved ({', '.join(saved)}): every figure "
                                      f"is both shown and saved")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"
