"""Per-client cuts s_k with the shared server as M/G/1. [project choice]

Service times differ per client (S_k = F_theta(s_k) / f_S); by Pollaczek-Khinchine the mean
wait is W_q = Σ ν q S² / (1 - Σ ν q S) and client k's sojourn is W_q + S_k. For a fixed
assignment and a cap w̄ on W_q every constraint is linear:

    q_k (c_k + S_k + w̄) <= T_k - A_k,     Σ_k ν_k q_k S_k (S_k + w̄) <= w̄

(the second is W_q <= w̄ rearranged). **Project simplification:** w̄ is restricted to
[0, ρ_max S_min / (1 - ρ_max)], on which the second constraint implies the load bound
Σ ν q S <= ρ_max, so the inner problem is a single continuous knapsack (solved exactly by
filling operating-curve segments in decreasing value per unit of weight). The restriction
is exact when all cuts are equal (it then reproduces the common-cut range W̄ = S + w̄) and
conservative otherwise. A MILP over binaries x_{k,s} is not built; assignments
are searched by best response (one client changes its cut at a time, starting from the
best common cut), and by full enumeration when ``|cuts|^K`` is small (the check a heuristic
must pass on small instances). Caveat: SplitGP trains one common cut; curves at
other cuts come from models trained at those cuts.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from jointopt.models import split as sm
from jointopt.models.errors import InfeasibleError
from jointopt.solvers.base import SolveResult, Timer
from jointopt.solvers.split.optimize import cut_data


def _knapsack(pieces, w, cost, u, cap):
    """max Σ w_k G_k(q_k) s.t. q_k <= u_k, Σ cost_k q_k <= cap (G_k concave, pieces =
    (client, start, end, slope) of positive-slope segments). Returns (q, gain over q=0)."""
    k, lo, hi, g = pieces
    n = w.size
    if k.size == 0:
        return np.zeros(n), 0.0
    order = np.argsort(-(w[k] * g / cost[k]), kind="stable")
    k, lo, hi, g = k[order], lo[order], hi[order], g[order]
    length = np.clip(np.minimum(hi, u[k]) - lo, 0.0, None)
    load = cost[k] * length
    cum = np.cumsum(load)
    before = cum - load
    cap = max(cap, 0.0)
    frac = np.where(cum <= cap, 1.0,
                    np.where(before < cap, (cap - before) / np.where(load > 0, load, 1.0), 0.0))
    taken = length * np.clip(frac, 0.0, 1.0)
    return np.bincount(k, weights=taken, minlength=n), float(np.sum(w[k] * g * taken))


class Assignments:
    """Evaluates a per-client cut assignment exactly (w̄ scan of the knapsack)."""

    def __init__(self, problem, curves, n_grid: int = 60):
        self.problem = problem
        self.cuts = sorted(curves)
        self.data = {s: cut_data(problem, s, curves[s]) for s in self.cuts}
        cl = problem.clients
        self.nu, self.T = cl.request_rate, cl.latency_budget
        self.w = self.nu / self.nu.sum()
        self.rho_max = problem.server.rho_max
        self.n_grid = n_grid
        self.evaluations = 0
        self._cache: dict[tuple, dict] = {}

    def arrays(self, assign):
        d = [self.data[s] for s in assign]
        idx = np.arange(len(assign))
        A = np.array([x.A[i] for x, i in zip(d, idx, strict=True)])
        c = np.array([x.c[i] for x, i in zip(d, idx, strict=True)])
        S = np.array([x.S for x in d])
        envs = [x.envs[i] for x, i in zip(d, idx, strict=True)]
        return A, c, S, envs

    def evaluate(self, assign) -> dict:
        key = tuple(int(s) for s in assign)
        if key in self._cache:
            return self._cache[key]
        self.evaluations += 1
        A, c, S, envs = self.arrays(key)
        if np.any(A > self.T):
            out = {"assign": key, "objective": -math.inf, "q": None, "w_cap": math.nan}
            self._cache[key] = out
            return out
        ks, lo, hi, g = [], [], [], []
        for i, env in enumerate(envs):
            pos = env.slopes > 0
            m = int(pos.sum())
            ks.append(np.full(m, i))
            lo.append(env.vertices_q[:-1][pos])
            hi.append(env.vertices_q[1:][pos])
            g.append(env.slopes[pos])
        pieces = tuple(np.concatenate(x) for x in (ks, lo, hi, g))
        pieces = (pieces[0].astype(int),) + pieces[1:]
        base = float(sum(wk * e(0.0) for wk, e in zip(self.w, envs, strict=True)))
        w_hi = self.rho_max * S.min() / (1.0 - self.rho_max)

        def run(wbar):
            u = np.clip((self.T - A) / (c + S + wbar), 0.0, 1.0)
            q, gain = _knapsack(pieces, self.w, self.nu * S * (S + wbar), u, wbar)
            return np.minimum(q, u), base + gain

        grid = np.concatenate([[0.0], np.geomspace(w_hi * 1e-4, w_hi, self.n_grid)])
        values = [run(x)[1] for x in grid]
        i = int(np.argmax(values))
        best_w = float(grid[i])
        if i > 0:
            from scipy.optimize import minimize_scalar

            a, b = grid[i - 1], grid[min(i + 1, grid.size - 1)]
            res = minimize_scalar(lambda x: -run(x)[1], bounds=(a, b), method="bounded",
                                  options={"xatol": 1e-12 * w_hi})
            if res.success and -res.fun > values[i] + 1e-12:
                best_w = float(res.x)
        q, value = run(best_w)
        out = {"assign": key, "objective": value, "q": q, "w_cap": best_w}
        self._cache[key] = out
        return out

    def best_response(self, start, max_rounds: int = 20) -> dict:
        best = self.evaluate(start)
        assign = list(best["assign"])
        for _ in range(max_rounds):
            improved = False
            for k in range(len(assign)):
                for s in self.cuts:
                    if s == assign[k]:
                        continue
                    trial = self.evaluate(assign[:k] + [s] + assign[k + 1:])
                    if trial["objective"] > best["objective"] + 1e-12:
                        best, assign, improved = trial, list(trial["assign"]), True
            if not improved:
                break
        return best

    def enumerate(self) -> dict:
        best = None
        for assign in itertools.product(self.cuts, repeat=len(self.nu)):
            r = self.evaluate(assign)
            if best is None or r["objective"] > best["objective"] + 1e-12:
                best = r
        return best


def solve_per_client(problem, *, curves=None, search: str = "auto",
                     max_enumerate: int = 256) -> SolveResult:
    """Per-client cuts and offload rates (see module docstring). ``search``:
    ``"best_response"``, ``"enumerate"`` or ``"auto"`` (enumerate when |cuts|^K is at
    most ``max_enumerate``)."""
    with Timer() as timer:
        source = "synthetic" if curves is None else "measured"
        curves = problem.synthetic_curves() if curves is None else curves
        ev = Assignments(problem, curves, n_grid=min(problem.optimizer.w_grid, 60))
        n = problem.n
        common = [ev.evaluate([s] * n) for s in ev.cuts]
        start = max(common, key=lambda r: r["objective"])
        if not math.isfinite(start["objective"]):
            # a mixed assignment may still work: each client's fastest client part
            fastest = [min(ev.cuts, key=lambda s: ev.data[s].A[k]) for k in range(n)]
            start = ev.evaluate(fastest)
            if not math.isfinite(start["objective"]):
                short = np.array([ev.data[s].A[k] for k, s in enumerate(fastest)]) - ev.T
                k = int(np.argmax(short))
                raise InfeasibleError(
                    "latency budget", f"clients[{k}].latency_budget = {ev.T[k]:g} s is below "
                    f"the client compute time at every cut by {short[k]:g} s",
                    field=f"clients[{k}].latency_budget", shortfall=float(short[k]))
        n_assign = len(ev.cuts) ** n
        use_enum = search == "enumerate" or (search == "auto" and n_assign <= max_enumerate)
        best = ev.enumerate() if use_enum else ev.best_response(list(start["assign"]))
        result = _report(problem, ev, best, max(common, key=lambda r: r["objective"]),
                         "enumerate" if use_enum else "best_response", source)
    result.solve_time_s = timer.seconds
    return result


def _report(problem, ev: Assignments, best: dict, common: dict, search: str, source: str):
    assign = np.array(best["assign"])
    q = np.asarray(best["q"], float)
    A, c, S, envs = ev.arrays(best["assign"])
    sojourn = sm.pk_sojourn(q, ev.nu, S)
    latency = sm.queued_latency(A, c, q, sojourn)
    rho = float(np.sum(ev.nu * q * S))
    ok = bool(np.all(latency <= ev.T * (1 + 1e-9)) and rho <= ev.rho_max * (1 + 1e-9))
    acc = np.array([e(qk) for e, qk in zip(envs, q, strict=True)])
    e_th = []
    for k, s in enumerate(assign):
        cv = ev.data[int(s)].curves[k]
        e_th.append(cv.e[cv.select(float(q[k]))])
    net = problem.net
    return SolveResult(
        kind=problem.kind, scenario=problem.name, status="optimal" if ok else "budget_violated",
        objective=float(ev.w @ acc), solver=f"split-per_client-{search}", solve_time_s=0.0,
        iterations=ev.evaluations,
        decisions={"split": assign, "q": q, "e_th": np.asarray(e_th), "latency": latency,
                   "accuracy": acc},
        diagnostics={"split": assign, "beta_flop": net.beta_flop(assign), "curves": source,
                     "rho": rho, "sojourn": sojourn, "wait_cap": best["w_cap"],
                     "service_time": S, "budget_slack": ev.T - latency,
                     "common_cut": int(common["assign"][0]) if common["q"] is not None
                     else None,
                     "common_cut_objective": common["objective"],
                     "assignments_evaluated": ev.evaluations})
