"""Deployment planner: is cross-device FL worth it, and what will it cost?

Documented in ``docs/kinds/deployment_plan.md``. :func:`plan` runs the estimates, gates and
verdict of
:mod:`jointopt.solvers.planner` on a ``deployment_plan`` scenario, then the what-if grid
(Pareto front) and the tornado; :class:`PlanResult` writes ``report.md``, ``report.json`` and
PNG figures. Every number carries a tag (measured / simulated / assumed) and a method.

    >>> from jointopt.planner import plan
    >>> result = plan("planner_example")
    >>> result.verdict, result.gates["G4"]["status"]
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from jointopt import scenarios
from jointopt.errors import ValidationError
from jointopt.solvers.base import finite_or_none
from jointopt.solvers.planner.gates import Evaluation, evaluate
from jointopt.solvers.planner.problem import DeploymentPlanProblem
from jointopt.solvers.planner.whatif import pareto_front, tornado, what_if

SCHEMA = "jointopt.planner.report/1"
SHORT = {"measured": "m", "simulated": "s", "assumed": "a"}


def _plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def _system_plan(problem) -> DeploymentPlanProblem:
    from jointopt.system import deployment_plan

    return deployment_plan(problem)


#: ``kind -> adapter(problem) -> DeploymentPlanProblem``: the kinds ``plan`` also takes
PLAN_ADAPTERS = {"edge_system": _system_plan}


def load_plan(scenario) -> DeploymentPlanProblem:
    """A ``deployment_plan`` problem from a name, a path, a dict or a problem (or from a
    problem of a kind in :data:`PLAN_ADAPTERS`, e.g. an edge system's hierarchical plan)."""
    if isinstance(scenario, DeploymentPlanProblem):
        return scenario
    problem = scenarios.from_dict(scenario) if isinstance(scenario, dict) else \
        scenarios.load(scenario)
    if problem.kind in PLAN_ADAPTERS:
        return PLAN_ADAPTERS[problem.kind](problem)
    if not isinstance(problem, DeploymentPlanProblem):
        raise ValidationError("scenario", f"plan needs a deployment_plan scenario, got kind "
                                          f"{problem.kind!r}")
    return problem


def default_grid(problem: DeploymentPlanProblem) -> dict[str, list]:
    """The what-if grid: the product of the user's lever lists (current value included)."""
    lv, tp = problem.levers, problem.training_plan
    grid: dict[str, list] = {}
    if lv.K:
        grid["training_plan.K"] = sorted({tp.K, *lv.K})
    if lv.compression_up:
        grid["model.compression_up"] = sorted({problem.model.compression_up,
                                               *lv.compression_up})
    if lv.windows:
        ws = [sorted(set(w)) for w in lv.windows]
        cur = sorted(set(tp.windows))
        grid["training_plan.windows"] = ws if cur in ws else [cur, *ws]
    if lv.local_epochs and tp.local_epochs is not None:
        grid["training_plan.local_epochs"] = sorted({tp.local_epochs, *lv.local_epochs})
    return grid


@dataclass
class PlanResult:
    """Verdict, gates, estimates, tables (DataFrames) and, after :meth:`write`, file paths."""

    problem: DeploymentPlanProblem
    evaluation: Evaluation
    whatif: pd.DataFrame
    pareto: pd.DataFrame
    tornado: pd.DataFrame
    figures: list[Path] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return self.evaluation.verdict

    @property
    def gates(self) -> dict[str, dict]:
        return self.evaluation.gates

    @property
    def estimates(self):
        return self.evaluation.estimates

    def per_class_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.estimates.per_class)

    # -- JSON -------------------------------------------------------------------------
    def tagged_estimates(self) -> dict:
        est = self.estimates
        out = {}
        for name, meta in est.meta.items():
            v = est.values[name]
            base = {"method": meta["method"], "unit": meta["unit"],
                    "assumed_inputs": meta["assumed_inputs"]}
            if isinstance(v, dict) and "p50" in v:
                out[name] = {q: {"value": _plain(v[q]), "tag": meta["tag"]}
                             for q in ("p50", "p90")}
                out[name].update(base)
                for extra in set(v) - {"p50", "p90"}:
                    out[name][extra] = {"value": _plain(v[extra]), "tag": meta["tag"]}
            else:
                out[name] = {"value": _plain(v), "tag": meta["tag"], **base}
        pm_ = est.per_class_meta
        out["per_class"] = {"value": _plain(est.per_class), "tag": pm_.get("tag", "assumed"),
                            "method": f"montecarlo({est.n_outer})",
                            "assumed_inputs": pm_.get("assumed_inputs", [])}
        return out

    def gates_json(self) -> dict:
        out = {}
        for g, r in self.gates.items():
            out[g] = {k: _plain(r[k]) for k in ("status", "p50", "p90", "threshold",
                                                 "threshold_field", "unit", "tag", "method",
                                                 "check", "assumed_inputs")}
            out[g]["pass"] = r["status"] in ("pass", "not_applicable")
            out[g]["checks"] = [{k: _plain(c[k]) for k in ("check", "status", "p50", "p90",
                                                          "threshold", "threshold_field", "tag",
                                                          "method")}
                                for c in r["checks"]]
            if "seed_spread" in r:
                out[g]["seed_spread"] = _plain(r["seed_spread"])
        return out

    def verdict_json(self) -> dict:
        ev = self.evaluation
        return {"value": ev.verdict, "reasons": ev.reasons,
                "conditions": [{k: c[k] for k in ("lever", "to", "gates_after")}
                               for c in ev.conditions],
                "extrapolated": [{k: x[k] for k in ("input", "value", "fitted")}
                                 for x in ev.estimates.extrapolated]}

    def to_dict(self) -> dict:
        est = self.estimates
        canon = json.dumps(self.problem.canonical_dict(), sort_keys=True, default=str)
        from jointopt import __version__

        return finite_or_none(_plain({
            "schema": SCHEMA, "scenario": self.problem.name,
            "verdict": self.verdict_json(),
            "gates": self.gates_json(),
            "estimates": self.tagged_estimates(),
            "allocation": {k: v for k, v in est.allocator.items()},
            "extrapolated": est.extrapolated, "flags": est.flags,
            "what_if": self.whatif.to_dict(orient="records"),
            "pareto": self.pareto.to_dict(orient="records"),
            "tornado": self.tornado.to_dict(orient="records"),
            "assumptions": est.assumptions,
            "repro": {"seed": est.seed, "n_mc": est.n_mc, "n_outer": est.n_outer,
                      "n_mc_grid": self.problem.monte_carlo.n_mc_grid,
                      "inputs_sha256": hashlib.sha256(canon.encode()).hexdigest(),
                      "toolkit_version": __version__,
                      "convergence_runs": est.values.get("convergence_runs", [])},
        }))

    def summary_json(self) -> dict:
        d = self.to_dict()
        return {"verdict": d["verdict"], "gates": d["gates"], "estimates": d["estimates"]}

    # -- Markdown -----------------------------------------------------------------------
    def markdown(self) -> str:
        ev, est = self.evaluation, self.estimates
        V, M = est.values, est.meta

        def t(name):
            return f"[{SHORT[M[name]['tag']]}]"

        def num(v):
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                return "n/a"
            if isinstance(v, float):
                return f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.4e}"
            return str(v)

        L = [f"# Deployment plan: {self.problem.name}", "",
             f"{self.problem.description}", "",
             f"## 1. Verdict: **{ev.verdict}**", ""]
        L += [f"- {r}" for r in ev.reasons] or ["- every gate passes at P90"]
        if ev.conditions:
            L += ["", "Conditions (one lever change from the declared lever space):", ""]
            for c in ev.conditions:
                L.append(f"- set `{c['lever']}` = `{c['to']}` -> gates: "
                         + ", ".join(f"{g} {s}" for g, s in c["gates_after"].items()))
        if est.flags:
            L += ["", "Notes and warnings:", ""] + [f"- {f}" for f in est.flags]
        L += ["", "## 2. Gates", "",
              "| gate | status | check | P50 | P90 | threshold | field | tag | method |",
              "|---|---|---|---|---|---|---|---|---|"]
        from jointopt.solvers.planner.gates import GATE_NAMES

        for g, r in self.gates.items():
            L.append(f"| {g} {GATE_NAMES[g]} | {r['status']} | {r.get('check') or ''} | "
                     f"{num(r['p50'])} | {num(r['p90'])} | {num(r['threshold'])} | "
                     f"{r['threshold_field'] or ''} | [{SHORT[r['tag']]}] | {r['method']} |")
        for g, r in self.gates.items():
            sp = r.get("seed_spread")
            if not sp:
                continue
            parts = [f"{key} {num(min(v))}-{num(max(v))}" for key, v in sp.items()
                     if key != "seeds"]
            L.append("")
            L.append(f"{g} across seeds {sp['seeds'][0]}-{sp['seeds'][-1]} (same Monte-Carlo "
                     "sizes; the gate uses seed " f"{est.seed}): " + ", ".join(parts))
        L += ["", "## 3. Estimates", "", "| estimate | P50 | P90 | unit | method |",
              "|---|---|---|---|---|"]
        for name, meta in M.items():
            v = V[name]
            if isinstance(v, dict) and "p50" in v:
                L.append(f"| {name} | {num(v['p50'])} {t(name)} | {num(v['p90'])} {t(name)} | "
                         f"{meta['unit']} | {meta['method']} |")
            elif isinstance(v, dict):
                for k, x in v.items():
                    L.append(f"| {name}.{k} | {num(x)} {t(name)} | | {meta['unit']} | "
                             f"{meta['method']} |")
            else:
                L.append(f"| {name} | {num(v)} {t(name)} | | {meta['unit']} | "
                         f"{meta['method']} |")
        if "energy_breakdown_kwh" in V:
            sv = self.problem.server
            hours = ("24 h a day" if sv.reservation == "always_on" else
                     f"{len(set(self.problem.training_plan.windows))} h a day (the training "
                     "windows)")
            L += ["", f"Energy by component (P50; server reserved {hours}, "
                      "`server.reservation = " f"\"{sv.reservation}\"`):", "",
                  "| component | kWh | share | CO2e kg |", "|---|---|---|---|"]
            co2 = V["co2e_breakdown_kg"]
            for k, kwh in V["energy_breakdown_kwh"].items():
                c = co2["server"] if k == "server" else co2["network"] if k == "network" \
                    else None
                L.append(f"| {k} | {num(kwh)} | {V['energy_share'][k]:.1%} | "
                         f"{num(c) if c is not None else ''} |")
            L.append(f"| device (all stages) | | | {num(co2['device'])} |")
        L += ["", "Per-class burden (P50 / P90 per device-day):", "",
              self.per_class_frame().to_markdown(index=False, floatfmt=".4g")
              if _has_tabulate() else self.per_class_frame().to_string(index=False)]
        al = est.allocator
        L += ["", "## 4. Joint inference", "",
              f"Slot length {num(al.get('slot_days'))} d, required participation per slot "
              f"{num(al.get('q_req'))}; fleet P95 latency {num(al.get('fleet_p95_ms'))} ms "
              f"{t('inference_p95_ms')} vs SLO {self.problem.inference.latency_slo_p95_ms:g} "
              f"ms; on-device share {num(al.get('on_device_share'))} {t('on_device_share')}.",
              ""]
        for j, name in enumerate(al.get("class", [])):
            L.append(f"- {name}: status {al['status'][j]}, q = {num(al['q'][j])}, "
                     f"mu = {num(al['mu'][j])} req/slot, arrivals {num(al['arrival'][j])}")
        L += ["", "## 5. What-if and sensitivity", "", "Pareto front (no failing gate):", ""]
        cols = [c for c in self.pareto.columns if c.startswith("param.")] + \
            [c for c in ("days_p90", "cloud_usd_p90", "co2e_kg_p90",
                         "worst_cpu_s_per_day_p90") if c in self.pareto]
        L.append(self.pareto[cols].to_string(index=False) if len(self.pareto) else "(empty)")
        L += ["", "Tornado (P90 days at low / high):", ""]
        if len(self.tornado):
            tc = [c for c in ("input", "days_p90_low", "days_p90_high", "cloud_usd_p90_low",
                              "cloud_usd_p90_high", "flips") if c in self.tornado]
            L.append(self.tornado[tc].to_string(index=False))
        L += ["", "## 6. Assumptions register", ""]
        L += [f"- `{a['field']}` = {a['value']} ({a['origin']})" for a in est.assumptions]
        for name, meta in M.items():
            if meta["tag"] == "assumed" and meta["assumed_inputs"]:
                L.append(f"- {name} depends on assumed inputs: "
                         + ", ".join(meta["assumed_inputs"][:6])
                         + (" ..." if len(meta["assumed_inputs"]) > 6 else ""))
        rep = self.to_dict()["repro"]
        L += ["", "## 7. Reproducibility", "",
              f"seed {rep['seed']}, n_mc {rep['n_mc']}, n_outer {rep['n_outer']}, n_mc_grid "
              f"{rep['n_mc_grid']}, inputs SHA-256 `{rep['inputs_sha256']}`, jointopt "
              f"{rep['toolkit_version']}, convergence runs: "
              + ", ".join(rep["convergence_runs"]), "",
              "Tags: [m] measured, [s] simulated, [a] assumed."]
        return "\n".join(L) + "\n"

    # -- files ----------------------------------------------------------------------------
    def write(self, out_dir, formats=("md", "json", "png")) -> list[Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        if "json" in formats:
            p = out / "report.json"
            p.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=False))
            paths.append(p)
        if "md" in formats:
            p = out / "report.md"
            p.write_text(self.markdown())
            paths.append(p)
        if "png" in formats:
            self.figures = plot_all(self, out)
            paths += self.figures
        return paths


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def plan(scenario="planner_example", *, n_mc: int | None = None, n_outer: int | None = None,
         seed: int | None = None, whatif_grid: dict | None = None, with_tornado: bool = True,
         with_whatif: bool = True, tornado_inputs: dict[str, list[str]] | None = None
         ) -> PlanResult:
    """Estimates, gates, verdict, what-if grid with its Pareto front, and the tornado
    (``tornado_inputs``: label -> dotted paths scaled together; default: the standard list).
    ``n_mc``, ``n_outer`` and ``seed`` override the scenario's ``monte_carlo`` fields and are
    checked by the same rules (a bad one raises ``ValidationError`` at its field).
    """
    problem = load_plan(scenario).with_monte_carlo(n_mc=n_mc, n_outer=n_outer, seed=seed)
    ev = evaluate(problem, n_mc=n_mc, n_outer=n_outer, seed=seed)
    grid = whatif_grid if whatif_grid is not None else default_grid(problem)
    # the grid and the tornado run at the plan's own sizes and seed, their base point is the
    # plan's own estimate: one plan, one number in every table
    base = ev.estimates if not ev.estimates.values.get("no_fleet") else None
    wi = what_if(problem, grid, seed=seed, base=base) if (with_whatif and grid) \
        else pd.DataFrame()
    pf = pareto_front(wi) if len(wi) else pd.DataFrame()
    tor = tornado(problem, tornado_inputs, seed=seed, base=base) if with_tornado \
        else pd.DataFrame()
    return PlanResult(problem, ev, wi, pf, tor)


