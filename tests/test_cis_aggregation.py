"""Block-wise aggregation of CIS early-exit training on a numpy quadratic toy (S2): uniform
serving, zero weights, the pseudo-gradient, convergence to the weighted optimum, unbiasedness,
and regression tests for the authors' defects 1-3."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jointopt.models.cis import (
    ServingTree,
    data_weights,
    exit_sets,
    node_data_sizes,
    participation_probabilities,
    sample_assignment,
)
from jointopt.solvers.cis import (
    CooperativeInferenceProblem,
    aggregate,
    aggregate_stacked,
    equal_weights,
    node_coefficients,
    serving_rate_weights,
)

from jointopt.errors import ValidationError

D = 3  # dimension of each block and head


class Toy:
    """S2: f_{n,e}(w) = 1/2 sum_{b<=e} |w_b - c_{n,e,b}|^2 + 1/2 |h_e - c_{n,e,h}|^2.

    Blocks ``b1..bE`` (b used by exits >= b) and heads ``h1..hE``; local training of exit
    e is K plain gradient steps of rate eta on w^(e) only."""

    def __init__(self, tree: ServingTree, sizes, pi="p0", nu=1.0, seed=0):
        self.tree, self.E, self.N = tree, tree.n_exits, tree.n_nodes
        rng = np.random.default_rng(seed)
        self.keys = [f"b{b}" for b in range(1, self.E + 1)] + [f"h{e}"
                                                                for e in range(1, self.E + 1)]
        self.groups = exit_sets(self.E, {f"b{b}": b for b in range(1, self.E + 1)},
                                {f"h{e}": e for e in range(1, self.E + 1)})
        # centres c[n, e-1][key] (only keys of w^(e) are used)
        self.c = [[{k: rng.normal(size=D) for k in self.keys} for _ in range(self.E)]
                  for _ in range(self.N)]
        self.q = data_weights(tree.exits, sizes, pi, self.E)
        self.p = participation_probabilities(tree.exits, pi, nu, self.E)
        self.pi, self.nu = pi, nu

    def used(self, e):
        return [k for k in self.keys if e in self.groups[k]]

    def grad(self, n, e, w):
        return {k: w[k] - self.c[n][e - 1][k] for k in self.used(e)}

    def local(self, n, e, w, K, eta):
        out = {k: v.copy() for k, v in w.items()}
        for _ in range(K):
            g = self.grad(n, e, out)
            for k in g:
                out[k] = out[k] - eta * g[k]
        return out

    def centre(self, e, key):
        """c-bar_{e,key} = sum_n q_{n,e} c_{n,e,key}."""
        return sum(self.q[n, e - 1] * self.c[n][e - 1][key] for n in range(self.N))

    def optimum(self, weights):
        """Closed-form minimiser of F_weights (S2)."""
        w = {}
        for b in range(1, self.E + 1):
            es = range(b, self.E + 1)
            w[f"b{b}"] = (sum(weights[e - 1] * self.centre(e, f"b{b}") for e in es)
                          / sum(weights[e - 1] for e in es))
        for e in range(1, self.E + 1):
            w[f"h{e}"] = self.centre(e, f"h{e}")
        return w

    def init(self, seed=1):
        rng = np.random.default_rng(seed)
        return {k: rng.normal(size=D) for k in self.keys}

    def round(self, w, weights, assignment, K, eta, **kw):
        local = [None if e == 0 else self.local(n, int(e), w, K, eta)
                 for n, e in enumerate(assignment)]
        return aggregate(w, local, assignment, weights, self.q, self.p, self.groups, **kw)

    def run(self, weights, rounds, K, eta, seed=0, tol=None, **kw):
        """``rounds`` rounds, or fewer once no coordinate moves by more than ``tol``."""
        rng = np.random.default_rng(seed)
        w = self.init()
        for _ in range(rounds):
            a = sample_assignment(self.tree.exits, self.pi, rng, nu=self.nu)
            new = self.round(w, weights, a, K, eta, **kw)
            if tol is not None and max(np.abs(new[k] - w[k]).max() for k in w) < tol:
                return new
            w = new
        return w


def tree7(share="0.80"):
    return ServingTree.three_tier(7, share)


def toy7(share="0.80", split="2x", pi="p0", nu=1.0, seed=0):
    tree = tree7(share)
    return Toy(tree, node_data_sizes(tree.exits, split, 700), pi, nu, seed)


def _close(a, b, tol):
    return all(np.allclose(a[k], b[k], rtol=0, atol=tol) for k in a)


# -- O9: convex toy converges to the weighted optimum ---------------------------------------
@pytest.mark.parametrize("K, eta", [(1, 0.5), (3, 0.3), (5, 0.9)])
@pytest.mark.parametrize("block_normalize", [False, True])
def test_toy_converges_to_the_weighted_optimum(K, eta, block_normalize):
    toy = toy7("0.45")
    lam = toy.tree.target_weights
    finals = {}
    for name, weights in (("serving_rate", serving_rate_weights(toy.tree.exit_rates)),
                          ("equal", equal_weights(3))):
        w = toy.run(weights, 2000, K, eta, tol=1e-13, block_normalize=block_normalize)
        assert _close(w, toy.optimum(weights), 1e-8), name
        finals[name] = w
    # serving_rate reaches the minimiser of F_lambda; it differs from the equal mixture's
    assert _close(finals["serving_rate"], toy.optimum(lam), 1e-8)
    assert not _close(finals["serving_rate"], finals["equal"], 1e-3)


# -- O8: one full-batch step is the weighted pseudo-gradient --------------------------------
@pytest.mark.parametrize("share", ["0.05", "0.45", "0.80*"])
def test_one_step_update_is_the_weighted_pseudo_gradient(share):
    toy = toy7(share)
    weights = np.array([0.5, 0.2, 0.3])
    w = toy.init()
    eta = 0.1
    new = toy.round(w, weights, toy.tree.exits, 1, eta)
    for key in toy.keys:
        expected = np.zeros(D)
        for e in toy.groups[key]:
            grad_e = sum(toy.q[n, e - 1] * (w[key] - toy.c[n][e - 1][key])
                         for n in range(toy.N))
            expected -= eta * weights[e - 1] * grad_e
        np.testing.assert_allclose(new[key] - w[key], expected, rtol=0, atol=1e-12)


def test_cloud_contributes_and_heads_get_their_own_exit_update():
    """Defects 1 and 2: the cloud-only block moves by lambda~_3 of the cloud's local change
    (not to the cloud's result), and head e moves by exit e's weight (not a shifted one)."""
    toy = toy7()
    weights = np.array([0.6, 0.3, 0.1])
    w = toy.init()
    local = [toy.local(n, int(e), w, 2, 0.5) for n, e in enumerate(toy.tree.exits)]
    new = aggregate(w, local, toy.tree.exits, weights, toy.q, toy.p, toy.groups)
    np.testing.assert_allclose(new["b3"] - w["b3"], 0.1 * (local[0]["b3"] - w["b3"]),
                               atol=1e-14)
    assert not np.allclose(new["b3"], local[0]["b3"])
    for e in (1, 2, 3):
        members = np.flatnonzero(toy.tree.exits == e)
        change = sum(toy.q[n, e - 1] * (local[n][f"h{e}"] - w[f"h{e}"]) for n in members)
        np.testing.assert_allclose(new[f"h{e}"] - w[f"h{e}"], weights[e - 1] * change,
                                   atol=1e-14)


# -- O9b: order invariance, no aliasing -----------------------------------------------------
def test_aggregation_leaves_inputs_alone_and_ignores_node_order():
    toy = toy7("0.45", pi="p40", seed=4)
    rng = np.random.default_rng(0)
    weights = np.array([0.3, 0.3, 0.4])
    w = toy.init()
    w_before = {k: v.copy() for k, v in w.items()}
    a = sample_assignment(toy.tree.exits, "p40", rng)
    local = [toy.local(n, int(e), w, 3, 0.2) for n, e in enumerate(a)]
    local_before = [{k: v.copy() for k, v in d.items()} for d in local]
    new = aggregate(w, local, a, weights, toy.q, toy.p, toy.groups)
    for key in w:  # global copy untouched, nothing aliased
        np.testing.assert_array_equal(w[key], w_before[key])
        assert new[key] is not w[key]
        assert all(new[key] is not d[key] for d in local)
    for d, before in zip(local, local_before, strict=True):
        for key in d:
            np.testing.assert_array_equal(d[key], before[key])
    perm = rng.permutation(toy.N)
    shuffled = aggregate(w, [local[i] for i in perm], a[perm], weights, toy.q[perm],
                         toy.p[perm], toy.groups)
    assert _close(new, shuffled, 1e-14)
    # the stacked (vectorised) path gives the same update
    stacked = {k: np.stack([d[k] for d in local]) for k in w}
    vec = aggregate_stacked(w, stacked, a, weights, toy.q, toy.p, toy.groups)
    assert _close(new, vec, 1e-14)


# -- O10: unbiasedness over the random assignment -------------------------------------------
@pytest.mark.parametrize("nu", [1.0, 0.7])
def test_unbiased_weighting_has_the_full_participation_expectation(nu):
    pi = (0.0, 0.4, 0.8)
    toy = toy7("0.45", split="tiny", pi=pi, nu=nu, seed=2)
    weights = np.array([0.5, 0.3, 0.2])
    w = toy.init()
    # w_n^(e): node n's result had it trained exit e (arbitrary, fixed)
    results = {(n, e): toy.local(n, e, w, 2, 0.3) for n in range(toy.N)
               for e in range(1, int(toy.tree.exits[n]) + 1)}
    full = {}
    for key in toy.keys:
        full[key] = w[key] + sum(
            weights[e - 1] * toy.q[n, e - 1] * (results[n, e][key] - w[key])
            for e in toy.groups[key] for n in range(toy.N) if toy.q[n, e - 1] > 0)
    options = [[(e, toy.p[n, e - 1]) for e in range(1, int(toy.tree.exits[n]) + 1)
                if toy.p[n, e - 1] > 0] + ([(0, 1 - nu)] if nu < 1 else [])
               for n in range(toy.N)]
    expect = {"unbiased": {k: np.zeros(D) for k in toy.keys},
              "authors": {k: np.zeros(D) for k in toy.keys}}
    total = 0.0
    for combo in itertools.product(*options):
        a = np.array([e for e, _ in combo])
        prob = float(np.prod([pr for _, pr in combo]))
        total += prob
        local = [None if e == 0 else results[n, int(e)] for n, e in enumerate(a)]
        for rule, acc in expect.items():
            new = aggregate(w, local, a, weights, toy.q, toy.p, toy.groups, weighting=rule)
            for k in acc:
                acc[k] += prob * new[k]
    assert total == pytest.approx(1.0, abs=1e-12)
    assert _close(expect["unbiased"], full, 1e-12)
    assert not _close(expect["authors"], full, 1e-3)


def test_both_weightings_agree_without_exit_switching():
    toy = toy7("0.33", split="tiny")
    a = toy.tree.exits
    w = np.array([0.2, 0.5, 0.3])
    np.testing.assert_array_equal(node_coefficients(a, w, toy.q, toy.p, "unbiased"),
                                  node_coefficients(a, w, toy.q, toy.p, "authors"))


# -- O7: a zero weight freezes exit-only parameters ------------------------------------------
def test_zero_weight_freezes_the_exits_own_parameters():
    toy = toy7("0.80*")
    weights = serving_rate_weights(toy.tree.exit_rates)
    assert weights[1] == 0.0
    w0 = toy.init()
    w = toy.run(weights, 5, 3, 0.4)
    np.testing.assert_array_equal(w["h2"], w0["h2"])  # bitwise
    assert not np.allclose(w["b2"], w0["b2"])  # shared with exit 3: moves
    w = toy.run(weights, 5, 3, 0.4, block_normalize=True)
    np.testing.assert_array_equal(w["h2"], w0["h2"])


# -- O6: single exit is FedAvg -------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12),
       method=st.sampled_from(CooperativeInferenceProblem.methods))
def test_single_exit_is_fedavg(seed, n, method):
    rng = np.random.default_rng(seed)
    parent = [-1] + [int(rng.integers(0, i)) for i in range(1, n)]
    arrival = rng.exponential(size=n) + 0.1
    sizes = rng.integers(1, 50, n).astype(float)
    problem = CooperativeInferenceProblem.from_dict({
        "nodes": {"parent": parent, "exit": 1, "arrival": arrival.tolist(),
                  "forward": 0.0, "data_size": sizes.tolist()},
        "training": {"flops": [5.0]}})
    weights = problem.exit_weights(method)
    np.testing.assert_allclose(weights, [1.0], atol=1e-12)
    w = {"x": rng.normal(size=(2, 3)), "head": rng.normal(size=4)}
    local = [{k: rng.normal(size=v.shape) for k, v in w.items()} for _ in range(n)]
    new = aggregate(w, local, np.ones(n, int), weights, problem.data_weight,
                    problem.participation, {"x": {1}, "head": {1}})
    for k in w:
        fedavg = sum(sizes[i] / sizes.sum() * local[i][k] for i in range(n))
        np.testing.assert_allclose(new[k], fedavg, atol=1e-12)


# -- O5: uniform serving makes serving_rate identical to equal --------------------------------
def test_uniform_serving_gives_identical_runs():
    # every exit serves exactly 2 requests per unit time: bitwise equal weights
    tree = ServingTree(np.array([-1, 0, 0, 1, 2]), np.array([3, 2, 2, 1, 1]),
                       [0, 0, 0, 1, 1], [0, 0, 0, 0, 0], 3)
    tree = ServingTree(tree.parent, tree.exits, [2.0, 1.0, 1.0, 1.0, 1.0], 0.0, 3)
    sr = serving_rate_weights(tree.exit_rates)
    np.testing.assert_array_equal(sr, equal_weights(3))
    toy = Toy(tree, [30, 20, 10, 5, 5], "p40", seed=5)
    a = toy.run(sr, 8, 2, 0.3, seed=9)
    b = toy.run(equal_weights(3), 8, 2, 0.3, seed=9)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # the generator's 0.33 split gives equal weights up to rounding
    np.testing.assert_allclose(serving_rate_weights(tree7("0.33").exit_rates),
                               equal_weights(3), atol=1e-15)


# -- input checks ------------------------------------------------------------------------------
def test_aggregation_input_errors_name_the_culprit():
    toy = toy7()
    w = toy.init()
    a = toy.tree.exits
    local = [toy.local(n, int(e), w, 1, 0.1) for n, e in enumerate(a)]
    with pytest.raises(ValidationError, match="groups.b1"):
        aggregate(w, local, a, [0.3, 0.3, 0.4], toy.q, toy.p, {"h1": {1}})
    bad = list(local)
    bad[4] = None
    with pytest.raises(ValidationError) as exc:
        aggregate(w, bad, a, [0.3, 0.3, 0.4], toy.q, toy.p, toy.groups)
    assert exc.value.field.startswith("local_params[4]")
    with pytest.raises(ValidationError, match="probability 0"):
        aggregate(w, local, np.where(a == 1, 2, a), [0.3, 0.3, 0.4], toy.q, toy.p, toy.groups)
    with pytest.raises(ValidationError, match="groups.h1"):
        aggregate(w, local, a, [0.3, 0.3, 0.4], toy.q, toy.p, {**toy.groups, "h1": {4}})
    with pytest.raises(ValidationError, match="weighting"):
        aggregate(w, local, a, [0.3, 0.3, 0.4], toy.q, toy.p, toy.groups, weighting="mean")


def test_aggregation_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    toy = toy7("0.45", pi="p40")
    w = toy.init()
    a = sample_assignment(toy.tree.exits, "p40", np.random.default_rng(1))
    local = [toy.local(n, int(e), w, 2, 0.3) for n, e in enumerate(a)]
    weights = np.array([0.2, 0.5, 0.3])
    ref = aggregate(w, local, a, weights, toy.q, toy.p, toy.groups)
    tw = {k: torch.tensor(v) for k, v in w.items()}
    tl = [{k: torch.tensor(v) for k, v in d.items()} for d in local]
    out = aggregate(tw, tl, a, weights, toy.q, toy.p, toy.groups)
    for k in ref:
        assert isinstance(out[k], torch.Tensor) and out[k] is not tw[k]
        np.testing.assert_allclose(out[k].numpy(), ref[k], atol=1e-14)
