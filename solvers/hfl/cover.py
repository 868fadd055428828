"""Bounds and a reduced exact model for HFLOP that scale with the number of hosts, not pairs
[project choice].

On the large random instances of the runtime experiments the optimum opens a dozen cheap
hosts and joins every participant at association cost 0: the problem is a partial *cover*
(choose hosts whose cheap devices number at least ``T``) far more than an assignment. The
pair formulation's LP relaxation is both slow there (``N M`` linking rows, highly
degenerate) and loose (fractional hosts cover devices twice). This module works with
per-device *cost levels* instead of pairs:

* **level**: the hosts at which device ``i`` has one association cost ``c``. With
  ``z_{i,c}`` the share of device ``i`` joining at cost ``c``, every association maps to
  ``z_{i,c} <= sum_{j in level} y_j`` (a sum of the pair rows ``x_ij <= y_j``), so the
  cover model below is a relaxation of HFLOP; without capacities and with every level
  explicit it is exact.

Stages, each a valid lower bound on (O), the first that proves the incumbent optimal wins
(``proved_by`` in the result):

1. **host count** (:func:`host_count_bound`): any plan must open at least ``k_min`` hosts,
   the fewest whose largest capacities hold the ``T`` smallest workloads; the bound is the
   sum of the ``k_min`` cheapest opening costs. Cheap, weak; used as a cut (``sum_j y_j >=
   k_min``, ``sum_j R_j y_j >= sum of the T smallest D``) by the stages below.
2. **cover LP** (:func:`cover_lp`): the LP relaxation of the level model with the cheapest
   ``levels`` cost levels of each device explicit and the rest lumped into one unlinked
   option at the next level's cost; capacities enter as one aggregated row. A few
   ``N``-row LP instead of the ``N M``-row pair LP. Its reduced costs fix hosts (closed or
   forced open) and whole levels of pairs against the incumbent (R3 on the cover model).
3. **uncapacitated cover MIP** (:func:`solve_reduced` with ``capacity=False``): the level
   model with binary hosts on what survived the fixing, devices with identical cost rows
   merged into one integer group. A relaxation (capacities dropped); its optimum is the
   bound, and when its solution also fits the capacities it is optimal.
4. **exact reduced MIP** (:func:`solve_reduced` with ``capacity=True``): per-host
   assignment variables only at hosts whose capacity can bind (``R_j`` below the workload
   of the devices that may still join ``j``), level rows elsewhere; devices merged when
   their cost rows (and, where a capacity can bind, workloads) agree. Exact on the reduced
   set: an integer solution maps back to an assignment (:func:`expand`).

Merging identical devices keeps the LP value (a symmetric average of any fractional
solution is feasible) and turns ``N`` binaries into a few thousand bounded integers. Before
stages 3 and 4 branch, every free host is probed with their LP (opened, then closed): a
side whose LP exceeds the cutoff fixes the host, which on the hard instances left the MIP
nothing to branch on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from jointopt.solvers.hfl.rows import Rows

TOL = 1e-9
#: seconds per row and column that HiGHS may spend setting up and presolving a MIP before it
#: first checks its time limit (measured on a contended 2-core machine: 9.5 s for 190,000)
SETUP_S_PER_ENTRY = 5e-5
#: share of a stage's time limit that LP probing may use (counted from the stage's start,
#: model building included): probing is what closes the hard instances (10,000 x 50 seed 1:
#: 17 hosts fixed and the uncapacitated cover MIP infeasible at the root in 1.6 s); at a
#: quarter, the heuristic method's 3 s stage built the model and had no time left to probe
PROBE_SHARE = 0.75


def _highs():
    import highspy

    return highspy


# --------------------------------------------------------------------------- stage 1


def host_count_bound(D, R, ce, T, y_ub=None) -> tuple[int, float, float]:
    """``(k_min, bound, demand)``: the fewest hosts whose largest capacities can hold the
    ``T`` smallest workloads (``demand``), and the sum of the ``k_min`` cheapest opening
    costs among the hosts still allowed. ``k_min = 0`` when ``T = 0``; ``M + 1`` when even
    all hosts cannot hold the demand (then the bound is ``inf``)."""
    D, R, ce = (np.asarray(v, float) for v in (D, R, ce))
    ok = np.ones(R.shape[0], bool) if y_ub is None else np.asarray(y_ub) > 0.5
    if T <= 0:
        return 0, 0.0, 0.0
    demand = float(np.sort(D)[:T].sum())
    caps = np.sort(R[ok])[::-1]
    fits = np.flatnonzero(np.cumsum(caps) >= demand * (1 - 1e-12))
    # devices are indivisible, so a host takes whole devices; only the count of hosts is
    # used, and at least one host is needed whenever a device joins
    k = max(1, int(fits[0]) + 1) if fits.size else R.shape[0] + 1
    if k > ok.sum():
        return k, math.inf, demand
    return k, float(np.sort(ce[ok])[:k].sum()), demand


# --------------------------------------------------------------------------- levels


@dataclass
class Levels:
    """Per-device cost levels of the allowed pairs: level ``v`` of device ``dev[v]`` has
    cost ``cost[v]`` and the hosts ``pj[start[v]:start[v+1]]`` (pairs ``pi, pj`` sorted by
    device, cost). ``rank[v]`` is the level's position among its device's levels."""

    dev: np.ndarray
    cost: np.ndarray
    rank: np.ndarray
    start: np.ndarray
    pi: np.ndarray
    pj: np.ndarray
    of_pair: np.ndarray

    @property
    def n(self) -> int:
        return self.dev.shape[0]


def levels_of(C, allowed) -> Levels:
    """Group the allowed pairs of every device by cost (vectorised)."""
    pi, pj = np.nonzero(allowed)
    c = C[pi, pj]
    codes, inv = np.unique(c, return_inverse=True)
    key = pi.astype(np.int64) * max(1, codes.size) + inv
    order = np.argsort(key, kind="stable")
    pi, pj, key = pi[order], pj[order], key[order]
    new = np.ones(key.size, bool)
    new[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(new)
    of_pair = np.cumsum(new) - 1
    lkey = key[starts]
    dev = (lkey // max(1, codes.size)).astype(np.int64)
    cost = codes[lkey % max(1, codes.size)]
    dnew = np.ones(dev.size, bool)
    dnew[1:] = dev[1:] != dev[:-1]
    first = np.maximum.accumulate(np.where(dnew, np.arange(dev.size), 0))
    rank = np.arange(dev.size) - first
    return Levels(dev, cost, rank, np.append(starts, key.size), pi.astype(np.int64),
                  pj.astype(np.int64), of_pair)


# --------------------------------------------------------------------------- stage 2


@dataclass
class CoverLP:
    """Outcome of :func:`cover_lp`: the bound, the LP's host values and what :meth:`fix`
    needs (values and reduced costs of hosts, explicit levels and lumps)."""

    status: str
    bound: float
    seconds: float
    levels: int = 0                    # explicit levels per device in the final LP
    y: np.ndarray | None = None        # LP host values
    d_y: np.ndarray | None = None
    lv: Levels | None = None
    explicit: np.ndarray | None = None
    x_v: np.ndarray | None = None
    d_v: np.ndarray | None = None
    lump: np.ndarray | None = None
    x_w: np.ndarray | None = None
    d_w: np.ndarray | None = None
    iterations: int = 0

    def fix(self, allowed, y_lb, y_ub, cutoff):
        """R3 on the cover LP against ``cutoff`` (only plans of value <= cutoff matter):
        ``(allowed, y_lb, y_ub)`` with a host closed when ``LB + d_j > cutoff`` at
        ``y_j = 0``, forced open when ``LB - d_j > cutoff`` at ``y_j = 1``, and every pair
        of a level (or lump) with ``LB + d_v > cutoff`` at ``z_v = 0`` removed. Each is
        valid because the cover LP is a relaxation: a plan using the column maps to an LP
        solution of value at least ``LB + |d|``."""
        if self.status != "optimal" or not math.isfinite(cutoff):
            return allowed, y_lb, y_ub
        LB = self.bound
        cut = cutoff + 1e-6 * max(1.0, abs(cutoff))
        y = self.y
        closed = (np.asarray(y_ub) < 0.5) | ((y <= 1e-9) & (LB + self.d_y > cut))
        forced = ((np.asarray(y_lb) > 0.5) | ((y >= 1 - 1e-9) & (LB - self.d_y > cut))) & ~closed
        lv = self.lv
        fixed = np.zeros(lv.n, bool)
        fixed[self.explicit] = (self.x_v <= 1e-9) & (LB + self.d_v > cut)
        lump_dev = np.zeros(int(lv.dev.max()) + 1 if lv.n else 0, bool)
        lump_dev[lv.dev[self.lump]] = (self.x_w <= 1e-9) & (LB + self.d_w > cut)
        fixed |= (lv.rank >= self.levels) & lump_dev[lv.dev]
        keep = ~fixed[lv.of_pair] & ~closed[lv.pj]
        left = np.zeros_like(allowed)
        left[lv.pi[keep], lv.pj[keep]] = True
        return left & allowed, forced.astype(float), (~closed).astype(float)


def cover_lp(D, R, C, ce, T, allowed, y_lb, y_ub, *, levels=1, max_levels=4,
             count_cut=None, time_limit=None, threads=None) -> CoverLP:
    """Stage 2: the LP relaxation of the level model (module docstring).

    Columns ``y_j`` and one ``z`` per explicit level (the ``levels`` cheapest of each
    device) plus one lump per device for its remaining pairs at the next level's cost,
    unlinked (a relaxation). Rows: ``z_v <= sum_{j in v} y_j``; ``sum_v z_v <= 1`` per
    device; ``sum z >= T``; ``sum_i D_i z <= sum_j R'_j y_j`` with ``R'_j`` the smaller of
    ``R_j`` and the workload of the devices that may join ``j``; the host-count cuts. When
    the LP uses a lump, the next level is made explicit and the LP re-solved (up to
    ``max_levels``).

    With one explicit level the LP is first solved without lumps, so without device rows
    (``z <= 1`` is a bound): half the rows. The lumps are then priced with the duals
    (a device row's dual is the negative reduced cost of its ``z`` at its bound); when
    none has a negative reduced cost the solution is optimal with them too. Dual simplex:
    its vertex's reduced costs fix far more than an interior-point crossover's on these
    degenerate LPs."""
    hs = _highs()
    t0 = time.perf_counter()
    D, R, ce = (np.asarray(v, float) for v in (D, R, ce))
    N, M = C.shape
    lv = levels_of(C, allowed)
    inf = hs.kHighsInf
    # a host never carries more than the workload of the devices that may join it
    R = np.minimum(R, D @ np.asarray(allowed, float))
    L = max(1, int(levels))
    lumps = L > 1
    while True:
        explicit = np.flatnonzero(lv.rank < L)
        lump = np.flatnonzero(lv.rank == L)    # the cheapest lumped level of each device
        V, W = explicit.size, (lump.size if lumps else 0)
        ncol = M + V + W
        vcols = M + np.arange(V)
        wcols = M + V + np.arange(W)
        # link rows: z_v - sum_{j in v} y_j <= 0
        vpos = np.full(lv.n, -1)
        vpos[explicit] = np.arange(V)
        in_ex = vpos[lv.of_pair] >= 0
        rows = Rows()
        rows.add(np.concatenate([np.arange(V), vpos[lv.of_pair[in_ex]]]),
                 np.concatenate([vcols, lv.pj[in_ex]]),
                 np.concatenate([np.ones(V), -np.ones(int(in_ex.sum()))]),
                 np.full(V, -inf), np.zeros(V))
        if lumps:   # device rows
            rows.add(np.concatenate([lv.dev[explicit], lv.dev[lump]]),
                     np.concatenate([vcols, wcols]), 1.0, np.full(N, -inf), np.ones(N))
        part = rows.add(np.zeros(V + W), np.arange(M, ncol), 1.0, [float(T)], [inf]).start
        dev_all = np.concatenate([lv.dev[explicit], lv.dev[lump]]) if lumps else \
            lv.dev[explicit]
        capr = rows.add(np.zeros(ncol), np.arange(ncol), np.concatenate([-R, D[dev_all]]),
                        [-inf], [0.0]).start
        if count_cut is not None and count_cut[0] > 0:   # sum y >= k, sum R y >= demand
            k, demand = count_cut
            rows.add(np.zeros(M), np.arange(M), 1.0, [float(k)], [inf])
            rows.add(np.zeros(M), np.arange(M), R, [float(demand)], [inf])
        A = rows.matrix(ncol)
        r = rows.n
        cost = np.concatenate([ce, lv.cost[explicit]] + ([lv.cost[lump]] if lumps else []))
        h = hs.Highs()
        h.setOptionValue("output_flag", False)
        if threads is not None:
            h.setOptionValue("threads", int(threads))
        if time_limit is not None:
            h.setOptionValue("time_limit", max(0.05, float(time_limit - (time.perf_counter()
                                                                         - t0))))
        h.passModel(ncol, r, A.nnz, 1, 1, 0.0, cost, np.concatenate([y_lb, np.zeros(V + W)]),
                    np.concatenate([y_ub, np.ones(V + W)]), rows.lo, rows.hi,
                    A.indptr.astype(np.int32),
                    A.indices.astype(np.int32), A.data, np.zeros(ncol, np.int32))
        h.run()
        st = h.getModelStatus()
        S = hs.HighsModelStatus
        if st == S.kInfeasible and lumps:
            return CoverLP("infeasible", math.inf, time.perf_counter() - t0, L)
        if st not in (S.kOptimal, S.kInfeasible):
            return CoverLP("time_limit" if st == S.kTimeLimit else "error", -math.inf,
                           time.perf_counter() - t0, L)
        if st == S.kInfeasible:   # without lumps: they may be needed
            lumps = True
            continue
        sol = h.getSolution()
        x = np.asarray(sol.col_value)
        d = np.asarray(sol.col_dual)
        if not lumps:   # price the lumps with the duals of the LP without them
            row_dual = np.asarray(sol.row_dual)
            at_ub = x[vcols] >= 1 - 1e-9
            dev_dual = np.zeros(N)   # a device row's dual: min(0, d_z) for z at its bound
            dev_dual[lv.dev[explicit]] = np.where(at_ub, np.minimum(0.0, d[vcols]), 0.0)
            x_w = np.zeros(lump.size)
            d_w = (lv.cost[lump] - row_dual[part] - D[lv.dev[lump]] * row_dual[capr]
                   - dev_dual[lv.dev[lump]])
            if lump.size and d_w.min() < -1e-9:
                lumps = True
                continue
            d_v = np.where(at_ub, 0.0, d[vcols])
        else:
            x_w, d_w = x[wcols], d[wcols]
            d_v = d[vcols]
            if W and float(x_w.sum()) > 1e-6 and L < max_levels:
                L += 1
                continue
        break
    return CoverLP("optimal", float(h.getInfo().objective_function_value),
                   time.perf_counter() - t0, L, x[:M].copy(), d[:M].copy(), lv, explicit,
                   x[vcols], d_v, lump, x_w, d_w, int(h.getInfo().simplex_iteration_count))


# --------------------------------------------------------------------------- stages 3-4


@dataclass
class Reduced:
    """Outcome of :func:`solve_reduced`."""

    status: str                 # optimal | infeasible (nothing <= cutoff) | time_limit | error
    objective: float
    bound: float
    seconds: float
    assignment: np.ndarray | None
    groups: int = 0
    columns: int = 0
    rows: int = 0
    capacity_hosts: int = 0
    nodes: int = 0
    probed: int = 0              # hosts fixed by LP probing


def capacity_hosts(D, R, allowed, open_ok) -> np.ndarray:
    """Hosts whose capacity can bind: ``R_j`` below the workload of all devices that may
    still join ``j``."""
    pot = np.asarray(D, float) @ allowed
    return open_ok & (np.asarray(R, float) < pot - 1e-9)


def solve_reduced(D, R, C, ce, T, allowed, y_lb, y_ub, *, capacity=True, cutoff=math.inf,
                  integral=False, count_cut=None, time_limit=None, threads=None,
                  mip_rel_gap=1e-4, verbose=False, highs_options=None,
                  probe=True) -> Reduced:
    """Stages 3 and 4: the merged level model as a MIP on the pairs ``allowed`` and hosts
    ``y_lb <= y <= y_ub``.

    ``capacity=False`` drops the capacity rows (a relaxation: stage 3). With
    ``capacity=True`` hosts whose capacity can bind keep per-host variables and their row
    (exact: stage 4). ``cutoff`` (``UB - Delta``) adds the row ``(O) <= cutoff`` when
    ``integral`` (then "infeasible" means no plan beats the incumbent); the status is
    "optimal" with the best plan otherwise. With a finite ``cutoff`` and ``probe``, every
    free host is first probed with the LP (:func:`_probe_hosts`): on runtime 1,000 x 50
    seed 1 it fixed 20 of 30 hosts and the MIP closed at the root (0.6 s of CPU instead
    of 3.7 s), on 10,000 x 50 seed 1 the uncapacitated stage went from 6.8 to 1.7 s."""
    hs = _highs()
    t0 = time.perf_counter()
    D, R, ce = (np.asarray(v, float) for v in (D, R, ce))
    N, M = C.shape
    open_ok = np.asarray(y_ub) > 0.5
    A = np.asarray(allowed, bool) & open_ok[None, :]
    capr = capacity_hosts(D, R, A, open_ok) if capacity else np.zeros(M, bool)
    # a free host can be open in any plan (an open host without devices is not charged),
    # and a device with a cost-0 pair at an open host without a binding capacity joins
    # there at no cost in some optimal plan: it is taken out and T lowered
    y_lb = np.where(open_ok & (ce <= 0), 1.0, np.asarray(y_lb, float))
    free_join = (A & (C <= 0) & (y_lb > 0.5)[None, :] & ~capr[None, :]).any(1)
    pre = np.flatnonzero(free_join)
    if pre.size >= T:
        pre = pre[:T]
    T_left = T - pre.size
    A[pre] = False
    devs = np.flatnonzero(A.any(1))
    # device signature: its cost row (NaN = no pair) and, where a capacity can bind, D
    needD = (A[devs] & capr[None, :]).any(1)
    sig = np.concatenate([np.where(A[devs], C[devs], -1.0),
                          np.where(needD, D[devs], -1.0)[:, None]], 1)
    if devs.size:
        uniq, g_of, cnt = np.unique(sig, axis=0, return_inverse=True, return_counts=True)
        g_of = g_of.ravel()
    else:
        uniq, g_of, cnt = np.zeros((0, M + 1)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    G = uniq.shape[0]
    gD = np.zeros(G)
    if G:
        gD = np.full(G, np.inf)
        np.minimum.at(gD, g_of, D[devs])   # exact where D is in the key, a relaxation else
    n = cnt.astype(float)
    inf = hs.kHighsInf
    has = uniq[:, :M] >= 0
    # per-host variables at capacity hosts
    xi, xj = np.nonzero(has & capr[None, :])
    Kx = xi.size
    # levels at the other hosts: (group, cost) -> hosts
    li, lj = np.nonzero(has & ~capr[None, :])
    lc = uniq[li, lj]
    if li.size:
        codes, inv = np.unique(lc, return_inverse=True)
        lkey = li.astype(np.int64) * codes.size + inv.ravel()
        ukey, lvl = np.unique(lkey, return_inverse=True)
        lvl = lvl.ravel()
        Lg = ukey // codes.size
        Lc = codes[ukey % codes.size]
    else:
        lvl = np.zeros(0, np.int64)
        Lg = np.zeros(0, np.int64)
        Lc = np.zeros(0)
    nL = Lg.size
    ncol = M + Kx + nL
    xc = M + np.arange(Kx)
    uc = M + Kx + np.arange(nL)
    rows = Rows()
    add = rows.add
    # level links: u_{g,c} - n_g sum_{j in level} y_j <= 0
    add(np.concatenate([np.arange(nL), lvl]), np.concatenate([uc, lj]),
        np.concatenate([np.ones(nL), -n[li]]), np.full(nL, -inf), np.zeros(nL))
    # per-host links: x_gj - n_g y_j <= 0
    add(np.concatenate([np.arange(Kx), np.arange(Kx)]), np.concatenate([xc, xj]),
        np.concatenate([np.ones(Kx), -n[xi]]), np.full(Kx, -inf), np.zeros(Kx))
    rel = np.flatnonzero(capr)
    if rel.size:   # capacity: sum_g D_g x_gj - R_j y_j <= 0
        rmap = np.full(M, -1)
        rmap[rel] = np.arange(rel.size)
        add(np.concatenate([rmap[xj], np.arange(rel.size)]), np.concatenate([xc, rel]),
            np.concatenate([gD[xi], -R[rel]]), np.full(rel.size, -inf), np.zeros(rel.size))
    # group rows: sum of the group's variables <= n_g
    add(np.concatenate([xi, Lg]), np.concatenate([xc, uc]), np.ones(Kx + nL),
        np.full(G, -inf), n)
    add(np.zeros(Kx + nL), np.concatenate([xc, uc]), np.ones(Kx + nL), [float(T_left)], [inf])
    if count_cut is not None and count_cut[0] > 0:
        k, demand = count_cut
        add(np.zeros(M), np.arange(M), np.ones(M), [float(k)], [inf])
        add(np.zeros(M), np.arange(M), R, [float(demand)], [inf])
    cost = np.concatenate([ce, uniq[xi, xj], Lc])
    if integral and math.isfinite(cutoff):   # only strictly better plans: (O) <= UB - 1
        add(np.zeros(ncol), np.arange(ncol), cost, [-inf], [cutoff + 1e-6])
    Amat = rows.matrix(ncol)
    r = rows.n
    h = hs.Highs()
    h.setOptionValue("output_flag", bool(verbose))
    h.setOptionValue("mip_rel_gap", 0.0 if integral else float(mip_rel_gap))
    if integral:
        h.setOptionValue("mip_abs_gap", 1.0 - 1e-6)
    if threads is not None:
        h.setOptionValue("threads", int(threads))
    if time_limit is not None:
        h.setOptionValue("time_limit", max(0.05, float(time_limit)))
    if math.isfinite(cutoff):
        # the incumbent comes from our heuristics and only better plans are sought: HiGHS's
        # primal heuristics (sub-MIPs, feasibility jump) took a third of the time for nothing
        for key in ("mip_heuristic_run_feasibility_jump", "mip_heuristic_run_rins",
                    "mip_heuristic_run_rens", "mip_heuristic_run_root_reduced_cost"):
            h.setOptionValue(key, False)
        h.setOptionValue("mip_heuristic_effort", 0.0)
    # cuts at the root only: node separation doubled the CPU of the hardest reduced MIP
    # seen (runtime 1,000 x 50 seed 1: 13 s, 729 nodes -> 6.4 s, 515 nodes) and did not help
    # elsewhere
    h.setOptionValue("mip_allow_cut_separation_at_nodes", False)
    for key, value in (highs_options or {}).items():
        h.setOptionValue(key, value)
    h.passModel(ncol, r, Amat.nnz, 1, 1, 0.0, cost,
                np.concatenate([np.asarray(y_lb, float), np.zeros(Kx + nL)]),
                np.concatenate([np.asarray(y_ub, float), n[xi], n[Lg]]),
                rows.lo, rows.hi, Amat.indptr.astype(np.int32),
                Amat.indices.astype(np.int32), Amat.data, np.ones(ncol, np.int32))
    S = hs.HighsModelStatus
    if time_limit is not None and (time_limit - (time.perf_counter() - t0)
                                   < SETUP_S_PER_ENTRY * (r + ncol)):
        # HiGHS checks its time limit only once it solves: presolve and setup of a large
        # model would overrun what is left
        return Reduced("time_limit", math.inf, -math.inf, time.perf_counter() - t0, None,
                       groups=G, columns=ncol, rows=r, capacity_hosts=int(rel.size))
    probed = 0
    if probe and math.isfinite(cutoff):
        probed = _probe_hosts(h, hs, ncol, M, np.asarray(y_lb, float), np.asarray(y_ub, float),
                              cutoff, t0, time_limit)
        if probed < 0:
            return Reduced("infeasible", math.inf, math.inf, time.perf_counter() - t0, None,
                           groups=G, columns=ncol, rows=r, capacity_hosts=int(rel.size))
    if time_limit is not None:   # what is left after building and probing
        h.setOptionValue("time_limit", max(0.01, time_limit - (time.perf_counter() - t0)))
    h.run()
    st = h.getModelStatus()
    info = h.getInfo()
    secs = time.perf_counter() - t0
    out = dict(groups=G, columns=ncol, rows=r, capacity_hosts=int(rel.size),
               nodes=int(max(info.mip_node_count, 0)), probed=probed)
    if st in (S.kInfeasible, S.kObjectiveBound):
        return Reduced("infeasible", math.inf, math.inf, secs, None, **out)
    has_sol = info.primal_solution_status == 2
    bound = float(info.mip_dual_bound) if np.isfinite(info.mip_dual_bound) else -math.inf
    a = None
    obj = math.inf
    if has_sol:
        v = np.asarray(h.getSolution().col_value)
        a = expand(v, N, M, devs, g_of, xi, xj, Lg, lj, lvl, n)
        a[pre] = np.argmax(((C[pre] <= 0) & (y_lb > 0.5)[None, :] & ~capr[None, :]
                            & np.asarray(allowed, bool)[pre]), axis=1)
        obj = float(info.objective_function_value)
    if st == S.kOptimal:
        return Reduced("optimal", obj, max(bound, obj) if integral else bound, secs, a, **out)
    if st in (S.kTimeLimit, S.kInterrupt, S.kIterationLimit, S.kSolutionLimit):
        return Reduced("time_limit", obj, bound, secs, a, **out)
    return Reduced("error", obj, bound, secs, a, **out)


def _probe_hosts(h, hs, ncol, M, y_lb, y_ub, cutoff, t0, time_limit) -> int:
    """LP probing on the free hosts of the model in ``h``: with ``y_j`` set to 0 (to 1),
    an LP above ``cutoff`` (or infeasible) fixes ``y_j`` to 1 (to 0) for every plan of value
    <= cutoff. Returns the number fixed, -1 when some host can be neither (no such plan).
    Integrality is restored on return."""
    idx = np.arange(ncol, dtype=np.int32)
    h.changeColsIntegrality(ncol, idx, np.zeros(ncol, np.uint8))
    S = hs.HighsModelStatus
    tol = 1e-6 * max(1.0, abs(cutoff))

    def above(lo, hi, j):
        h.changeColBounds(int(j), float(lo), float(hi))
        if time_limit is not None:
            h.setOptionValue("time_limit", max(0.01, PROBE_SHARE * time_limit
                                               - (time.perf_counter() - t0)))
        h.run()
        st = h.getModelStatus()
        return st == S.kInfeasible or (st == S.kOptimal and
                                       h.getInfo().objective_function_value > cutoff + tol)

    fixed = 0
    try:
        if time_limit is not None:
            h.setOptionValue("time_limit", max(0.01, PROBE_SHARE * time_limit
                                               - (time.perf_counter() - t0)))
        h.run()
        if h.getModelStatus() == S.kInfeasible:
            return -1
        for j in np.flatnonzero(y_ub - y_lb > 0.5):
            if time_limit is not None and time.perf_counter() - t0 > PROBE_SHARE * time_limit:
                break
            closed, opened = above(0.0, 0.0, j), above(1.0, 1.0, j)
            if closed and opened:
                return -1
            lo, hi = (1.0, 1.0) if closed else (0.0, 0.0) if opened else (y_lb[j], y_ub[j])
            h.changeColBounds(int(j), float(lo), float(hi))
            fixed += int(closed or opened)
    finally:
        h.changeColsIntegrality(ncol, idx, np.ones(ncol, np.uint8))
    return fixed


def expand(values, N, M, devs, g_of, xi, xj, Lg, lj, lvl, n) -> np.ndarray:
    """Assignment of the devices from a merged solution: group ``g`` sends ``x_gj`` of its
    members to capacity host ``j`` and ``u_{g,c}`` members to any open host of its level
    ``c`` (no capacity can bind there). Members are taken in index order."""
    v = np.round(np.asarray(values))
    y = v[:M] > 0.5
    Kx = xi.size
    a_dev = np.full(devs.size, -1, np.int64)
    order = np.argsort(g_of, kind="stable")          # members of each group, index order
    gstart = np.searchsorted(g_of[order], np.arange(n.size))
    taken = np.zeros(n.size, np.int64)
    for k in np.flatnonzero(v[M:M + Kx] > 0.5):
        g, cnt = xi[k], int(v[M + k])
        members = order[gstart[g] + taken[g]: gstart[g] + taken[g] + cnt]
        a_dev[members] = xj[k]
        taken[g] += cnt
    uv = v[M + Kx:]
    # an open host of each level: the first open host among the level's hosts
    host_of = np.full(Lg.size, -1, np.int64)
    open_pair = y[lj]
    first = np.full(Lg.size, np.iinfo(np.int64).max)
    np.minimum.at(first, lvl[open_pair], lj[open_pair])
    ok = first < np.iinfo(np.int64).max
    host_of[ok] = first[ok]
    for k in np.flatnonzero(uv > 0.5):
        g, cnt = Lg[k], int(uv[k])
        members = order[gstart[g] + taken[g]: gstart[g] + taken[g] + cnt]
        a_dev[members] = host_of[k]
        taken[g] += cnt
    a = np.full(N, -1, np.int64)
    a[devs] = a_dev
    return a
