"""A SimPy discrete-event simulation of a deployment plan, to validate the planner.

**Independence** (project choice, enforced by a test): this module shares only the scenario
types with the planner. It imports nothing from :mod:`jointopt.models.planner` or the
planner's estimate/gates code and draws from its own random streams; the distributions are
re-implemented here from their definitions.

Processes:

* an hour clock updating the job capacity ``Cap(h)`` and the window flag;
* sync: a selector starting ``C`` task processes per attempt, a barrier at ``K`` successes
  that aborts the rest with ``interrupt``, retries after a failed attempt, and rounds that
  start only in hours that can host ``C``;
* async: ``C`` slots refilled as tasks end, an aggregator with a buffer of ``K``, a version
  counter, and a staleness check that discards updates older than ``max_staleness``;
* every task races its stages (check-in, download, compute, upload) against dropout, crash
  and the task timeout with ``simpy.AnyOf``; counters for bytes, stage time and energy, and
  the set of devices that ran a task (each task on a device drawn uniformly from the
  campaign's eligible base, from a stream of its own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from jointopt.solvers.planner.problem import DeploymentPlanProblem

_DEFAULT_SIGMA = 0.6
_KAPPA = 3.0


@dataclass
class DESResult:
    """Counters of one replication."""

    mode: str
    elapsed_s: float = 0.0
    active_s: float = 0.0
    rounds: int = 0
    attempts: int = 0
    failed_attempts: int = 0
    round_times: list[float] = field(default_factory=list)
    tasks_started: int = 0
    successes: int = 0
    accepted: int = 0
    discarded: int = 0
    staleness: list[int] = field(default_factory=list)      # accepted updates
    staleness_all: list[int] = field(default_factory=list)  # every success
    bytes_down: float = 0.0
    bytes_up: float = 0.0
    device_s: float = 0.0
    energy_j: float = 0.0
    participants: set[int] = field(default_factory=set)  # device ids that ran a task

    @property
    def unique_participants(self) -> int:
        return len(self.participants)

    @property
    def elapsed_days(self) -> float:
        return self.elapsed_s / 86400.0

    @property
    def device_hours(self) -> float:
        return self.device_s / 3600.0


class _Plan:
    """The scenario unpacked for the simulation (own copy of the distribution definitions)."""

    def __init__(self, p: DeploymentPlanProblem):
        tp, pop, m = p.training_plan, p.population, p.model
        b = p.budgets
        keep = []
        for c in p.device_classes:
            ok = (c.peak_train_mem_mb <= c.mem_cap_frac * c.ram_mb and c.os_supported
                  and (b.max_crash_rate is None or c.crash_rate <= b.max_crash_rate)
                  and c.name not in tp.exclude_classes)
            keep.append(ok)
        cls = [c for c, k in zip(p.device_classes, keep, strict=True) if k]
        self.classes = cls
        share = np.array([c.share for c in cls])
        self.share = share / share.sum()
        self.coverage = float(sum(c.share for c, k in zip(p.device_classes, keep,
                                                          strict=True) if k))
        self.tps = [c.train_s_per_sample if c.train_s_per_sample is not None
                    else _KAPPA * c.infer_s_per_request for c in cls]
        self.sig = [c.spread_sigma if c.spread_sigma is not None else _DEFAULT_SIGMA
                    for c in cls]
        self.S_d = m.n_params * m.bytes_per_param_down / m.compression_down + m.header_bytes
        self.S_u = (m.n_params_trainable * m.bytes_per_param_up / m.compression_up
                    * m.secagg_expansion + m.header_bytes)
        self.tp = tp
        self.pop = pop
        self.K = tp.K
        self.timeout = tp.timeout_s
        self.t_ovh = tp.t_ovh_s
        sv = p.server
        self.t_agg = sv.agg_cpu_s_per_step + tp.K * sv.agg_cpu_s_per_update / sv.cores_per_instance
        # hourly capacity
        cap = np.zeros(24)
        for r in pop.regions:
            for h in range(24):
                cap[h] += r.share * r.availability[(h + r.utc_offset_h) % 24]
        self.cap = pop.u_max * pop.n_devices * pop.static_eligibility * self.coverage * cap
        self.window = np.zeros(24, bool)
        self.window[list(set(tp.windows))] = True
        # campaign base: each task runs on a device drawn uniformly from it (its own stream)
        camp = pop.campaign_unique_frac if pop.campaign_unique_frac is not None \
            else pop.daily_unique_frac
        self.n_campaign = max(1, int(round(pop.n_devices * pop.static_eligibility
                                           * self.coverage * camp)))
        self.device_rng = np.random.default_rng(0)

    def work(self, rng) -> float:
        tp = self.tp
        if tp.local_epochs is None:
            return float(tp.local_steps * tp.batch_size)
        d = tp.samples_per_client
        if d.dist == "constant":
            n = d.value
        elif d.dist == "lognormal":
            n = rng.lognormal(math.log(d.mean) - 0.5 * d.sigma ** 2, d.sigma)
        else:
            n = d.values[rng.integers(len(d.values))]
        return tp.local_epochs * n

    def draw(self, rng):
        """One task: class, stage durations, dropout time, crash time (inf if none)."""
        c = int(rng.choice(len(self.share), p=self.share))
        dc = self.classes[c]
        z = math.exp(self.sig[c] * rng.standard_normal() - 0.5 * self.sig[c] ** 2)
        b_dn = dc.bw_down_mbps * 1e6 * math.exp(dc.bw_sigma * rng.standard_normal())
        b_up = dc.bw_up_mbps * 1e6 * math.exp(dc.bw_sigma * rng.standard_normal())
        t_dn = 8 * self.S_d / b_dn
        t_cmp = self.work(rng) * self.tps[c] * z
        t_up = 8 * self.S_u / b_up
        drop = rng.exponential(self.pop.dwell_mean_s)
        crash = (self.t_ovh + t_dn + rng.random() * t_cmp) if rng.random() < dc.crash_rate \
            else math.inf
        return dc, (self.t_ovh, t_dn, t_cmp, t_up), drop, crash


def _task(env, plan: _Plan, rng, res: DESResult, on_done, power=True):
    """Race the stages against the first of dropout, crash and timeout; an interrupt aborts."""
    import simpy

    dc, stages, drop, crash = plan.draw(rng)
    limit = min(drop, crash, plan.timeout)
    start = env.now
    fail_ev = env.timeout(limit)
    watts = (0.0, dc.p_rx_w, dc.p_cpu_w, dc.p_tx_w)
    ok = False
    stage = 0
    stage_start = env.now
    try:
        for stage, dur in enumerate(stages):
            stage_start = env.now
            step = env.timeout(dur)
            got = yield simpy.AnyOf(env, [step, fail_ev])
            if step not in got:
                break
            res.energy_j += watts[stage] * dur
            if stage == 3:
                ok = True
    except simpy.Interrupt:
        pass
    if not ok:
        spent = env.now - stage_start
        res.energy_j += watts[stage] * spent
        if stage == 3 and stages[3] > 0:
            res.bytes_up += plan.S_u * spent / stages[3]
    else:
        res.bytes_up += plan.S_u
    res.device_s += env.now - start
    # charged when the task ends (tasks still in flight when the campaign stops are not):
    # every task is charged a full download
    res.tasks_started += 1
    res.bytes_down += plan.S_d
    res.participants.add(int(plan.device_rng.integers(plan.n_campaign)))
    on_done(ok, start)


def _hour_clock(env, state):
    while True:
        state["hour"] = int(env.now // 3600) % 24
        yield env.timeout(3600 - env.now % 3600)


def simulate(problem: DeploymentPlanProblem, *, rounds: int | None = None,
             updates: int | None = None, seed: int = 12345) -> DESResult:
    """One replication: ``rounds`` sync rounds or ``updates`` accepted async updates."""
    import simpy

    plan = _Plan(problem)
    rng = np.random.default_rng(seed)
    plan.device_rng = np.random.default_rng([seed, 1])
    env = simpy.Environment()
    state = {"hour": 0}
    env.process(_hour_clock(env, state))
    tp = plan.tp
    res = DESResult(mode=tp.mode)

    if tp.mode == "sync":
        if tp.C is None and tp.omega is None:
            raise ValueError("the DES needs an explicit C or omega for sync plans")
        C = tp.C if tp.C is not None else int(math.ceil(tp.omega * plan.K))
        ok_hours = plan.window & (plan.cap >= C)
        if not ok_hours.any():
            raise ValueError("no hour can host C")

        def selector():
            for _ in range(rounds):
                t_round = env.now
                while True:
                    while not ok_hours[int(env.now // 3600) % 24]:
                        yield env.timeout(3600 - env.now % 3600)
                    t0 = env.now
                    res.attempts += 1
                    box = {"succ": 0, "ended": 0}
                    barrier = env.event()

                    def done(ok, start, box=box, barrier=barrier):
                        box["ended"] += 1
                        if ok:
                            box["succ"] += 1
                            res.successes += 1
                        if not barrier.triggered and (box["succ"] >= plan.K
                                                      or box["ended"] == C):
                            barrier.succeed(box["succ"] >= plan.K)

                    procs = [env.process(_task(env, plan, rng, res, done)) for _ in range(C)]
                    closed = yield barrier
                    for pr in procs:
                        if pr.is_alive:
                            pr.interrupt()
                    yield env.timeout(0)  # let the aborted tasks record their charges
                    res.active_s += env.now - t0
                    if closed:
                        break
                    res.failed_attempts += 1
                yield env.timeout(plan.t_agg)
                res.active_s += plan.t_agg
                res.accepted += plan.K
                res.rounds += 1
                res.round_times.append(env.now - t_round)
            res.elapsed_s = env.now

        env.run(until=env.process(selector()))
        return res

    C = int(tp.C)
    agg = {"version": 0, "buffer": 0}
    finished = env.event()

    def slot(j):
        while not finished.triggered:
            h = int(env.now // 3600) % 24
            if not plan.window[h] or j >= min(C, math.floor(plan.cap[h])):
                yield env.timeout(3600 - env.now % 3600)
                continue
            v0 = agg["version"]
            out = {}

            def done(ok, start, out=out):
                out["ok"] = ok

            yield env.process(_task(env, plan, rng, res, done))
            if not out["ok"] or finished.triggered:
                continue
            res.successes += 1
            s = agg["version"] - v0
            res.staleness_all.append(s)
            if tp.max_staleness is not None and s > tp.max_staleness:
                res.discarded += 1
                continue
            res.staleness.append(s)
            res.accepted += 1
            agg["buffer"] += 1
            if agg["buffer"] >= plan.K:
                agg["buffer"] = 0
                agg["version"] += 1
            if res.accepted >= updates and not finished.triggered:
                res.elapsed_s = env.now
                finished.succeed()

    for j in range(C):
        env.process(slot(j))
    env.run(until=finished)
    return res


def replicate(problem: DeploymentPlanProblem, n: int = 5, *, rounds: int | None = None,
              updates: int | None = None, seed: int = 12345) -> list[DESResult]:
    """``n`` independent replications (seeds ``seed, seed+1, ...``)."""
    return [simulate(problem, rounds=rounds, updates=updates, seed=seed + i) for i in range(n)]
