"""SplitGP training harness (``docs/kinds/split_learning.md``, oracles 1-9): mixing identities,
gamma extremes, agreement with the numpy reference step, threshold extremes, monotone offload
rate, determinism, and measured curves into the split optimiser."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jointopt.models import split as sm  # noqa: E402
from torch import nn  # noqa: E402

from jointopt.harness import splitgp as sg  # noqa: E402
from jointopt.harness.data import load_digits_data  # noqa: E402
from jointopt.harness.nets import BlockNet  # noqa: E402

LN10 = math.log(10)
QUICK = dict(arch="mlp", rounds=3)


@pytest.fixture(scope="module")
def data():
    return load_digits_data(test_size=0.3, val_size=1.0 / 7.0, seed=0)


@pytest.fixture(scope="module")
def runs(data):
    return sg.train_methods(sg.SplitTrainConfig(**QUICK), data=data)


def _client_blocks(run, k):
    return {n: run.params[n][k] for n in run.client_names}


def _server(run):
    return [n for n in run.params if n not in run.client_names]


# -- network accounting and split consistency -------------------------------------------------
@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_torch_networks_match_the_analytic_accounting(arch):
    layered = sg.SplitTrainConfig(arch=arch).layered()
    x = torch.rand(5, 64)
    for s in range(1, layered.n_blocks):
        net = sg.build_net(arch, s, seed=0)
        model = sg.TwoExit(net, s)
        client = sum(p.numel() for n, p in model.named_parameters()
                     if model.is_client(n) and ".heads." not in f".{n}")
        head = sum(p.numel() for p in net.head(s).parameters())
        total = sum(p.numel() for p in net.blocks.parameters())
        assert client == layered.params_client(s)
        assert head == layered.params_aux(s)
        assert total == layered.params.sum()
        h = net.client(x, s)
        assert h[0].numel() == layered.act_elems[s]
        torch.testing.assert_close(net.server(h, s), net(x), rtol=0, atol=0)


# -- one step: single graph = detach-and-inject = numpy reference -----------------------------
def _tiny(d=6, hdim=5, c=3, seed=0):
    torch.manual_seed(seed)
    blocks = [nn.Sequential(nn.Linear(d, hdim, bias=False), nn.ReLU()),
              nn.Linear(hdim, c, bias=False)]
    return BlockNet(blocks, {1: nn.Linear(hdim, c, bias=False)}).double()


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_torch_step_agrees_with_numpy_reference(gamma):
    net = _tiny()
    model = sg.TwoExit(net, 1)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 6)), rng.integers(0, 3, 8)
    ref = {"phi": net.blocks[0][0].weight.detach().numpy().T.copy(),
           "kappa": net.head(1).weight.detach().numpy().T.copy(),
           "theta": net.blocks[1].weight.detach().numpy().T.copy()}
    new_ref, info = sm.splitgp_step(ref, x, y, gamma, lr=0.2)
    P = {n: p.detach().unsqueeze(0).clone() for n, p in model.named_parameters()}
    X, Y = torch.from_numpy(x)[None], torch.from_numpy(y)[None]
    new, lc, ls = sg.sgd_step(model, P, X, Y, torch.ones(1, 8, dtype=torch.float64), gamma, 0.2)
    np.testing.assert_allclose(lc, info["loss_client"], rtol=1e-12)
    np.testing.assert_allclose(ls, info["loss_server"], rtol=1e-12)
    names = {"phi": "net.blocks.0.0.weight", "kappa": "net.heads.1.weight",
             "theta": "net.blocks.1.weight"}
    for key, name in names.items():
        np.testing.assert_allclose(new[name][0].numpy().T, new_ref[key], rtol=1e-12, atol=1e-14)
    # detach-and-inject gives the same gradients as the single graph
    grads = sg.detach_inject_grads(net, 1, torch.from_numpy(x), torch.from_numpy(y), gamma)
    for key, name in names.items():
        np.testing.assert_allclose(grads[name].numpy().T, info["grads"][key], rtol=1e-12,
                                   atol=1e-14)


@pytest.mark.parametrize("arch,cut", [("cnn", 2), ("cnn", 4), ("mlp", 1)])
def test_single_graph_equals_detach_and_inject(arch, cut, data):
    net = sg.build_net(arch, cut, seed=3).double()
    model = sg.TwoExit(net, cut)
    x = torch.as_tensor(data.X_train[:7], dtype=torch.float64)
    y = torch.as_tensor(data.y_train[:7])
    ref = sg.detach_inject_grads(net, cut, x, y, 0.4)
    P = {n: p.detach().unsqueeze(0).clone() for n, p in model.named_parameters()}
    new, _, _ = sg.sgd_step(model, P, x[None], y[None], torch.ones(1, 7, dtype=torch.float64),
                            0.4, 1.0)
    for n in P:
        torch.testing.assert_close(P[n][0] - new[n][0], ref[n], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("arch,cut", [("cnn", 1), ("cnn", 4), ("mlp", 2)])
def test_stacked_layers_equal_vmap(arch, cut):
    model = sg.TwoExit(sg.build_net(arch, cut, seed=0).double(), cut)
    assert model.fast
    g = torch.Generator().manual_seed(5)
    P = {n: p.detach().unsqueeze(0) + 0.1 * torch.randn(3, *p.shape, generator=g,
                                                          dtype=torch.float64)
         for n, p in model.named_parameters()}
    X = torch.rand(3, 4, 64, generator=g, dtype=torch.float64)
    fast = sg.stacked_forward(model, P, X, use_vmap=False)
    ref = sg.stacked_forward(model, P, X, use_vmap=True)
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_padding_rows_do_not_move_a_client():
    net = _tiny()
    model = sg.TwoExit(net, 1)
    P = {n: p.detach().unsqueeze(0).expand(2, *p.shape).clone()
         for n, p in model.named_parameters()}
    X = torch.randn(2, 4, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 4))
    mask = torch.tensor([[1.0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.float64)
    new, _, _ = sg.sgd_step(model, P, X, y, mask, 0.5, 0.3)
    alone, _, _ = sg.sgd_step(model, {n: v[:1] for n, v in P.items()}, X[:1, :2], y[:1, :2],
                              torch.ones(1, 2, dtype=torch.float64), 0.5, 0.3)
    for n in P:
        torch.testing.assert_close(new[n][1], P[n][1], rtol=0, atol=0)  # empty batch: no step
        torch.testing.assert_close(new[n][0], alone[n][0], rtol=1e-12, atol=1e-14)


# -- aggregation identities (oracles 1, 2) -------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(lam=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_mixing_preserves_weighted_mean(lam, seed):
    g = torch.Generator().manual_seed(seed)
    K = 4
    P = {"c": torch.randn(K, 3, 2, generator=g, dtype=torch.float64),
         "s": torch.randn(K, 5, generator=g, dtype=torch.float64)}
    alpha = np.random.default_rng(seed).dirichlet(np.ones(K))
    out = sg.aggregate(P, ["c"], alpha, lam, average_server=True)
    w = torch.as_tensor(alpha)
    bar = torch.tensordot(w, P["c"], dims=1)
    torch.testing.assert_close(torch.tensordot(w, out["c"], dims=1), bar, rtol=0, atol=1e-12)
    torch.testing.assert_close(out["c"], lam * P["c"] + (1 - lam) * bar, rtol=0, atol=1e-12)
    assert all(torch.equal(out["s"][0], out["s"][k]) for k in range(K))
    torch.testing.assert_close(out["s"][0], torch.tensordot(w, P["s"], dims=1))
    if lam == 1.0:
        assert torch.equal(out["c"], P["c"])


def test_lambda_zero_gives_bitwise_identical_client_sides(runs):
    me = runs["multi_exit"]
    for k in range(1, me.n_clients):
        for n in me.client_names + _server(me):
            assert np.array_equal(me.params[n][0], me.params[n][k]), n
    sgp = runs["splitgp"]  # lam = 0.2: client sides differ, server shared
    assert any(not np.array_equal(sgp.params[n][0], sgp.params[n][1]) for n in sgp.client_names)
    for n in _server(sgp):
        assert all(np.array_equal(sgp.params[n][0], sgp.params[n][k])
                   for k in range(sgp.n_clients))
    loc = runs["local"]  # no communication: every client's server part is its own
    assert any(not np.array_equal(loc.params[n][0], loc.params[n][1]) for n in _server(loc))


# -- gamma extremes (oracle 3) ------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_gamma_extremes(gamma, data):
    cfg = sg.SplitTrainConfig(arch="mlp", rounds=2, gamma=gamma, dtype="float64")
    run = sg.train(cfg, "splitgp", data=data)
    heads = [n for n in run.params if ".heads." in f".{n}"]
    frozen = heads if gamma == 0.0 else _server(run)
    moved = [n for n in run.params if n not in frozen]
    assert frozen and moved
    for n in frozen:  # zero gradient: stays at its initialization (rounding of averaging)
        np.testing.assert_allclose(run.params[n], np.broadcast_to(run.init_params[n],
                                                                  run.params[n].shape),
                                   rtol=0, atol=1e-12)
    for n in moved:
        assert not np.allclose(run.params[n][0], run.init_params[n])
    stale = run.accuracy(0.0, -1.0) if gamma == 1.0 else run.accuracy(0.0, LN10)
    assert stale < 0.3  # the untrained exit stays near chance
    loss = run.history["loss_client" if gamma == 1.0 else "loss_server"]
    assert loss.iloc[-1] < loss.iloc[0]  # the trained one learns


# -- data and test mixtures (oracle 5) ----------------------------------------------------------
def test_mixtures_follow_the_spec(runs):
    run = runs["splitgp"]
    for k in range(run.n_clients):
        assert 1 <= run.main_classes[k].size <= 2
        prev = None
        for p in sg.P_GRID:
            for split in ("val", "test"):
                r = run._split(split)
                idx, ood = r.mixture(k, p)
                n_main = int((~ood).sum())
                assert ood.sum() == round(p * n_main)
                assert np.isin(r.labels[idx[~ood]], run.main_classes[k]).all()
                assert not np.isin(r.labels[idx[ood]], run.main_classes[k]).any()
                assert n_main == np.isin(r.labels, run.main_classes[k]).sum()
            if prev is not None:  # OOD sets nested in p
                assert np.array_equal(idx[ood][:prev.size], prev)
            prev = idx[ood]
        assert run.test.mixture(k, 0.0)[1].sum() == 0


def test_accuracy_decomposes_into_main_and_ood(runs):
    for run in runs.values():
        e = run.headline_threshold()
        for k in range(run.n_clients):
            a_main = run.client_accuracy(0.0, e)[k]
            for p in (0.4, 1.0):
                rec = run.records(k, p, "test")
                n_ood, n_main = rec["is_ood"].sum(), (~rec["is_ood"]).sum()
                if run.inference == "device":
                    ok = rec["correct_server"]
                else:
                    ok = np.where(sm.offloads(rec["h"], e), rec["correct_server"],
                                  rec["correct_client"])
                a_ood = ok[rec["is_ood"]].mean()
                pp = n_ood / n_main
                assert run.client_accuracy(p, e)[k] == pytest.approx(
                    (a_main + pp * a_ood) / (1 + pp), abs=1e-12)


# -- inference: threshold extremes and monotone offload rate (oracles 6-8) ------------------------
def test_threshold_extremes(runs):
    run = runs["splitgp"]
    for p in (0.0, 0.6):
        assert np.all(run.offload_rates(p, LN10) == 0.0)
        assert np.all(run.offload_rates(p, -1.0) == 1.0)
        cc = np.mean([run.records(k, p, "test")["correct_client"].mean()
                      for k in range(run.n_clients)])
        cs = np.mean([run.records(k, p, "test")["correct_server"].mean()
                      for k in range(run.n_clients)])
        assert run.accuracy(p, LN10) == pytest.approx(cc, abs=1e-12)
        assert run.accuracy(p, -1.0) == pytest.approx(cs, abs=1e-12)
    assert np.all((run.test.h >= 0) & (run.test.h <= LN10))
    assert np.all(runs["fedavg"].offload_rates(0.5, -1.0) == 0.0)  # on device


def test_detection_rates_split_the_offload_rate(runs):
    """The offload rates among OOD and main-class samples recombine into each client's offload
    rate; the extremes offload everything / nothing; on-device methods offload nothing."""
    run = runs["splitgp"]
    for e in (-1.0, 0.4, 1.6, LN10):
        ood, main = run.detection_rates(0.6, e)
        per = [run.records(k, 0.6, "test") for k in range(run.n_clients)]
        q_ood = np.array([sm.offloads(r["h"][r["is_ood"]], e).mean() for r in per])
        q_main = np.array([sm.offloads(r["h"][~r["is_ood"]], e).mean() for r in per])
        assert (ood, main) == pytest.approx((q_ood.mean(), q_main.mean()), abs=1e-12)
        n_ood = np.array([r["is_ood"].sum() for r in per])
        n = np.array([r["is_ood"].size for r in per])
        np.testing.assert_allclose(run.offload_rates(0.6, e),
                                   (n_ood * q_ood + (n - n_ood) * q_main) / n, atol=1e-12)
    assert run.detection_rates(0.6, -1.0) == (1.0, 1.0)
    assert run.detection_rates(0.6, LN10) == (0.0, 0.0)
    assert runs["fedavg"].detection_rates(1.0, -1.0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="p must be > 0"):
        run.detection_rates(0.0, 0.4)


@settings(max_examples=30, deadline=None)
@given(e=st.lists(st.floats(-1.0, 2.5), min_size=2, max_size=6), p=st.sampled_from(sg.P_GRID))
def test_offload_rate_monotone_in_threshold(runs, e, p):
    run = runs["splitgp"]
    e = sorted(e)
    q = np.stack([run.offload_rates(p, x) for x in e])
    assert np.all(np.diff(q, axis=0) <= 0)
    link = sm.Link(f_client=1e8, f_server=1e9, rate=1e7)
    lat = sm.latency_splitgp(run.config.layered(), run.config.cut, q.mean(axis=1), link)
    assert np.all(np.diff(lat) <= 1e-15)


# -- determinism, end to end -------------------------------------------------------------------
def test_determinism(data, runs):
    again = sg.train(sg.SplitTrainConfig(**QUICK), "splitgp", data=data)
    first = runs["splitgp"]
    for n in first.params:
        assert np.array_equal(first.params[n], again.params[n])
    assert np.array_equal(first.test.h, again.test.h)
    assert first.history.equals(again.history)
    other = sg.train(sg.SplitTrainConfig(**{**QUICK, "seed": 1}), "splitgp", data=data)
    assert any(not np.array_equal(first.params[n], other.params[n]) for n in first.params)


def test_end_to_end_quick(runs):
    link = sm.Link(f_client=1e8, f_server=1e9, rate=1e7)
    frame = sg.accuracy_frame(runs.values(), link=link)
    assert set(frame["method"]) == set(sg.METHODS)
    assert frame["accuracy"].between(0, 1).all() and frame["q"].between(0, 1).all()
    table = sg.compare(frame)
    assert list(table["p"]) == list(sg.P_GRID)
    assert table["splitgp_at_or_above_all"].dtype == bool
    dev = frame[frame["method"] == "fedavg"]["latency"]
    assert np.allclose(dev, float(sm.latency_device(sm.digits_mlp(), link)))
    assert runs["splitgp"].history["loss_server"].iloc[-1] < \
        runs["splitgp"].history["loss_server"].iloc[0]
    with pytest.raises(ValueError, match="method"):
        sg.train(sg.SplitTrainConfig(**QUICK), "nope")
    with pytest.raises(ValueError, match="cut"):
        sg.SplitTrainConfig(arch="mlp", cut=4)


# -- measured curves into the optimiser ----------------------------------------------------------
def test_measured_curves_drive_the_split_solver(data):
    cuts = (1, 2)
    runs_by_cut = {s: sg.train(sg.SplitTrainConfig(arch="mlp", rounds=2, cut=s), "splitgp",
                               data=data) for s in cuts}
    K = runs_by_cut[1].n_clients
    p = np.resize([0.2, 0.6, 1.0], K)
    problem = sg.split_problem(K, cuts, ood_ratio=p, preset="digits_mlp")
    curves = sg.measured_curves(runs_by_cut, problem.clients.ood_ratio)
    assert set(curves) == set(cuts) and all(len(c) == K for c in curves.values())
    result = problem.solve(curves=curves)
    assert result.ok and result.diagnostics["curves"] == "measured"
    s = int(result.diagnostics["split"])
    run = runs_by_cut[s]
    for k, e in enumerate(result.decisions["e_th"]):
        assert e in set(curves[s][k].e)  # a measured entropy or an extreme
        rec = run.records(k, p[k], "val")
        off = sm.offloads(rec["h"], e)  # measured rates on the main and OOD parts
        q_meas = sm.mixture_rate(off[~rec["is_ood"]].mean(), off[rec["is_ood"]].mean(), p[k])
        assert curves[s][k].at(e)[0] == pytest.approx(q_meas, abs=1e-12)


def test_compare_flags_splitgp_at_or_above_every_baseline():
    import pandas as pd

    rows = []
    for seed, bump in ((0, 0.0), (1, 0.02)):
        for p, acc in ((0.0, {"local": 0.9, "fedavg": 0.8, "splitgp": 0.9}),
                       (1.0, {"local": 0.5, "fedavg": 0.8, "splitgp": 0.79})):
            rows += [{"method": m, "seed": seed, "p": p, "accuracy": a + bump}
                     for m, a in acc.items()]
    table = sg.compare(pd.DataFrame(rows))
    assert table["splitgp_at_or_above_all"].tolist() == [True, False]
    assert table["fedavg"].tolist() == pytest.approx([0.81, 0.81])
    assert table["splitgp_std"].tolist() == pytest.approx([0.01, 0.01])
    assert sg.compare(pd.DataFrame(rows), tol=0.02)["splitgp_at_or_above_all"].all()


def test_split_problem_resizes_the_scenario():
    problem = sg.split_problem(5, (1, 3), ood_ratio=0.4, preset="digits_mlp",
                               latency_budget=[1e-3] * 5)
    assert problem.n == 5 and problem.cuts == [1, 3] and problem.net.name == "digits_mlp"
    assert np.all(problem.clients.ood_ratio == 0.4)
    assert np.all(problem.clients.latency_budget == 1e-3)
