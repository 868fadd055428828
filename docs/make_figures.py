"""Regenerate the full-mode figures the docs and the README show.

    .venv/bin/python docs/make_figures.py                 # every notebook, full mode
    .venv/bin/python docs/make_figures.py --only hfl_orchestration --quick   # one, tiny grids

Each notebook in ``notebooks/`` runs end to end in full mode (``JOINTOPT_QUICK=0``) with
its figures saved to a scratch folder; when it finishes, its PNGs replace the committed ones in
``docs/_static/figures/<notebook>/`` (an interrupted run changes nothing). The notebook file
itself is left untouched (it stays committed without outputs).
A full run takes tens of minutes on 2 cores (the real-training notebooks dominate); the
per-notebook wall time is printed and recorded, with the mode, in
``docs/_static/figures/manifest.json``. The docs' "Examples" pages show these figures beside the
quick-mode outputs that the docs build executes afresh.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS))
from notebook_kernel import use_this_interpreter  # noqa: E402

FIGURES = DOCS / "_static" / "figures"
#: notebook -> {"mode": "full" | "quick", "wall_s", "figures", "date"}: what the committed
#: figures are; the docs' figure gallery labels each notebook's figures with its mode.
MANIFEST = FIGURES / "manifest.json"


def run(path: Path, quick: bool, timeout_s: int) -> float:
    """Execute ``path`` with its figures going to a scratch folder; only a run that finishes
    replaces the committed figures (so an interrupted run leaves them as they were)."""
    out = FIGURES / path.stem
    os.environ["JOINTOPT_QUICK"] = "1" if quick else "0"
    os.environ.pop("MPLBACKEND", None)
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cwd:
        scratch = Path(cwd) / "figures"
        scratch.mkdir()
        for cache in out.glob("*.csv"):  # a resumable notebook's finished runs (not committed)
            shutil.copyfile(cache, scratch / cache.name)
        os.environ["JOINTOPT_FIG_DIR"] = str(scratch)
        NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                       resources={"metadata": {"path": cwd}}).execute()
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.png"):
            old.unlink()
        for new in scratch.glob("*"):
            if new.is_file() and new.suffix in (".png", ".json", ".csv"):
                shutil.copyfile(new, out / new.name)
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=None, help="notebook names (stems)")
    ap.add_argument("--quick", action="store_true", help="tiny grids (to check the script)")
    ap.add_argument("--cell-timeout", type=int, default=7200, help="seconds per cell")
    args = ap.parse_args(argv)
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.only:
        unknown = set(args.only) - {p.stem for p in notebooks}
        if unknown:
            ap.error(f"unknown notebooks {sorted(unknown)}; have {[p.stem for p in notebooks]}")
        notebooks = [p for p in notebooks if p.stem in args.only]
    mode = "quick" if args.quick else "full"
    with tempfile.TemporaryDirectory() as kernels:
        use_this_interpreter(Path(kernels))
        for path in notebooks:
            print(f"{path.name}: running ({mode} mode)...", file=sys.stderr, flush=True)
            wall = run(path, args.quick, args.cell_timeout)
            saved = sorted(p.name for p in (FIGURES / path.stem).glob("*.png"))
            manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
            manifest[path.stem] = {"mode": mode, "wall_s": round(wall, 1), "figures": saved,
                                   "date": datetime.date.today().isoformat()}
            MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
            print(f"{path.name}: {wall:.0f} s, {len(saved)} figures -> "
                  f"{(FIGURES / path.stem).relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
