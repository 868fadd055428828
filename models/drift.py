"""Non-stationary data: how model copies lose accuracy while the data moves.

Provenance: **project choice** (the source paper's setting is a model served while it is
"periodically improved with newly collected data"; how the data moves and what that does
to a model copy are the project's reconstruction). Two pieces, both swappable:

* :class:`LabelDrift`, the data: every client's label mix moves along a circle of labels,
  steadily (``rate`` label positions a round: a rotating mix) and by ``shift`` positions at
  each round listed in ``jumps``. The harness uses it to move the clients' training data and
  their requests (:mod:`jointopt.harness.fl`).
* :class:`DriftModel`, its effect in the analytical model. While the data moves, every
  model copy that is not retrained loses accuracy: its error proxy gains ``growth`` a round,
  and ``jump_error`` at each round listed in ``jumps``. The *shock* of round ``t`` is what a
  copy gains between serving round ``t - 1`` and serving round ``t``:
  ``shock(t) = growth + jump_error * [t in jumps]``. Hence

  - a copy held since its refresh ``k`` rounds ago has the error it was refreshed with plus
    the shocks of those ``k`` rounds (its error grows with its age of model), plus
    ``ageing * k^2`` (default 0: linear in the age). A stale copy's loss can grow faster
    than linearly with its age, and on the ``drift`` scenario's rotating digits it does: a
    copy misses a larger share of the requests the longer a digit it never saw has been
    coming in. On its pilot runs (seeds 0-4, 100 rounds), versions from round 20 on had
    lost 0.43-0.54 by age 10, against 0.38-0.47 from a line fitted to ages 1-5, and
    ``growth k + ageing k^2`` fitted to ages 1-10 is within 0.007 of the mean measured gap
    at every age (``ageing`` 0.0007-0.0012);
  - the global model, always fresh, gains the shock only and then is trained on the moved
    data:
    ``K_{t+1} = a K_t + b sum_n p_n^2 (1 - q_n) / q_n + c + shock(t + 1)``. It tracks the
    moving optimum at the rate its training contracts the error, with a stationary lag
    ``growth / (1 - a)`` behind a steadily rotating mix, and the participation sets how
    close it can get (the variance term; with ``b`` fitted under drift, the constants also
    carry what participation does to the tracking in real training).

  ``growth``, ``ageing`` and ``jump_error`` are in the units of the error proxy that the
  accuracy map reads, so that ``acc(error + gap)`` is a stale copy's accuracy (the harness
  calibration fits them that way: :func:`jointopt.harness.calibrate.fit_drift`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jointopt.models.checks import check_range
from jointopt.models.errors import ValidationError


def _check_jumps(field: str, jumps) -> tuple[int, ...]:
    out = tuple(int(j) for j in jumps)
    for i, (j, raw) in enumerate(zip(out, jumps, strict=True)):
        if j != raw or j < 1:
            raise ValidationError(f"{field}[{i}]", f"must be a round number >= 1, got {raw!r}")
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValidationError(field, f"must be strictly increasing, got {list(out)}")
    return out


@dataclass(frozen=True)
class LabelDrift:
    """Where the label mix stands at round ``t``: ``rate * t + shift * #{jumps <= t}``
    label positions from where it started (fractional positions blend the two neighbouring
    whole rotations)."""

    rate: float = 0.0
    shift: float = 0.0
    jumps: tuple[int, ...] = ()

    def __post_init__(self):
        check_range("drift.rate", self.rate, ge=0.0)
        check_range("drift.shift", self.shift, ge=0.0)
        object.__setattr__(self, "jumps", _check_jumps("drift.jumps", self.jumps))

    @property
    def active(self) -> bool:
        return self.rate > 0 or (self.shift > 0 and len(self.jumps) > 0)

    def offset(self, t) -> np.ndarray:
        """Label positions moved by round ``t`` (vectorised over ``t``)."""
        t = np.asarray(t, dtype=float)
        passed = np.searchsorted(np.asarray(self.jumps, dtype=float), t, side="right")
        return self.rate * t + self.shift * passed

    def mix(self, base: np.ndarray, t: int) -> np.ndarray:
        """``base`` (rows: label mixes over ``C`` labels) moved to round ``t``: each row is
        rotated by the offset, blending the two nearest whole rotations."""
        base = np.asarray(base, dtype=float)
        off = float(self.offset(t)) % base.shape[-1]
        k = int(np.floor(off))
        f = off - k
        out = (1.0 - f) * np.roll(base, k, axis=-1)
        if f > 0:
            out = out + f * np.roll(base, k + 1, axis=-1)
        return out


@dataclass(frozen=True)
class DriftModel:
    """Error a model copy gains while the data moves (module docstring)."""

    growth: float = 0.0
    jump_error: float = 0.0
    jumps: tuple[int, ...] = ()
    ageing: float = 0.0

    def __post_init__(self):
        check_range("drift.growth", self.growth, ge=0.0)
        check_range("drift.jump_error", self.jump_error, ge=0.0)
        check_range("drift.ageing", self.ageing, ge=0.0)
        object.__setattr__(self, "jumps", _check_jumps("drift.jumps", self.jumps))

    @property
    def active(self) -> bool:
        return (self.growth > 0 or self.ageing > 0
                or (self.jump_error > 0 and len(self.jumps) > 0))

    def shock(self, t: int) -> float:
        """Error a copy gains between serving round ``t - 1`` and round ``t``."""
        return self.growth + (self.jump_error if int(t) in self.jumps else 0.0)

    def copy_shock(self, t: int, age) -> np.ndarray:
        """Error a copy that served round ``t - 1`` at age ``age`` (rounds since it was
        fresh) gains by round ``t``: ``shock(t) + ageing (2 age + 1)``, so that a copy's
        shocks over its life add up to :meth:`gap` (vectorised over ``age``)."""
        return self.shock(t) + self.ageing * (2.0 * np.asarray(age, dtype=float) + 1.0)

    def gap(self, since, now: int) -> np.ndarray:
        """Error gained from round ``since`` to round ``now`` by a copy that was fresh in
        round ``since``: the shocks of rounds ``since + 1 .. now`` plus ``ageing (now -
        since)^2`` (vectorised over ``since``; 0 where ``since >= now``)."""
        since = np.asarray(since)
        rounds = np.maximum(now - since, 0)
        jumps = np.asarray(self.jumps, dtype=np.int64)
        passed = (np.searchsorted(jumps, now, side="right")
                  - np.searchsorted(jumps, np.minimum(since, now), side="right"))
        return self.growth * rounds + self.ageing * rounds ** 2 + self.jump_error * passed
