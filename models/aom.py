"""Age of model (AoM) of the copy each client serves inference with.

Provenance: the concept is the source paper's (Han et al., INFOCOM 2024); the dynamics
are the **project's definition**. Each round client n's copy is refreshed with
probability ``theta_n``, after which its age is 0; otherwise the age grows by one. Under a
constant ``theta`` the stationary age is geometric, ``P(a = k) = theta (1 - theta)^k``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from jointopt.models.checks import check_range

RefreshMode = Literal["download", "download_or_train"]
REFRESH_MODES: tuple[str, ...] = ("download", "download_or_train")


def refresh_probability(q: np.ndarray, d: np.ndarray,
                        mode: RefreshMode = "download") -> np.ndarray:
    """Probability ``theta_n`` that client n's serving copy becomes the newest model.

    ``"download"`` (default): only a download refreshes it, ``theta = d``.
    ``"download_or_train"``: taking part in training refreshes it too,
    ``theta = 1 - (1 - q)(1 - d)``.
    """
    d = np.asarray(d, dtype=float)
    if mode == "download":
        return d
    if mode == "download_or_train":
        return 1.0 - (1.0 - np.asarray(q, dtype=float)) * (1.0 - d)
    raise ValueError(f"unknown refresh mode {mode!r}; choose one of {REFRESH_MODES}")


def age_step(age: np.ndarray, refreshed: np.ndarray) -> np.ndarray:
    """``a^{t+1} = 0`` where refreshed, else ``a^t + 1``."""
    return np.where(refreshed, 0, np.asarray(age) + 1)


def stationary_pmf(theta, k) -> np.ndarray:
    """``P(a = k) = theta (1 - theta)^k`` under a constant refresh probability."""
    theta = np.asarray(theta, dtype=float)
    check_range("theta", theta, gt=0.0, le=1.0)
    return theta * (1.0 - theta) ** np.asarray(k)


def stationary_mean(theta) -> np.ndarray:
    """Mean stationary age ``(1 - theta) / theta``."""
    theta = np.asarray(theta, dtype=float)
    check_range("theta", theta, gt=0.0, le=1.0)
    return (1.0 - theta) / theta


def expected_error_step(ebar: np.ndarray, K_next: float, theta: np.ndarray) -> np.ndarray:
    """Expected inference error of the held copy: ``theta K_{t+1} + (1 - theta) ebar``."""
    theta = np.asarray(theta, dtype=float)
    return theta * K_next + (1.0 - theta) * np.asarray(ebar, dtype=float)


def simulate_ages(theta: np.ndarray, rounds: int, rng: np.random.Generator,
                  age0: np.ndarray | None = None) -> np.ndarray:
    """Sample AoM paths, shape ``(rounds + 1, N)``, row 0 being ``age0`` (default zeros)."""
    theta = np.asarray(theta, dtype=float)
    ages = np.empty((rounds + 1, theta.size), dtype=np.int64)
    ages[0] = 0 if age0 is None else age0
    refresh = rng.random((rounds, theta.size)) < theta
    for t in range(rounds):
        ages[t + 1] = age_step(ages[t], refresh[t])
    return ages
