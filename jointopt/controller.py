"""Online drift-plus-penalty control over any per-slot problem.

Provenance: the source paper (Han et al., INFOCOM 2024) solves its long-term problem by an
"online problem approximation"; the Lyapunov drift-plus-penalty form is the **project's
choice** (``docs/kinds/joint_training_inference.md``). Each slot the controller hands the
per-slot problem the current virtual-queue backlogs ``Z`` as prices, takes its decision,
and updates ``Z <- max(Z + use - budget, 0)``. Long-run average use then stays within the
budget (up to ``Z_T / T``), and the weight ``V`` inside the slot problem trades objective
against backlog.

The controller knows nothing of federated learning: a slot problem is any callable
``solve(observation, prices, warm) -> (decision, use)``, so a cooperative-inference tree's
serving-rate problem (or any other) reuses it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

SlotSolver = Callable[[Any, np.ndarray, Any], tuple[Any, np.ndarray]]


class DriftPlusPenalty:
    """Virtual queues for per-entity average budgets, with warm starts between slots.

    ``budgets`` may hold ``inf`` (no average constraint): that queue stays at zero.
    """

    def __init__(self, solve_slot: SlotSolver, budgets: np.ndarray,
                 Z0: np.ndarray | float = 0.0):
        self.solve_slot = solve_slot
        self.budgets = np.asarray(budgets, dtype=float)
        self.Z = np.broadcast_to(np.asarray(Z0, dtype=float), self.budgets.shape).copy()
        self._finite = np.isfinite(self.budgets)
        self.warm: Any = None
        self.slots = 0

    def step(self, observation: Any) -> Any:
        """Solve one slot at the current prices, then update the virtual queues."""
        decision, use = self.solve_slot(observation, self.Z, self.warm)
        self._Z_before = self.Z
        slack = np.where(self._finite, np.asarray(use) - np.where(self._finite, self.budgets, 0.0),
                         -np.inf)
        self.Z = np.maximum(self.Z + slack, 0.0)
        self.warm = decision
        self.slots += 1
        return decision

    @property
    def backlog(self) -> float:
        """Mean virtual-queue backlog over the entities."""
        return float(self.Z.mean())

    def settle(self, use: np.ndarray) -> None:
        """Redo the last slot's queue update with the use measured after the fact.

        :meth:`step` charges the queues the decision's planned use; where the decision is
        a probability (train with probability ``q``) the resources actually spent differ,
        and ``Z <- max(Z_before + use - budget, 0)`` makes the long-run average budget hold
        for what was spent. Call it at most once per :meth:`step`.
        """
        if self.slots == 0:
            raise RuntimeError("settle() needs a step() first")
        slack = np.where(self._finite, np.asarray(use, dtype=float)
                         - np.where(self._finite, self.budgets, 0.0), -np.inf)
        self.Z = np.maximum(self._Z_before + slack, 0.0)
