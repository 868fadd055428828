"""Hypothesis profiles.

The default run (the README's test command, CI, any user's machine) replays a fixed,
derandomised set of examples with no example database, so it passes or fails the same way
everywhere. Exploring afresh is opt-in: ``JOINTOPT_HYPOTHESIS=explore`` (random seeds, the
local example database).

The ``docs_build`` fixture builds the documentation once per run; the docs tests and the
notebook tests both read that build. ``benchmark_script`` loads a script of ``benchmarks/``.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("replay", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", print_blob=True)
_profile = os.environ.get("JOINTOPT_HYPOTHESIS", "replay")
if _profile not in ("replay", "explore"):
    raise RuntimeError(f"JOINTOPT_HYPOTHESIS must be replay or explore, got {_profile!r}")
settings.load_profile(_profile)



# -- the docs site, built once per test run ------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
#: the README's docs command, with the output in a temporary folder
DOCS_COMMAND = [sys.executable, "-m", "sphinx", "-j", "auto", "-W", "--keep-going", "-q", "-b",
                "html", str(ROOT / "docs")]


@pytest.fixture(scope="session")
def docs_build(tmp_path_factory) -> Path:
    """Build the docs with warnings as errors, executing every notebook in quick mode, and
    return the build folder: ``html/`` is the site, ``jupyter_execute/`` holds the executed
    notebooks (``examples/<name>.ipynb``). The notebook tests read those executions, so each
    notebook runs once per test run."""
    out = tmp_path_factory.mktemp("docs")
    env = {k: v for k, v in os.environ.items() if k not in ("JOINTOPT_DOCS_EXECUTE", "MPLBACKEND")}
    proc = subprocess.run(DOCS_COMMAND + [str(out / "html")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"sphinx-build -W failed (exit {proc.returncode}):\n"
                    f"{proc.stderr[-6000:]}\n{proc.stdout[-2000:]}", pytrace=False)
    return out


# -- the benchmark scripts, loaded as modules --------------------------------------------------


@pytest.fixture
def benchmark_script():
    """``load(name)``: ``benchmarks/<name>.py`` as a module (the scripts are not a package)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
