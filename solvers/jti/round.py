"""Per-round drift-plus-penalty problem of the joint allocator, by block-coordinate ascent.

Documented in ``docs/kinds/joint_training_inference.md`` (form: **project choice**). Each round,
at state
``(K_t, ebar, Z)``, maximise

    V * sum_n lambda_n P_n(mu_n) acc(d_n K_{t+1}(q) + (1 - d_n) ebar_n) - sum_n Z_n (use_n - Rbar_n)

over ``q_min <= q <= 1``, ``0 <= d <= 1``, ``lambda (1+eps) <= mu <= mu_max`` and the hard
cap ``use_n <= R_n``. The problem is not jointly concave, so it is solved by block-coordinate
ascent (q -> d -> mu, repeated until the objective stops improving), each block exactly,
given the other two (the cap bounds the block's variable by what the other two leave).
Every block step can only raise the objective, so the iterates ascend monotonically and
stay feasible from a feasible start. The accuracy map enters through its linearisation
``acc(e) ~ alpha - kappa e`` taken at ``K_t`` (exact for the default affine map; its clip is
left to the reported metrics).

Two interchangeable block solvers share one driver (:meth:`RoundSolver._ascend`), so they
follow the same path:

* :class:`FastBlocks` (``method="numpy"``): closed forms, vectorised in numpy; the
  readable reference of the fast path.
* :class:`CvxpyBlocks` (``method="cvxpy"``): each block a DPP-compliant CVXPY problem,
  compiled once with ``cp.Parameter`` and re-solved (Clarabel, then Clarabel without
  equilibration, then SCS: the documented fallback order).

The default ``method="fast"`` runs the same closed forms, ties and line search as
``"numpy"`` in five compiled passes over the clients per sweep (:mod:`.fused`,
:meth:`RoundSolver._ascend_fused`) instead of hundreds of numpy array passes; tests hold
the two to the same answer.

The cap multiplier ``nu_n`` reported in the diagnostics is the KKT multiplier of client n's
hard cap in the last block that its cap bounds (0 when the cap is slack).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
from jointopt.models.accuracy import deficit_slope
from jointopt.models.aom import expected_error_step, refresh_probability
from jointopt.models.checks import as_vector
from jointopt.models.convergence import participation_variance
from jointopt.models.errors import SolverError
from jointopt.solvers.base import SolveResult, Timer
from jointopt.solvers.jti.problem import JointTrainingInferenceProblem

_EPS = 1e-12


@dataclass(frozen=True)
class RoundState:
    """Observed state at the start of a round."""

    K: float
    ebar: np.ndarray
    Z: np.ndarray

    @classmethod
    def initial(cls, problem: JointTrainingInferenceProblem) -> RoundState:
        return cls(problem.K, problem.ebar, problem.Z)

    def checked(self, n: int) -> RoundState:
        return RoundState(float(self.K), as_vector("state.ebar", self.ebar, n),
                          as_vector("state.Z", self.Z, n))


@dataclass(frozen=True)
class Allocation:
    """One round's decisions, vectors over clients."""

    q: np.ndarray
    d: np.ndarray
    mu: np.ndarray


class _Data:
    """The problem's vectors unpacked once (the solver's hot loop reads these)."""

    def __init__(self, problem: JointTrainingInferenceProblem):
        c = problem.clients
        self.n = c.count
        self.p2 = c.p * c.p
        self.p = c.p
        self.lam = c.arrival_rate
        self.tau = c.deadline
        self.has_deadline = np.isfinite(self.tau)
        self.tau_f = np.where(self.has_deadline, self.tau, 0.0)
        self.ctr, self.cdl, self.cinf = c.cost_train, c.cost_download, c.cost_service
        self.cap = c.cap
        self.cap_finite = np.where(np.isfinite(c.cap), c.cap, 0.0)
        self.budget = c.budget
        self.mu_lo = problem.mu_lo
        self.mu_max = c.mu_max
        self.q_min = c.q_min
        self.V = problem.controller.V
        self.model_conv = problem.convergence_model
        self.conv = self.model_conv  # the round's recursion: model_conv.at(K), set per solve
        self.acc = problem.accuracy_map
        self.refresh = problem.controller.refresh
        self.horizon = problem.horizon
        self.all_deadline = bool(self.has_deadline.all())

    def subset(self, idx: np.ndarray) -> _Data:
        """The clients ``idx`` as a miniature of the whole population: the convergence
        model's ``b`` (and ``b_rel``) is scaled by ``n / len(idx)``, so that the sums over
        the subset stand for the sums over everyone (``K_{t+1}`` and the training value
        ``G`` keep their scale, and so every client's blocks keep theirs)."""
        sub = copy.copy(self)
        for key, value in vars(self).items():
            if isinstance(value, np.ndarray) and value.shape == (self.n,):
                setattr(sub, key, value[idx])
        sub.n = idx.size
        scale = self.n / idx.size
        sub.conv = dataclasses.replace(self.conv, b=self.conv.b * scale,
                                       b_rel=self.conv.b_rel * scale)
        sub.model_conv = dataclasses.replace(self.model_conv, b=self.model_conv.b * scale,
                                             b_rel=self.model_conv.b_rel * scale)
        sub.all_deadline = bool(sub.has_deadline.all())
        return sub

    def on_time(self, mu: np.ndarray) -> np.ndarray:
        """``on_time_fraction(lam, mu, tau)`` for ``mu >= lam`` (always so in the solver),
        without the general function's checks: it runs several times per sweep."""
        P = 1.0 - np.exp(-(mu - self.lam) * self.tau_f)
        return P if self.all_deadline else np.where(self.has_deadline, P, 1.0)


def _ratio(num, den):
    """``num / den`` with ``den == 0`` read as ``+inf`` (a free resource is unbounded)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.inf)


def q_closed_form(G, cost, p2, q_min, ub):
    """argmax over ``[q_min, ub]`` of ``-G p^2 / q - cost q``; ``cost = 0`` gives ``ub``.

    ``sqrt(G p^2 / cost)`` with IEEE arithmetic: a zero cost gives ``+inf`` (a free
    resource is used to its bound), and ``0/0`` (no gain, no cost: a tie) is resolved the
    same way.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = np.sqrt(G * p2 / cost)
    q[np.isnan(q)] = np.inf
    return np.clip(q, q_min, ub)


