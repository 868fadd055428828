"""HFLOP MILP: the Pyomo reference model and the matrix-built HiGHS path.

Both paths solve the same model over the same candidate pairs ``(i, j)``:

    min  sum_j c^e_j y_j + l sum_ij c^d_ij x_ij                                    (O)
    (C1) sum_i D_i x_ij <= R_j y_j   (``cap_times_y``; else <= R_j)     for all j
    (C2) sum_j x_ij <= 1                                                for all i
    (C3) sum_ij x_ij >= T = floor(rho N)
    (C4) v1: sum_i x_ij <= (N+1) y_j and y_j <= sum_i x_ij; v2: x_ij <= y_j;
         v3 (default): v2 and y_j <= sum_i x_ij
    (C5) x, y binary

[authors' code] for (O), C1-C5 and v1/v2/v3; [project choice] for the default (v3 with
``cap_times_y``), the reductions and the pipeline below.

Pipeline of the fast path (``method="highs"``), each step exact:

1. **R1** candidate pairs only where ``D_i <= R_j`` (any pair with ``D_i = 0``).
2. **Incumbent** UB from the heuristics H2/H1 + H3 and the host-set moves
   (``heuristics.py``).
3. **R2** fix ``x_ij = 0`` when ``l c^d_ij + c^e_j > UB - Delta`` and ``y_j = 0`` when
   ``c^e_j > UB - Delta`` (costs >= 0; ``Delta = 1`` when all of ``l c^d`` and ``c^e`` are
   integers, since then only strictly better solutions matter, else 0).
4. the staged bounds of :mod:`jointopt.solvers.hfl.cover`: host count, the cover LP (an
   ``N``-row LP in place of the ``N M``-row pair LP; its reduced costs fix hosts and pairs,
   R3, and ``ceil(LB) >= UB`` proves the incumbent, R4), the cover MIP without capacities,
   and the exact MIP on what is left with identical devices merged. The first stage that
   proves the incumbent optimal ends the solve (``proved_by``).

With ``reductions=False`` or on the Pyomo path the full pair model goes to the MIP (not
started from the incumbent: a start made HiGHS search far longer, see :func:`_full`).

The M/M/1 extension adds ``theta_j`` with tangent cuts and runs the Kelley loop
(:func:`solve_latency`) on either path.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from jointopt.models import hfl as hm
from jointopt.models.errors import InfeasibleError, SolverError, ValidationError
from jointopt.solvers.base import Timer
from jointopt.solvers.hfl.heuristics import lp_assign, solve_heuristic
from jointopt.solvers.hfl.rows import Rows

# --------------------------------------------------------------------------- model data


@dataclass
class Model:
    """Column layout ``[y (M) | x (K pairs) | theta (M, latency only)]`` and row data."""

    N: int
    M: int
    pi: np.ndarray            # device of pair k
    pj: np.ndarray            # host of pair k
    y_ub: np.ndarray          # 0/1 per host
    cost: np.ndarray          # objective per column
    lb: np.ndarray
    ub: np.ndarray
    integer: np.ndarray       # bool per column
    A: sp.csr_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    offset: float = 0.0
    latency: bool = False
    families: dict = field(default_factory=dict)  # name -> slice of rows

    @property
    def K(self) -> int:
        return self.pi.shape[0]

    @property
    def n_cols(self) -> int:
        return self.cost.shape[0]

    def x_cols(self) -> slice:
        return slice(self.M, self.M + self.K)

    def theta_cols(self) -> slice:
        return slice(self.M + self.K, self.M + self.K + (self.M if self.latency else 0))

    def assignment(self, values) -> np.ndarray:
        """Association from column values, rounding binaries (``|v - round(v)| <= 1e-6``
        checked; the authors truncate with ``int()``)."""
        xv = np.asarray(values)[self.x_cols()]
        r = np.round(xv)
        if np.abs(xv - r).max(initial=0.0) > 1e-6:
            raise SolverError(f"non-integral x from the MIP (max deviation "
                              f"{np.abs(xv - r).max():.3g})")
        a = np.full(self.N, -1, dtype=np.int64)
        on = r > 0.5
        a[self.pi[on]] = self.pj[on]
        return a


def build_model(prob, allowed: np.ndarray, y_ub: np.ndarray, *, uncapacitated=False,
                linking=None, cap_times_y=None) -> Model:
    """The MILP over the candidate pairs ``allowed`` (N x M bool) as CSR rows, numpy only."""
    N, M = prob.N, prob.M
    linking = linking or prob.linking
    cap_times_y = prob.cap_times_y if cap_times_y is None else cap_times_y
    pi, pj = np.nonzero(allowed)          # row-major: sorted by (i, j)
    pi = pi.astype(np.int32)
    pj = pj.astype(np.int32)
    K = pi.shape[0]
    lat = prob.latency
    n_cols = M + K + (M if lat is not None else 0)
    D = prob.workload
    rows = Rows()
    families = {}
    xcol = M + np.arange(K)

    def add(name, r, c, v, rlo, rhi):
        families[name] = rows.add(r, c, v, rlo, rhi)

    cap = prob.capacities if lat is None else prob.load_cap
    if not uncapacitated:   # C1
        if cap_times_y:
            add("capacity", np.concatenate([pj, np.arange(M)]),
                np.concatenate([xcol, np.arange(M)]), np.concatenate([D[pi], -cap]),
                np.full(M, -np.inf), np.zeros(M))
        else:
            add("capacity", pj, xcol, D[pi], np.full(M, -np.inf), cap)
    multi = np.bincount(pi, minlength=N) > 1   # C2 rows only where a device has a choice
    renum = np.cumsum(multi) - 1
    sel = multi[pi]
    add("single", renum[pi[sel]], xcol[sel], np.ones(sel.sum()),
        np.full(int(multi.sum()), -np.inf), np.ones(int(multi.sum())))
    add("participation", np.zeros(K), xcol, np.ones(K), [prob.T], [np.inf])   # C3
    if linking in ("v2", "v3"):   # L-dis
        add("link", np.concatenate([np.arange(K), np.arange(K)]),
            np.concatenate([xcol, pj]), np.concatenate([np.ones(K), -np.ones(K)]),
            np.full(K, -np.inf), np.zeros(K))
    if linking == "v1":   # L-agg
        add("link", np.concatenate([pj, np.arange(M)]), np.concatenate([xcol, np.arange(M)]),
            np.concatenate([np.ones(K), -np.full(M, N + 1.0)]), np.full(M, -np.inf),
            np.zeros(M))
    if linking in ("v1", "v3"):   # L-nonempty
        add("nonempty", np.concatenate([np.arange(M), pj]), np.concatenate([np.arange(M), xcol]),
            np.concatenate([np.ones(M), -np.ones(K)]), np.full(M, -np.inf), np.zeros(M))
    cost = np.concatenate([prob.ce, prob.l * prob.cd[pi, pj]])
    lb = np.zeros(n_cols)
    ub = np.concatenate([y_ub.astype(float), np.ones(K)])
    integer = np.concatenate([np.ones(M + K, bool)])
    offset = 0.0
    if lat is not None:
        Dtot = float(D.sum())
        w = lat.beta / Dtot if Dtot > 0 else 0.0
        cost = cost.copy()
        cost[M:] += w * D[pi] * (prob.delay[pi, pj] - lat.cloud_delay)
        cost = np.concatenate([cost, np.full(M, w)])
        offset = lat.beta * lat.cloud_delay if Dtot > 0 else 0.0
        ub = np.concatenate([ub, np.full(M, np.inf)])
        integer = np.concatenate([integer, np.zeros(M, bool)])
        if lat.max_latency is not None and Dtot > 0:   # eps-constraint on the linear model
            add("latency", np.zeros(K + M), np.concatenate([xcol, M + K + np.arange(M)]),
                np.concatenate([D[pi] * (prob.delay[pi, pj] - lat.cloud_delay), np.ones(M)]),
                [-np.inf], [Dtot * (lat.max_latency - lat.cloud_delay)])
    return Model(N, M, pi, pj, y_ub.astype(float), cost, lb, ub, integer,
                 rows.matrix(n_cols, "csr"), rows.lo, rows.hi, offset, lat is not None,
                 families)


def cut_rows(model: Model, prob, hosts, points):
    """Tangent cuts ``theta_j - slope sum_i D_i x_ij >= intercept`` as CSR pieces."""
    D = prob.workload
    mu = prob.service_rate
    slope, icpt = hm.tangent(np.asarray(points, float), mu[np.asarray(hosts)])
    by_host = [np.flatnonzero(model.pj == j) for j in range(model.M)]
    starts, idx, val = [0], [], []
    for j, s in zip(hosts, slope, strict=True):
        ks = by_host[j]
        idx.append(np.concatenate([[model.M + model.K + j], model.M + ks]))
        val.append(np.concatenate([[1.0], -s * D[model.pi[ks]]]))
        starts.append(starts[-1] + len(ks) + 1)
    return (np.asarray(starts[:-1], np.int32), np.concatenate(idx).astype(np.int32),
            np.concatenate(val), np.asarray(icpt, float))


# --------------------------------------------------------------------------- backends


@dataclass
class MipOutcome:
    status: str               # optimal | infeasible | time_limit | error
    values: np.ndarray | None
    objective: float
    bound: float
    seconds: float
    nodes: int = 0


class HighsBackend:
    """Matrix path: the model passed to ``highspy.Highs.passModel`` as CSC arrays."""

    name = "highs"

    def __init__(self, model: Model, *, time_limit=None, mip_rel_gap=1e-4, threads=None,
                 mip_abs_gap=None, verbose=False):
        import highspy

        self.hs = highspy
        self.model = model
        h = highspy.Highs()
        h.setOptionValue("output_flag", bool(verbose))
        if time_limit is not None:
            h.setOptionValue("time_limit", float(time_limit))
        h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
        if mip_abs_gap is not None:
            h.setOptionValue("mip_abs_gap", float(mip_abs_gap))
        if threads is not None:
            h.setOptionValue("threads", int(threads))
        A = model.A.tocsc()
        inf = highspy.kHighsInf

        def fin(v):
            return np.clip(v, -inf, inf)

        h.passModel(model.n_cols, A.shape[0], A.nnz, 1, 1, float(model.offset),
                    model.cost, model.lb, fin(model.ub), fin(model.row_lo), fin(model.row_hi),
                    A.indptr.astype(np.int32), A.indices.astype(np.int32), A.data,
                    model.integer.astype(np.int32))
        self.h = h

    def add_cuts(self, starts, idx, val, lo):
        n = len(lo)
        self.h.addRows(n, np.asarray(lo, float), np.full(n, self.hs.kHighsInf), len(idx),
                       starts, idx, val)

    def set_start(self, values):
        if values is not None:
            self.h.setSolution(len(values), np.arange(len(values), dtype=np.int32),
                               np.asarray(values, float))

    def set_time_limit(self, seconds):
        """Limit the next solve to ``seconds`` (None: no limit)."""
        self.h.setOptionValue("time_limit", self.hs.kHighsInf if seconds is None
                              else max(0.01, float(seconds)))

    def solve(self) -> MipOutcome:
        hs = self.hs
        t0 = time.perf_counter()
        self.h.run()
        st = self.h.getModelStatus()
        info = self.h.getInfo()
        secs = time.perf_counter() - t0
        S = hs.HighsModelStatus
        has_sol = info.primal_solution_status == 2  # kSolutionStatusFeasible
        values = np.asarray(self.h.getSolution().col_value) if has_sol else None
        if st == S.kOptimal:
            status = "optimal"
        elif st in (S.kInfeasible, S.kObjectiveBound):
            status = "infeasible"
        elif st in (S.kTimeLimit, S.kIterationLimit, S.kInterrupt, S.kSolutionLimit):
            status = "time_limit"
        elif st == S.kModelEmpty:
            return MipOutcome("optimal", np.zeros(0), float(self.model.offset),
                              float(self.model.offset), secs)
        else:
            status = "error"
        obj = info.objective_function_value if has_sol else math.inf
        bound = info.mip_dual_bound if status != "infeasible" else math.inf
        if status == "optimal" and not np.isfinite(bound):
            bound = obj
        return MipOutcome(status, values, float(obj), float(bound), secs,
                          int(max(info.mip_node_count, 0)))


class PyomoBackend:
    """Reference path: a Pyomo ``ConcreteModel`` over the candidate-pair set, solved by
    HiGHS through Pyomo's persistent APPSI interface (``appsi_highs``, needs highspy)."""

    name = "pyomo"

    def __init__(self, model: Model, prob, *, time_limit=None, mip_rel_gap=1e-4,
                 threads=None, mip_abs_gap=None, verbose=False):
        import pyomo.environ as pyo
        from pyomo.contrib.appsi.solvers import Highs

        self.pyo = pyo
        self.model = model
        self.prob = prob
        M, K = model.M, model.K
        m = pyo.ConcreteModel(name=prob.name)
        m.H = pyo.RangeSet(0, M - 1)
        m.P = pyo.RangeSet(0, K - 1) if K else pyo.Set(initialize=[])
        m.y = pyo.Var(m.H, domain=pyo.Binary)
        m.x = pyo.Var(m.P, domain=pyo.Binary)
        for j in range(M):
            if model.y_ub[j] < 0.5:
                m.y[j].fix(0)
        pi, pj = model.pi.tolist(), model.pj.tolist()
        D = prob.workload.tolist()
        by_host = [[] for _ in range(M)]
        by_dev = [[] for _ in range(model.N)]
        for k in range(K):
            by_host[pj[k]].append(k)
            by_dev[pi[k]].append(k)
        fam = model.families
        lat = prob.latency
        cap = (prob.capacities if lat is None else prob.load_cap).tolist()
        if "capacity" in fam:
            if prob.cap_times_y:
                m.capacity = pyo.Constraint(m.H, rule=lambda m, j: sum(
                    D[pi[k]] * m.x[k] for k in by_host[j]) <= cap[j] * m.y[j])
            else:
                m.capacity = pyo.Constraint(m.H, rule=lambda m, j: sum(
                    D[pi[k]] * m.x[k] for k in by_host[j]) <= cap[j] if by_host[j]
                    else pyo.Constraint.Feasible)
        multi = [i for i in range(model.N) if len(by_dev[i]) > 1]
        m.single = pyo.Constraint(multi, rule=lambda m, i: sum(m.x[k] for k in by_dev[i]) <= 1)
        if K:
            m.participation = pyo.Constraint(expr=sum(m.x[k] for k in m.P) >= prob.T)
        elif prob.T > 0:
            m.participation = pyo.Constraint(expr=sum(m.y[j] for j in range(M)) >= M + 1)
        linking = _linking_of(model)
        if linking in ("v2", "v3"):
            m.link = pyo.Constraint(m.P, rule=lambda m, k: m.x[k] <= m.y[pj[k]])
        if linking == "v1":
            m.link = pyo.Constraint(m.H, rule=lambda m, j: sum(
                m.x[k] for k in by_host[j]) <= (model.N + 1) * m.y[j])
        if linking in ("v1", "v3"):
            m.nonempty = pyo.Constraint(m.H, rule=lambda m, j: m.y[j] <= sum(
                m.x[k] for k in by_host[j]))
        cx = model.cost[model.x_cols()].tolist()
        cy = model.cost[:M].tolist()
        expr = sum(cy[j] * m.y[j] for j in range(M)) + sum(cx[k] * m.x[k] for k in range(K))
        if lat is not None:
            m.theta = pyo.Var(m.H, domain=pyo.NonNegativeReals)
            w = float(model.cost[model.theta_cols()][0]) if M else 0.0
            expr = expr + sum(w * m.theta[j] for j in range(M)) + model.offset
            m.cuts = pyo.ConstraintList()
            if "latency" in fam:
                Dtot = float(prob.workload.sum())
                m.latency = pyo.Constraint(expr=sum(
                    cx_lat * m.x[k] for k, cx_lat in enumerate(
                        (prob.workload[model.pi] * (prob.delay[model.pi, model.pj]
                                                    - lat.cloud_delay)).tolist()))
                    + sum(m.theta[j] for j in range(M))
                    <= Dtot * (lat.max_latency - lat.cloud_delay))
        m.obj = pyo.Objective(expr=expr, sense=pyo.minimize)
        self.m = m
        self.by_host = by_host
        opt = Highs()
        opt.config.load_solution = False
        opt.config.stream_solver = bool(verbose)
        if time_limit is not None:
            opt.config.time_limit = float(time_limit)
        opt.config.mip_gap = float(mip_rel_gap)
        opts = {}
        if threads is not None:
            opts["threads"] = int(threads)
        if mip_abs_gap is not None:
            opts["mip_abs_gap"] = float(mip_abs_gap)
        opt.highs_options = opts
        self.opt = opt

    def add_cuts(self, hosts, points):
        m = self.m
        D = self.prob.workload
        slope, icpt = hm.tangent(np.asarray(points, float), self.prob.service_rate[hosts])
        for j, s, c in zip(hosts, slope, icpt, strict=True):
            ks = self.by_host[int(j)]
            m.cuts.add(m.theta[int(j)] - float(s) * sum(
                float(D[self.model.pi[k]]) * m.x[k] for k in ks) >= float(c))

    def set_start(self, values):
        return None  # the persistent APPSI HiGHS interface is used cold

    def set_time_limit(self, seconds):
        """Limit the next solve to ``seconds`` (None: no limit)."""
        self.opt.config.time_limit = None if seconds is None else max(0.01, float(seconds))

    def solve(self) -> MipOutcome:
        from pyomo.contrib.appsi.base import TerminationCondition as TC

        t0 = time.perf_counter()
        res = self.opt.solve(self.m)
        secs = time.perf_counter() - t0
        tc = res.termination_condition
        values = None
        if res.best_feasible_objective is not None:
            res.solution_loader.load_vars()
            mm = self.m
            M, K = self.model.M, self.model.K
            v = [mm.y[j].value or 0.0 for j in range(M)]
            v += [mm.x[k].value or 0.0 for k in range(K)]
            if self.model.latency:
                v += [mm.theta[j].value or 0.0 for j in range(M)]
            values = np.asarray(v, float)
        if tc == TC.optimal:
            status = "optimal"
        elif tc in (TC.infeasible, TC.infeasibleOrUnbounded):
            status = "infeasible"
        elif tc in (TC.maxTimeLimit, TC.maxIterations, TC.interrupted):
            status = "time_limit"
        else:
            status = "error"
        obj = res.best_feasible_objective if res.best_feasible_objective is not None else math.inf
        bound = res.best_objective_bound
        bound = float(bound) if bound is not None and status != "infeasible" else (
            obj if status == "optimal" else math.inf)
        return MipOutcome(status, values, float(obj), bound, secs)


