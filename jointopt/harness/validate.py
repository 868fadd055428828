"""Validation: each policy in the calibrated surrogate and in real training, side by side.

Provenance: **project choice** (``docs/kinds/joint_training_inference.md``). For one scenario
and seed:

1. the harness splits the digits across the scenario's clients (:class:`FederatedHarness`);
2. pilot runs calibrate the convergence constants and the accuracy map
   (:func:`~jointopt.harness.calibrate.calibrate`), and the calibrated problem starts at
   the measured loss ``K0`` of the initial model;
3. every policy is reset with the *calibrated* problem and drives both the surrogate
   (:func:`jointopt.surrogate.simulate`, averaged over ``surrogate_seeds`` seeds: its
   request noise is not what is being checked) and one real run, whose trained models
   answer ``serving_draws`` request streams each round (the training happens once; stream 0
   alone is what the policy observes, see :mod:`jointopt.harness.fl`), so that the real
   side's request noise is averaged too;
4. per policy: ``predicted`` (surrogate average timely accuracy), ``measured`` (fraction of
   the real run's requests, every stream pooled, answered on time and correctly),
   ``abs_error``; across
   policies: the Spearman rank correlation (``scipy.stats.spearmanr``) and the mean
   absolute error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_POLICIES = ("online", "training_first", "inference_first", "equal_split",
                    "aom_unaware", "static")

#: Request streams a validation's real runs answer per round, by engine (Flower's nodes
#: serve one stream: :class:`jointopt.flower.FlowerHarness`).
DEFAULT_SERVING_DRAWS = {"harness": 10, "flower": 1}


def resize(problem, clients: int):
    """The scenario with only its first ``clients`` clients (drawn fields kept as drawn)."""
    n = problem.clients.count
    if not 1 <= clients <= n:
        from jointopt.errors import ValidationError

        raise ValidationError("--clients", f"must be in 1..{n}, got {clients}")
    if clients == n:
        return problem
    data = problem.to_dict()
    cl = data["clients"]
    for key, value in cl.items():
        if isinstance(value, list):
            cl[key] = value[:clients]
    cl["count"] = clients
    for key in ("ebar", "Z"):
        if isinstance(data["state"].get(key), list):
            data["state"][key] = data["state"][key][:clients]
    return type(problem).from_dict(data)


def spearman(x, y) -> float:
    """Spearman rank correlation (nan with fewer than 2 points or a constant side)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def c4(n: int) -> float:
    """``E[s] / sigma`` for the sample standard deviation ``s`` (``ddof=1``) of ``n >= 2``
    normal draws: ``sqrt(2 / (n - 1)) * Gamma(n / 2) / Gamma((n - 1) / 2)`` (0.798 at
    ``n = 2``, 0.886 at 3, tending to 1)."""
    from scipy.special import gammaln

    return float(np.sqrt(2.0 / (n - 1)) * np.exp(gammaln(n / 2) - gammaln((n - 1) / 2)))


def spearman_ceiling(runs, draws: int = 4000, seed: int = 0) -> float:
    """The expected Spearman rank correlation between the true means of a few entries
    (policies) and the mean of ``R`` new runs of each: the rank agreement that a predictor
    knowing the true means exactly would score against an ``R``-run average.

    ``runs`` is an entries-by-``R`` array (``R >= 2``) of measured runs, whose replicate
    ``r`` shares its run seed across entries. Their row means stand in for the true means,
    and the noise of an ``R``-run mean is drawn as ``N(0, S / R)``, ``S`` the runs' sample
    covariance across entries: runs that share a seed share luck (initial model,
    participation, minibatches, request streams), and this keeps it, so entries whose runs
    move together are told apart by less noise than their standard deviations suggest.
    Entries with equal runs (policies that decide alike) move together and stay tied. The
    row means are spread further apart than the true means by that noise, so the estimate
    leans high. ``draws`` Monte Carlo draws of a fixed ``seed`` make it deterministic. NaN
    with fewer than two entries or replicates, or with equal row means."""
    from scipy.stats import rankdata

    runs = np.asarray(runs, dtype=float)
    if runs.ndim != 2 or runs.shape[0] < 2 or runs.shape[1] < 2:
        return float("nan")
    n, R = runs.shape
    mean = runs.mean(axis=1)
    if np.ptp(mean) == 0:
        return float("nan")
    alike, which = np.unique(runs, axis=0, return_inverse=True)  # bit-equal noise for ties
    residuals = alike - alike.mean(axis=1, keepdims=True)
    z = np.random.default_rng(seed).standard_normal((draws, R))
    noisy = mean + (z @ residuals.T / np.sqrt(R * (R - 1)))[:, which.ravel()]
    x = rankdata(mean) - (n + 1) / 2
    y = rankdata(noisy, axis=1) - (n + 1) / 2
    return float(np.mean(y @ x / (np.linalg.norm(y, axis=1) * np.linalg.norm(x))))


