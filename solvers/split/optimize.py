"""P-ACC: common cut and per-client offload rates under latency budgets with
the shared server's M/M/1 wait coupling the clients. [project choice]

For a fixed cut s and a cap W̄ on the server sojourn time (equivalently Λ <= μ - 1/W̄),
every constraint is linear and the inner problem

    max Σ_k w_k G_k(q_k)   s.t.  0 <= q_k <= u_k := min(1, (T_k - A_k) / (c_k + W̄)),
                                 Σ_k ν_k q_k <= min(μ - 1/W̄, ρ_max μ)

(``w_k = ν_k / Σ ν``, ``G_k`` concave piecewise linear) is a continuous knapsack over the
segments of the operating curves: fill segments in decreasing order of ``w_k g / ν_k``
(:func:`inner_greedy`, exact, the default path) or solve it as an LP with HiGHS
(:func:`inner_lp`, the second path). Any inner solution meets the true constraints because
W(Λ) <= W̄, and the true optimum is feasible for W̄ = W(Λ*), so the best value over W̄ is the
joint optimum; W̄ is scanned on a geometric grid and refined with a bounded scalar search.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from jointopt.models import split as sm
from jointopt.models.errors import InfeasibleError, SolverError, ValidationError
from jointopt.models.queueing import on_time_fraction
from jointopt.solvers.base import SolveResult, Timer


@dataclass
class CutData:
    """Everything the inner problem needs at one cut."""

    cut: int
    A: np.ndarray        # client time per sample (K)
    c: np.ndarray        # upload + overhead per offloaded sample (K)
    S: float             # server service time F_theta / f_S
    curves: list         # OffloadCurve per client
    envs: list           # OperatingCurve per client

    @property
    def mu(self) -> float:
        return 1.0 / self.S


def _segments(envs, w, nu):
    """Flattened positive-slope segments: client, start, end, slope, value per unit load."""
    k, lo, hi, g = [], [], [], []
    for i, env in enumerate(envs):
        vq = env.vertices_q
        if vq.size < 2:
            continue
        k.append(np.full(vq.size - 1, i))
        lo.append(vq[:-1])
        hi.append(vq[1:])
        g.append(env.slopes)
    if not k:
        return (np.zeros(0, int),) + (np.zeros(0),) * 4
    k, lo, hi, g = (np.concatenate(x) for x in (k, lo, hi, g))
    pos = g > 0
    k, lo, hi, g = k[pos], lo[pos], hi[pos], g[pos]
    ratio = w[k] * g / nu[k]
    order = np.argsort(-ratio, kind="stable")
    return k[order], lo[order], hi[order], g[order], ratio[order]


def inner_greedy(seg, base, w, nu, u, cap):
    """Exact inner solution (continuous knapsack); ``seg`` from :func:`_segments`,
    ``base`` = Σ w_k G_k(0). Returns ``(q, value)``; q is the smallest maximizer."""
    k, lo, hi, g, _ = seg
    n = w.size
    length = np.clip(np.minimum(hi, u[k]) - lo, 0.0, None)
    load = nu[k] * length
    cum = np.cumsum(load)
    cap = max(cap, 0.0)
    before = cum - load
    frac = np.where(cum <= cap, 1.0,
                    np.where(before < cap, (cap - before) / np.where(load > 0, load, 1.0), 0.0))
    taken = length * np.clip(frac, 0.0, 1.0)
    q = np.bincount(k, weights=taken, minlength=n)
    value = base + float(np.sum(w[k] * g * taken))
    return np.minimum(q, u), value


class InnerLP:
    """The inner problem as an LP (variables q, t; t_k <= a_j + g_j q_k), HiGHS via
    ``scipy.optimize.linprog``; the piece rows are built once per cut, only the bounds
    ``u`` and the load cap change across W̄."""

    def __init__(self, envs, w, nu):
        from scipy.sparse import coo_matrix, vstack

        n = self.n = w.size
        self.envs, self.w, self.nu = envs, w, nu
        rows, cols, vals, rhs = [], [], [], []
        r = 0
        for i, env in enumerate(envs):
            m = env.slopes.size
            idx = np.arange(r, r + m)
            rows += [idx, idx]
            cols += [np.full(m, i), np.full(m, n + i)]
            vals += [-env.slopes, np.ones(m)]
            rhs.append(env.intercepts)
            r += m
        pieces = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(r, 2 * n))
        load = coo_matrix(np.concatenate([nu, np.zeros(n)])[None, :])
        value = coo_matrix(np.concatenate([np.zeros(n), -w])[None, :])
        self.a_max = vstack([pieces, load]).tocsr()
        self.a_min = vstack([pieces, load, value]).tocsr()
        self.rhs = np.concatenate(rhs)

    def __call__(self, u, cap, *, minimize_load_at: float | None = None):
        """``(q, value)``; with ``minimize_load_at = v`` it minimizes Σ ν q subject to
        value >= v instead (lexicographic tie-break to the smallest offloading)."""
        from scipy.optimize import linprog

        n = self.n
        bounds = [(0.0, float(x)) for x in u] + [(None, None)] * n
        b_ub = np.append(self.rhs, max(cap, 0.0))
        if minimize_load_at is None:
            cost, a_ub = np.concatenate([np.zeros(n), -self.w]), self.a_max
        else:
            cost, a_ub = np.concatenate([self.nu, np.zeros(n)]), self.a_min
            b_ub = np.append(b_ub, -minimize_load_at)
        res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
        if res.status != 0:
            raise SolverError(f"HiGHS failed on the inner LP: {res.message}")
        q = np.clip(res.x[:n], 0.0, u)
        return q, float(sum(wk * env(qk) for wk, env, qk in zip(self.w, self.envs, q,
                                                                strict=True)))


def inner_lp(envs, w, nu, u, cap, *, minimize_load_at: float | None = None):
    """One-shot :class:`InnerLP` solve."""
    return InnerLP(envs, w, nu)(u, cap, minimize_load_at=minimize_load_at)


def cut_data(problem, cut: int, curves) -> CutData:
    net, link = problem.net, problem.link
    A = sm.client_time(net, cut, link)
    c = (net.act_bits(cut, link.bits_per_element) / problem.clients.uplink_rate
         + problem.server.tau0)
    S = float(net.flops_server(cut) / problem.server.f_server)
    envs = sm.envelopes(curves)
    for i, env in enumerate(envs):
        if env.vertices_q[0] > 1e-9 or env.vertices_q[-1] < 1 - 1e-9:
            raise ValidationError(f"curves[{cut}][{i}]", "must span offload rates 0 and 1 "
                                                         "(thresholds -1 and ln C included)")
    return CutData(cut, np.broadcast_to(A, (problem.n,)).astype(float),
                   np.broadcast_to(c, (problem.n,)).astype(float), S, list(curves), envs)


def _shortfall(cd: CutData, T) -> dict | None:
    """The infeasible-cut record when some client's floor latency ``A_k`` exceeds its budget
    (the worst such client named), else ``None``."""
    short = cd.A - T
    if (short > 0).any():
        i = int(np.argmax(short))
        return {"cut": cd.cut, "status": "infeasible", "objective": -math.inf,
                "culprit": i, "shortfall": float(short[i])}
    return None


def _scan_range(cd: CutData, rho_max, max_load):
    """``(μ, top, lo, hi)``: the server rate, the largest load it takes (``ρ_max μ``, at
    most ``max_load``) and the range of the sojourn cap W̄ that loads 0 to ``top`` span."""
    mu = cd.mu
    top = min(rho_max * mu, max_load)
    return mu, top, 1.0 / mu, 1.0 / (mu - top)


def solve_cut(cd: CutData, nu, T, rho_max, *, inner: str = "greedy", n_grid: int = 200,
              refine: bool = True, max_load: float = math.inf) -> dict:
    """Best (q, W̄) at one cut by the W̄ scan. Infeasible cuts (A_k > T_k) are reported.
    ``max_load`` caps the offloaded rate Λ below ``rho_max μ`` (a server's admission cap)."""
    w = nu / nu.sum()
    if (short := _shortfall(cd, T)) is not None:
        return short
    mu, top, lo, hi = _scan_range(cd, rho_max, max_load)
    seg = _segments(cd.envs, w, nu)
    lp = InnerLP(cd.envs, w, nu) if inner == "lp" else None
    base = float(sum(wk * env(0.0) for wk, env in zip(w, cd.envs, strict=True)))

    def run(wbar):
        u = np.clip((T - cd.A) / (cd.c + wbar), 0.0, 1.0)
        cap = min(mu - 1.0 / wbar, top)
        if inner == "greedy":
            return inner_greedy(seg, base, w, nu, u, cap)
        return lp(u, cap)

    grid = np.geomspace(lo, hi, n_grid)
    values = np.array([run(x)[1] for x in grid])
    i = int(np.argmax(values))
    best_w, best_v = float(grid[i]), float(values[i])
    if refine:
        from scipy.optimize import minimize_scalar

        a, b = grid[max(i - 1, 0)], grid[min(i + 1, n_grid - 1)]
        res = minimize_scalar(lambda x: -run(x)[1], bounds=(a, b), method="bounded",
                              options={"xatol": 1e-12 * hi})
        if res.success and -res.fun > best_v + 1e-12:
            best_w, best_v = float(res.x), float(-res.fun)
    u = np.clip((T - cd.A) / (cd.c + best_w), 0.0, 1.0)
    cap = min(mu - 1.0 / best_w, top)
    if inner == "greedy":
        q, value = inner_greedy(seg, base, w, nu, u, cap)
    else:
        q, value = lp(u, cap)
        try:  # tie-break to the least offloading, within HiGHS's feasibility tolerance
            q2, value2 = lp(u, cap, minimize_load_at=value - 1e-9)
            if value2 >= value - 1e-8:
                q = q2
        except SolverError:
            pass
    return {"cut": cd.cut, "status": "optimal", "objective": float(value), "w_cap": best_w,
            "q": q, "evaluations": n_grid}


def _stacked(curves):
    """The curves' ``q``, kept and offloaded parts as (clients x points) arrays, shorter
    curves padded with their last point (a repeated point changes no maximum)."""
    width = max(len(cv.q) for cv in curves)

    def pad(x):
        x = np.asarray(x, float)
        return np.concatenate([x, np.full(width - x.size, x[-1])])

    for i, cv in enumerate(curves):
        if cv.kept is None:
            raise ValidationError(f"curves[{i}].kept", "is required by method 'timely' (the "
                                                       "part of acc the client exit answers)")
    q = np.array([pad(cv.q) for cv in curves])
    kept = np.array([pad(cv.kept) for cv in curves])
    return q, kept, np.array([pad(cv.acc) for cv in curves]) - kept


def _timely_values(q, kept, off, pi, w, nu, cap, iters: int = 30) -> np.ndarray:
    """The inner optimum of P-TIME for each row of ``pi`` (grid x clients) at load caps
    ``cap`` (one per row), by its LP dual: ``min_{λ>=0} λ cap + Σ_k max_j (w_k V_kj - λ ν_k
    q_kj)`` with ``V = kept + π off`` (a linear function's maximum over a curve's envelope is
    its maximum over the points, so no hull is built); λ by bisection on the load the
    maximisers ask for (``iters`` halvings of a bracket on λ; the dual at the bracket's top
    bounds the optimum from above, within about ``2^-iters`` of the curves' largest slope).
    Equal to :func:`inner_greedy` on the envelopes (LP duality) up to that; it only ranks
    the W̄ grid, faster than building every grid point's envelopes."""
    wv = w[None, :, None] * (kept[None] + pi[:, :, None] * off[None])
    load = nu[:, None] * q
    cap = np.maximum(np.asarray(cap, float), 0.0)
    rows = np.arange(pi.shape[0])

    clients = np.arange(q.shape[0])[None, :]

    def demand(lam):
        j = np.argmax(wv - lam[:, None, None] * load[None], axis=2)
        return load[clients, j].sum(axis=1)

    # λ above which every client keeps its least-offloading point
    j0 = np.argmin(q, axis=1)
    dq = q - q[np.arange(q.shape[0]), j0][:, None]
    dv = wv - wv[:, np.arange(q.shape[0]), j0][:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(dq[None] > 0, dv / (nu[None, :, None] * dq[None]), 0.0)
    lo, hi = np.zeros(rows.size), np.maximum(slope.max(axis=(1, 2)), 0.0) * (1 + 1e-9) + 1e-300
    free = demand(lo) <= cap
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        over = demand(mid) > cap
        lo, hi = np.where(over, mid, lo), np.where(over, hi, mid)
    lam = np.where(free, 0.0, hi)
    return lam * cap + (wv - lam[:, None, None] * load[None]).max(axis=2).sum(axis=1)


def solve_cut_timely(cd: CutData, nu, T, rho_max, *, n_grid: int = 200, refine: bool = True,
                     max_load: float = math.inf) -> dict:
    """P-TIME at one cut [project choice]: the best offload rates for the request-weighted
    **on-time** accuracy ``Σ w_k [K_k(q_k) + π_k(W) O_k(q_k)]`` (``K`` / ``O`` the kept and
    offloaded parts of the curve, ``π_k(W) = 1 - exp(-(T_k - A_k - c_k)^+ / W)`` the chance
    that an offloaded request's exponential M/M/1 sojourn of mean ``W = 1/(μ - Λ)`` ends
    within its deadline), ``Λ = Σ ν q <= min(ρ_max μ, max_load)``; no expected-latency
    constraint: a late request simply scores nothing. For a sojourn cap W̄ (``Λ <= μ - 1/W̄``)
    the on-time chance is at least ``π_k(W̄)``, so the inner problem on the envelopes of
    ``K + π(W̄) O`` (:func:`models.split.on_time_envelopes`) is a continuous knapsack whose
    value bounds the true one from below; at W̄ = W(Λ*) it is the optimum, so the best value
    over the W̄ scan (a geometric grid, then four rounds of 17 points in the best point's
    bracket) is the joint optimum up to the scan. The scan values come from the inner
    problem's dual (:func:`_timely_values`, every grid point at once), the decisions at the
    best W̄ from :func:`inner_greedy` on the envelopes. The kept part
    counts whole (the client's own time ``A_k <= T_k``; a caller with a device queue folds
    its on-time chance into ``kept``)."""
    w = nu / nu.sum()
    if (short := _shortfall(cd, T)) is not None:
        return short
    mu, top, lo, hi = _scan_range(cd, rho_max, max_load)
    slack = np.maximum(T - cd.A - cd.c, 0.0)
    q_pts, kept_pts, off_pts = _stacked(cd.curves)

    def values(wbar):
        wbar = np.atleast_1d(np.asarray(wbar, float))
        pi = -np.expm1(-slack[None, :] / wbar[:, None])
        return _timely_values(q_pts, kept_pts, off_pts, pi, w, nu,
                              np.minimum(mu - 1.0 / wbar, top))

    grid = np.geomspace(lo, hi, n_grid)
    vals = values(grid)
    evaluations = n_grid
    for _ in range(4 if refine else 0):  # zoom into the best point's bracket, 8x a round
        i = int(np.argmax(vals))
        grid = np.linspace(grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)], 17)
        vals = values(grid)
        evaluations += grid.size
    best_w = float(grid[int(np.argmax(vals))])
    envs = sm.on_time_envelopes(cd.curves, -np.expm1(-slack / best_w))
    base = float(sum(wk * env(0.0) for wk, env in zip(w, envs, strict=True)))
    q, _ = inner_greedy(_segments(envs, w, nu), base, w, nu, np.ones(w.size),
                        min(mu - 1.0 / best_w, top))
    # the true on-time accuracy of q: the parts at the thresholds that attain it on the
    # chosen envelopes, the on-time chance at the load q gives
    on_time = np.asarray(on_time_fraction(float(nu @ q), mu, slack), float)
    acc = np.empty(w.size)
    for k, (cv, env) in enumerate(zip(cd.curves, envs, strict=True)):
        e_lo, e_hi, p_hi = env.pair_for_rate(float(q[k]))
        j = np.searchsorted(cv.e, [e_lo, e_hi])
        mix = np.array([1.0 - p_hi, p_hi])
        kept, full = float(mix @ cv.kept[j]), float(mix @ cv.acc[j])
        acc[k] = kept + on_time[k] * (full - kept)
    return {"cut": cd.cut, "status": "optimal", "objective": float(w @ acc), "w_cap": best_w,
            "q": q, "acc": acc, "envs": envs, "on_time": on_time,
            "evaluations": evaluations}