def _linking_of(model: Model) -> str:
    return model.families.get("_linking", "v3")


def make_backend(kind, model, prob, **opts):
    if kind == "pyomo":
        return PyomoBackend(model, prob, **opts)
    return HighsBackend(model, **opts)


# --------------------------------------------------------------------------- pipeline


@dataclass
class HFLOutcome:
    assignment: np.ndarray | None
    status: str
    objective: float
    lower_bound: float
    times: dict
    info: dict


def candidate_pairs(prob, uncapacitated=False) -> np.ndarray:
    """R1: pair ``(i, j)`` is a candidate iff ``D_i <= R_j`` (``D_i = 0`` fits anywhere)."""
    if uncapacitated:
        return np.ones((prob.N, prob.M), bool)
    cap = prob.capacities if prob.latency is None else prob.load_cap
    return prob.workload[:, None] <= cap[None, :] * (1 + 1e-12)


class Clock:
    """Wall-clock budget shared by every stage of a solve (``time_limit`` in seconds,
    None for no limit)."""

    def __init__(self, limit=None):
        self.t0 = time.perf_counter()
        self.limit = None if limit is None else float(limit)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return math.inf if self.limit is None else self.limit - self.elapsed()

    def cap(self, seconds=None):
        """The time a stage may take: ``seconds`` (None: no own cap) within what is left;
        None when neither limits it."""
        left = self.left()
        if seconds is None:
            return None if math.isinf(left) else max(0.0, left)
        return max(0.0, min(float(seconds), left))

    @property
    def out(self) -> bool:
        return self.left() <= 0