@dataclass
class ValidationResult:
    """``table``: one row per policy; ``rounds``: tidy per-round rows of both sides."""

    scenario: str
    seed: int
    rounds_run: int
    table: pd.DataFrame
    rounds: pd.DataFrame = field(repr=False)
    calibration: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    engine: str = "harness"
    serving_draws: int = 1
    replicates: int = 1
    pilot_runs: int = 1
    #: each policy's real runs' average timely accuracy, policies (``table``'s order) by
    #: replicates
    runs: np.ndarray | None = field(default=None, repr=False)

    @property
    def spearman(self) -> float:
        return spearman(self.table["predicted"], self.table["measured"])

    @property
    def mae(self) -> float:
        return float(self.table["abs_error"].mean())

    @property
    def noise_mae(self) -> float:
        """The mean absolute error that the real side's run-to-run noise alone would give
        (training luck and the request streams, which a replicate draws afresh): what a
        surrogate predicting each policy's true mean would score against these
        ``replicates``-run averages. Under a normal spread ``sigma`` that is
        ``sqrt(2 / pi) * sigma / sqrt(R)``, with ``sigma`` estimated per policy by its
        replicates' sample standard deviation ``measured_sd`` over ``c4(R)``, which makes it
        unbiased (:func:`c4`). It leaves out the surrogate side's own noise (its
        ``surrogate_seeds`` runs). NaN with one replicate, which cannot estimate it."""
        R = self.replicates
        if R < 2:
            return float("nan")
        sigma = self.table["measured_sd"].to_numpy(dtype=float) / c4(R)
        return float(np.sqrt(2.0 / np.pi) * np.mean(sigma) / np.sqrt(R))

    @property
    def noise_spearman(self) -> float:
        """The Spearman rank correlation that the real side's run-to-run noise alone would
        leave: what a surrogate predicting each policy's true mean would score, in
        expectation, against these ``replicates``-run averages (:func:`spearman_ceiling`
        of :attr:`runs`, which keeps the luck that runs of one seed share across policies).
        Policies whose true means lie within that noise of each other are ranked by luck,
        so a low value says the ranking cannot be checked at this number of runs, whatever
        the surrogate. It leans high: the measured means stand in for the true ones, which
        the noise spreads apart. NaN with one replicate."""
        if self.replicates < 2 or self.runs is None:
            return float("nan")
        return spearman_ceiling(self.runs)

    def noise_note(self) -> str:
        """What run-to-run noise alone would give, for a line of text ("" with one run)."""
        if self.replicates < 2:
            return ""
        return (f" (run-to-run noise alone: spearman {self.noise_spearman:.3f}, "
                f"mae {self.noise_mae:.4f})")

    def window_shares(self, bounds=None) -> pd.DataFrame:
        """Where in the run the policies differ, on each side: per window of rounds and
        policy, the window's share of the policy's run average minus the policies' mean,
        ``sum over the window's rounds of (x_policy - mean over policies) / rounds``.

        ``bounds``: the windows' first rounds, increasing from 0; the last window ends with
        the run (default: those of 0, 5, 20 and 50 that the run reaches). Columns:
        ``first``, ``last`` (rounds), ``policy``, ``predicted`` (the surrogate's expected
        timely accuracy), ``measured`` (real training's timely accuracy, its replicates'
        mean) and ``measured_expected`` (real training's expected timely accuracy: the
        served copies' accuracy times the on-time law, without the request noise). A
        policy's shares add up over the windows to its per-round average minus the
        policies' mean, and every window's shares add up to zero over the policies. A
        window where one side has large shares and the other none is where
        the surrogate misses what separates the policies."""
        from jointopt.errors import ValidationError

        T = self.rounds_run
        bounds = ([b for b in (0, 5, 20, 50) if b < T] if bounds is None
                  else [int(b) for b in bounds])
        if not bounds or bounds[0] != 0 or np.any(np.diff(bounds) <= 0) or bounds[-1] >= T:
            raise ValidationError("bounds", f"must increase from 0 and stay below the run's "
                                            f"{T} rounds, got {bounds}")
        window = np.searchsorted(bounds, np.arange(T), side="right") - 1
        sides = {"predicted": "predicted_timely_accuracy",
                 "measured": "measured_timely_accuracy",
                 "measured_expected": "measured_expected_timely_accuracy"}
        parts = []
        for key, col in sides.items():
            wide = self.rounds.pivot(index="round", columns="policy", values=col)
            wide = wide[list(self.table["policy"])]
            dev = wide.sub(wide.mean(axis=1), axis=0).groupby(window[wide.index]).sum() / T
            parts.append(dev.stack().rename(key))
        out = pd.concat(parts, axis=1).reset_index(names=["window", "policy"])
        ends = [*bounds[1:], T]
        out.insert(0, "first", [bounds[w] for w in out["window"]])
        out.insert(1, "last", [ends[w] - 1 for w in out["window"]])
        return out.drop(columns="window")

    def to_dict(self) -> dict:
        from jointopt.solvers.base import finite_or_none

        return finite_or_none({
            "scenario": self.scenario, "seed": self.seed, "rounds": self.rounds_run,
            "policies": {row.policy: {"predicted": row.predicted, "measured": row.measured,
                                      "abs_error": row.abs_error,
                                      "measured_sd": row.measured_sd,
                                      "measured_runs": (None if self.runs is None
                                                        else list(self.runs[i])),
                                      "predicted_expected": row.predicted_expected,
                                      "measured_expected": row.measured_expected}
                         for i, row in enumerate(self.table.itertuples())},
            "spearman": self.spearman, "mae": self.mae, "noise_mae": self.noise_mae,
            "noise_spearman": self.noise_spearman, "calibration": self.calibration,
            "elapsed_s": self.elapsed_s,
            "engine": self.engine, "serving_draws": self.serving_draws,
            "replicates": self.replicates, "pilot_runs": self.pilot_runs})


