"""Sparse constraint rows ``lo <= A x <= hi`` built block by block with numpy, for the
HiGHS models of the matrix path (``milp.py``, ``cover.py``)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class Rows:
    """Append blocks of rows (entries ``(r, c, v)`` with ``r`` counted from the block's
    first row) and get the matrix and the row bounds back."""

    def __init__(self):
        self._r, self._c, self._v, self._lo, self._hi = [], [], [], [], []
        self.n = 0

    def add(self, r, c, v, lo, hi) -> slice:
        """Rows ``lo[k] <= sum of the block's entries in row k <= hi[k]``; their slice."""
        lo = np.asarray(lo, float).ravel()
        self._r.append(np.asarray(r, np.int64).ravel() + self.n)
        self._c.append(np.asarray(c, np.int64).ravel())
        self._v.append(np.broadcast_to(np.asarray(v, float), self._c[-1].shape))
        self._lo.append(lo)
        self._hi.append(np.asarray(hi, float).ravel())
        self.n += lo.size
        return slice(self.n - lo.size, self.n)

    def matrix(self, n_cols: int, fmt: str = "csc"):
        """``A`` as a scipy sparse matrix (``fmt`` "csc" or "csr")."""
        if not self._r:
            return sp.csc_matrix((0, n_cols)).asformat(fmt)
        A = sp.coo_matrix((np.concatenate(self._v), (np.concatenate(self._r),
                                                     np.concatenate(self._c))),
                          shape=(self.n, n_cols))
        return A.asformat(fmt)

    @property
    def lo(self) -> np.ndarray:
        return np.concatenate(self._lo) if self._lo else np.zeros(0)

    @property
    def hi(self) -> np.ndarray:
        return np.concatenate(self._hi) if self._hi else np.zeros(0)