def solve_hflop(prob, backend="highs", *, heuristics=True, reductions=True, lp_fixing=True,
                cover_mip=True, time_limit=None, mip_rel_gap=1e-4, threads=None,
                uncapacitated=False, linking=None, cap_times_y=None, heuristic_time=5.0,
                verbose=False) -> HFLOutcome:
    """Exact HFLOP on ``backend`` ("highs" matrix path or "pyomo").

    ``time_limit`` bounds the whole solve (heuristics, bounds, MIP). With the matrix path
    and ``reductions`` the staged pipeline of :mod:`jointopt.solvers.hfl.cover` runs (host
    count, cover LP, uncapacitated cover MIP, exact reduced MIP); otherwise the full pair
    model of :func:`build_model` goes to the MIP."""
    clock = Clock(time_limit)
    times = {}
    info = {"backend": backend}
    if not uncapacitated:
        prob.check_feasible()
    linking = linking or prob.linking
    N, M = prob.N, prob.M
    C = prob.l * prob.cd
    ce = prob.ce
    T = prob.T
    allowed = candidate_pairs(prob, uncapacitated) if reductions else np.ones((N, M), bool)
    R = prob.capacities if not uncapacitated else np.full(M, np.inf)
    inc = None
    with Timer() as t:
        if heuristics:
            h = solve_heuristic(prob.workload, R, C, ce, T, allowed=allowed,
                                time_limit=clock.cap(heuristic_time if time_limit is None
                                                     else min(heuristic_time,
                                                              0.25 * time_limit)))
            if h.feasible:
                inc = h
                info["heuristic"] = h.name
    times["heuristic_s"] = t.seconds
    UB = inc.objective if inc is not None else math.inf
    delta = 1.0 if (reductions and prob.integral_costs()) else 0.0
    y_ub = np.ones(M)
    if reductions and inc is not None:   # R2
        slack = UB - delta + 1e-9 * max(1.0, abs(UB))
        allowed = allowed & (C + ce[None, :] <= slack)
        y_ub = (ce <= slack).astype(float)
    info["pairs"] = int(allowed.sum())
    if backend == "highs" and reductions:
        return _staged(prob, inc, delta, allowed, y_ub, R, clock, times, info,
                       lp_fixing=lp_fixing, cover_mip=cover_mip, threads=threads,
                       mip_rel_gap=mip_rel_gap, heuristic_time=heuristic_time,
                       verbose=verbose)
    return _full(prob, backend, inc, allowed, y_ub, clock, times, info, linking=linking,
                 cap_times_y=cap_times_y, mip_rel_gap=mip_rel_gap, threads=threads,
                 uncapacitated=uncapacitated, verbose=verbose)