def verify_des(scenario, *, rounds: int = 30, updates: int | None = None,
               replications: int = 5, seed: int = 12345):
    """Check the plan against the SimPy simulation of the same plan, scaled down to
    ``rounds`` rounds (sync) or ``updates`` accepted updates (async; default
    ``max(1000, 20 C)``, so that the start-up transient of C slots starting together stays
    within the tolerances): mean and P90 round
    time, round-failure probability (sync) or success and accepted rates (async), calendar
    days, tasks per device-day, unique participants, bytes, device-seconds and energy, each
    within its tolerance (``|planner - DES| <= max(tol, 3 SE)``); and the verdict under the
    simulated values. ``scenario``: a :class:`PlanResult` (its own estimates and verdict are
    checked) or anything :func:`plan` takes. Returns a
    :class:`~jointopt.solvers.planner.verify.DESCheck` (``.table``, ``.ok``,
    ``.verdict_des``, ``.verdict_changes``, ``.to_dict()``)."""
    from jointopt.solvers.planner.verify import des_check

    result = scenario if isinstance(scenario, PlanResult) else plan(
        scenario, with_tornado=False, with_whatif=False)
    if result.estimates.values.get("no_fleet"):
        raise ValidationError("device_classes", "no device class can train; nothing to "
                                                "simulate")
    if updates is None:
        updates = max(1000, 20 * int(result.estimates.values["C"]))
    return des_check(result.problem, result.estimates, result.verdict, rounds=rounds,
                     updates=updates, replications=replications, seed=seed)