def solve_cut_decoupled(cd: CutData, nu, T) -> dict:
    """Queue-agnostic baseline: each client's budgeted threshold with the wait fixed at S."""
    w = nu / nu.sum()
    if (short := _shortfall(cd, T)) is not None:
        return short
    q_bar = (T - cd.A) / (cd.c + cd.S)
    idx = [cv.select(float(qb)) for cv, qb in zip(cd.curves, q_bar, strict=True)]
    q = np.array([cv.q[j] for cv, j in zip(cd.curves, idx, strict=True)])
    acc = np.array([cv.acc[j] for cv, j in zip(cd.curves, idx, strict=True)])
    return {"cut": cd.cut, "status": "optimal", "objective": float(np.sum(w * acc)),
            "w_cap": cd.S, "q": q, "evaluations": 1}


def floor_interval(envs, floors) -> tuple[np.ndarray, np.ndarray]:
    """``{q in [0, 1] : G_k(q) >= floor_k}`` is an interval (G concave): its ends
    ``(lo, hi)``, NaN where the floor is above max G_k."""
    lo, hi = np.full(len(envs), np.nan), np.full(len(envs), np.nan)
    for k, (env, f) in enumerate(zip(envs, floors, strict=True)):
        vq, va = env.vertices_q, env.vertices_acc
        if f > va.max() + 1e-12:
            continue
        ok = np.flatnonzero(va >= f - 1e-12)
        i, j = int(ok[0]), int(ok[-1])
        lo[k] = vq[i] if i == 0 or va[i] <= f else (
            vq[i - 1] + (f - va[i - 1]) * (vq[i] - vq[i - 1]) / (va[i] - va[i - 1]))
        hi[k] = vq[j] if j == vq.size - 1 or va[j] <= f else (
            vq[j] + (va[j] - f) * (vq[j + 1] - vq[j]) / (va[j] - va[j + 1]))
    return lo, hi