def _full(prob, backend, inc, allowed, y_ub, clock, times, info, *, linking, cap_times_y,
          mip_rel_gap, threads, uncapacitated, verbose) -> HFLOutcome:
    """The full pair model (``build_model``) as one MIP; the incumbent is returned when the
    MIP finds nothing better."""
    N = prob.N
    UB = inc.objective if inc is not None else math.inf
    with Timer() as t:
        model = build_model(prob, allowed, y_ub, uncapacitated=uncapacitated, linking=linking,
                            cap_times_y=cap_times_y)
        model.families["_linking"] = linking
        back = make_backend(backend, model, prob, time_limit=None, mip_rel_gap=mip_rel_gap,
                            threads=threads, verbose=verbose)
    times["build_s"] = t.seconds
    times["lp_s"] = 0.0
    # no start solution: handing HiGHS the (optimal) incumbent made it explore 594 nodes
    # where it needs 17 without (runtime 1,000 x 50 seed 1); the incumbent is kept and
    # compared with the MIP's answer below
    back.set_time_limit(clock.cap())
    out = back.solve()
    times["mip_s"] = out.seconds
    info["nodes"] = out.nodes
    info["mip_status"] = out.status
    best_a, best = (inc.assignment, UB) if inc is not None else (None, math.inf)
    if out.values is not None and out.values.size:
        a = model.assignment(out.values)
        val = prob_objective(prob, a, uncapacitated)
        if best_a is None or val < best - 1e-9 * max(1.0, abs(best)):
            best_a, best = a, val
    elif out.status == "optimal" and model.n_cols == 0:
        best_a, best = np.full(N, -1, dtype=np.int64), 0.0
    times["total_s"] = clock.elapsed()
    LB = -math.inf
    if out.status == "optimal":
        status = "optimal"
        LB = min(best, max(LB, out.bound)) if best_a is not None else LB
        info["proved_by"] = "MIP"
    elif out.status == "infeasible":
        if inc is not None:   # nothing strictly better than the incumbent exists
            status, LB = "optimal", best
            info["proved_by"] = "MIP (nothing better than the incumbent)"
        else:
            raise prob.infeasible_by_solver()
    elif out.status == "time_limit":
        status = "time_limit" if best_a is not None else "no_solution"
        LB = max(LB, min(out.bound, best))
    else:
        raise SolverError(f"HiGHS failed on hfl problem {prob.name!r} ({out.status})")
    if best_a is None:
        raise SolverError(f"no feasible association found for {prob.name!r} within the "
                          "time limit")
    info["bounds"] = {"MIP": LB}
    return HFLOutcome(best_a, status, best, LB, times, info)