# -- figures ------------------------------------------------------------------------------
def plot_all(result: PlanResult, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    est = result.estimates
    V = est.values
    paths = []

    def save(fig, name, left=0.12, bottom=0.16):
        p = out / name
        # fixed margins: tight_layout would double the drawing time of the report
        fig.subplots_adjust(left=left, right=0.88, bottom=bottom, top=0.92, wspace=0.35)
        fig.savefig(p, dpi=80)
        plt.close(fig)
        paths.append(p)

    if est.round_times is not None and np.isfinite(est.round_times).any():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        rt = est.round_times[np.isfinite(est.round_times)]
        ax.hist(rt, bins=50, color="tab:blue", alpha=0.7)
        for q, ls in ((50, "-"), (90, "--")):
            ax.axvline(np.percentile(rt, q), color="k", ls=ls, label=f"P{q}")
        ax.set_xlabel("effective round time (s)")
        ax.set_ylabel("Monte-Carlo rounds")
        ax.legend()
        save(fig, "round_time.png")
    if est.hourly:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        h = np.arange(24)
        ax.bar(h, est.hourly["cap"], color="tab:green", alpha=0.6, label="Cap(h) = u_max Pool(h)")
        C = V.get("C")
        if C:
            ax.axhline(C, color="k", ls="--", label=f"C = {C}")
        for hh, w in enumerate(est.hourly["window"]):
            if w:
                ax.axvspan(hh - 0.5, hh + 0.5, color="tab:orange", alpha=0.12)
        if "accepted_per_hour" in est.hourly:
            ax2 = ax.twinx()
            ax2.plot(h, est.hourly["accepted_per_hour"], "r.-", label="accepted updates/h")
            ax2.set_ylabel("accepted updates per hour")
        ax.set_xlabel("UTC hour (windows shaded)")
        ax.set_ylabel("devices")
        ax.legend(fontsize=8)
        save(fig, "pool.png")
    if "energy_breakdown_kwh" in V:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        eb = V["energy_breakdown_kwh"]
        ax.bar(list(eb), list(eb.values()), color="tab:purple")
        ax.set_ylabel("kWh (P50)")
        ax.tick_params(axis="x", rotation=30)
        save(fig, "energy.png", bottom=0.3)
    pc = est.per_class
    if pc:
        b = result.problem.budgets
        fig, axes = plt.subplots(1, 3, figsize=(10, 3.3))
        for ax, (key, bud, lab) in zip(axes, (
                ("cpu_s_per_day", b.max_cpu_s_per_device_day, "CPU s / device-day"),
                ("mb_per_day", b.max_mb_per_device_day, "MB / device-day"),
                ("battery_pct_per_day", b.max_battery_pct_per_day, "battery % / device-day")),
                strict=True):
            x = np.arange(len(pc["class"]))
            ax.bar(x - 0.2, pc[f"{key}_p50"], 0.4, label="P50")
            ax.bar(x + 0.2, pc[f"{key}_p90"], 0.4, label="P90")
            if bud is not None:
                ax.axhline(bud, color="r", ls="--", label="budget")
            ax.set_xticks(x, pc["class"], rotation=20, fontsize=8)
            ax.set_title(lab, fontsize=9)
        axes[0].legend(fontsize=7)
        save(fig, "burden.png", left=0.07, bottom=0.2)
    tor = result.tornado
    if len(tor) and "days_p90_low" in tor:
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(tor) + 1.2))
        base = tor.attrs.get("base", {}).get("days_p90", np.nan)
        y = np.arange(len(tor))[::-1]
        lo, hi = tor["days_p90_low"].to_numpy(float), tor["days_p90_high"].to_numpy(float)
        ax.barh(y, lo - base, left=base, color="tab:blue", label="low (x0.8)")
        ax.barh(y, hi - base, left=base, color="tab:red", alpha=0.7, label="high (x1.2)")
        for yy, f in zip(y, tor["flips"], strict=True):
            if f:
                ax.text(max(np.nanmax(lo), np.nanmax(hi)), yy, f" flips {f}", va="center",
                        fontsize=7)
        dl = result.problem.budgets.deadline_days
        if dl is not None:
            ax.axvline(dl, color="k", ls=":", label="deadline")
        ax.set_yticks(y, tor["input"], fontsize=8)
        ax.set_xlabel("P90 days to target")
        ax.legend(fontsize=7)
        save(fig, "tornado.png", left=0.3, bottom=0.12)
    wi = result.whatif
    if len(wi) and "days_p90" in wi:
        fig, ax = plt.subplots(figsize=(6, 3.8))
        okm = ~wi["any_fail"].fillna(True).astype(bool)
        ax.scatter(wi.loc[~okm, "days_p90"], wi.loc[~okm, "cloud_usd_p90"], c="lightgray",
                   label="a gate fails")
        ax.scatter(wi.loc[okm, "days_p90"], wi.loc[okm, "cloud_usd_p90"], c="tab:blue",
                   label="no failing gate")
        if len(result.pareto):
            ax.scatter(result.pareto["days_p90"], result.pareto["cloud_usd_p90"], s=90,
                       facecolors="none", edgecolors="r", label="Pareto front")
        ax.set_xlabel("P90 days to target")
        ax.set_ylabel("P90 cloud USD")
        ax.legend(fontsize=8)
        save(fig, "pareto.png")
    return paths


__all__ = ["PlanResult", "default_grid", "load_plan", "plan", "plot_all", "verify_des"]