ENGINES = ("harness", "flower")


def describe_calibration(calibration: dict, aggregation_noise: bool = False) -> str:
    """One line of a calibration's fitted constants (a :meth:`Calibration.to_dict
    <jointopt.harness.calibrate.Calibration.to_dict>`): the recursion's, the accuracy map's
    fit, the aggregation noise where it was fitted (``aggregation_noise``: the scenario's
    ``calibration.aggregation_noise``) and the drift's growth and ageing where there is
    drift."""
    conv, acc = calibration["convergence"], calibration["accuracy"]
    return (f"a={conv['a']:.4g} b={conv['b']:.4g} c={conv['c']:.4g} "
            f"b_rel={conv['b_rel']:.4g} (r2 {conv['r2']:.3f}); accuracy map {acc['map']} "
            f"r2 {acc['r2']:.3f}"
            + (f", aggregation noise {acc['aggregation_noise']:.3g}" if aggregation_noise
               else "")
            + (f", drift growth {calibration['drift']['growth']:.4f} ageing "
               f"{calibration['drift']['ageing']:.2g}" if "drift" in calibration
               else ""))


def make_harness(problem, config=None, engine: str = "harness"):
    """The real-training engine: ``"harness"`` (in-house vmap FedAvg,
    :class:`~jointopt.harness.fl.FederatedHarness`) or ``"flower"`` (the same runs on
    Flower's Simulation Engine, :class:`jointopt.flower.FlowerHarness`; ``flower`` extra)."""
    if engine == "harness":
        from jointopt.harness.fl import FederatedHarness

        return FederatedHarness(problem, config)
    if engine == "flower":
        from jointopt.flower import FlowerHarness

        return FlowerHarness(problem, config)
    from jointopt.errors import ValidationError

    raise ValidationError("engine", f"must be one of {', '.join(ENGINES)}, got {engine!r}")