def _staged(prob, inc, delta, allowed, y_ub, R, clock, times, info, *, lp_fixing, cover_mip,
            threads, mip_rel_gap, heuristic_time, verbose, exact=True) -> HFLOutcome:
    """Matrix path with reductions: the stages of :mod:`jointopt.solvers.hfl.cover`, each
    a lower bound; the first that proves the incumbent optimal ends the solve, the exact
    reduced MIP ends it in any case (``info["proved_by"]``, ``info["bounds"]``).
    ``exact=False`` (the heuristic method): a plan not proven optimal within the time is
    "feasible" rather than "time_limit"."""
    from jointopt.solvers.hfl import cover

    D = prob.workload
    C = prob.l * prob.cd
    ce = prob.ce
    T = prob.T
    M = prob.M
    integral = delta == 1.0
    unproved = "time_limit" if exact else "feasible"
    best_a, best = (inc.assignment, inc.objective) if inc is not None else (None, math.inf)
    bounds = {}
    info["bounds"] = bounds
    times.setdefault("lp_s", 0.0)
    times.setdefault("mip_s", 0.0)

    def cutoff():
        return best - delta if math.isfinite(best) else math.inf

    def better(val):
        return best_a is None or val < best - 1e-9 * max(1.0, abs(best))

    def restart(opened, tag) -> bool:
        """H4/H5: the heuristics again on the hosts ``opened`` only (pairs still allowed),
        and the assignment LP on them rounded (the better of the two); True when that beat
        the incumbent."""
        nonlocal best_a, best
        with Timer() as t:
            ok = allowed & opened[None, :]
            h = solve_heuristic(D, R, C, ce, T, allowed=ok,
                                time_limit=clock.cap(heuristic_time / 2))
            a, val = (h.assignment, h.objective) if h.feasible else (None, math.inf)
            b = lp_assign(opened, D, R, np.where(ok, C, np.inf), ce, T, cheapest_only=False)
            if b is not None and int((b >= 0).sum()) >= T and prob.evaluate(b).feasible:
                vb = prob_objective(prob, b)
                if vb < val:
                    a, val = b, vb
        times["heuristic_s"] += t.seconds
        if a is None or not better(val):
            return False
        best_a, best = a, val
        info["heuristic"] = f"{info.get('heuristic', '')}+{tag}".lstrip("+")
        return True

    def proves(lb):
        if not math.isfinite(best) or not math.isfinite(lb):
            return math.isinf(lb) and lb > 0 and math.isfinite(best)
        tol = 1e-9 * max(1.0, abs(best))
        return lb >= best - tol or (integral and math.ceil(lb - 1e-6) >= best)

    def done(status, by=None):
        times["total_s"] = clock.elapsed()
        lbs = [b for b in bounds.values() if b is not None]
        lb = max(lbs) if lbs else -math.inf
        if status == "optimal":
            lb = best
            info["proved_by"] = by
        if best_a is None:
            raise SolverError(f"no feasible association found for {prob.name!r} within the "
                              "time limit")
        return HFLOutcome(best_a, status, best, min(lb, best), times, info)

    finite_R = bool(np.isfinite(R).all())
    y_lb = np.zeros(M)
    k, lb1, demand = cover.host_count_bound(D, R if finite_R else np.full(M, 1e300), ce, T,
                                            y_ub)
    count_cut = (k, demand if finite_R else 0.0) if k <= M else None
    bounds["host count"] = lb1
    if proves(lb1):
        return done("optimal", "host count")
    if clock.out:
        return done(unproved)
    # stage 2: cover LP
    with Timer() as t:
        cl = cover.cover_lp(D, R if finite_R else np.zeros(M), C, ce, T, allowed, y_lb, y_ub,
                            count_cut=count_cut if finite_R else None,
                            time_limit=clock.cap(), threads=threads)
    times["lp_s"] = t.seconds
    info["cover_levels"] = cl.levels
    if cl.status == "infeasible":
        if best_a is None:   # a relaxation of the whole problem is infeasible
            raise prob.infeasible_by_solver()
        bounds["cover LP"] = math.inf
        return done("optimal", "cover LP (no better plan exists)")
    if cl.status != "optimal":
        return done(unproved)
    bounds["cover LP"] = cl.bound
    if proves(cl.bound):
        return done("optimal", "cover LP")
    if lp_fixing and inc is not None and not clock.out:
        # H4: the heuristics again on the hosts the LP opens
        if restart(cl.y > 1e-6, "H4") and proves(cl.bound):
            return done("optimal", "cover LP")
    fixed_at = cutoff()
    if lp_fixing:
        allowed, y_lb, y_ub = cl.fix(allowed, y_lb, y_ub, fixed_at)
    info["pairs_left"] = int(allowed.sum())
    info["hosts_left"] = int((y_ub > 0.5).sum() - (y_lb > 0.5).sum())
    info["hosts_forced"] = int((y_lb > 0.5).sum())
    opts = dict(integral=integral, count_cut=count_cut if finite_R else None,
                threads=threads, mip_rel_gap=mip_rel_gap, verbose=verbose)
    capr = cover.capacity_hosts(D, R, allowed, y_ub > 0.5) if finite_R else np.zeros(M, bool)
    # stage 3: the cover MIP without capacities (exact itself when no capacity can bind);
    # a MIP stage needs a second at least: building its model is not interruptible
    if cover_mip and capr.any() and clock.left() >= 1.0:
        limit = clock.cap()
        with Timer() as t:
            r3 = cover.solve_reduced(D, R, C, ce, T, allowed, y_lb, y_ub, capacity=False,
                                     cutoff=cutoff(), time_limit=None if limit is None
                                     else 0.5 * limit, **opts)
        times["mip_s"] += t.seconds
        info["cover_mip"] = {"status": r3.status, "groups": r3.groups, "nodes": r3.nodes,
                             "hosts_probed": r3.probed}
        if r3.status == "infeasible":
            if best_a is None:
                raise prob.infeasible_by_solver()
            bounds["uncapacitated cover MIP"] = best if integral else cutoff()
            return done("optimal", "uncapacitated cover MIP")
        if r3.status == "optimal":
            bounds["uncapacitated cover MIP"] = r3.objective
            a = r3.assignment
            if a is not None and prob.evaluate(a).feasible:   # the relaxation's plan fits
                val = prob_objective(prob, a)
                if better(val):
                    best_a, best = a, val
                return done("optimal", "uncapacitated cover MIP (its plan fits)")
            if proves(r3.objective):
                return done("optimal", "uncapacitated cover MIP")
            if a is not None and heuristic_time > 0 and not clock.out:
                # H5: the heuristics on the hosts the relaxation opens, capacities kept
                if (restart(hm.used_hosts(a, M) | (y_lb > 0.5), "H5")
                        and proves(r3.objective)):
                    return done("optimal", "uncapacitated cover MIP")
        elif math.isfinite(r3.bound):
            bounds["uncapacitated cover MIP"] = r3.bound
            if proves(r3.bound):
                return done("optimal", "uncapacitated cover MIP")
    if clock.left() < 1.0:
        return done(unproved)
    if lp_fixing and cutoff() < fixed_at:   # H5 found a better plan: fix against it
        allowed, y_lb, y_ub = cl.fix(allowed, y_lb, y_ub, cutoff())
        info["pairs_left"] = int(allowed.sum())
    # stage 4: exact on the reduced set
    with Timer() as t:
        r4 = cover.solve_reduced(D, R, C, ce, T, allowed, y_lb, y_ub, capacity=finite_R,
                                 cutoff=cutoff(), time_limit=clock.cap(), **opts)
    times["mip_s"] += t.seconds
    info["exact_mip"] = {"status": r4.status, "groups": r4.groups, "nodes": r4.nodes,
                         "capacity_hosts": r4.capacity_hosts, "columns": r4.columns,
                         "rows": r4.rows, "hosts_probed": r4.probed}
    info["nodes"] = r4.nodes
    if r4.assignment is not None:
        ev = prob.evaluate(r4.assignment) if finite_R else None
        if ev is not None and not ev.feasible:
            raise SolverError(f"the reduced model returned an infeasible plan ({ev.reason})")
        val = prob_objective(prob, r4.assignment)
        if better(val):
            best_a, best = r4.assignment, val
    if r4.status == "infeasible":
        if best_a is None:
            raise prob.infeasible_by_solver()
        bounds["exact reduced MIP"] = best
        return done("optimal", "exact reduced MIP (nothing better than the incumbent)")
    if r4.status == "optimal":
        bounds["exact reduced MIP"] = best
        return done("optimal", "exact reduced MIP")
    if r4.status == "time_limit":
        if math.isfinite(r4.bound):
            bounds["exact reduced MIP"] = r4.bound
            if proves(r4.bound):
                return done("optimal", "exact reduced MIP")
        return done(unproved)
    raise SolverError(f"HiGHS failed on hfl problem {prob.name!r} ({r4.status})")


