"""``jointopt validate --engine flower``: calibration and policies train on Flower's
Simulation Engine (its own simulation: one per process at a time, so not in
``test_flower.py``, whose module-wide simulation would still be up)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("flwr")
pytest.importorskip("ray")

from jointopt import cli  # noqa: E402


def test_validate_cli_on_flower_engine(capsys):
    rc = cli.main(["validate", "--engine", "flower", "--clients", "3", "--rounds", "3",
                   "--policies", "equal_split,static", "--surrogate-seeds", "2", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["engine"] == "flower" and set(out["policies"]) == {"equal_split", "static"}
    for row in out["policies"].values():
        assert 0.0 <= row["measured"] <= 1.0