def validate(problem, policies=DEFAULT_POLICIES, *, rounds: int | None = None, seed: int = 0,
             surrogate_seeds: int = 20, config=None, pilots=None,
             closed_loop: bool | None = None, progress: bool = False,
             engine: str = "harness", accuracy_map: str | None = None,
             serving_draws: int | None = None, replicates: int = 1,
             pilot_runs: int = 1) -> ValidationResult:
    """Calibrate on pilot runs (``pilots``: default the scenario's ``calibration.pilots``,
    see :func:`~jointopt.harness.calibrate.calibrate`), then run every policy in the surrogate and
    for real (training on ``engine``, see :func:`make_harness`; pilots and policies alike).

    ``closed_loop`` (None: the scenario's ``controller.closed_loop``): whether the online
    policy re-estimates its model during the run (:mod:`jointopt.closed_loop`).
    ``accuracy_map``: the family of accuracy map calibrated (None: the scenario's
    ``accuracy.calibrate`` or its map's; see :func:`~jointopt.harness.calibrate.calibrate`).
    ``serving_draws`` (None: :data:`DEFAULT_SERVING_DRAWS` of the engine, 10 on the harness,
    1 on Flower, which refuses more): the request streams the trained models answer each
    round; it replaces ``config.serving_draws``. ``replicates``: real training runs per
    policy, averaged (run seeds :func:`replicate_seeds`; the first is ``seed``, as with one):
    the surrogate's side is an average over ``surrogate_seeds`` runs, and one real run
    carries its own training luck (its initial model, participation and SGD draws).
    ``pilot_runs``: runs of each pilot, fitted together (``repeats`` of
    :func:`~jointopt.harness.calibrate.calibrate`): the calibration inherits its pilots'
    luck in the same way."""
    import dataclasses

    from jointopt.errors import ValidationError
    from jointopt.harness.fl import HarnessConfig
    from jointopt.solvers.base import check_count, check_seed, check_size

    T = problem.simulation.rounds if rounds is None else int(rounds)
    if T < 2:
        raise ValidationError("--rounds", f"must be >= 2, got {T}")
    check_size("rounds", T, "rounds")
    check_seed("seed", seed)
    check_count("surrogate_seeds", surrogate_seeds, "seeds")
    replicates = check_count("replicates", replicates, "seeds")
    pilot_runs = check_count("pilot_runs", pilot_runs, "seeds")
    if serving_draws is None:
        serving_draws = DEFAULT_SERVING_DRAWS.get(engine, 1)
    config = dataclasses.replace(config or HarnessConfig(), serving_draws=serving_draws)
    with make_harness(problem, config, engine) as harness:
        return _validate(harness, problem, policies, T, seed, surrogate_seeds, pilots,
                         closed_loop, progress, engine, accuracy_map, replicates,
                         pilot_runs)


def replicate_seeds(seed: int, replicates: int) -> list[int]:
    """Run seeds of the real replicates of a validated ``seed``: ``seed`` itself, then
    ``seed + r * 10**9`` (mod 2**63) for ``r = 1 .. replicates - 1``."""
    return [seed, *((seed + r * 10**9) % 2**63 for r in range(1, replicates))]