def prob_objective(prob, a, uncapacitated=False) -> float:
    return hm.per_round_cost(a, prob.cd, prob.ce, prob.l)


# --------------------------------------------------------------------------- latency


def exact_objective(prob, a) -> float:
    """(O) + beta L(x), exact; ``inf`` if a host is over its load cap."""
    lam = hm.host_loads(prob.workload, a, prob.M)
    if (lam > prob.load_cap * (1 + 1e-9) + 1e-12).any():
        return math.inf
    return hm.per_round_cost(a, prob.cd, prob.ce, prob.l) + prob.latency.beta * prob.mean_latency(a)


def solve_latency(prob, backend="highs", *, time_limit=None, threads=None,
                  verbose=False) -> HFLOutcome:
    """Kelley cutting-plane loop on the tangent outer approximation [project
    choice]. Every MILP optimum is a lower bound LB; the exact objective at its solution an
    upper bound UB; cuts at ``lambda*_j`` are added where ``phi_j(lambda*_j) - theta*_j``
    exceeds the tolerance; stop when ``UB - LB <= eps_abs + eps_rel |UB|`` or no cut is new.
    Grid error bound (before refinement): ``(1 + phi) / (1 + cuts) <= (1 + r)^2 / (4 r)``,
    see :func:`jointopt.models.hfl.grid_bound`."""
    clock = Clock(time_limit)
    lat = prob.latency
    prob.check_feasible()
    M = prob.M
    allowed = candidate_pairs(prob)
    model = build_model(prob, allowed, np.ones(M))
    model.families["_linking"] = prob.linking
    gap = lat.eps_rel / 10
    back = make_backend(backend, model, prob, time_limit=None, mip_rel_gap=gap,
                        threads=threads, mip_abs_gap=lat.eps_abs / 10, verbose=verbose)
    mu, cap = prob.service_rate, prob.load_cap
    points = [[] for _ in range(M)]
    hosts, pts = [], []
    for j in range(M):
        if mu[j] > 0 and cap[j] > 0:
            g = hm.tangent_grid(mu[j], cap[j], lat.cuts)
            points[j] = list(g)
            hosts += [j] * len(g)
            pts += list(g)
    _add(back, model, prob, hosts, pts)
    LB, UB, best_a = -math.inf, math.inf, None
    history = []
    it = 0
    status = "optimal"
    while it < lat.max_iter:
        if clock.out:
            status = "time_limit"
            break
        it += 1
        back.set_time_limit(clock.cap())
        out = back.solve()
        if out.status == "infeasible":
            if best_a is None:
                if lat.max_latency is not None:
                    from jointopt.models.errors import InfeasibleError as IE

                    raise IE("latency", f"latency: no association meets max_latency = "
                                        f"{lat.max_latency:g} s with the capacity and "
                                        f"participation constraints (proved by solver)",
                             field="latency.max_latency")
                raise prob.infeasible_by_solver()
            break
        if out.values is None:
            status = "time_limit"
            break
        LB = max(LB, out.bound)
        a = model.assignment(out.values)
        val = exact_objective(prob, a)
        feas_lat = lat.max_latency is None or prob.mean_latency(a) <= lat.max_latency * (
            1 + 1e-9)
        if feas_lat and val < UB:
            UB, best_a = val, a
        history.append({"iteration": it, "LB": LB, "UB": UB})
        if UB - LB <= lat.eps_abs + lat.eps_rel * abs(UB):
            break
        if out.status == "time_limit":
            status = "time_limit"
            break
        theta = out.values[model.theta_cols()]
        lam = hm.host_loads(prob.workload, a, M)
        exact = hm.phi(lam, mu)
        new_h, new_p = [], []
        for j in np.flatnonzero(exact - theta > max(lat.eps_abs, 1e-12)):
            if mu[j] <= 0 or lam[j] <= 0:
                continue
            if points[j] and np.min(np.abs(np.asarray(points[j]) - lam[j])) <= 1e-9:
                continue
            points[j].append(lam[j])
            new_h.append(int(j))
            new_p.append(float(lam[j]))
        if not new_h:
            break
        _add(back, model, prob, new_h, new_p)
        back.set_start(out.values)
    if best_a is None:
        raise SolverError(f"the latency cut loop found no feasible association for "
                          f"{prob.name!r}")
    if UB - LB > lat.eps_abs + lat.eps_rel * abs(UB) and status == "optimal":
        status = "optimal" if it < lat.max_iter else "iteration_limit"
    times = {"total_s": clock.elapsed()}
    info = {"backend": backend, "iterations": it, "cuts": int(sum(len(p) for p in points)),
            "history": history}
    return HFLOutcome(best_a, status, UB, min(LB, UB), times, info)


