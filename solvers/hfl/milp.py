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
4. **R3** LP relaxation of the reduced model: its value LB and reduced costs fix every
   column at 0 in the LP with ``LB + d_k > UB - Delta``; ``ceil(LB) >= UB`` (integral
   objective, R4) proves the incumbent optimal without branching.
5. the MIP on the rest, warm-started with the incumbent (when still feasible); the better
   of incumbent and MIP solution is returned, "optimal" only when proven.

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
from jointopt.models.errors import InfeasibleError, SolverError
from jointopt.solvers.base import Timer
from jointopt.solvers.hfl.heuristics import solve_heuristic

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

    def columns_for(self, a) -> np.ndarray:
        """Column vector of an assignment (y = used hosts), or None if it uses a pair that is
        not a column."""
        v = np.zeros(self.n_cols)
        a = np.asarray(a)
        key = self.pi.astype(np.int64) * self.M + self.pj
        on = np.flatnonzero(a >= 0)
        want = on.astype(np.int64) * self.M + a[on]
        pos = np.searchsorted(key, want)
        pos = np.minimum(pos, max(self.K - 1, 0))
        if self.K == 0 and on.size:
            return None
        if on.size and not np.array_equal(key[pos], want):
            return None
        v[self.M + pos] = 1.0
        used = hm.used_hosts(a, self.M)
        if (used & (self.y_ub < 0.5)).any():
            return None
        v[: self.M] = used
        return v


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
    rows, cols, vals, lo, hi = [], [], [], [], []
    families = {}
    r0 = 0
    xcol = M + np.arange(K)

    def add(name, r, c, v, rlo, rhi):
        nonlocal r0
        rows.append(np.asarray(r, np.int64) + r0)
        cols.append(np.asarray(c, np.int64))
        vals.append(np.asarray(v, float))
        lo.append(np.asarray(rlo, float))
        hi.append(np.asarray(rhi, float))
        families[name] = slice(r0, r0 + len(rlo))
        r0 += len(rlo)

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
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(r0, n_cols))
    return Model(N, M, pi, pj, y_ub.astype(float), cost, lb, ub, integer, A,
                 np.concatenate(lo), np.concatenate(hi), offset, lat is not None, families)


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

    def relax(self):
        """LP relaxation: (status, value, column values, reduced costs)."""
        h = self.h
        n = self.model.n_cols
        h.changeColsIntegrality(n, np.arange(n, dtype=np.int32), np.zeros(n, np.uint8))
        if self.model.K > 5000:   # the L-dis LP is degenerate: IPM + crossover is far faster
            h.setOptionValue("solver", "ipm")
            h.setOptionValue("run_crossover", "on")
        h.run()
        h.setOptionValue("solver", "choose")
        st = h.getModelStatus()
        sol = h.getSolution()
        S = self.hs.HighsModelStatus
        out = ("optimal" if st == S.kOptimal else "infeasible" if st == S.kInfeasible
               else "other",
               h.getInfo().objective_function_value,
               np.asarray(sol.col_value), np.asarray(sol.col_dual))
        h.changeColsIntegrality(n, np.arange(n, dtype=np.int32),
                                self.model.integer.astype(np.uint8))
        return out

    def change_upper(self, cols, ub):
        self.h.changeColsBounds(len(cols), np.asarray(cols, np.int32),
                                self.model.lb[cols], np.asarray(ub, float))

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