def latency_problem(cd: CutData, nu, floors, rho_max, max_load: float = math.inf):
    """P-LAT at one cut as a DCP CVXPY problem: minimize
    Σ ν_k (A_k + c_k q_k) + μ inv_pos(μ - Λ) - 1 (= Σ ν_k T_k, since Σ ν q W = Λ/(μ - Λ))
    s.t. G_k(q_k) >= floor_k, Λ = Σ ν q <= ρ_max μ, 0 <= q <= 1. G_k concave makes its
    floor an interval of q (:func:`floor_interval`), so the floors are bounds on q_k
    (equivalent to one affine constraint per piece, better conditioned).
    The cost is scaled to milliseconds per request. Returns ``(problem, q)``."""
    import cvxpy as cp

    n, mu = nu.size, cd.mu
    q = cp.Variable(n, name="q")
    load = nu @ q
    # scaled to the mean latency per request in milliseconds (well-conditioned for the solver)
    scale = 1e3 / float(nu.sum())
    cost = scale * (nu @ cd.A + (nu * cd.c) @ q + mu * cp.inv_pos(mu - load) - 1.0)
    lo, hi = floor_interval(cd.envs, floors)
    cons = [q >= np.nan_to_num(lo, nan=0.0), q <= np.nan_to_num(hi, nan=1.0),
            load <= min(rho_max * mu, max_load)]
    return cp.Problem(cp.Minimize(cost), cons), q