def _add(back, model, prob, hosts, pts):
    if not hosts:
        return
    if isinstance(back, PyomoBackend):
        back.add_cuts(np.asarray(hosts), np.asarray(pts))
    else:
        back.add_cuts(*cut_rows(model, prob, hosts, pts))


# --------------------------------------------------------------------------- entry point


def solve_problem(prob, method: str, **options):
    """``HFLProblem.solve``: run the method, then package an :class:`HFLResult`."""
    from jointopt.solvers.hfl.results import package

    if prob.latency is not None and method in ("heuristic", "uncapacitated", "proximity"):
        raise ValidationError("method", f"the {method} method optimises or evaluates the "
                                        f"per-round cost only and would ignore [latency]; use "
                                        f"highs or pyomo for the latency-aware objective")
    if method == "uncapacitated":
        if options.pop("uncapacitated", True) is False:
            raise ValidationError("uncapacitated", "the uncapacitated method drops C1")
        method, options = "highs", {**options, "uncapacitated": True}
        label = "uncapacitated"
    else:
        label = method
    with Timer() as t:
        if method == "proximity":
            if options:
                raise ValidationError("options", f"the proximity baseline takes no options, "
                                                 f"got {', '.join(sorted(options))}")
            out = proximity_plan(prob)
        elif prob.latency is not None:
            if options.pop("uncapacitated", False):
                raise InfeasibleError("options", "uncapacitated does not apply to the latency "
                                                 "extension")
            out = solve_latency(prob, method, **_pick(options, ("time_limit", "threads",
                                                               "verbose")))
        elif method == "heuristic":
            out = run_heuristic(prob, **options)
        else:
            out = solve_hflop(prob, method, **options)
    return package(prob, label, out, t.seconds, options)


