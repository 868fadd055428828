"""Every notebook in notebooks/ runs end to end (quick mode), shows every figure it saves, and
is committed without outputs.

The notebooks read ``JOINTOPT_QUICK=1`` to shrink their grids; ``JOINTOPT_FIG_DIR`` sends their
figures to a temporary folder so a test run does not overwrite the full-mode figures. The kernel
runs with Jupyter's inline backend (``MPLBACKEND`` unset), as in JupyterLab, so a figure that is
only saved, or closed before the cell ends, shows up as a missing image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def _kernel_manager(tmp_path: Path) -> AsyncKernelManager:
    """A ``python3`` kernel running this interpreter (not whatever ``python3`` spec is found)."""
    spec_dir = tmp_path / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python 3 ({sys.executable})",
        "language": "python",
    }))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks under {NOTEBOOK_DIR}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("JOINTOPT_QUICK", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # ipykernel then picks the inline backend
    monkeypatch.setenv("JOINTOPT_FIG_DIR", str(tmp_path / "figures"))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, km=_kernel_manager(tmp_path), timeout=CELL_TIMEOUT_S,
                            kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute(cleanup_kc=True)  # raises CellExecutionError on the first failing cell
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, errors
    shown = [out for cell in nb.cells if cell.cell_type == "code"
             for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    saved = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
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