def mu_closed_form(w, cost, lam, tau, has_deadline, mu_lo, ub):
    """argmax over ``[mu_lo, ub]`` of ``w (1 - exp(-(mu - lam) tau)) - cost mu``.

    ``mu = lam + ln(w tau / cost) / tau`` clipped (``tau = 0`` stands for no deadline).
    IEEE arithmetic covers the limits: a zero cost gives ``ub`` (a free resource is used),
    no gain gives ``mu_lo``; the NaN cases are resolved explicitly: free with ``w >= 0``
    or no deadline -> ``ub``, a negative weight -> ``mu_lo``.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mu = lam + np.log(w * tau / cost) / tau
    bad = np.isnan(mu)
    if bad.any():
        free = (cost == 0) & ((w >= 0) | ~has_deadline)
        mu[bad] = np.where(free[bad], np.inf, -np.inf)
    return np.clip(mu, mu_lo, ub)


class FastBlocks:
    """Closed-form block solutions, vectorised over clients."""

    min_tol = 0.0

    def __init__(self, data: _Data):
        self.data = data
        # each client's last roots (no download, download) of the cap multiplier search: the
        # next exchange starts there (they move little between sweeps and rounds)
        self.last_root = (np.full(data.n, np.nan), np.full(data.n, np.nan))

    def q_block(self, G, price, ub):
        """argmax over ``[q_min, ub]`` of ``-G p^2 / q - price c_tr q``."""
        D = self.data
        return q_closed_form(G, price * D.ctr, D.p2, D.q_min, ub)

    def d_block(self, beta, ub):
        """argmax over ``[0, ub]`` of ``beta d``: threshold rule, fractional only at the cap;
        no gain (``beta = 0``, e.g. an idle client) means no download."""
        return np.where(beta > 0, ub, 0.0)

    def mu_block(self, w, price, ub):
        """argmax over ``[mu_lo, ub]`` of ``w (1 - exp(-(mu - lam) tau)) - price c_inf mu``."""
        D = self.data
        return mu_closed_form(w, price * D.cinf, D.lam, D.tau_f, D.has_deadline, D.mu_lo, ub)

    def exchange_block(self, G, w, gain_d, price, room):
        """Share each client's cap between q, d and mu with one multiplier.

        With the coupling frozen at the current point (``G`` for q, ``gain_d`` the value of a
        download, ``w`` the weight of the on-time fraction), each client maximises
        ``-G p^2/q + gain_d d + w P(mu) - price (c_tr q + c_dl d + c_inf mu)`` subject to
        its cap ``room``. Every variable takes its closed form at the total price
        ``pi = price + nu``, d its threshold rule (``d = 1`` iff ``gain_d > pi c_dl``), and
        ``nu >= 0`` makes the cap hold with complementary slackness. With the smooth part
        ``s(pi) = c_tr q(pi) + c_inf mu(pi)``, the multiplier is the root of
        ``s(pi) = room - c_dl`` if that lies below the download threshold
        ``pi* = gain_d / c_dl`` (d = 1), else the root of ``s(pi) = room`` if that lies above
        it (d = 0), else ``pi*`` itself with a fractional d filling the cap. Roots come from a
        bracketed Newton iteration on ``log(pi)`` over the unsettled clients only.
        Returns ``(q, d, mu)``.
        """
        D = self.data
        q = q_closed_form(G, price * D.ctr, D.p2, D.q_min, 1.0)
        d = np.where(gain_d > price * D.cdl, 1.0, 0.0)
        mu = mu_closed_form(w, price * D.cinf, D.lam, D.tau_f, D.has_deadline, D.mu_lo, D.mu_max)
        tol = 1e-12 * np.maximum(1.0, np.where(np.isfinite(room), np.abs(room), 0.0))
        i = np.flatnonzero(D.ctr * q + D.cdl * d + D.cinf * mu - room > tol)
        if i.size == 0:
            return q, d, mu
        smooth = _SmoothUse(D, G, w, i)
        pr, ri, cdl, gd, tol = price[i], room[i], D.cdl[i], gain_d[i], tol[i]
        with np.errstate(divide="ignore", invalid="ignore"):
            pstar = np.where(cdl > 0, gd / np.where(cdl > 0, cdl, 1.0),
                             np.where(gd > 0, np.inf, 0.0))
        can_download = (gd > pr * cdl) & (ri - cdl >= smooth.least - tol)
        r1 = np.where(can_download,
                      smooth.root(np.where(can_download, ri - cdl, np.inf), pr, tol,
                                  self.last_root[1][i]), np.inf)
        take1 = can_download & (r1 < pstar)
        r0 = smooth.root(ri, pr, tol, self.last_root[0][i])
        self.last_root[1][i] = np.where(np.isfinite(r1), r1, self.last_root[1][i])
        self.last_root[0][i] = r0
        take0 = ~take1 & (r0 >= pstar)
        pi = np.where(take1, r1, np.where(take0, r0, np.maximum(pstar, pr)))
        qq, mm = smooth.at(pi)[:2]
        used = D.ctr[i] * qq + D.cinf[i] * mm
        dd = np.where(take1, 1.0, np.where(take0, 0.0,
                      np.clip((ri - used) / np.where(cdl > 0, cdl, 1.0), 0.0, 1.0)))
        q[i], d[i], mu[i] = qq, dd, mm
        return q, d, mu


_TINY = 1e-300  # a positive price below every other: "0+" in the multiplier search


class _SmoothUse:
    """``s(pi) = c_tr q(pi) + c_inf mu(pi)`` for some clients, and its roots in ``pi``."""

    def __init__(self, D: _Data, G: float, w: np.ndarray, idx: np.ndarray):
        self.G = G
        self.ctr, self.cinf, self.p2, self.qmin = D.ctr[idx], D.cinf[idx], D.p2[idx], D.q_min[idx]
        self.w, self.lam, self.tau = w[idx], D.lam[idx], D.tau_f[idx]
        self.dl, self.mlo, self.mhi = D.has_deadline[idx], D.mu_lo[idx], D.mu_max[idx]
        self.least = self.ctr * self.qmin + self.cinf * self.mlo
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # prices below which q = 1 and mu = mu_max (+inf where the variable is flat for
            # every positive price, so that the other one decides)
            kq = _ratio(G * self.p2, self.ctr)
            self.kink_q = np.where((G * self.p2 > 0) & np.isfinite(kq), kq, np.inf)
            live = self.dl & (self.w > 0)
            kmu = _ratio(self.w * self.tau * np.exp(-(self.mhi - self.lam) * self.tau), self.cinf)
            self.kink_mu = np.where(live & np.isfinite(kmu), kmu, np.inf)

    def at(self, pi, k=slice(None)):
        """q, mu, s and ds/dlog(pi) at ``pi`` for the clients ``k``."""
        ctr, cinf, qmin, tau, dl = self.ctr[k], self.cinf[k], self.qmin[k], self.tau[k], self.dl[k]
        q = q_closed_form(self.G, pi * ctr, self.p2[k], qmin, 1.0)
        mu = mu_closed_form(self.w[k], pi * cinf, self.lam[k], tau, dl, self.mlo[k], self.mhi[k])
        q_free = (q > qmin) & (q < 1.0)
        m_free = (mu > self.mlo[k]) & (mu < self.mhi[k]) & dl
        slope = -0.5 * ctr * q * q_free - cinf * m_free / np.where(dl, tau, 1.0)
        return q, mu, ctr * q + cinf * mu, slope

    def root(self, target, pr, tol, guess=None):
        """Smallest ``pi >= pr`` with ``s(pi) <= target + tol`` (``target >= least``).

        ``guess`` (NaN where none), e.g. last sweep's price, starts Newton near the root.
        """
        pi = pr.copy()
        s0 = self.at(pr)[2]
        act = np.flatnonzero((s0 - target > tol) & np.isfinite(target))
        if act.size == 0:
            return pi
        t, tl = target[act], tol[act]
        # at a zero price the free-resource tie puts a worthless resource at its bound, so the
        # use jumps at pi = 0; from 0+ on it is continuous. Met at 0+: the multiplier is 0+.
        lo = np.where(pr[act] > 0, pr[act], _TINY)
        met = self.at(lo, act)[2] - t <= tl
        if met.any():
            pi[act[met]] = _TINY
            act, lo, t, tl = act[~met], lo[~met], t[~met], tl[~met]
            if act.size == 0:
                return pi
        # below both upper clip points (q = 1, mu = mu_max) the use is flat at its largest:
        # the bracket starts at the smaller clip point where the use there is still over
        kink = np.minimum(self.kink_q[act], self.kink_mu[act])
        cand = np.maximum(lo, np.where(np.isfinite(kink), kink, 0.0))
        lo = np.where((cand > lo) & (self.at(cand, act)[2] - t > tl), cand, lo)
        g = np.full(act.size, np.nan) if guess is None else guess[act]
        usable = np.isfinite(g) & (g > lo)
        # a guess that already meets the target closes the bracket without growing it
        at_guess = np.where(usable, self.at(np.where(usable, g, 1.0), act)[2] - t, np.inf)
        hi = np.where(usable & (at_guess <= tl), g, np.maximum(2.0 * lo, 1.0))
        lo = np.where(usable & (at_guess > tl), g, lo)
        for _ in range(200):  # grow hi until the cap holds there
            bad = self.at(hi, act)[2] - t > tl
            if not bad.any():
                break
            lo, hi = np.where(bad, hi, lo), np.where(bad, 4.0 * hi, hi)
        # Newton from the left (the smooth use is convex in log(pi) past the clip points),
        # or from the guess
        x = np.where(usable & (g > lo) & (g <= hi), g, lo)
        for _ in range(100):
            _, _, s, slope = self.at(x, act)
            f = s - t
            lo, hi = np.where(f > tl, x, lo), np.where(f <= tl, x, hi)
            done = (np.abs(f) <= tl) | (hi - lo <= 1e-13 * hi) | (hi <= 1e-12)
            if done.any():
                pi[act[done]] = hi[done]
                keep = ~done
                act, lo, hi, x, f, slope, t, tl = (
                    v[keep] for v in (act, lo, hi, x, f, slope, t, tl))
                if act.size == 0:
                    break
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                newton = x * np.exp(-f / slope)
            inside = (slope < 0) & (newton > lo) & (newton < hi) & np.isfinite(newton)
            x = np.where(inside, newton, np.where(lo > 0, np.sqrt(lo * hi), 0.5 * (lo + hi)))
        pi[act] = hi
        return pi


class CvxpyBlocks:
    """Each block as a DPP CVXPY problem, compiled once and re-solved with new parameters."""

    # the fallback order: Clarabel; Clarabel without equilibration (with it, Clarabel fails
    # on the exchange problem from ~1000 clients on, where the exponential cones span a wide
    # range; without it the same problem solves in 0.2 s); SCS, slow but rarely fails
    ATTEMPTS = (("CLARABEL", {}), ("CLARABEL", {"equilibrate_enable": False}), ("SCS", {}))
    min_tol = 1e-8  # the solvers' own accuracy: smaller objective gains are noise

    LARGE = 2000  # past this many clients the CVXPY path takes minutes; say so

    def __init__(self, data: _Data, solver: str | None = None):
        import cvxpy as cp  # imported here: the fast path does not need it

        if data.n > self.LARGE:
            warnings.warn(
                f"the CVXPY path is the reference formulation, meant for checking the fast path "
                f"on small instances; at {data.n} clients compiling and solving it takes "
                f"minutes (about 10 s at 1000 clients, growing faster than linearly). "
                f"method='fast' returns the same allocation.", UserWarning, stacklevel=3)

        self.cp = cp
        self.data = data
        self.attempts = ((solver, {}),) if solver else self.ATTEMPTS
        n = data.n
        # q-block: maximise -sum Gp2/q - cq q
        self.q = cp.Variable(n)
        self.Gp2 = cp.Parameter(n, nonneg=True)
        self.cq = cp.Parameter(n, nonneg=True)
        self.q_ub = cp.Parameter(n)
        self.q_prob = cp.Problem(
            cp.Maximize(-cp.sum(cp.multiply(self.Gp2, cp.inv_pos(self.q))) - self.cq @ self.q),
            [self.q >= data.q_min, self.q <= self.q_ub])
        # d-block: maximise beta d on [0, ub]
        self.d = cp.Variable(n)
        self.beta = cp.Parameter(n)
        self.d_ub = cp.Parameter(n, nonneg=True)
        self.d_prob = cp.Problem(cp.Maximize(self.beta @ self.d),
                                 [self.d >= 0, self.d <= self.d_ub])
        # mu-block: maximise sum w (1 - exp(-u)) - cm mu, u = tau (mu - lam)
        self.mu = cp.Variable(n)
        self.u = cp.Variable(n)
        self.w = cp.Parameter(n, nonneg=True)
        self.cm = cp.Parameter(n, nonneg=True)
        self.mu_ub = cp.Parameter(n)
        tau = data.tau_f
        self.mu_prob = cp.Problem(
            cp.Maximize(-cp.sum(cp.multiply(self.w, cp.exp(-self.u))) - self.cm @ self.mu),
            [self.u == cp.multiply(tau, self.mu - data.lam),
             self.mu >= data.mu_lo, self.mu <= self.mu_ub])
        # exchange: q, d and mu of every client jointly, sharing the cap
        self.xq, self.xd = cp.Variable(n), cp.Variable(n)
        self.xmu, self.xu = cp.Variable(n), cp.Variable(n)
        self.gain_d = cp.Parameter(n)
        self.room = cp.Parameter(n)
        self.xmu_ub = cp.Parameter(n)
        self.x_prob = cp.Problem(
            cp.Maximize(-cp.sum(cp.multiply(self.Gp2, cp.inv_pos(self.xq))) - self.cq @ self.xq
                        + self.gain_d @ self.xd
                        - cp.sum(cp.multiply(self.w, cp.exp(-self.xu))) - self.cm @ self.xmu),
            [self.xu == cp.multiply(tau, self.xmu - data.lam),
             self.xq >= data.q_min, self.xq <= 1.0, self.xd >= 0, self.xd <= 1.0,
             self.xmu >= data.mu_lo, self.xmu <= self.xmu_ub,
             cp.multiply(data.ctr, self.xq) + cp.multiply(data.cdl, self.xd)
             + cp.multiply(data.cinf, self.xmu) <= self.room])
        for prob in (self.q_prob, self.d_prob, self.mu_prob, self.x_prob):
            assert prob.is_dpp()

    def _solve(self, prob, var, attempts=None):
        last = None
        attempts = self.attempts if attempts is None else attempts
        for solver, options in attempts:
            try:
                with warnings.catch_warnings():  # "inaccurate" is accepted and clipped below
                    warnings.simplefilter("ignore", UserWarning)
                    prob.solve(solver=solver, **options)
            except self.cp.error.SolverError as exc:  # try the next attempt in the order
                last = exc
                continue
            if prob.status in ("optimal", "optimal_inaccurate") and var.value is not None:
                return np.asarray(var.value, dtype=float)
            last = prob.status
        tried = [s + (" " + str(o) if o else "") for s, o in attempts]
        raise SolverError(f"CVXPY block failed with every attempt {tried}: {last}")

    def q_block(self, G, price, ub):
        D = self.data
        self.Gp2.value = G * D.p2
        self.cq.value = price * D.ctr
        self.q_ub.value = np.minimum(ub, 1.0)
        return np.clip(self._solve(self.q_prob, self.q), D.q_min, ub)

    def d_block(self, beta, ub):
        """The LP's optimum is a vertex: an interior-point answer within 1e-7 of a bound is
        snapped onto it (so that "nobody downloads" is exactly zero, as in the fast path)."""
        ub = np.minimum(ub, 1.0)
        self.beta.value = beta
        self.d_ub.value = ub
        d = np.clip(self._solve(self.d_prob, self.d), 0.0, ub)
        return np.where(d < 1e-7, 0.0, np.where(ub - d < 1e-7, ub, d))

    def _weights(self, w, ub):
        """DCP needs ``w >= 0``; a negative weight (a linearised accuracy below zero) makes
        the least service rate optimal, so those clients get ``mu_lo`` as upper bound."""
        D = self.data
        self.w.value = np.where(D.has_deadline, np.maximum(w, 0.0), 0.0)
        return np.where(D.has_deadline & (w < 0), D.mu_lo, np.minimum(ub, D.mu_max))

    def mu_block(self, w, price, ub):
        D = self.data
        self.mu_ub.value = self._weights(w, ub)
        self.cm.value = price * D.cinf
        return np.clip(self._solve(self.mu_prob, self.mu), D.mu_lo, ub)


    def exchange_block(self, G, w, gain_d, price, room):
        D = self.data
        self.Gp2.value = G * D.p2
        self.cq.value = price * D.ctr
        self.gain_d.value = gain_d - price * D.cdl
        self.xmu_ub.value = self._weights(w, D.mu_max)
        self.cm.value = price * D.cinf
        # an infinite cap becomes a bound that the boxes already imply
        self.room.value = np.minimum(room, D.ctr + D.cdl + D.cinf * D.mu_max + 1.0)
        # the exchange only proposes an improvement: where Clarabel fails on it (both ways),
        # propose nothing this sweep rather than wait minutes for SCS (measured: 207 s for
        # two inaccurate SCS solves at 1000 clients)
        try:
            self._solve(self.x_prob, self.xmu, [a for a in self.attempts if a[0] != "SCS"]
                        or self.attempts)
        except SolverError:
            return None
        q = np.clip(np.asarray(self.xq.value, dtype=float), D.q_min, 1.0)
        d = np.clip(np.asarray(self.xd.value, dtype=float), 0.0, 1.0)
        d = np.where(d < 1e-7, 0.0, np.where(d > 1 - 1e-7, 1.0, d))  # LP vertex, see d_block
        mu = np.clip(np.asarray(self.xmu.value, dtype=float), D.mu_lo, D.mu_max)
        # an interior-point answer may overshoot the cap by ~1e-9: pull mu, then d, then q
        # back onto it (the least use always fits)
        mu = np.maximum(np.minimum(mu, _ratio(room - D.ctr * q - D.cdl * d, D.cinf)), D.mu_lo)
        d = np.clip(np.minimum(d, _ratio(room - D.ctr * q - D.cinf * mu, D.cdl)), 0.0, 1.0)
        q = np.clip(np.minimum(q, _ratio(room - D.cdl * d - D.cinf * mu, D.ctr)), D.q_min, 1.0)
        return q, d, mu


class RoundSolver:
    """Solves the per-round problem of one problem instance, again and again.

    Build once (the CVXPY path compiles its block problems here), then call :meth:`solve`
    with each round's state and, optionally, last round's allocation as a warm start.
    """

    PILOT_TIE = 1e-6  # starts ending this close on the pilot count as equally good

    def __init__(self, problem: JointTrainingInferenceProblem, method: str = "fast",
                 *, solver: str | None = None, threads: int | None = None):
        self.problem = problem
        self._setup(_Data(problem), problem.check_method(method), solver, threads)

    def retune(self, convergence=None, accuracy=None) -> None:
        """Plan the next solves with another convergence model and/or accuracy map (e.g. a
        closed loop's estimates). The look-ahead horizon stays as the problem set it, and so
        does the deficit's tangent (:meth:`linearise_deficit`)."""
        if convergence is not None:
            self.base_conv = convergence
            self.data.model_conv = self.data.conv = dataclasses.replace(
                convergence, b_rel=convergence.b_rel + self.deficit_slope)
        if accuracy is not None:
            self.data.acc = accuracy

    def linearise_deficit(self, x: Allocation) -> float:
        """Plan the next solves with the aggregation deficit, linearised at the allocation
        ``x``; returns its slope (0 where the problem has no ``accuracy.aggregation_noise``).

        Project choice. A fresh copy serves at error ``K_{t+1} + beta K sqrt(S)``, ``S`` the
        aggregation spread ``sum p^2 (1 - q) / q`` (:func:`~jointopt.models.accuracy.
        aggregation_deficit`, which the surrogate reads). ``sqrt`` does not add up over
        clients, so the solve plans with its tangent at ``S0 = S(x.q)``: the deficit then acts
        like ``b_rel`` larger by ``beta / (2 sqrt(S0))``
        (:func:`~jointopt.models.accuracy.deficit_slope`), which prices participation above
        what the loss alone says, most where ``K`` is large. The tangent's level is left
        out: every copy carries some deficit, and the observed held errors do not show
        theirs. The slope is scaled by the copies' share of the training value (below):
        the deficit stays with a served copy, not with the global model's future. The
        tangent stays until the next call; the online policy linearises once, at its first
        round's decision (measured on five calibrations of ``analytic``, six surrogate runs
        each: 0.0003-0.0017 more timely accuracy than re-linearising every round at the
        last decision, whose tangent is flatter)."""
        D = self.data
        slope = deficit_slope(self.problem.accuracy.aggregation_noise,
                              participation_variance(x.q, D.p))
        # of the training value sum lam (P d + H (1 + d)) (_training_value), the deficit
        # counts on the copies (P d + H d) but not in the global model's future (H)
        copies = float(np.sum(D.lam * (D.on_time(x.mu) + D.horizon) * x.d))
        whole = copies + D.horizon * float(np.sum(D.lam))
        self.deficit_slope = slope * copies / whole if whole > 0 else 0.0
        self.retune(self.base_conv)
        return self.deficit_slope

    def _setup(self, data: _Data, method: str, solver: str | None = None,
               threads: int | None = None) -> None:
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = threads
        self.data = data
        self.deficit_slope = 0.0  # :meth:`linearise_deficit`'s, already in data.model_conv
        self.base_conv = data.model_conv  # the convergence model without it
        self._work_arrays = None  # the fast ascent's, made on first use (see _work)
        self.blocks = (CvxpyBlocks(self.data, solver) if method == "cvxpy"
                       else FastBlocks(self.data))
        self.method = method
        if method == "fast":  # compile the passes here, not inside the first timed solve
            from jointopt.solvers.jti import fused

            fused.warm_up()
            # every input array read-only and C-contiguous, so that one compiled signature
            # serves problem data, computed vectors and user-given states alike
            self._frozen = fused.frozen(self.data)
            # the client ranges of every pass, in threads on large instances
            self._split = fused.Split(
                data.n, fused.available_threads() if threads is None else threads)
        self.exchange_failures = 0  # exchange steps the block solver could not propose (a solve)

    # -- pieces shared by both paths ---------------------------------------------------
    def _training_value(self, kappa: float, P: np.ndarray, d: np.ndarray) -> float:
        """``G``: the weight of ``sum p^2 / q`` in the objective.

        This round, a lower ``K_{t+1}`` helps the clients that download now:
        ``V kappa b sum lambda P d``. The look-ahead (:meth:`lookahead`) adds
        ``H V kappa b sum lambda (1 + d)``.
        """
        D = self.data
        return D.V * kappa * D.conv.b * float(np.sum(D.lam * (P * d + D.horizon * (1 + d))))

    def _download_gain(self, kappa: float, P: np.ndarray, ebar, K1) -> np.ndarray:
        """Value of ``d_n`` before its price: this round's plus the held copy's look-ahead."""
        D = self.data
        return D.V * D.lam * kappa * (P + D.horizon) * (ebar - K1)

    def lookahead(self, state: RoundState, x: Allocation) -> float:
        """Project extension of the source's per-round objective (0 when the horizon is 0).

        A lower ``K_{t+1}`` persists (``K`` contracts by ``a`` a round), and so does the copy a
        client holds. Valuing the next ``H`` rounds' requests at their arrival rates,
        ``-H V kappa sum lambda_n (K_{t+1}(q) + e_n)`` with ``e_n`` the held copy's error
        after this round and ``H`` the problem's :attr:`horizon`. Without it the per-round
        problem is myopic: it values training only through this round's downloads and a
        download only for this round, and settles where nobody trains and nobody downloads
        (measured on the default scenario: timely accuracy 0.66 with ``H = 0`` against
        0.82 with the default).
        """
        D = self.data
        if D.horizon == 0:
            return 0.0
        _, kappa = D.acc.linearize(state.K)
        K1 = D.conv.step(state.K, x.q, D.p)
        e = x.d * K1 + (1 - x.d) * state.ebar
        return -D.horizon * D.V * kappa * float(np.sum(D.lam * (K1 + e)))

    def cold_start(self) -> Allocation:
        """The least-use allocation: always feasible (checked when the problem was built)."""
        D = self.data
        return Allocation(D.q_min.copy(), np.zeros(D.n), D.mu_lo.copy())

    def use(self, x: Allocation) -> np.ndarray:
        D = self.data
        return D.ctr * x.q + D.cdl * x.d + D.cinf * x.mu

    def _feasible(self, x: Allocation) -> bool:
        D = self.data
        return bool(np.all((x.q >= D.q_min - 1e-12) & (x.q <= 1 + 1e-12) & (x.d >= -1e-12)
                           & (x.d <= 1 + 1e-12) & (x.mu >= D.mu_lo - 1e-12)
                           & (x.mu <= D.mu_max + 1e-12)
                           & (self.use(x) <= D.cap * (1 + 1e-12) + 1e-12)))

    def objective(self, state: RoundState, x: Allocation) -> float:
        """The drift-plus-penalty objective (linearised accuracy map) plus the look-ahead."""
        D = self.data
        alpha, kappa = D.acc.linearize(state.K)
        K1 = D.conv.step(state.K, x.q, D.p)
        e = x.d * K1 + (1 - x.d) * state.ebar
        P = D.on_time(x.mu)
        gain = D.V * float(np.sum(D.lam * P * (alpha - kappa * e)))
        with np.errstate(invalid="ignore"):
            penalty = np.where(state.Z > 0, state.Z * (self.use(x) - D.budget), 0.0)
        return gain - float(np.sum(penalty)) + self.lookahead(state, x)

    def _slack(self, x: Allocation, which: str) -> np.ndarray:
        """Cap left for the variable ``which`` given the other two, in that variable's units."""
        D = self.data
        other = self.use(x) - {"q": D.ctr * x.q, "d": D.cdl * x.d, "mu": D.cinf * x.mu}[which]
        cost = {"q": D.ctr, "d": D.cdl, "mu": D.cinf}[which]
        left = np.maximum(D.cap - other, 0.0)
        return _ratio(left, cost)

    def starts(self) -> list[Allocation]:
        """Cold starts of the ascent: least use, and full downloads at full service rate.

        The per-round problem is not jointly concave. From the least-use point alone the
        ascent can stall where nobody downloads and service is minimal (so training has no
        value this round) while training is too low for a download to pay. Starting also
        from ``d = 1``, ``mu = mu_max`` (as far as the cap allows) and keeping the better
        end point avoids that trap.
        """
        x0 = self.cold_start()
        if self.method == "fast":  # the same arithmetic, in one compiled pass
            from jointopt.solvers.jti import fused

            F, d1, mu1 = self._frozen, np.empty(self.data.n), np.empty(self.data.n)
            self._split.map(fused.full_start, F.ctr, F.cdl, F.cinf, F.cap, F.q_min, F.mu_lo,
                            F.mu_max, d1, mu1)
            return [x0, Allocation(x0.q, d1, mu1)]
        x1 = Allocation(x0.q, np.minimum(1.0, self._slack(x0, "d")), x0.mu)
        x1 = Allocation(x1.q, x1.d, np.maximum(x0.mu, np.minimum(self.data.mu_max,
                                                                 self._slack(x1, "mu"))))
        return [x0, x1]

    def solve(self, state: RoundState | None = None, warm: Allocation | None = None,
              *, tol: float | None = None, max_iter: int | None = None) -> SolveResult:
        """Ascend from ``warm`` when it is feasible, else from each of :meth:`starts`."""
        P_ = self.problem
        state = RoundState.initial(P_) if state is None else state.checked(self.data.n)
        self.data.conv = self.data.model_conv.at(state.K)
        tol = max(P_.controller.tol if tol is None else tol, self.blocks.min_tol)
        max_iter = P_.controller.max_iter if max_iter is None else max_iter
        starts = [warm] if warm is not None and self._feasible(warm) else self.starts()
        self.exchange_failures = 0
        best = None
        iterations = 0
        with Timer() as timer:
            pilot = self._pilot(state, starts, tol, max_iter)
            if pilot is not None and pilot["start"] is not None:
                starts = [starts[pilot["start"]]]
            for x0 in starts:
                ascend = self._ascend_fused if self.method == "fast" else self._ascend
                x, history, status, it = ascend(state, x0, tol, max_iter)
                iterations += it
                if best is None or history[-1] > best[1][-1]:
                    best = (x, history, status)
        x, history, status = best
        result = self._result(state, x, history, status, timer.seconds, iterations)
        result.diagnostics["pilot"] = pilot
        return result

    def _miniature(self, idx: np.ndarray) -> RoundSolver:
        """A solver of the clients ``idx`` standing for the whole population
        (:meth:`_Data.subset`), on the fast blocks (compiled for ``"fast"``)."""
        sub = object.__new__(RoundSolver)
        sub.problem = self.problem
        sub._setup(self.data.subset(idx), "fast" if self.method == "fast" else "numpy",
                   threads=self.threads)
        return sub

    def _pilot(self, state: RoundState, starts: list[Allocation], tol: float,
               max_iter: int) -> dict | None:
        """Pick one of several cold starts on a random subset of the clients.

        Project choice (a speed measure, ``controller.pilot``): with many clients the two
        cold starts of :meth:`starts` mostly end equally well, but each costs a full
        ascent. Both are ascended on a seeded random subset (:meth:`_Data.subset`, a
        miniature of the population). Where they end within :attr:`PILOT_TIE` (relative)
        of each other there, only the higher one is ascended at full size; where they do
        not, they lead to different optima and both are ascended at full size, as without
        a pilot. Measured with the default (10,000 of 100,000 clients) on 30 instances
        (``tests/instances.py`` with both horizons, and the benchmark's): at most 2.9e-8
        (relative) below ascending both, and 4 of the 30 ascended both. A small pilot is
        a poor miniature: 300 of 3,000 clients ended up to 6.6e-6 below, 60 of 600 up to
        6e-4; hence the default pilot only from 100,000 clients on. ``pilot = 0`` always
        ascends every start at full size. Returns None when no pilot runs, else its size,
        end objectives and their relative spread, and the chosen start (None: all).
        """
        m = self.problem.controller.pilot_size(self.data.n)
        if m is None or len(starts) < 2:
            return None
        idx = np.sort(np.random.default_rng(0).choice(self.data.n, m, replace=False))
        sub = self._miniature(idx)
        sub_state = RoundState(state.K, state.ebar[idx], state.Z[idx])
        ascend = sub._ascend_fused if sub.method == "fast" else sub._ascend
        ends = [ascend(sub_state, Allocation(x.q[idx], x.d[idx], x.mu[idx]), tol,
                       max_iter)[1][-1] for x in starts]
        spread = (max(ends) - min(ends)) / max(1.0, abs(max(ends)))
        pick = int(np.argmax(ends)) if spread <= self.PILOT_TIE else None
        return {"clients": m, "objectives": ends, "spread": spread, "start": pick}

    def _ascend(self, state: RoundState, x: Allocation, tol: float, max_iter: int):
        """Block-coordinate ascent q -> d -> mu from ``x`` until the objective stalls."""
        D = self.data
        price = state.Z
        alpha, kappa = D.acc.linearize(state.K)
        conv = D.conv
        history = [self.objective(state, x)]
        status = "max_iter"
        it = 0
        while it < max_iter:
            it += 1
            # q-block: G = V kappa b sum lambda P d
            P = D.on_time(x.mu)
            G = self._training_value(kappa, P, x.d)
            q_ub = np.minimum(1.0, self._slack(x, "q"))
            q = self.blocks.q_block(G, price, q_ub)
            # tie (no gain, no price): a free resource is used to its bound
            q = np.where((G == 0) & (price * D.ctr == 0), np.maximum(q_ub, D.q_min), q)
            x = Allocation(q, x.d, x.mu)
            K1 = conv.step(state.K, x.q, D.p)
            # d-block: linear, coefficient beta
            beta = self._download_gain(kappa, P, state.ebar, K1) - price * D.cdl
            d = self.blocks.d_block(beta, np.minimum(1.0, self._slack(x, "d")))
            d = np.where(beta == 0, 0.0, d)  # tie: no gain, no download (lambda = 0)
            x = Allocation(x.q, d, x.mu)
            # mu-block: concave, weight w = V lambda acc
            w = D.V * D.lam * (alpha - kappa * (x.d * K1 + (1 - x.d) * state.ebar))
            mu_ub = np.minimum(D.mu_max, self._slack(x, "mu"))
            mu = self.blocks.mu_block(w, price, mu_ub)
            tie = (price * D.cinf == 0) & ((w == 0) | ~D.has_deadline)
            mu = np.where(tie, np.maximum(mu_ub, D.mu_lo), mu)
            x = Allocation(x.q, x.d, mu)
            x = self._exchange(state, x, history[-1])
            history.append(self.objective(state, x))
            if history[-1] - history[-2] <= tol * max(1.0, abs(history[-1])):
                status = "converged"
                break
        return x, history, status, it

    def _ascend_fused(self, state: RoundState, x: Allocation, tol: float, max_iter: int):
        """:meth:`_ascend` with the numpy passes replaced by the compiled ones of
        :mod:`.fused` (same blocks, ties, exchange and line search), each run over the
        client ranges of :attr:`_split`."""
        from jointopt.solvers.jti import fused

        D, B, F, run = self.data, self.blocks, self._frozen, self._split.map
        Z, ebar, K = fused.readonly(state.Z), fused.readonly(state.ebar), state.K
        alpha, kappa = D.acc.linearize(K)
        cv = D.conv
        H = float(D.horizon)
        q, d, mu = x.q.copy(), x.d.copy(), x.mu.copy()
        near, every, P, qn, dn, mun = self._work()
        data = (D.V, alpha, kappa, H, Z, F.lam, F.tau_f, F.has_deadline, F.ctr, F.cdl, F.cinf,
                F.cap, F.budget, F.p2, F.q_min, F.mu_lo, F.mu_max, ebar)

        def value(A, Bk, S):
            return float(A - (cv.a * K + cv.b * S + cv.c) * Bk)

        def values(rows, rest):
            """Objective and feasibility at each row of near-client sums, the others'
            sums being ``rest``."""
            return ([value(*(rest[:3] + row[:3])) for row in rows],
                    [bool(row[3] > 0 and rest[3] > 0) for row in rows])

        start = fused.merged(run(fused.step_sums, np.zeros(1), every, *data,
                                 q, d, mu, q, d, mu))[0]
        history = [value(*start[:3])]
        status = "max_iter"
        it = 0
        scale = D.V * kappa * cv.b
        G = scale * sum(run(fused.training_sum, F.lam, mu, d, F.tau_f, F.has_deadline, H, P,
                            every))
        while it < max_iter:
            it += 1
            S = sum(run(fused.q_pass, G, Z, F.ctr, F.cdl, F.cinf, F.cap, F.p2, F.q_min,
                        q, d, mu))
            K1 = cv.a * K + cv.b * S + cv.c
            parts = run(fused.dmu_pass, D.V, alpha, kappa, K1, H, Z, F.lam, F.tau_f,
                        F.has_deadline, F.ctr, F.cdl, F.cinf, F.cap, F.cap_finite, F.budget,
                        F.p2, F.q_min, F.mu_lo, F.mu_max, ebar, q, d, mu, P, near)
            anynear = any(part[0] for part in parts)
            sums = fused.merged([part[1] for part in parts])
            now = value(*(sums[0, :3] + sums[1, :3]))
            G = scale * (sums[0, 4] + sums[1, 4])  # the next sweep's, unless the point moves
            if anynear:
                rows = fused.merged(run(
                    fused.exchange_pass, G, D.V, alpha, kappa, K1, H, Z, F.lam, F.tau_f,
                    F.has_deadline, F.ctr, F.cdl, F.cinf, F.cap, F.budget, F.p2, F.q_min,
                    F.mu_lo, F.mu_max, ebar, q, d, mu, P, near, B.last_root[0],
                    B.last_root[1], qn, dn, mun))
                # the line search of _exchange: best of 1, 1/2, 1/4, else the first of
                # 1/8 ... 1/256 that improves, else keep x. Only the near clients move:
                # the sums of the others are the point's sums less the near ones'.
                best_val, best_row = max(history[-1], now), None
                vals, ok = values(rows, sums[0])
                for k in range(3):
                    if ok[k] and vals[k] > best_val:
                        best_val, best_row, best_step = vals[k], rows[k], 0.5 ** k
                if best_row is None:
                    late = 0.125 * 0.5 ** np.arange(6)
                    lrows = fused.merged(run(fused.late_sums, late, near, *data,
                                             q, d, mu, qn, dn, mun, P))
                    lvals, lok = values(lrows, sums[0])
                    for k in range(6):
                        if lok[k] and lvals[k] > best_val:
                            best_val, best_row, best_step = lvals[k], lrows[k], late[k]
                            break
                if best_row is not None:
                    run(fused.apply_step, best_step, near, F.lam, F.tau_f, F.has_deadline,
                        q, d, mu, qn, dn, mun, P)
                    G = scale * (sums[0, 4] + best_row[4])
                    now = best_val
            history.append(now)
            if history[-1] - history[-2] <= tol * max(1.0, abs(history[-1])):
                status = "converged"
                break
        return Allocation(q, d, mu), history, status, it

    def _work(self):
        """The fast ascent's work arrays (near, every, P and the proposal q, d, mu), kept
        between ascents: the passes write every entry they read, and fresh 8 MB arrays a
        start cost page faults at 1M clients."""
        n = self.data.n
        if self._work_arrays is None:
            self._work_arrays = (np.zeros(n, dtype=bool), np.ones(n, dtype=bool),
                                 *(np.empty(n) for _ in range(4)))
        return self._work_arrays

    def _binding(self, x: Allocation) -> np.ndarray:
        """Clients whose hard cap is (numerically) reached: within 1e-7 relative."""
        D = self.data
        return self.use(x) >= D.cap - 1e-7 * np.maximum(1.0, D.cap_finite)

    def _exchange(self, state: RoundState, x: Allocation, floor: float) -> Allocation:
        """Re-share each client's cap between q, d and mu (``exchange_block``), safeguarded.

        The exchange moves the three together, which the single-variable blocks cannot do
        when a cap binds. It freezes the cross-client coupling (``G``, ``w``) at ``x``, so its
        proposal is damped by a line search on the true objective: the best of the steps
        1, 1/2, 1/4 (convex combinations: still feasible), else the first of 1/8 ... 1/256
        that improves, else ``x`` is kept. Taking the best of three converges along flat
        ridges in a few sweeps where the first improving step creeps (73 sweeps against
        a handful on a 6-client instance). The ascent stays monotone.
        """
        D = self.data
        # only a client at (or, for the interior-point path, near) its cap can gain from
        # moving budget between its variables; the others keep what the blocks gave them
        near = self.use(x) >= D.cap - 1e-4 * np.maximum(1.0, D.cap_finite)
        if not near.any():
            return x
        alpha, kappa = D.acc.linearize(state.K)
        P = D.on_time(x.mu)
        G = self._training_value(kappa, P, x.d)
        K1 = D.conv.step(state.K, x.q, D.p)
        w = D.V * D.lam * (alpha - kappa * (x.d * K1 + (1 - x.d) * state.ebar))
        gain_d = self._download_gain(kappa, P, state.ebar, K1)
        proposal = self.blocks.exchange_block(G, w, gain_d, state.Z, D.cap)
        if proposal is None:  # the block solver could not propose a step this sweep
            self.exchange_failures += 1
            return x
        q_new, d_new, mu_new = proposal
        # the ties of the single blocks, resolved the same way: no gain, no download; a free
        # resource with no gain takes what the cap leaves (mu first, then q)
        d_new = np.where(gain_d - state.Z * D.cdl == 0, 0.0, d_new)
        left = D.cap - D.cdl * d_new
        tie_mu = (state.Z * D.cinf == 0) & ((w == 0) | ~D.has_deadline)
        mu_new = np.where(tie_mu, np.maximum(
            np.minimum(D.mu_max, _ratio(left - D.ctr * q_new, D.cinf)), D.mu_lo), mu_new)
        tie_q = (G == 0) & (state.Z * D.ctr == 0)
        q_new = np.where(tie_q, np.clip(_ratio(left - D.cinf * mu_new, D.ctr), D.q_min, 1.0),
                         q_new)
        q_new, d_new, mu_new = (np.where(near, new, old) for new, old in
                                ((q_new, x.q), (d_new, x.d), (mu_new, x.mu)))
        base = max(floor, self.objective(state, x))
        best, best_val = x, base
        step = 1.0
        for k in range(9):  # the best of steps 1, 1/2, 1/4; then the first that improves
            y = Allocation(x.q + step * (q_new - x.q), x.d + step * (d_new - x.d),
                           x.mu + step * (mu_new - x.mu))
            if self._feasible(y):
                val = self.objective(state, y)
                if val > best_val:
                    best, best_val = y, val
            if k >= 2 and best is not x:
                break
            step *= 0.5
        return best

    def _result(self, state, x, history, status, seconds, iterations) -> SolveResult:
        D = self.data
        K1 = D.conv.step(state.K, x.q, D.p)
        if self.method == "fast":
            P, ebar_next, use, binding, nu = self._diagnostics_fused(state, x, K1)
        else:
            theta = refresh_probability(x.q, x.d, D.refresh)
            ebar_next = expected_error_step(state.ebar, K1, theta)
            P = D.on_time(x.mu)
            use = self.use(x)
            binding, nu = self._binding(x), self.cap_multipliers(state, x)
        acc = D.acc(ebar_next)
        total_rate = float(D.lam.sum())
        timely = float(np.sum(D.lam * P * acc) / total_rate) if total_rate > 0 else float("nan")
        return SolveResult(
            kind=JointTrainingInferenceProblem.kind, scenario=self.problem.name, status=status,
            objective=history[-1], solver=f"bca-{self.method}", solve_time_s=seconds,
            iterations=iterations,
            decisions={"q": x.q, "d": x.d, "mu": x.mu},
            diagnostics={
                "K": state.K, "K_next": K1, "timely_accuracy": timely,
                "on_time_fraction": P, "expected_error_next": ebar_next,
                "resource_use": use, "cap_binding": binding, "cap_multiplier": nu,
                "objective_history": history,
                "exchange_failures": self.exchange_failures,
            })

    def _diagnostics_fused(self, state: RoundState, x: Allocation, K1: float):
        """The fast path's per-client diagnostics in two compiled passes: on-time fractions
        (with the training value ``G`` they give), then the rest (see
        :func:`.fused.diagnostics`)."""
        from jointopt.solvers.jti import fused

        D, F, ro, run = self.data, self._frozen, fused.readonly, self._split.map
        alpha, kappa = D.acc.linearize(state.K)
        q, d, mu = ro(x.q), ro(x.d), ro(x.mu)
        P = np.empty(D.n)
        G = D.V * kappa * D.conv.b * sum(run(fused.training_sum, F.lam, mu, d, F.tau_f,
                                             F.has_deadline, float(D.horizon), P,
                                             self._work()[1]))
        use, ebar_next, nu = np.empty(D.n), np.empty(D.n), np.empty(D.n)
        binding = np.empty(D.n, dtype=bool)
        run(fused.diagnostics, G, float(D.V), float(alpha), float(kappa), float(K1),
            float(D.horizon), ro(state.Z), F.lam, F.tau_f, F.has_deadline, F.ctr, F.cdl,
            F.cinf, F.cap, F.cap_finite, F.p2, F.q_min, F.mu_lo, F.mu_max, ro(state.ebar),
            q, d, mu, ro(P), D.refresh == "download_or_train", use, ebar_next, binding, nu)
        return P, ebar_next, use, binding, nu

    def cap_multipliers(self, state: RoundState, x: Allocation) -> np.ndarray:
        """KKT multiplier ``nu_n >= 0`` of each client's hard cap (0 where it is slack).

        Read off the last block the cap bounds: the service rate if it sits at the cap, else
        the participation, else the download.
        """
        D = self.data
        binding = self._binding(x)
        nu = np.zeros(D.n)
        if not binding.any():
            return nu
        alpha, kappa = D.acc.linearize(state.K)
        K1 = D.conv.step(state.K, x.q, D.p)
        P = D.on_time(x.mu)
        G = self._training_value(kappa, P, x.d)
        b = np.flatnonzero(binding)  # the per-client part only where a cap binds
        lam, tau, dl, Z, ebar = D.lam[b], D.tau_f[b], D.has_deadline[b], state.Z[b], state.ebar[b]
        q, d, mu, ctr, cdl, cinf = x.q[b], x.d[b], x.mu[b], D.ctr[b], D.cdl[b], D.cinf[b]
        w = D.V * lam * (alpha - kappa * (d * K1 + (1 - d) * ebar))
        with np.errstate(divide="ignore", invalid="ignore"):
            nu_mu = _ratio(w * tau * np.exp(-(mu - lam) * tau), cinf) - Z
            nu_q = _ratio(G * D.p2[b] / q**2, ctr) - Z
            beta = D.V * lam * kappa * (P[b] + D.horizon) * (ebar - K1)
            nu_d = _ratio(beta, cdl) - Z
        interior_mu = (mu > D.mu_lo[b] + 1e-12) & (mu < D.mu_max[b] - 1e-12) & (cinf > 0)
        interior_q = (q > D.q_min[b] + 1e-12) & (q < 1 - 1e-12) & (ctr > 0)
        interior_d = (d > 1e-12) & (d < 1 - 1e-12) & (cdl > 0)
        nu[b] = np.maximum(np.where(interior_mu & dl, nu_mu,
                                    np.where(interior_q, nu_q, np.where(interior_d, nu_d, 0.0))),
                           0.0)
        return nu


def solve_round(problem: JointTrainingInferenceProblem, state: RoundState | None = None,
                *, method: str = "fast", warm: Allocation | None = None,
                solver: str | None = None, threads: int | None = None) -> SolveResult:
    """One-shot convenience: build a :class:`RoundSolver` and solve one round."""
    return RoundSolver(problem, method, solver=solver, threads=threads).solve(state, warm)
