"""HFLOP solvers against brute force, limiting cases and monotonicity (docs/kinds/hfl.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from instances import tiny_hfl
from jointopt.models import hfl as hm
from jointopt.solvers.hfl import generators as gen
from jointopt.solvers.hfl import heuristics as H
from jointopt.solvers.hfl.brute import brute_force
from jointopt.solvers.hfl.problem import HFLProblem

from jointopt.errors import InfeasibleError

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


tiny = tiny_hfl


def solve_or_inf(prob, **kw):
    try:
        r = prob.solve(**kw)
    except InfeasibleError:
        return math.inf, None
    assert r.status == "optimal"
    a = np.asarray(r.decisions["association"])
    ev = prob.evaluate(a)
    assert ev.feasible, ev.reason
    assert ev.objective == pytest.approx(r.objective, abs=1e-9)
    return r.objective, r


# -- T1 brute force -----------------------------------------------------------------------
@settings(max_examples=200, **SETTINGS)
@given(prob=tiny())
def test_matrix_path_matches_brute_force(prob):
    best, _ = brute_force(prob)
    got, _ = solve_or_inf(prob)
    assert got == pytest.approx(best, abs=1e-9) or (math.isinf(got) and math.isinf(best))
    plain, _ = solve_or_inf(prob, heuristics=False, reductions=False)
    assert plain == pytest.approx(best, abs=1e-9) or (math.isinf(plain) and math.isinf(best))
    if math.isfinite(best):   # T7: heuristic output passes evaluate, value >= optimum
        h = H.solve_heuristic(prob.workload, prob.capacities, prob.l * prob.cd, prob.ce,
                              prob.T)
        ev = prob.evaluate(h.assignment)
        assert ev.objective == pytest.approx(h.objective)
        if h.feasible:
            assert ev.feasible and h.objective >= best - 1e-9


@settings(max_examples=30, **SETTINGS)
@given(prob=tiny(max_n=4, max_m=3))
def test_pyomo_path_matches_brute_force(prob):
    best, _ = brute_force(prob)
    got, _ = solve_or_inf(prob, method="pyomo")
    assert got == pytest.approx(best, abs=1e-9) or (math.isinf(got) and math.isinf(best))


# -- T2 linking variants ------------------------------------------------------------------
@settings(max_examples=20, **SETTINGS)
@given(prob=tiny())
def test_linking_variants_give_equal_optima(prob):
    values = set()
    for linking in ("v1", "v2", "v3"):
        for cap_y in (True, False):
            for red in (True, False):
                v, _ = solve_or_inf(prob.replace(linking=linking, cap_times_y=cap_y),
                                    reductions=red, heuristics=red)
                values.add(round(v, 9) if math.isfinite(v) else v)
    assert len(values) == 1


# -- T8 paths agree on larger random instances ------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_pyomo_and_matrix_paths_agree(seed):
    prob = gen.generic(30 + 10 * seed, 5 + seed, seed, rho=0.7, c_max_capacity=60)
    a, _ = solve_or_inf(prob)
    b, _ = solve_or_inf(prob, method="pyomo")
    assert a == pytest.approx(b)


# -- T3 limiting cases --------------------------------------------------------------------
def test_zero_participation_costs_nothing():
    prob = gen.generic(8, 3, 1, rho=0.0)
    r = prob.solve()
    assert r.objective == 0.0 and (np.asarray(r.decisions["association"]) == -1).all()


@settings(max_examples=20, **SETTINGS)
@given(prob=tiny())
def test_ample_capacity_equals_uncapacitated(prob):
    big = prob.replace(capacities=[float(prob.workload.sum())] * prob.M)
    a, _ = solve_or_inf(big)
    b = big.solve(uncapacitated=True).objective
    assert a == pytest.approx(b)
    assert big.solve(method="pyomo", uncapacitated=True).objective == pytest.approx(b)


def test_zero_cost_lan_closed_form():
    prob = gen.generic(40, 6, 3, zero_cost_lan=True, c_max_capacity=10**4, l=2.0, c_min=1,
                       c_max=2)
    homes = np.unique(prob.homes.astype(int))
    assert prob.solve().objective == pytest.approx(prob.ce[homes].sum())


def test_all_zero_costs_give_zero():
    prob = gen.generic(10, 3, 2, rho=0.5).replace(device_costs=0.0, edge_costs=0.0)
    assert prob.solve().objective == 0.0


@pytest.mark.parametrize("R0, feasible", [(5, True), (4, False)])
def test_single_host_feasible_iff_smallest_fit(R0, feasible):
    prob = HFLProblem.from_dict({"workload": [3, 2, 9], "capacities": [R0], "device_costs": 1.0,
                                 "edge_costs": 1.0, "participation_ratio": 0.67})
    if feasible:
        assert prob.solve().objective == pytest.approx(1 + 2 * 4)
    else:
        with pytest.raises(InfeasibleError):
            prob.solve()


# -- T4 monotonicity ------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_monotone_in_rho_l_costs_capacity_and_hosts(seed):
    base = gen.generic(12, 4, seed, rho=0.5, c_max_capacity=40)

    def opt(p):
        v, _ = solve_or_inf(p)
        return v

    v0 = opt(base)
    assert opt(base.replace(participation_ratio=0.8)) >= v0 - 1e-9
    assert opt(base.replace(local_to_global_ratio=6.0)) >= v0 - 1e-9
    cd = base.cd.copy()
    cd[0, :] += 2
    assert opt(base.replace(device_costs=cd)) >= v0 - 1e-9
    ce = base.ce.copy()
    ce[1] += 3
    assert opt(base.replace(edge_costs=ce)) >= v0 - 1e-9
    R = base.capacities.copy()
    R[0] += 20
    assert opt(base.replace(capacities=R)) <= v0 + 1e-9
    more = base.replace(hosts=5, capacities=[*base.capacities, 30.0],
                        edge_costs=[*base.ce, 2.0],
                        device_costs=np.hstack([base.cd, np.full((12, 1), 1.0)]))
    assert opt(more) <= v0 + 1e-9
    scaled = base.replace(device_costs=base.cd * 3, edge_costs=base.ce * 3)
    assert opt(scaled) == pytest.approx(3 * v0)


# -- T5 infeasibility -----------------------------------------------------------------------
def test_capacity_check_names_family_and_shortfall():
    prob = HFLProblem.from_dict({"workload": [5, 5, 5], "capacities": [4, 6],
                                 "device_costs": 1.0})
    with pytest.raises(InfeasibleError) as exc:
        prob.solve()
    assert exc.value.constraint == "capacity" and exc.value.shortfall == pytest.approx(5.0)
    assert "capacity" in str(exc.value)


def test_participation_check_names_family():
    prob = HFLProblem.from_dict({"workload": [1, 50, 60], "capacities": [40, 30],
                                 "device_costs": 1.0, "participation_ratio": 1.0})
    with pytest.raises(InfeasibleError) as exc:
        prob.solve()
    assert exc.value.constraint == "participation" and "workload[2]" in str(exc.value)


@pytest.mark.parametrize("method", ["highs", "pyomo"])
def test_bin_packing_infeasible_proved_by_solver(method):
    prob = HFLProblem.from_dict({"workload": [3, 3], "capacities": [5, 1], "device_costs": 1.0})
    with pytest.raises(InfeasibleError) as exc:
        prob.solve(method=method)
    assert exc.value.constraint == "capacity" and "proved by solver" in str(exc.value)


@pytest.mark.parametrize("mult", [10, 100])
def test_testbed_overloaded_is_infeasible(mult):
    with pytest.raises(InfeasibleError):
        gen.testbed(mult).solve()


def test_heuristic_on_infeasible_gives_status_not_exception():
    h = H.solve_heuristic(np.array([3.0, 3.0]), np.array([5.0, 1.0]), np.ones((2, 2)),
                          np.ones(2), 2)
    assert not h.feasible and (h.assignment >= 0).sum() < 2


# -- T7 regression tests for the authors' heuristic defects --------------------
def test_greedy_sorts_by_demand_and_stops_at_T():        # defect 1
    D = np.array([1.0, 8.0, 2.0])
    h = H.cheapest_first(D, np.array([9.0]), np.zeros((3, 1)), np.zeros(1), 2)
    assert h.feasible and (h.assignment >= 0).sum() == 2
    assert h.assignment[1] == 0   # the big device went first and fits


def test_greedy_unplaced_device_does_not_crash_pruning():  # defect 2
    D = np.array([50.0, 1.0, 1.0])
    h = H.cheapest_first(D, np.array([5.0]), np.zeros((3, 1)), np.ones(1), 1)
    assert h.feasible and h.assignment[0] == -1 and (h.assignment >= 0).sum() == 1


def test_greedy_counts_opening_cost_and_prunes_emptied_hosts():  # defect 2
    # host 1 is a bit cheaper per device but expensive to open
    C = np.array([[1.0, 0.0], [1.0, 5.0]])
    h = H.cheapest_first(np.ones(2), np.full(2, 10.0), C, np.array([0.0, 10.0]), 2)
    assert (h.assignment == 0).all() and h.objective == 2.0
    # pruning saves the opening cost of a host that empties
    C = np.array([[0.0, 0.0], [0.0, 0.0]])
    a = H.drop_surplus(np.array([0, 1]), np.ones(2), C, np.array([1.0, 5.0]), 1)
    assert a.tolist() == [0, -1]


def test_T_is_floor_of_rho_N():                            # defect 3
    assert hm.required_participants(10, 0.29) == 2
    assert hm.required_participants(100, 0.29) == 29
    assert hm.required_participants(10, 0.7) == 7


def test_local_search_restarts_and_never_worsens():         # defect 5
    prob = gen.generic(40, 6, 5, rho=0.8, c_max_capacity=80)
    C = prob.l * prob.cd
    start = H.cheapest_first(prob.workload, prob.capacities, C, prob.ce, prob.T,
                             opening_cost=False)
    ls = H.local_search(start.assignment, prob.workload, prob.capacities, C, prob.ce, prob.T)
    assert ls.objective <= start.objective + 1e-9
    assert prob.evaluate(ls.assignment).feasible


def test_generator_seed_zero_is_a_seed():                   # defect 7
    a, b = gen.generic(5, 2, 0), gen.generic(5, 2, 0)
    assert a == b and gen.generic(5, 2, 1) != a


# -- heuristic method and gaps -----------------------------------------------------------
def test_heuristic_method_reports_valid_bound():
    prob = gen.runtime_instance(100, 10, 2)
    h = prob.solve(method="heuristic")
    opt = prob.solve()
    lb = h.diagnostics["lower_bound"]
    assert lb <= opt.objective + 1e-6 <= h.objective + 1e-6
    assert prob.evaluate(np.asarray(h.decisions["association"])).feasible


# -- host-set moves and the LP assignment ------------------------------------------------
def test_host_search_closes_a_host_and_never_worsens():
    # devices 0-2 are free on hosts 0 and 1; the start opens both: closing one saves c^e
    C = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 4.0]])
    D, R, ce = np.ones(3), np.full(2, 10.0), np.array([1.0, 2.0])
    h = H.host_search(np.array([0, 1, 0]), D, R, C, ce, 3)
    assert h.feasible and h.objective == 1.0 and (h.assignment == 0).all()
    prob = gen.runtime_instance(200, 10, 3)
    C = prob.l * prob.cd
    start = H.local_search(H.ratio_greedy(prob.workload, prob.capacities, C, prob.ce,
                                          prob.T).assignment,
                           prob.workload, prob.capacities, C, prob.ce, prob.T)
    hs = H.host_search(start.assignment, prob.workload, prob.capacities, C, prob.ce, prob.T)
    assert hs.objective <= start.objective + 1e-9
    ev = prob.evaluate(hs.assignment)
    assert ev.feasible and ev.objective == pytest.approx(hs.objective)


def test_lp_assignment_packs_where_the_greedy_does_not():
    # two hosts of capacity 4; devices 0-1 (demand 2) are free only on host 0, device 2
    # (demand 1) on both. The greedy takes device 2 first (smaller demand) onto host 0
    # (lowest index), so device 1 pays 4 on host 1; the LP packs all three at cost 0.
    D = np.array([2.0, 2.0, 1.0])
    R = np.array([4.0, 4.0])
    C = np.array([[0.0, 4.0], [0.0, 4.0], [0.0, 0.0]])
    ce = np.zeros(2)
    mask = np.ones(2, bool)
    greedy = H.assign_to_hosts(mask, D, R, C, 3)
    a = H.lp_assign(mask, D, R, C, ce, 3)
    assert a is not None and a.tolist() == [0, 0, 1]
    assert H._objective(a, C, ce) == 0.0 < H._objective(greedy, C, ce)