def solve_cut_latency(cd: CutData, nu, floors, rho_max, solver: str | None = None,
                      max_load: float = math.inf) -> dict:
    """P-LAT at one cut; floors above max G_k or jointly beyond stability are reported."""
    import cvxpy as cp

    need, top = floor_interval(cd.envs, floors)
    if np.isnan(need).any():
        k = int(np.flatnonzero(np.isnan(need))[0])
        return {"cut": cd.cut, "status": "infeasible", "objective": math.inf, "culprit": k,
                "constraint": "accuracy floor",
                "shortfall": float(floors[k] - cd.envs[k].peak[1])}
    over = float(nu @ need - min(rho_max * cd.mu, max_load))
    if over > 0:
        return {"cut": cd.cut, "status": "infeasible", "objective": math.inf,
                "culprit": int(np.argmax(nu * need)), "constraint": "stability",
                "shortfall": over}
    prob, q = latency_problem(cd, nu, floors, rho_max, max_load)
    # the first solver that says "optimal"; one that says "optimal_inaccurate" is kept only
    # when no later one does better, and its status is reported (not its warning)
    found = None
    for name in ([solver] if solver else ["CLARABEL", "SCS"]):
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                prob.solve(solver=name)
        except cp.error.SolverError:
            continue
        if prob.status in ("optimal", "optimal_inaccurate") and q.value is not None:
            if found is None or prob.status == "optimal":
                found = (name, prob.status, np.asarray(q.value, float))
            if prob.status == "optimal":
                break
    if found is None:
        raise SolverError(f"P-LAT at cut {cd.cut}: no conic solver succeeded ({prob.status})")
    name, status, value = found
    qv = np.clip(value, 0.0, 1.0)
    qv[qv < 1e-9] = 0.0
    qv = np.clip(qv, need, top)  # solver tolerance: keep every floor exactly
    load = float(nu @ qv)
    W = float(sm.server_sojourn(load, cd.mu))
    lat = sm.queued_latency(cd.A, cd.c, qv, W)
    return {"cut": cd.cut, "status": "optimal", "objective": float(nu @ lat / nu.sum()),
            "w_cap": W, "q": qv, "evaluations": 1, "solver": name, "solver_status": status}


