"""CIS serving-rate model on a node tree: validation, conservation (oracle O1), rescaling
(O3), generator, participation and assignment statistics (O11), data splits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jointopt.models.cis import (
    DATA_SPLITS,
    DEVICE_SHARES,
    SERVING_SPLITS,
    ServingTree,
    data_weights,
    digits_ee_costs,
    exit_sets,
    node_data_sizes,
    participation_probabilities,
    sample_assignment,
    serving_split,
    tier_shape,
    variance_proxy,
)

from jointopt.errors import ValidationError


def random_tree(seed: int, n: int, n_exits: int = 3) -> ServingTree:
    """A random valid tree: parent[i] < i, exits non-increasing away from the root,
    random arrivals and forwarded fractions."""
    rng = np.random.default_rng(seed)
    parent = np.concatenate([[-1], [rng.integers(0, i) for i in range(1, n)]]).astype(int)
    exits = np.empty(n, dtype=int)
    exits[0] = n_exits
    for i in range(1, n):
        exits[i] = rng.integers(1, exits[parent[i]] + 1)
    arrival = rng.exponential(1.0, n) * (rng.random(n) < 0.8)
    arrival[-1] += 0.5  # some traffic
    frac = rng.random(n)
    forward = np.zeros(n)
    received = arrival.copy()
    for i in range(n - 1, 0, -1):  # children have larger ids: reverse order is post-order
        forward[i] = frac[i] * received[i]
        received[parent[i]] += forward[i]
    return ServingTree(parent, exits, arrival, forward, n_exits)


# -- conservation and derived rates --------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40))
def test_served_mass_is_conserved_on_random_trees(seed, n):
    tree = random_tree(seed, n)
    a = tree.arrival.sum()
    assert np.all(tree.serving >= 0)
    assert tree.serving.sum() == pytest.approx(a, rel=1e-12)
    assert tree.exit_rates.sum() == pytest.approx(a, rel=1e-12)
    np.testing.assert_allclose(tree.received, tree.serving + tree.forward, rtol=1e-12)
    assert np.all((tree.served_fraction >= 0) & (tree.served_fraction <= 1 + 1e-12))
    assert tree.target_weights.sum() == pytest.approx(1.0, abs=1e-12)
    order = list(tree.postorder)
    assert sorted(order) == list(range(n)) and order[-1] == 0
    pos = {v: i for i, v in enumerate(order)}
    assert all(pos[c] < pos[int(tree.parent[c])] for c in range(1, n))


@pytest.mark.parametrize("nodes, shape", [(7, (2, 2)), (17, (4, 3)), (100, (9, 10))])
@pytest.mark.parametrize("share", list(SERVING_SPLITS))
def test_generated_trees_serve_the_requested_shares(nodes, shape, share):
    assert tier_shape(nodes) == shape
    tree = ServingTree.three_tier(nodes, share, total_arrival=10.0)
    d, g = shape
    assert np.bincount(tree.exits, minlength=4)[1:].tolist() == [d * g, d, 1]
    assert np.all(tree.serving >= 0)
    np.testing.assert_allclose(tree.target_weights, serving_split(share), atol=1e-12)
    assert tree.serving.sum() == pytest.approx(10.0, rel=1e-12)
    # devices of edge j are its children, in consecutive groups of g
    np.testing.assert_array_equal(tree.parent[1 + d:], np.repeat(np.arange(1, d + 1), g))


@pytest.mark.parametrize("c", [0.1, 7.3])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_target_weights_and_fractions_are_invariant_to_rate_rescaling(c, seed):
    tree = random_tree(seed, 12)
    scaled = tree.scaled(c)
    np.testing.assert_allclose(scaled.target_weights, tree.target_weights, atol=1e-12)
    np.testing.assert_allclose(scaled.served_fraction, tree.served_fraction, atol=1e-12)


def test_share_names_and_numbers_agree():
    assert serving_split(0.45) == serving_split("0.45") == (0.45, 0.35, 0.20)
    assert serving_split(1 / 3) == (1 / 3, 1 / 3, 1 / 3)
    assert set(DEVICE_SHARES) < set(SERVING_SPLITS) and "0.80*" not in DEVICE_SHARES
    with pytest.raises(ValidationError, match="device_share"):
        serving_split(0.5)
    with pytest.raises(ValidationError, match="tree.nodes"):
        tier_shape(2)


# -- validation: errors name the node -------------------------------------------------------
def _tree(parent=(-1, 0, 0, 1), exits=(3, 2, 2, 1), arrival=(0, 0, 1, 2),
          forward=(0, 1, 0.5, 1)):
    return ServingTree(np.array(parent), np.array(exits), arrival, forward, 3)


def test_the_small_tree_is_valid():
    t = _tree()
    np.testing.assert_allclose(t.received, [1.5, 1.0, 1.0, 2.0])
    np.testing.assert_allclose(t.serving, [1.5, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(t.exit_rates, [1.0, 0.5, 1.5])


@pytest.mark.parametrize("changes, field, words", [
    ({"forward": (0, 1.5, 0.5, 1)}, "nodes[1].forward", "forwards more than it receives"),
    ({"forward": (0, 1, 0.5, 2.5)}, "nodes[3].forward", "forwards more than it receives"),
    ({"forward": (0, -1, 0.5, 1)}, "nodes[1].forward", "must be >= 0"),
    ({"arrival": (0, 0, -1, 2)}, "nodes[2].arrival", "must be >= 0"),
    ({"arrival": (0, 0, 0, 0), "forward": 0}, "nodes.arrival", "positive total"),
    ({"forward": (0.5, 1, 0.5, 1)}, "nodes[0].forward", "must be 0"),
    ({"parent": (-1, 3, 0, 1)}, "nodes[1].parent", "cycle"),
    ({"parent": (-1, 0, -1, 1)}, "nodes[2].parent", "second root"),
    ({"parent": (0, 0, 0, 1)}, "nodes[0].parent", "root"),
    ({"parent": (-1, 0, 2, 1)}, "nodes[2].parent", "its own parent"),
    ({"parent": (-1, 0, 7, 1)}, "nodes[2].parent", "outside"),
    ({"exits": (3, 1, 2, 2)}, "nodes[3].exit", "parent's exit"),
    ({"exits": (4, 2, 2, 1)}, "nodes[0].exit", "must be <= 3"),
    ({"exits": (3, 2, 2, 0)}, "nodes[3].exit", "must be >= 1"),
    ({"arrival": (0, 0, 1)}, "nodes.arrival", "one entry per"),
])
def test_bad_trees_and_rates_name_the_node(changes, field, words):
    kw = {"parent": (-1, 0, 0, 1), "exits": (3, 2, 2, 1), "arrival": (0, 0, 1, 2),
          "forward": (0, 1, 0.5, 1), **changes}
    with pytest.raises(ValidationError) as exc:
        _tree(**kw)
    assert exc.value.field == field
    assert words in str(exc.value)


def test_cycle_is_found_away_from_the_first_node():
    with pytest.raises(ValidationError, match="cycle") as exc:
        ServingTree(np.array([-1, 0, 4, 2, 3]), np.array([3, 2, 1, 1, 1]), [0, 0, 1, 1, 1],
                    0.0, 3)
    assert exc.value.field in {"nodes[2].parent", "nodes[3].parent", "nodes[4].parent"}


@pytest.mark.parametrize("edges, field, words", [
    ([(1, 0), (2, 0), (3, 1), (3, 2)], "nodes[3].parent", "two parents"),
    ([(1, 0), (3, 1)], "nodes[2].parent", "no parent"),
    ([(1, 0), (2, 0), (0, 3), (3, 1)], "edges[2]", "root"),
    ([(1, 0), (2, 0), (3, 9)], "edges[2]", "outside"),
])
def test_edge_lists_that_are_not_trees_are_rejected(edges, field, words):
    with pytest.raises(ValidationError) as exc:
        ServingTree.from_edges(edges, [3, 2, 2, 1], [0, 0, 1, 2], [0, 1, 0.5, 1])
    assert exc.value.field == field and words in str(exc.value)


def test_edge_list_builds_the_same_tree():
    t = ServingTree.from_edges([(3, 1), (1, 0), (2, 0)], [3, 2, 2, 1], [0, 0, 1, 2],
                               [0, 1, 0.5, 1])
    np.testing.assert_array_equal(t.parent, _tree().parent)


def test_tree_arrays_are_read_only():
    t = _tree()
    for arr in (t.parent, t.arrival, t.serving, t.target_weights):
        with pytest.raises(ValueError):
            arr[0] = 1


# -- participation, data weights, assignment --------------------------------------------------
@pytest.mark.parametrize("pi", ["p0", "p40", (0.0, 0.2, 0.4)])
@pytest.mark.parametrize("nu", [1.0, 0.6])
def test_participation_rows_sum_to_nu_and_respect_the_host(pi, nu):
    tree = ServingTree.three_tier(17, "0.45")
    p = participation_probabilities(tree.exits, pi, nu)
    np.testing.assert_allclose(p.sum(axis=1), nu, atol=1e-15)
    e = np.arange(1, 4)
    assert np.all(p[e[None, :] > tree.exits[:, None]] == 0)  # never a larger exit
    assert np.all(p[tree.exits == 1, 0] == nu)


def test_pi_must_start_at_zero_and_be_a_probability():
    with pytest.raises(ValidationError) as exc:
        participation_probabilities([3, 2, 1], (0.1, 0.2, 0.3))
    assert exc.value.field == "training.pi[0]"
    with pytest.raises(ValidationError, match="must be <= 1") as exc:
        participation_probabilities([3, 2, 1], (0.0, 1.2, 0.3))
    assert exc.value.field == "training.pi[1]"


def test_assignment_with_pi_zero_trains_each_host_exit():
    tree = ServingTree.three_tier(17, "0.80")
    draws = sample_assignment(tree.exits, "p0", np.random.default_rng(0), size=50)
    counts = np.stack([(draws == e).sum(axis=1) for e in (1, 2, 3)], axis=1)
    np.testing.assert_array_equal(counts, np.tile([12, 4, 1], (50, 1)))


@pytest.mark.parametrize("nu", [1.0, 0.7])
def test_assignment_frequencies_match_participation_probabilities(nu):
    tree = ServingTree.three_tier(7, "0.45")
    rounds = 20_000
    draws = sample_assignment(tree.exits, "p40", np.random.default_rng(3), nu=nu, size=rounds)
    p = participation_probabilities(tree.exits, "p40", nu)
    freq = np.stack([(draws == e).mean(axis=0) for e in (1, 2, 3)], axis=1)
    se = np.sqrt(p * (1 - p) / rounds)
    assert np.all(np.abs(freq - p) <= 4 * se + 1e-12)
    np.testing.assert_allclose((draws == 0).mean(axis=0), 1 - nu, atol=0.02)


def test_data_weights_sum_to_one_per_exit_over_potential_trainers():
    tree = ServingTree.three_tier(7, "0.80")
    m = node_data_sizes(tree.exits, "2x", 1437)
    q0 = data_weights(tree.exits, m, "p0")
    np.testing.assert_allclose(q0.sum(axis=0), 1.0)
    assert np.all((q0 > 0) == (tree.exits[:, None] == np.arange(1, 4)))
    q40 = data_weights(tree.exits, m, "p40")
    # with p40 the cloud and edges also train exit 1, the cloud exit 2
    assert np.all(q40[:, 0] > 0) and np.all(q40[:3, 1] > 0) and np.all(q40[3:, 1] == 0)
    np.testing.assert_allclose(q40[:, 0], m / m.sum())


def test_variance_proxy_grows_with_fewer_trainers_and_lower_participation():
    tree = ServingTree.three_tier(17, "0.80")
    m = node_data_sizes(tree.exits, "eq", 1437)
    q = data_weights(tree.exits, m, "p0")
    v = variance_proxy(1.0, q, participation_probabilities(tree.exits, "p0"))
    assert v[0] < v[1] < v[2] and v[2] == pytest.approx(1.0)
    v_low = variance_proxy(1.0, q, participation_probabilities(tree.exits, "p0", nu=0.5))
    np.testing.assert_allclose(v_low, 2 * v)


@pytest.mark.parametrize("nodes, total", [(7, 1437), (17, 1437), (100, 7185), (100, 150)])
@pytest.mark.parametrize("split", list(DATA_SPLITS))
def test_data_splits_give_tier_totals_and_at_least_one_sample(nodes, total, split):
    tree = ServingTree.three_tier(nodes)
    m = node_data_sizes(tree.exits, split, total)
    assert m.sum() == total and m.min() >= 1
    for k in (1, 2, 3):
        tier = m[tree.exits == k]
        assert tier.max() - tier.min() <= 1  # as equal as possible within a tier
    if total >= 1000:
        shares = np.array([m[tree.exits == k].sum() for k in (3, 2, 1)]) / total
        np.testing.assert_allclose(shares, DATA_SPLITS[split], atol=1.0 / total + 1e-12)
    with pytest.raises(ValidationError, match="data.total"):
        node_data_sizes(tree.exits, split, nodes - 1)


def test_digits_costs_grow_with_depth_and_exit_sets_nest():
    c = digits_ee_costs()
    assert np.all(np.diff(c) > 0)
    x = exit_sets(3, {"b1": 1, "b2": 2, "b3": 3}, {"h1": 1, "h2": 2, "h3": 3})
    assert x["b1"] == {1, 2, 3} and x["b3"] == {3} and x["h2"] == {2}
    with pytest.raises(ValidationError, match="heads.h4"):
        exit_sets(3, {}, {"h4": 4})


@pytest.mark.parametrize("nodes", [7, 17, 100])
def test_variance_proxy_follows_the_topology(nodes):
    """Defect 4 of the authors' code: sum q^2 frozen at the 7-node value. Here it follows
    the tree: with equal device data it is 1 / #devices for the shallow exit."""
    tree = ServingTree.three_tier(nodes)
    d, g = tier_shape(nodes)
    m = np.where(tree.exits == 1, 10, 50)
    q = data_weights(tree.exits, m, "p0")
    v = variance_proxy([2.0, 1.0, 1.0], q, participation_probabilities(tree.exits, "p0"))
    np.testing.assert_allclose(v, [2.0 / (d * g), 1.0 / d, 1.0])
