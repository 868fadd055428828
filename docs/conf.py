"""Sphinx configuration of jointopt's documentation.

Build (from the repository root, with the ``docs`` extra installed):

    .venv/bin/sphinx-build -W -b html docs docs/_build/html

The notebooks in ``notebooks/`` are copied into ``docs/examples/`` and executed at build time in
quick mode (``JOINTOPT_QUICK=1``), so the rendered outputs are always those of the code being
documented. Set ``JOINTOPT_DOCS_EXECUTE=off`` to render them without executing (a fast draft).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS))
from notebook_kernel import use_this_interpreter  # noqa: E402

import jointopt  # noqa: E402

project = "jointopt"
author = "the jointopt developers"
copyright = "the jointopt developers"
release = version = jointopt.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints"]
html_theme = "furo"
html_title = f"jointopt {release}"
html_static_path = ["_static"]

# -- MyST pages: $...$ and $$...$$ math, fenced directives, anchors for section links ------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- API reference ---------------------------------------------------------------------------
autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False
napoleon_google_docstring = False
napoleon_numpy_docstring = True

# -- Examples: the notebooks, executed at build time in quick mode ---------------------------
EXAMPLES = DOCS / "examples"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _copy_notebooks() -> None:
    """``notebooks/*.ipynb`` -> ``docs/examples/`` (generated, not committed); a copy is only
    rewritten when the notebook changed, so incremental builds keep their cache."""
    EXAMPLES.mkdir(exist_ok=True)
    wanted = {p.name for p in NOTEBOOKS}
    for stale in EXAMPLES.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for src in NOTEBOOKS:
        dst = EXAMPLES / src.name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)


_copy_notebooks()
_RUNTIME = Path(tempfile.mkdtemp(prefix="jointopt-docs-"))
use_this_interpreter(_RUNTIME)  # the kernel is this interpreter, with jointopt installed
os.environ["JOINTOPT_QUICK"] = "1"
os.environ["JOINTOPT_FIG_DIR"] = str(_RUNTIME / "figures")  # never overwrite committed figures
os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend shows every figure
nb_execution_mode = "off" if os.environ.get("JOINTOPT_DOCS_EXECUTE") == "off" else "cache"
nb_execution_in_temp = True
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_show_tb = True
nb_execution_timeout = 1200
nb_merge_streams = True