def solve_split(problem, *, method: str, curves=None, w_grid: int | None = None,
                solver: str | None = None) -> SolveResult:
    """Solve the problem per candidate cut and pick the best cut: P-ACC (methods
    ``exact``, ``lp``), the queue-agnostic baseline (``decoupled``) or P-LAT
    (``min_latency``); ``curves`` as in :meth:`SplitProblem.solve`; ``w_grid`` overrides
    ``optimizer.w_grid``; ``solver`` is the conic solver of P-LAT."""
    with Timer() as timer:
        if curves is None:
            curves = problem.synthetic_curves()
            source = "synthetic"
        else:
            source = "measured"
            for s, rows in curves.items():
                if len(rows) != problem.n:
                    raise ValidationError(f"curves[{s}]", f"must hold one curve per client "
                                                          f"({problem.n}), got {len(rows)}")
        cl = problem.clients
        nu, T = cl.request_rate, cl.latency_budget
        # the LP path is the slower cross-check: at most 50 grid points unless asked
        n_grid = w_grid or (problem.optimizer.w_grid if method != "lp"
                            else min(problem.optimizer.w_grid, 50))
        max_load = math.inf if problem.server.max_load is None else problem.server.max_load
        per_cut = []
        data = {}
        for s in sorted(curves):
            cd = data[s] = cut_data(problem, int(s), curves[s])
            if method == "decoupled":
                per_cut.append(solve_cut_decoupled(cd, nu, T))
            elif method == "min_latency":
                per_cut.append(solve_cut_latency(cd, nu, cl.accuracy_floor,
                                                 problem.server.rho_max, solver, max_load))
            elif method == "timely":
                per_cut.append(solve_cut_timely(cd, nu, T, problem.server.rho_max,
                                                n_grid=n_grid, refine=problem.optimizer.refine,
                                                max_load=max_load))
            else:
                per_cut.append(solve_cut(cd, nu, T, problem.server.rho_max,
                                         inner="greedy" if method == "exact" else "lp",
                                         n_grid=n_grid, refine=problem.optimizer.refine,
                                         max_load=max_load))
        feasible = [r for r in per_cut if r["status"] == "optimal"]
        if not feasible and method == "min_latency":
            worst = min(per_cut, key=lambda r: r["shortfall"])
            k = worst["culprit"]
            field = (f"clients[{k}].accuracy_floor" if worst["constraint"] == "accuracy floor"
                     else "clients.accuracy_floor")
            raise InfeasibleError(
                worst["constraint"],
                f"no candidate cut meets the accuracy floors; best cut {worst['cut']}: "
                f"{worst['constraint']} violated by {worst['shortfall']:g} ({field})",
                field=field, shortfall=worst["shortfall"])
        if not feasible:
            worst = min(per_cut, key=lambda r: r["shortfall"])
            k = worst["culprit"]
            raise InfeasibleError(
                "latency budget",
                f"no candidate cut meets every client's budget even without offloading; "
                f"best cut {worst['cut']}: clients[{k}].latency_budget = {T[k]:g} s is below "
                f"the client compute time by {worst['shortfall']:g} s",
                field=f"clients[{k}].latency_budget", shortfall=worst["shortfall"])
        net = problem.net
        sign = -1.0 if method == "min_latency" else 1.0
        best = max(feasible, key=lambda r: (round(sign * r["objective"], 12),
                                            float(net.beta_flop(r["cut"]))))
        result = _report(problem, data[best["cut"]], best,
                         [(r, data[r["cut"]]) for r in per_cut], method, source)
    result.solve_time_s = timer.seconds
    return result