def solve_hflop(prob, backend="highs", *, heuristics=True, reductions=True, lp_fixing=True,
                time_limit=None, mip_rel_gap=1e-4, threads=None, uncapacitated=False,
                linking=None, cap_times_y=None, heuristic_time=5.0,
                verbose=False) -> HFLOutcome:
    """Exact HFLOP on ``backend`` ("highs" matrix path or "pyomo")."""
    t_start = time.perf_counter()
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
                                time_limit=heuristic_time)
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
    LB = -math.inf
    with Timer() as t:
        model = build_model(prob, allowed, y_ub, uncapacitated=uncapacitated, linking=linking,
                            cap_times_y=cap_times_y)
        model.families["_linking"] = linking
        opts = dict(time_limit=None, mip_rel_gap=mip_rel_gap, threads=threads,
                    verbose=verbose)
        back = make_backend(backend, model, prob, **opts)
    times["build_s"] = t.seconds
    start = model.columns_for(inc.assignment) if inc is not None else None
    times["lp_s"] = 0.0
    if (reductions and lp_fixing and backend == "highs" and inc is not None
            and model.K > 0):   # R3/R4
        with Timer() as t:
            ok, lp_val, xv, dj = back.relax()
        times["lp_s"] = t.seconds
        if ok == "optimal":
            LB = max(LB, lp_val)
            info["lp_bound"] = lp_val
            # H4: LP-guided restart, the heuristics on the hosts the LP opens
            with Timer() as t4:
                opened = xv[:M] > 1e-6
                cols = np.zeros((N, M), bool)
                cols[model.pi, model.pj] = True
                h4 = solve_heuristic(prob.workload, R, C, ce, T, allowed=cols & opened[None, :],
                                     time_limit=heuristic_time / 2)
            times["heuristic_s"] += t4.seconds
            if h4.feasible and h4.objective < UB - 1e-9 * max(1.0, abs(UB)):
                inc, UB = h4, h4.objective
                info["heuristic"] = f"{info.get('heuristic', '')}+H4".lstrip("+")
                slack = UB - delta + 1e-9 * max(1.0, abs(UB))   # R2 again with the new UB
                over = np.flatnonzero((model.cost > slack) & (model.ub > 0)
                                      & (np.arange(model.n_cols) < M + model.K))
                if over.size:
                    back.change_upper(over, np.zeros(over.size))
                    model.ub[over] = 0.0
                start = model.columns_for(inc.assignment)
            at0 = xv < 1e-9
            fix = np.flatnonzero(at0 & (lp_val + dj > UB - delta + 1e-9 * max(1, abs(UB)))
                                 & (model.ub > 0))
            if fix.size:
                back.change_upper(fix, np.zeros(fix.size))
                model.ub[fix] = 0.0
            info["lp_fixed"] = int(fix.size)
            integral = delta == 1.0
            if (integral and math.ceil(lp_val - 1e-6) >= UB) or lp_val >= UB - 1e-9 * max(
                    1, abs(UB)):
                times["mip_s"] = 0.0
                times["total_s"] = time.perf_counter() - t_start
                info["proved_by"] = "lp bound"
                return HFLOutcome(inc.assignment, "optimal", UB, UB, times, info)
        elif ok == "infeasible":   # LP infeasible under R2 with Delta = 1: nothing better
            if delta == 1.0:
                times["total_s"] = time.perf_counter() - t_start
                times["mip_s"] = 0.0
                info["proved_by"] = "lp infeasible below incumbent"
                return HFLOutcome(inc.assignment, "optimal", UB, UB, times, info)
    if start is not None and (model.ub >= start - 1e-9).all():
        back.set_start(start)
    if time_limit is not None and backend == "highs":
        left = max(1.0, time_limit - (time.perf_counter() - t_start))
        back.h.setOptionValue("time_limit", float(left))
    elif time_limit is not None:
        back.opt.config.time_limit = max(1.0, time_limit - (time.perf_counter() - t_start))
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
    times["total_s"] = time.perf_counter() - t_start
    if out.status == "optimal":
        status = "optimal"
        LB = best if best_a is not None else LB
        LB = min(best, max(LB, out.bound)) if best_a is not None else LB
    elif out.status == "infeasible":
        if inc is not None:   # nothing strictly better than the incumbent exists
            status, LB = "optimal", best
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
    return HFLOutcome(best_a, status, best, LB, times, info)


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
    t_start = time.perf_counter()
    lat = prob.latency
    prob.check_feasible()
    M = prob.M
    allowed = candidate_pairs(prob)
    model = build_model(prob, allowed, np.ones(M))
    model.families["_linking"] = prob.linking
    gap = lat.eps_rel / 10
    back = make_backend(backend, model, prob, time_limit=time_limit, mip_rel_gap=gap,
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
        it += 1
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
    times = {"total_s": time.perf_counter() - t_start}
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

    with Timer() as t:
        if prob.latency is not None and method != "heuristic":
            if options.pop("uncapacitated", False):
                raise InfeasibleError("options", "uncapacitated does not apply to the latency "
                                                 "extension")
            out = solve_latency(prob, method, **_pick(options, ("time_limit", "threads",
                                                               "verbose")))
        elif method == "heuristic":
            out = run_heuristic(prob, **options)
        else:
            out = solve_hflop(prob, method, **options)
    return package(prob, method, out, t.seconds, options)


def _pick(d, keys):
    return {k: d[k] for k in keys if k in d}


def run_heuristic(prob, *, time_limit=5.0, uncapacitated=False, bound=True,
                  bound_iters=60) -> HFLOutcome:
    """Heuristic method: H2/H1 + H3, plus a Lagrangian lower bound (R3') for the gap."""
    from jointopt.solvers.hfl.bounds import lagrangian_bound

    t0 = time.perf_counter()
    if not uncapacitated:
        prob.check_feasible()
    R = prob.capacities if not uncapacitated else np.full(prob.M, np.inf)
    allowed = candidate_pairs(prob, uncapacitated)
    C = prob.l * prob.cd
    h = solve_heuristic(prob.workload, R, C, prob.ce, prob.T, allowed=allowed,
                        time_limit=0.55 * time_limit)
    times = {"heuristic_s": h.seconds}
    LB = -math.inf
    if bound:
        with Timer() as t:
            LB = lagrangian_bound(prob.workload, R, C, prob.ce, prob.T, allowed=allowed,
                                  iters=bound_iters, upper=h.objective if h.feasible else None,
                                  time_limit=max(0.1, min(3.0, 0.8 * time_limit
                                                          - (time.perf_counter() - t0))))
        times["bound_s"] = t.seconds
    times["total_s"] = time.perf_counter() - t0
    status = "feasible" if h.feasible else "infeasible"
    tight = LB >= h.objective - 1e-7 * max(1.0, abs(h.objective))
    if h.feasible and (tight or (prob.integral_costs() and math.ceil(LB - 1e-6) >= h.objective)):
        status = "optimal"
    return HFLOutcome(h.assignment, status, h.objective if h.feasible else math.inf,
                      LB, times, {"heuristic": h.name, "moves": h.moves})