def _validate(harness, problem, policies, T, seed, surrogate_seeds, pilots, closed_loop,
              progress, engine, accuracy_map, replicates, pilot_runs) -> ValidationResult:
    from jointopt.harness.calibrate import calibrate
    from jointopt.policies import make_policy
    from jointopt.surrogate import simulate

    start = time.perf_counter()
    calib = calibrate(harness, rounds=T, seed=seed, progress=progress,
                      accuracy_map=accuracy_map, repeats=pilot_runs, pilots=pilots)
    tuned = calib.apply(problem)
    if closed_loop is not None:
        tuned = tuned.replace(controller={**tuned.to_dict()["controller"],
                                          "closed_loop": bool(closed_loop)})
    rows, frames, runs = [], [], []
    for name in policies:
        sims = [simulate(tuned, make_policy(name), rounds=T, seed=seed * 1000 + s)
                for s in range(surrogate_seeds)]
        reals = [harness.run(make_policy(name), problem=tuned, rounds=T, seed=s,
                             progress=progress) for s in replicate_seeds(seed, replicates)]
        real = reals[0]

        def sim(key, sims=sims):
            return float(np.mean([r.summary[key] for r in sims]))

        def meas(key, reals=reals):
            return float(np.mean([r.summary[key] for r in reals]))

        predicted, measured = sim("avg_timely_accuracy"), meas("avg_timely_accuracy")
        runs.append([r.summary["avg_timely_accuracy"] for r in reals])
        rows.append({
            "scenario": problem.name, "policy": name, "seed": seed, "rounds": T, "engine": engine,
            "serving_draws": real.summary["serving_draws"], "replicates": replicates,
            "predicted": predicted, "measured": measured,
            "abs_error": abs(predicted - measured),
            "measured_sd": float(np.std(runs[-1], ddof=1)) if replicates > 1 else float("nan"),
            "predicted_expected": sim("expected_timely_accuracy"),
            "measured_expected": meas("expected_timely_accuracy"),
            "predicted_mean_aom": sim("mean_aom"), "measured_mean_aom": meas("mean_aom"),
            "predicted_mean_K": sim("mean_K"), "measured_mean_K": meas("mean_K"),
        })
        sim_mean = pd.concat([r.table for r in sims]).groupby("round").mean(numeric_only=True)
        real_mean = pd.concat([r.table for r in reals]).groupby("round").mean(
            numeric_only=True)
        both = pd.DataFrame({
            "round": np.arange(T),
            "predicted_K": sim_mean["K"].to_numpy(),
            "measured_K": real_mean["K"].to_numpy(),
            "predicted_timely_accuracy": sim_mean["expected_timely_accuracy"].to_numpy(),
            "measured_timely_accuracy": real_mean["timely_accuracy"].to_numpy(),
            "measured_expected_timely_accuracy":
                real_mean["expected_timely_accuracy"].to_numpy(),
        })
        for col in real.table.columns:  # a closed loop's estimates (first replicate)
            if col.startswith("est_"):
                both[f"measured_{col}"] = real.table[col].to_numpy()
        both.insert(0, "policy", name)
        frames.append(both)
    return ValidationResult(problem.name, seed, T, pd.DataFrame(rows), pd.concat(frames),
                            calib.to_dict(), time.perf_counter() - start, engine,
                            harness.config.serving_draws, replicates, pilot_runs,
                            np.array(runs))