def proximity_plan(prob) -> HFLOutcome:
    """The proximity baseline: every device joins its cheapest host, all ``N``
    take part, capacities ignored; "feasible" when every host holds its load, else
    "overloaded" (the per-host overload is in the diagnostics)."""
    a = hm.proximity_assignment(prob.cd)
    ev = prob.evaluate(a)
    over = bool((ev.overload > 1e-9 * np.maximum(1.0, prob.capacities)).any())
    status = "overloaded" if over else "feasible"
    return HFLOutcome(a, status, ev.objective, -math.inf, {"total_s": 0.0},
                      {"baseline": "proximity"})


def _pick(d, keys):
    return {k: d[k] for k in keys if k in d}


def run_heuristic(prob, *, time_limit=10.0, uncapacitated=False, bound=True, threads=None,
                  heuristic_time=None) -> HFLOutcome:
    """Heuristic method: H2/H1 + H3 and the host-set moves, then the lower bounds of the
    staged pipeline (host count, cover LP, cover MIP without capacities, and the exact
    reduced MIP's bound) as far as ``time_limit`` seconds in all allow (None: no limit, the
    bounds run to the end). The status is "optimal" when a bound proves the plan (or the
    reduced MIP found and proved a better one), "feasible" otherwise, and "infeasible" when
    fewer than ``T`` devices were placed (``infeasibility`` says whether the cover LP proved
    that no plan exists). Refuses the latency extension (it would be ignored)."""
    from jointopt.solvers.hfl import cover

    clock = Clock(time_limit)
    if not uncapacitated:
        prob.check_feasible()
    R = prob.capacities if not uncapacitated else np.full(prob.M, np.inf)
    allowed = candidate_pairs(prob, uncapacitated)
    C = prob.l * prob.cd
    h = solve_heuristic(prob.workload, R, C, prob.ce, prob.T, allowed=allowed,
                        time_limit=clock.cap(heuristic_time if heuristic_time is not None
                                             else 0.4 * (time_limit or 10.0)))
    times = {"heuristic_s": h.seconds}
    info = {"heuristic": h.name, "moves": h.moves}
    if not h.feasible:
        placed = int((h.assignment >= 0).sum())
        cl = cover.cover_lp(prob.workload, R if np.isfinite(R).all() else np.zeros(prob.M), C,
                            prob.ce, prob.T, allowed, np.zeros(prob.M), np.ones(prob.M),
                            time_limit=clock.cap(), threads=threads)
        times["lp_s"] = cl.seconds
        times["total_s"] = clock.elapsed()
        info["infeasibility"] = (
            "proved: the cover LP (a relaxation) has no solution" if cl.status == "infeasible"
            else f"not proved: the heuristics placed {placed} of the {prob.T} devices")
        return HFLOutcome(h.assignment, "infeasible", math.inf,
                          math.inf if cl.status == "infeasible" else -math.inf, times, info)
    delta = 1.0 if prob.integral_costs() else 0.0
    if not bound:
        times["total_s"] = clock.elapsed()
        return HFLOutcome(h.assignment, "feasible", h.objective, -math.inf, times, info)
    slack = h.objective - delta + 1e-9 * max(1.0, abs(h.objective))   # R2
    allowed = allowed & (C + prob.ce[None, :] <= slack)
    y_ub = (prob.ce <= slack).astype(float)
    info["pairs"] = int(allowed.sum())
    return _staged(prob, h, delta, allowed, y_ub, R, clock, times, info, lp_fixing=True,
                   cover_mip=True, threads=threads, mip_rel_gap=1e-4,
                   heuristic_time=0.2 * (time_limit or 10.0), verbose=False, exact=False)