def _cut_row(problem, r: dict, cd: CutData) -> dict:
    """One row of the per-cut table: the solution at that cut re-evaluated exactly."""
    net = problem.net
    row = {k: v for k, v in r.items() if k != "q"}
    row |= {"beta": float(net.beta_flop(r["cut"])), "beta_param": float(net.beta_param(r["cut"]))}
    if r["status"] == "optimal":
        nu = problem.clients.request_rate
        load = sm.offered_load(r["q"], nu)
        W = float(sm.server_sojourn(load, cd.mu))
        lat = sm.queued_latency(cd.A, cd.c, r["q"], W)
        row |= {"q": np.asarray(r["q"]).tolist(), "load": load, "sojourn": W,
                "latency": lat.tolist(), "mean_latency": float(np.sum(nu * lat) / nu.sum())}
    return row


def _report(problem, cd: CutData, best: dict, per_cut: list, method: str, source: str):
    net, link, cl = problem.net, problem.link, problem.clients
    nu, T = cl.request_rate, cl.latency_budget
    s, q = cd.cut, np.asarray(best["q"], float)
    load = sm.offered_load(q, nu)
    W = float(sm.server_sojourn(load, cd.mu))
    latency = sm.queued_latency(cd.A, cd.c, q, W)
    stable = load <= problem.server.load_cap(cd.mu) * (1 + 1e-9) + 1e-12
    # the on-time objective (timely) imposes no expected-latency budget: late requests score 0
    budgets = method in ("min_latency", "timely") or bool(np.all(latency <= T * (1 + 1e-9)))
    ok = stable and budgets
    envs = best.get("envs", cd.envs)
    if method == "timely":
        acc = np.asarray(best["acc"], float)
    else:
        acc = np.array([env(qk) for env, qk in zip(cd.envs, q, strict=True)]) \
            if method != "decoupled" else None
    e_th, e_lo, e_hi, prob_hi, q_det, acc_det = ([] for _ in range(6))
    for k, (cv, env) in enumerate(zip(cd.curves, envs, strict=True)):
        if method == "timely":  # the best single threshold for the on-time accuracy
            value = cv.kept + best["on_time"][k] * (cv.acc - cv.kept)
            pick = np.where(cv.q <= q[k] + 1e-12, value, -np.inf)
            j = int(np.flatnonzero(pick == pick.max())[-1])
        else:
            value, j = cv.acc, cv.select(float(q[k]))
        e_th.append(cv.e[j])
        q_det.append(cv.q[j])
        acc_det.append(value[j])
        lo_, hi_, p_ = env.pair_for_rate(float(q[k]))
        if method == "decoupled":
            lo_, hi_, p_ = cv.e[j], cv.e[j], 1.0
        e_lo.append(lo_)
        e_hi.append(hi_)
        prob_hi.append(p_)
    acc = np.asarray(acc_det) if acc is None else acc
    nz = sm.normalized(net, s, link)
    bmax = sm.beta_max(q, nz.v, nz.omega, nz.beta_kappa)
    boff = sm.beta_off(q, nz.v, nz.omega, nz.omega0, nz.beta_kappa)
    w = nu / nu.sum()
    table = [_cut_row(problem, r, data_for_cut) for r, data_for_cut in per_cut]
    # what the conic solver said of the chosen cut (min_latency), e.g. optimal_inaccurate
    said = best.get("solver_status", "optimal")
    return SolveResult(
        kind=problem.kind, scenario=problem.name,
        status=said if ok else "budget_violated",
        objective=float(best["objective"] if method == "min_latency" else np.sum(w * acc)),
        solver=f"split-{method}", solve_time_s=0.0,
        iterations=int(sum(r.get("evaluations", 0) for r, _ in per_cut)),
        decisions={"split": np.full(problem.n, s), "q": q, "e_th": np.asarray(e_th),
                   "latency": latency, "accuracy": acc},
        diagnostics={
            "split": s, "conic_solver": best.get("solver"), "beta_flop": float(net.beta_flop(s)),
            "beta_param": float(net.beta_param(s)),
            "beta_param_aux": float(net.beta_param_aux(s)),
            "curves": source, "load": load, "mu": cd.mu, "rho": load / cd.mu,
            "on_time": best.get("on_time"),
            "sojourn": W, "sojourn_cap": best["w_cap"], "service_time": cd.S,
            "latency_budget": T, "budget_slack": T - latency,
            "e_lo": np.asarray(e_lo), "e_hi": np.asarray(e_hi), "prob_hi": np.asarray(prob_hi),
            "q_det": np.asarray(q_det), "accuracy_det": np.asarray(acc_det),
            "latency_device": np.broadcast_to(sm.latency_device(net, link), (problem.n,)),
            "latency_offload": sm.latency_offload(net, link) + 0.0 * q,
            "beta_max": bmax.value, "beats_device": bmax.beats(nz.beta),
            "beta_off": boff.value, "beats_offload": boff.beats(nz.beta),
            "per_cut": table,
        })
