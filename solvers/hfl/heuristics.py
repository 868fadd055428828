"""Heuristics for HFLOP [project choice unless marked].

All work on arrays: ``D`` (N workloads), ``R`` (M capacities), ``C = l c^d`` (N x M, the
per-round association cost), ``ce`` (M opening costs), ``T`` (required participants) and an
optional boolean ``allowed`` (N x M, pairs not fixed to 0 by a reduction). Each returns a
:class:`Heuristic` whose assignment passes :func:`jointopt.models.hfl.evaluate` when
``feasible`` is True; an instance where fewer than ``T`` devices could be placed gives
``feasible=False`` and the partial assignment, never an exception.

Large random instances are covering problems in disguise: the optimum opens a
few cheap hosts and joins every participant at cost 0, and capacity binds on some hosts.
Device moves alone stall there, so :func:`host_search` moves whole hosts (open, close,
swap), screened by the uncapacitated value of the host set and packed by the transportation
LP of :func:`lp_assign` where the greedy packing fails.

Defects of the authors' heuristics that are *not* replicated (tests hold each):
devices are really sorted (defect 1); unplaced devices are skipped by pruning and reported
as infeasible (2); construction and pruning count the opening cost (2); ties go to the
lowest host index (2); ``T = floor(rho N)`` everywhere (3); no Dantzig knapsack with its
fallback bug (4); local search restarts from the first host after each accepted move and
offers dropped devices again (5); costs always include ``l`` (6).
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field

import numpy as np

TOL = 1e-9


@dataclass
class Heuristic:
    assignment: np.ndarray
    objective: float
    feasible: bool
    name: str
    seconds: float = 0.0
    moves: dict = field(default_factory=dict)


def _objective(a, C, ce):
    on = np.flatnonzero(a >= 0)
    used = np.bincount(a[on], minlength=ce.shape[0]) > 0
    return float(C[on, a[on]].sum() + ce[used].sum())


def _state(a, D, M):
    on = a >= 0
    load = np.bincount(a[on], weights=D[on], minlength=M).astype(float)
    count = np.bincount(a[on], minlength=M)
    return load, count


def _masked(C, allowed):
    return C if allowed is None else np.where(allowed, C, np.inf)


# ----------------------------------------------------------------------------- H1


def cheapest_first(D, R, C, ce, T, *, allowed=None, order="demand",
                   opening_cost=True) -> Heuristic:
    """H1 (idea from [authors' code], fixed). Devices by decreasing ``D`` (``order="index"``:
    the authors' order); each goes to the host minimising ``C_ij + c^e_j [j closed]`` among
    hosts with residual capacity >= ``D_i`` (lowest index on ties); devices that fit nowhere
    stay unplaced. Then, while more than ``T`` are placed, drop the device whose removal
    saves most (its ``C`` plus ``c^e`` if its host empties)."""
    t0 = time.perf_counter()
    D, R, ce = (np.asarray(v, float) for v in (D, R, ce))
    C = _masked(np.asarray(C, float), allowed)
    N, M = C.shape
    idx = np.argsort(-D, kind="stable") if order == "demand" else np.arange(N)
    a = np.full(N, -1, dtype=np.int64)
    resid = R.copy()
    is_open = np.zeros(M, bool)
    open_cost = ce if opening_cost else np.zeros(M)
    for i in idx:
        cost = C[i] + np.where(is_open, 0.0, open_cost)
        cost = np.where(resid >= D[i] - TOL, cost, np.inf)
        j = int(np.argmin(cost))
        if np.isfinite(cost[j]):
            a[i] = j
            resid[j] -= D[i]
            is_open[j] = True
    a = drop_surplus(a, D, C, ce, T)
    placed = int((a >= 0).sum())
    return Heuristic(a, _objective(a, C, ce), placed >= T, "H1",
                     time.perf_counter() - t0)


def drop_surplus(a, D, C, ce, T) -> np.ndarray:
    """While more than ``T`` devices are placed, drop the one whose removal saves most
    (``C_{i a_i}`` plus ``c^e`` when its host empties). Unplaced devices are never touched
    (authors' defect 2)."""
    a = a.copy()
    M = ce.shape[0]
    _, count = _state(a, D, M)
    surplus = int((a >= 0).sum()) - T
    if surplus <= 0:
        return a
    on = np.flatnonzero(a >= 0)
    base = C[on, a[on]]
    # bulk phase: devices whose host keeps others; each removal saves its own cost only
    while surplus > 0:
        on = np.flatnonzero(a >= 0)
        base = C[on, a[on]]
        save = base + np.where(count[a[on]] == 1, ce[a[on]], 0.0)
        k = min(surplus, max(1, surplus // 4))
        pick = on[np.argsort(-save, kind="stable")[:k]]
        if k > 1:  # removing several at once is exact only if no host empties
            hosts, times = np.unique(a[pick], return_counts=True)
            if (count[hosts] <= times).any():
                pick = pick[:1]
        for i in pick:
            count[a[i]] -= 1
            a[i] = -1
        surplus -= len(pick)
    return a


# ----------------------------------------------------------------------------- H2


def ratio_greedy(D, R, C, ce, T, *, allowed=None) -> Heuristic:
    """H2 facility-opening greedy [project choice]: repeatedly, over all hosts, take the
    host's unplaced devices in increasing ``C_ij``, keep the longest prefix whose cumulative
    demand fits the residual capacity, and among its sub-prefixes of length ``k <= T -
    placed`` minimise ``(c^e_j [j closed] + sum C) / k``; commit the best (host, prefix).
    Ties: longer prefix, then lower host index. Lazy evaluation: a host's ratio can only
    be recomputed when it reaches the top of the heap; columns are sorted once."""
    t0 = time.perf_counter()
    D, R, ce = (np.asarray(v, float) for v in (D, R, ce))
    C = _masked(np.asarray(C, float), allowed)
    N, M = C.shape
    # columns sorted by cost, ties by demand (participation counts devices, capacity counts
    # demand: among equally cheap devices the small ones fit more of them), then index
    rank = np.argsort(np.argsort(D, kind="stable"), kind="stable")
    order = np.argsort(C * (N + 1.0) + rank[:, None] if np.isfinite(C).all() else C, axis=0,
                       kind="stable")
    if not np.isfinite(C).all():
        order = np.lexsort((np.broadcast_to(rank[:, None], C.shape), C), axis=0)
    sC = np.take_along_axis(C, order, 0)
    a = np.full(N, -1, dtype=np.int64)
    resid = R.copy()
    is_open = np.zeros(M, bool)
    placed = 0

    def best(j):
        need = T - placed
        col = order[:, j]
        free = a[col] < 0
        cost = sC[:, j]
        ok = free & np.isfinite(cost)
        d = np.where(ok, D[col], 0.0)
        cum = np.cumsum(d)
        fits = ok & (cum <= resid[j] + TOL)
        k = np.cumsum(fits)
        valid = fits & (k <= need)
        if not valid.any():
            return np.inf, None
        rows = np.flatnonzero(valid)
        csum = np.cumsum(np.where(fits, cost, 0.0))[rows]
        ratio = (csum + (0.0 if is_open[j] else ce[j])) / k[rows]
        r = ratio.min()
        last = rows[np.flatnonzero(ratio <= r + TOL * max(1.0, abs(r)))[-1]]
        return float(r), col[: last + 1][fits[: last + 1]]

    heap = []
    for j in range(M):
        r, _ = best(j)
        if np.isfinite(r):
            heap.append((r, j))
    heapq.heapify(heap)
    while placed < T and heap:
        r_old, j = heapq.heappop(heap)
        r, devs = best(j)
        if not np.isfinite(r):
            continue
        nxt = heap[0][0] if heap else np.inf
        if r > nxt + TOL * max(1.0, abs(nxt)):
            heapq.heappush(heap, (r, j))
            continue
        if is_open[j] and np.isfinite(nxt):
            # an open host: also take further fitting devices cheaper than any alternative
            col = order[:, j]
            cost = sC[:, j]
            extra = (a[col] < 0) & (cost <= nxt + TOL)
            extra[np.isin(col, devs)] = False
            if extra.any():
                cand = col[extra]
                cum = np.cumsum(D[cand]) + D[devs].sum()
                cand = cand[cum <= resid[j] + TOL][: max(0, T - placed - len(devs))]
                devs = np.concatenate([devs, cand])
        a[devs] = j
        resid[j] -= D[devs].sum()
        is_open[j] = True
        placed += len(devs)
        if placed < T:
            r2, _ = best(j)
            if np.isfinite(r2):
                heapq.heappush(heap, (r2, j))
    return Heuristic(a, _objective(a, C, ce), placed >= T, "H2", time.perf_counter() - t0)


# ----------------------------------------------------------------------------- H3


def local_search(a, D, R, C, ce, T, *, allowed=None, time_limit: float = 5.0,
                 max_rounds: int = 200) -> Heuristic:
    """H3 local search [project choice; generalises the authors' pairwise merge]. Moves, each
    accepted only if it strictly lowers (O) and keeps C1-C3: drop surplus devices; relocate a
    device to a cheaper open host with room (counting the opening cost saved when its host
    empties); exchange an unplaced device for a placed one; close a host (its devices go to
    the cheapest other open hosts with room or are dropped while above ``T``); open a closed
    host and pull the devices that gain most from it. After every improving pass the scan
    restarts from the first move (authors' defect 5 fixed)."""
    t0 = time.perf_counter()
    D, R, ce = (np.asarray(v, float) for v in (D, R, ce))
    C = _masked(np.asarray(C, float), allowed)
    N, M = C.shape
    a = drop_surplus(np.asarray(a, np.int64).copy(), D, C, ce, T)
    moves = {"relocate": 0, "exchange": 0, "close": 0, "open": 0}
    rounds = 0
    while rounds < max_rounds and time.perf_counter() - t0 < time_limit:
        rounds += 1
        improved = (_relocate(a, D, R, C, ce, moves) | _exchange(a, D, R, C, ce, moves)
                    | _close(a, D, R, C, ce, T, moves, t0, time_limit)
                    | _open(a, D, R, C, ce, moves, t0, time_limit))
        if not improved:
            break
    placed = int((a >= 0).sum())
    return Heuristic(a, _objective(a, C, ce), placed >= T, "H3", time.perf_counter() - t0,
                     moves={**moves, "rounds": rounds})


def _relocate(a, D, R, C, ce, moves) -> bool:
    M = ce.shape[0]
    load, count = _state(a, D, M)
    on = np.flatnonzero(a >= 0)
    if on.size == 0:
        return False
    open_ = count > 0
    cur = C[on, a[on]] + np.where(count[a[on]] == 1, ce[a[on]], 0.0)
    room = (R - load)[None, :] >= D[on][:, None] - TOL
    alt = np.where(room & open_[None, :], C[on], np.inf)
    alt[np.arange(on.size), a[on]] = np.inf
    j = np.argmin(alt, axis=1)
    gain = cur - alt[np.arange(on.size), j]
    cand = np.flatnonzero(gain > TOL)
    if cand.size == 0:
        return False
    done = False
    for k in cand[np.argsort(-gain[cand], kind="stable")]:
        i, src, dst = on[k], a[on[k]], j[k]
        if count[dst] == 0 or load[dst] + D[i] > R[dst] + TOL:
            continue
        g = C[i, src] + (ce[src] if count[src] == 1 else 0.0) - C[i, dst]
        if g <= TOL:
            continue
        a[i] = dst
        load[src] -= D[i]
        load[dst] += D[i]
        count[src] -= 1
        count[dst] += 1
        moves["relocate"] += 1
        done = True
    return done


def _exchange(a, D, R, C, ce, moves) -> bool:
    """Swap an unplaced device in (on an open host with room) for a placed one out."""
    M = ce.shape[0]
    load, count = _state(a, D, M)
    off = np.flatnonzero(a < 0)
    on = np.flatnonzero(a >= 0)
    if off.size == 0 or on.size == 0:
        return False
    save = C[on, a[on]] + np.where(count[a[on]] == 1, ce[a[on]], 0.0)
    worst = on[np.argsort(-save, kind="stable")]
    done = False
    for out in worst[: min(worst.size, 2000)]:
        src = a[out]
        s = C[out, src] + (ce[src] if count[src] == 1 else 0.0)
        resid = R - load
        resid_src = resid[src] + D[out]
        room = np.where(np.arange(M) == src, resid_src, resid)
        ok = (count > 0)[None, :] | (np.arange(M) == src)[None, :]
        costs = np.where(ok & (room[None, :] >= D[off][:, None] - TOL), C[off], np.inf)
        flat = int(np.argmin(costs))
        ii, jj = divmod(flat, M)
        add = costs[ii, jj]
        if count[src] == 1 and jj == src:  # src stays open: its opening cost is not saved
            add = add + ce[src]
        if not np.isfinite(add) or add >= s - TOL:
            break
        newcomer = off[ii]
        a[out] = -1
        load[src] -= D[out]
        count[src] -= 1
        a[newcomer] = jj
        load[jj] += D[newcomer]
        count[jj] += 1
        off = np.flatnonzero(a < 0)
        moves["exchange"] += 1
        done = True
    return done


def _close(a, D, R, C, ce, T, moves, t0, limit) -> bool:
    M = ce.shape[0]
    done = False
    for j in range(M):
        if time.perf_counter() - t0 > limit:
            break
        load, count = _state(a, D, M)
        if count[j] == 0:
            continue
        members = np.flatnonzero(a == j)
        members = members[np.argsort(-D[members], kind="stable")]
        resid = R - load
        others = (count > 0) & (np.arange(M) != j)
        delta = -ce[j]
        spare = int((a >= 0).sum()) - T
        need = 0
        plan = []
        for i in members:
            cost = np.where(others & (resid >= D[i] - TOL), C[i], np.inf)
            k = int(np.argmin(cost))
            if np.isfinite(cost[k]):
                plan.append((i, k))
                resid[k] -= D[i]
                delta += cost[k] - C[i, j]
            else:   # dropped; refilled below by an unplaced device when at T
                if spare > 0:
                    spare -= 1
                else:
                    need += 1
                plan.append((i, -1))
                delta -= C[i, j]
        if need and delta < -TOL:
            delta = _refill(a, D, C, resid, others, need, plan, delta)
        if delta < -TOL:
            for i, k in plan:
                a[i] = k
            moves["close"] += 1
            done = True
    return done


def _refill(a, D, C, resid, others, need, plan, delta) -> float:
    """Place ``need`` unplaced devices on open hosts (``others``) at least cost, updating
    ``resid`` and ``plan``; ``inf`` when they cannot all be placed."""
    off = np.flatnonzero(a < 0)
    if off.size < need:
        return np.inf
    cost = np.where(others[None, :] & (resid[None, :] >= D[off][:, None] - TOL), C[off], np.inf)
    best = np.argmin(cost, axis=1)
    bc = cost[np.arange(off.size), best]
    for k in np.argsort(bc, kind="stable"):
        if need == 0 or not np.isfinite(bc[k]):
            break
        if delta + bc[k] >= -TOL:   # cannot pay off any more
            return np.inf
        i, h = off[k], best[k]
        if resid[h] < D[i] - TOL:
            row = np.where(others & (resid >= D[i] - TOL), C[i], np.inf)
            h = int(np.argmin(row))
            if not np.isfinite(row[h]):
                continue
        plan.append((i, h))
        resid[h] -= D[i]
        delta += C[i, h]
        need -= 1
    return delta if need == 0 else np.inf


def _open(a, D, R, C, ce, moves, t0, limit) -> bool:
    M = ce.shape[0]
    done = False
    for j in range(M):
        if time.perf_counter() - t0 > limit:
            break
        load, count = _state(a, D, M)
        if count[j] > 0 or R[j] <= 0 and not (D == 0).any():
            continue
        on = np.flatnonzero(a >= 0)
        cur = C[on, a[on]]
        gain = cur - C[on, j]
        cand = on[gain > TOL]
        if cand.size == 0:
            continue
        g = gain[gain > TOL]
        # most gain per unit demand first (zero demand first), fill the capacity
        key = np.where(D[cand] > 0, g / np.maximum(D[cand], 1e-300), np.inf)
        order = np.argsort(-key, kind="stable")
        cand, g = cand[order], g[order]
        take = np.cumsum(D[cand]) <= R[j] + TOL
        cand, g = cand[take], g[take]
        if cand.size == 0:
            continue
        # opening cost paid; hosts emptied by the move save their opening cost
        left = count.copy()
        np.subtract.at(left, a[cand], 1)
        emptied = (left == 0) & (count > 0)
        total = g.sum() + ce[emptied].sum() - ce[j]
        if total > TOL:
            a[cand] = j
            moves["open"] += 1
            done = True
    return done


def solve_heuristic(D, R, C, ce, T, *, allowed=None, time_limit: float = 5.0) -> Heuristic:
    """The incumbent of the exact paths: H2 + H3, then the host-set moves of
    :func:`host_search` on the best start; H1 + H3 as a second start when H2 fails or the
    budget allows (it rarely wins on large instances)."""
    t0 = time.perf_counter()
    best = None
    N, M = np.shape(C)
    for build in (ratio_greedy, cheapest_first):
        if best is not None and (time.perf_counter() - t0 > time_limit / 4
                                 or N * M > 200_000):
            break
        start = build(D, R, C, ce, T, allowed=allowed)
        if not start.feasible:
            continue
        left = max(0.1, time_limit / 4 - (time.perf_counter() - t0))
        h = local_search(start.assignment, D, R, C, ce, T, allowed=allowed, time_limit=left)
        h.name = f"{start.name}+H3"
        if best is None or h.objective < best.objective - TOL:
            best = h
    if best is None:
        best = ratio_greedy(D, R, C, ce, T, allowed=allowed)
    else:
        left = max(0.1, time_limit - (time.perf_counter() - t0))
        hs = host_search(best.assignment, D, R, C, ce, T, allowed=allowed, time_limit=left)
        if hs.feasible and hs.objective < best.objective - TOL:
            hs.name = f"{best.name}+hosts"
            best = hs
    best.seconds = time.perf_counter() - t0
    return best


# ----------------------------------------------------------------------------- host sets


def _screen(vals, T):
    """Per column of ``vals`` (N x k): the sum of the ``T`` smallest entries and the margin,
    the number of entries at or below the ``T``-th smallest minus ``T``."""
    N, k = vals.shape
    if T == 0:
        return np.zeros(k), np.full(k, N)
    if T >= N:
        return vals.sum(0), np.zeros(k, np.int64)
    part = np.partition(vals, T - 1, axis=0)
    kth = part[T - 1]
    return part[:T].sum(0), (vals <= kth[None, :]).sum(0) - T


def assign_to_hosts(mask, D, R, C, T) -> np.ndarray:
    """Capacitated assignment of ``T`` devices to the open hosts ``mask``: devices in
    increasing cost of their cheapest open host (ties: smaller demand first), each to its
    cheapest open host with room (lowest index on ties). Vectorised when nobody overflows;
    a per-device pass otherwise. Returns the assignment (fewer than ``T`` placed when the
    hosts cannot take them)."""
    N, M = C.shape
    a = np.full(N, -1, dtype=np.int64)
    hosts = np.flatnonzero(mask)
    if T == 0 or hosts.size == 0:
        return a
    sub = C[:, hosts]
    arg = np.argmin(sub, axis=1)
    best = sub[np.arange(N), arg]
    ok = np.flatnonzero(np.isfinite(best))
    order = ok[np.lexsort((D[ok], best[ok]))]
    first = order[:T]
    load = np.bincount(arg[first], weights=D[first], minlength=hosts.size)
    if (load <= R[hosts] + TOL).all():
        a[first] = hosts[arg[first]]
        return a
    resid = R[hosts].astype(float).copy()
    placed = 0
    for i in order:
        row = np.where(resid >= D[i] - TOL, sub[i], np.inf)
        k = int(np.argmin(row))
        if np.isfinite(row[k]):
            a[i] = hosts[k]
            resid[k] -= D[i]
            placed += 1
            if placed == T:
                break
    return a


def host_search(a, D, R, C, ce, T, *, allowed=None, time_limit: float = 2.0,
                max_iter: int = 200, max_lp: int = 3) -> Heuristic:
    """Local search over the set of open hosts [project choice] (the host moves of H3:
    open, close and swap a pair of hosts). A set ``S`` is screened by its uncapacitated
    value ``c^e(S) + sum of the T smallest min_{j in S} C_ij`` (exact when capacity does
    not bind; all moves evaluated with numpy partitions, best screened value first) and
    accepted only if the capacitated assignment of :func:`assign_to_hosts` (or, for at most
    ``max_lp`` candidates in all where that greedy fails, :func:`lp_assign`) followed by
    the device moves of H3 strictly lowers (O). Among equal screened values, sets with more
    devices at or below the ``T``-th cheapest cost (more room for capacity) go first.
    Starts from the hosts used by ``a``."""
    t0 = time.perf_counter()
    D, R, ce = (np.asarray(v, float) for v in (D, R, ce))
    C = _masked(np.asarray(C, float), allowed)
    N, M = C.shape
    a = np.asarray(a, np.int64).copy()
    cur = _objective(a, C, ce) if int((a >= 0).sum()) >= T else np.inf
    mask = np.bincount(a[a >= 0], minlength=M) > 0
    moves = {"host_open": 0, "host_close": 0, "host_swap": 0}
    # a host that fits no device can never help
    useful = np.isfinite(C).any(0) & ((R[None, :] >= D[:, None] - TOL) & np.isfinite(C)).any(0)
    it = 0
    lps = 0
    while it < max_iter and time.perf_counter() - t0 < time_limit:
        it += 1
        S = np.flatnonzero(mask)
        out = np.flatnonzero(~mask & useful)
        if S.size:
            sub = C[:, S]
            arg = np.argmin(sub, axis=1)
            best = sub[np.arange(N), arg]
            if S.size > 1:
                part = np.partition(sub, 1, axis=1)
                second = part[:, 1]
            else:
                second = np.full(N, np.inf)
        else:
            best = np.full(N, np.inf)
            arg = np.zeros(N, np.int64)
            second = best
        ceS = ce[S].sum()
        cand = []   # (screened value, -margin, kind, drop host or -1, add host or -1)

        def screen(vals, base, kind, j, ks, cand=cand):
            v, margin = _screen(vals, T)
            cand.extend((float(v[q]) + base[q], -int(margin[q]), kind, j, int(ks[q]))
                        for q in range(len(ks)))

        if out.size:   # open one host
            screen(np.minimum(best[:, None], C[:, out]), ceS + ce[out], 0, -1, out)
        for p, j in enumerate(S):   # close one host, or swap it for a closed one
            if time.perf_counter() - t0 > time_limit:
                break
            dropped = np.where(arg == p, second, best)
            base = ceS - ce[j]
            screen(dropped[:, None], [base], 1, int(j), [-1])
            if out.size:
                screen(np.minimum(dropped[:, None], C[:, out]), base + ce[out], 2, int(j), out)
        cand = [c for c in cand if c[0] < cur - TOL]
        cand.sort()
        improved = False
        for _v, _, kind, j, k in cand[:8]:
            if time.perf_counter() - t0 > time_limit:
                break
            m2 = mask.copy()
            if j >= 0:
                m2[j] = False
            if k >= 0:
                m2[k] = True
            b = assign_to_hosts(m2, D, R, C, T)
            val = _objective(b, C, ce) if int((b >= 0).sum()) >= T else np.inf
            if val >= cur - TOL and lps < max_lp:   # tight capacities: the LP assignment
                lps += 1
                b2 = lp_assign(m2, D, R, C, ce, T)
                if b2 is not None and int((b2 >= 0).sum()) >= T:
                    v2 = _objective(b2, C, ce)
                    if v2 < val:
                        b, val = b2, v2
            if val < cur - TOL:
                left = max(0.05, min(0.5, time_limit - (time.perf_counter() - t0)))
                ls = local_search(b, D, R, C, ce, T, time_limit=left)
                if ls.objective < val - TOL and int((ls.assignment >= 0).sum()) >= T:
                    b, val = ls.assignment, ls.objective
                a, cur = b, val
                mask = np.bincount(a[a >= 0], minlength=M) > 0
                moves[("host_open", "host_close", "host_swap")[kind]] += 1
                improved = True
                break
        if not improved:
            break
    placed = int((a >= 0).sum())
    return Heuristic(a, _objective(a, C, ce), placed >= T, "H3h", time.perf_counter() - t0,
                     moves={**moves, "iterations": it})



def lp_assign(mask, D, R, C, ce, T, *, max_pairs: int = 400_000,
              cheapest_only: bool = True) -> np.ndarray | None:
    """Capacitated assignment of ``T`` devices to the open hosts ``mask`` [project choice]:
    each device may use only its cheapest open hosts (ties kept; ``cheapest_only=False``:
    any open host, for plans that pay association costs), and the LP ``min sum_ij
    (C_ij - eps) x_ij`` s.t. ``sum_j x_ij <= 1``, ``sum_i D_i x_ij <= R_j``, ``sum x >= T``
    (``eps`` half the smallest positive cost: as many cheapest devices as fit, even beyond
    ``T``, so that rounding keeps ``T``) is solved by HiGHS; its integral
    ``x_ij = 1`` are kept (a basic solution has at most ``|S|`` fractional devices), the rest
    placed greedily at their cheapest open host with room, surplus dropped. Used where the
    greedy :func:`assign_to_hosts` fails on tight capacities. ``None`` when highspy is
    missing or the LP is too large."""
    try:
        import highspy
    except ImportError:   # pragma: no cover - highspy is a runtime dependency
        return None
    N, M = C.shape
    hosts = np.flatnonzero(mask)
    if T == 0 or hosts.size == 0:
        return None
    sub = C[:, hosts]
    best = sub.min(1)
    cheap = (sub <= best[:, None] + TOL) if cheapest_only else True
    pi, pk = np.nonzero(cheap & np.isfinite(sub) & (R[hosts][None, :] >= D[:, None] - TOL))
    K = pi.size
    if K == 0 or K > max_pairs:
        return None
    S = hosts.size
    # column k has entries in rows pi[k] (single join) and N + pk[k] (capacity)
    rows = np.stack([pi, N + pk, np.full(K, N + S)], 1).ravel()
    vals = np.stack([np.ones(K), D[pi], np.ones(K)], 1).ravel()
    indptr = np.arange(0, 3 * K + 1, 3, dtype=np.int32)
    cost = sub[pi, pk].astype(float)
    pos = cost[cost > TOL]
    eps = 0.5 * float(pos.min()) if pos.size else 1.0
    inf = highspy.kHighsInf
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.passModel(K, N + S + 1, 3 * K, 1, 1, 0.0, cost - eps, np.zeros(K), np.ones(K),
                np.concatenate([np.full(N + S, -inf), [float(T)]]),
                np.concatenate([np.ones(N), R[hosts].astype(float), [inf]]),
                indptr, rows.astype(np.int32), vals, np.zeros(K, np.int32))
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    x = np.asarray(h.getSolution().col_value)
    a = np.full(N, -1, dtype=np.int64)
    one = x > 1 - 1e-6
    a[pi[one]] = hosts[pk[one]]
    placed = int(one.sum())
    if placed < T:   # the rest greedily, cheapest first, at any open host with room
        resid = R.astype(float) - np.bincount(a[a >= 0], weights=D[a >= 0], minlength=M)
        rest = np.flatnonzero((a < 0) & np.isfinite(best))
        for i in rest[np.lexsort((D[rest], best[rest]))]:
            row = np.where(mask & (resid >= D[i] - TOL), C[i], np.inf)
            j = int(np.argmin(row))
            if np.isfinite(row[j]):
                a[i] = j
                resid[j] -= D[i]
                placed += 1
                if placed >= T:
                    break
    return drop_surplus(a, D, C, ce, T)
