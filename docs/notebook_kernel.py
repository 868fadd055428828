"""The Jupyter kernel that runs jointopt's notebooks: this interpreter, whatever else is installed.

A ``python3`` kernel spec found first on ``JUPYTER_PATH`` wins over the user's and the system's,
so the notebooks execute in the environment that builds the docs (the one jointopt is installed
in), not in whatever ``python3`` kernel a machine happens to have registered.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def use_this_interpreter(workdir: Path) -> None:
    """Write a ``python3`` kernel spec for ``sys.executable`` under ``workdir`` and put it first
    on ``JUPYTER_PATH`` for this process and the kernels it starts."""
    spec_dir = Path(workdir) / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python 3 ({sys.executable})",
        "language": "python",
    }))
    rest = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(workdir)] + ([rest] if rest else []))