def paired_interval(diffs, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its ``level`` confidence interval (Student t over the
    pairs; the interval is NaN with fewer than two pairs)."""
    from scipy.stats import t as student

    d = np.asarray(diffs, dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, float("nan"), float("nan")
    half = float(student.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return mean, mean - half, mean + half


@dataclass
class PairedValidation:
    """:func:`validate` on several seeds of one scenario (each seed calibrates afresh, and
    every policy of a seed shares its pilot runs, data split and random streams: the
    policies are paired by seed)."""

    scenario: str
    results: list[ValidationResult]
    reference: str = "online"

    @property
    def table(self) -> pd.DataFrame:
        return pd.concat([r.table for r in self.results], ignore_index=True)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.results]

    def _wide(self) -> dict[str, pd.DataFrame]:
        """Seed-by-policy tables of ``measured`` and ``predicted`` accuracy."""
        table = self.table
        return {side: table.pivot(index="seed", columns="policy", values=side)
                for side in ("measured", "predicted")}

    def per_seed(self) -> pd.DataFrame:
        """Spearman rank correlation and mean absolute error of each seed, beside what the
        real side's run-to-run noise alone would give (``noise_spearman`` and
        ``noise_mae``, NaN with one replicate: :attr:`ValidationResult.noise_spearman`,
        :attr:`ValidationResult.noise_mae`)."""
        return pd.DataFrame([{"seed": r.seed, "spearman": r.spearman,
                              "noise_spearman": r.noise_spearman, "mae": r.mae,
                              "noise_mae": r.noise_mae, "elapsed_s": r.elapsed_s}
                             for r in self.results])

    def gains(self, level: float = 0.95) -> pd.DataFrame:
        """The reference policy's timely accuracy minus each other policy's, paired by seed,
        in real training (``measured``) and in the surrogate (``predicted``), with
        ``level`` intervals. ``best`` marks the best baseline: the highest seed-mean measured
        accuracy. A last row, ``per-seed best``, pairs the reference with the best baseline
        of each seed (a stricter test: it takes the maximum of noisy numbers)."""
        wide = self._wide()
        others = [c for c in wide["measured"].columns if c != self.reference]
        if self.reference not in wide["measured"].columns or not others:
            raise ValueError(f"gains need {self.reference!r} and at least one other policy")
        best = wide["measured"][others].mean().idxmax()
        rows = []
        for name in [*others, "per-seed best"]:
            row = {"baseline": name, "best": name == best, "seeds": len(wide["measured"])}
            for side, frame in wide.items():
                other = (frame[others].max(axis=1) if name == "per-seed best"
                         else frame[name])
                mean, lo, hi = paired_interval(frame[self.reference] - other, level)
                row.update({f"{side}_gain": mean, f"{side}_lo": lo, f"{side}_hi": hi})
            rows.append(row)
        return pd.DataFrame(rows)

    def separated_pairs(self, level: float = 0.95) -> dict:
        """Rank agreement where real training can tell policies apart: the pairs of policies
        whose paired difference in real training has a ``level`` interval (over the seeds)
        that excludes zero (``separated``), and how many of them the surrogate orders the
        same way on average (``agree``), of ``pairs`` in all. Per-seed Spearman ranks ties
        too: where several policies score within one run's noise of each other it measures
        that noise."""
        from itertools import combinations

        wide = self._wide()
        names = list(wide["measured"].columns)
        separated = agree = 0
        for a, b in combinations(names, 2):
            diff = wide["measured"][a] - wide["measured"][b]
            mean, lo, hi = paired_interval(diff, level)
            if lo > 0 or hi < 0:
                separated += 1
                predicted = float((wide["predicted"][a] - wide["predicted"][b]).mean())
                agree += int(np.sign(predicted) == np.sign(mean))
        return {"pairs": len(names) * (len(names) - 1) // 2, "separated": separated,
                "agree": agree}

    def best_gain(self, level: float = 0.95) -> dict:
        """The row of :meth:`gains` against the best baseline, as a dict."""
        g = self.gains(level)
        return g[g["best"]].iloc[0].to_dict()

    def to_dict(self) -> dict:
        from jointopt.solvers.base import finite_or_none

        return finite_or_none({
            "scenario": self.scenario, "seeds": self.seeds,
            "gain": self.gains().to_dict(orient="records"),
            "per_seed": self.per_seed().to_dict(orient="records"),
            "separated_pairs": self.separated_pairs(),
            "results": [r.to_dict() for r in self.results]})


def validate_seeds(problem, policies=DEFAULT_POLICIES, *, seeds=(0, 1, 2, 3, 4),
                   progress: bool = False, **options) -> PairedValidation:
    """:func:`validate` on each seed (``options`` go to it); progress on stderr."""
    import sys

    results = []
    for seed in seeds:
        res = validate(problem, policies, seed=seed, progress=progress, **options)
        if progress:
            print(f"seed {seed}: {res.elapsed_s:.0f} s, spearman {res.spearman:.3f}, "
                  f"mae {res.mae:.4f}", file=sys.stderr)
        results.append(res)
    return PairedValidation(problem.name, results)


def plot_validation(tables, path) -> Path:
    """Predicted against measured average timely accuracy, one point per policy (and seed),
    with the diagonal; ``tables`` is one validation table or several (concatenated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.concat(tables) if isinstance(tables, list | tuple) else tables
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, part in table.groupby("policy", sort=False):
        ax.scatter(part["predicted"], part["measured"], label=name, s=40)
    lo = float(min(table["predicted"].min(), table["measured"].min()))
    hi = float(max(table["predicted"].max(), table["measured"].max()))
    pad = 0.05 * max(hi - lo, 1e-3)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k:", lw=1, label="predicted = measured")
    rho = spearman(table["predicted"], table["measured"])
    mae = float(table["abs_error"].mean())
    ax.set_xlabel("predicted (calibrated surrogate)")
    ax.set_ylabel("measured (real federated training)")
    ax.set_title(f"average timely accuracy: Spearman {rho:.2f}, MAE {mae:.3f}")
    return _finish(fig, ax, path)


def _finish(fig, ax, path) -> Path:
    """Legend, grid, layout; save to ``path`` and close."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_validation(result: ValidationResult, out) -> list[Path]:
    """``validation.csv`` (one row per policy), ``validation_rounds.csv``,
    ``validation_windows.csv`` (:meth:`ValidationResult.window_shares`),
    ``calibration.json`` and ``validation.png`` under ``out``."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "validation.csv", out / "validation_rounds.csv", out / "calibration.json"]
    result.table.to_csv(paths[0], index=False)
    result.rounds.to_csv(paths[1], index=False)
    paths[2].write_text(json.dumps(result.calibration, indent=2))
    paths.append(out / "validation_windows.csv")
    result.window_shares().to_csv(paths[-1], index=False)
    paths.append(plot_validation(result.table, out / "validation.png"))
    return paths


def plot_gains(paired: PairedValidation, path) -> Path:
    """Online's paired gain over each baseline with 95% intervals, real training beside the
    surrogate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = paired.gains()
    y = np.arange(len(g))
    fig, ax = plt.subplots(figsize=(6.5, 0.5 * len(g) + 1.5))
    for k, (side, color) in enumerate((("measured", "C0"), ("predicted", "C1"))):
        mean, lo, hi = g[f"{side}_gain"], g[f"{side}_lo"], g[f"{side}_hi"]
        ax.errorbar(mean, y + (k - 0.5) * 0.25, xerr=[mean - lo, hi - mean], fmt="o",
                    color=color, capsize=3,
                    label="real training" if side == "measured" else "surrogate")
    ax.axvline(0.0, color="k", lw=1)
    ax.set_yticks(y, [f"{b}{' (best)' if best else ''}" for b, best in
                      zip(g["baseline"], g["best"], strict=True)])
    ax.set_xlabel("online - baseline, average timely accuracy (95% interval)")
    ax.set_title(f"{paired.scenario}: paired over seeds {', '.join(map(str, paired.seeds))}")
    return _finish(fig, ax, path)


def write_paired(paired: PairedValidation, out) -> list[Path]:
    """``validation_all.csv`` (one row per policy and seed), ``gains.csv``,
    ``per_seed.csv``, ``windows_all.csv`` (every seed's
    :meth:`ValidationResult.window_shares`), ``validation_all.png`` and ``gains.png`` under
    ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "validation_all.csv", out / "gains.csv", out / "per_seed.csv",
             out / "windows_all.csv"]
    paired.table.to_csv(paths[0], index=False)
    paired.gains().to_csv(paths[1], index=False)
    paired.per_seed().to_csv(paths[2], index=False)
    pd.concat([r.window_shares().assign(seed=r.seed) for r in paired.results]).to_csv(
        paths[3], index=False)
    paths.append(plot_validation(paired.table, out / "validation_all.png"))
    paths.append(plot_gains(paired, out / "gains.png"))
    return paths
