"""Split inference (SplitGP): layer accounting, inference time, split-ratio bounds, offload
curves, operating curves and the shared-server queue.

Documented in ``docs/kinds/split_learning.md``. Source system: Han et al., "SplitGP", INFOCOM 2023
(arXiv
2212.08343) and its TMC 2024 extension. The paper's full text is not available to the
project: **every formula in this module is the project's reconstruction**,
consistent with the paper's abstract ([paper]: client part personalized, server part shared,
samples the client is unsure about are offloaded, an inference-time analysis bounds the
split ratio, the threshold is tuned to network resources) and with the authors' follow-up
code ([follow-up code]: natural-log entropy of the client-exit softmax, strict threshold
``H > E_th``, test mixtures built from the OOD portion ``p``). No number here is the paper's.

Pure numpy/scipy. Everything the torch harness measures enters through plain arrays:

* a network as per-block MACs, parameter counts and activation element counts
  (:class:`LayeredNetwork`; :func:`digits_cnn` and :func:`digits_mlp` are the digits
  networks, which the harness can check its torch modules against);
* per-sample validation records (entropy, main/OOD flag, client-exit and server-exit
  correctness) turned into an offload/accuracy curve by :func:`offload_curve`;
* or a synthetic entropy model (:class:`BetaEntropyModel`) for torch-free studies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from jointopt.models.checks import check_range
from jointopt.models.errors import ValidationError
from jointopt.models.queueing import mean_sojourn

# ----------------------------------------------------------------------------------------
# Layer accounting (split ratios, the digits networks) [project choice]
# ----------------------------------------------------------------------------------------


def conv2d_macs(c_in: int, c_out: int, kernel: int, h_out: int, w_out: int) -> int:
    """Multiply-accumulates of a ``kernel x kernel`` convolution (bias ignored)."""
    return int(c_in * c_out * kernel * kernel * h_out * w_out)


def conv2d_params(c_in: int, c_out: int, kernel: int) -> int:
    """Weights plus biases of a convolution."""
    return int(c_out * c_in * kernel * kernel + c_out)


def linear_macs(n_in: int, n_out: int) -> int:
    return int(n_in * n_out)


def linear_params(n_in: int, n_out: int) -> int:
    return int(n_in * n_out + n_out)


def _int_vector(name: str, value, n: int | None = None) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim != 1:
        raise ValidationError(name, f"must be a list, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValidationError(name, f"must have {n} entries, got {arr.shape[0]}")
    bad = ~(np.isfinite(arr) & (arr >= 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValidationError(f"{name}[{i}]", f"must be finite and >= 0, got {arr[i]!r}")
    arr = arr.copy()
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True)
class LayeredNetwork:
    """A network cut into ``L`` blocks; the cut ``s`` keeps blocks ``1..s`` on the client.

    ``macs[l-1]``, ``params[l-1]``: MACs and parameters of block ``l`` (conv and linear only;
    biases count as parameters, not as MACs). ``act_elems[s]``: element count of the
    activation at cut ``s`` (``act_elems[0]`` is the raw input, ``act_elems[L]`` the logits).
    ``aux_macs[s]``, ``aux_params[s]``: the client exit (auxiliary classifier) at cut ``s``;
    entries 0 and ``L`` are 0 by the end-point convention (no client part / no server part).
    FLOPs are 2 x MACs. [project choice]
    """

    macs: np.ndarray
    params: np.ndarray
    act_elems: np.ndarray
    aux_macs: np.ndarray
    aux_params: np.ndarray
    name: str = "network"

    def __post_init__(self):
        macs = _int_vector(f"{self.name}.macs", self.macs)
        n = macs.shape[0]
        if n < 1:
            raise ValidationError(f"{self.name}.macs", "must list at least one block")
        object.__setattr__(self, "macs", macs)
        object.__setattr__(self, "params", _int_vector(f"{self.name}.params", self.params, n))
        object.__setattr__(self, "act_elems",
                           _int_vector(f"{self.name}.act_elems", self.act_elems, n + 1))
        for key in ("aux_macs", "aux_params"):
            arr = _int_vector(f"{self.name}.{key}", getattr(self, key), n + 1).copy()
            arr[0] = arr[n] = 0.0  # end-point convention: no exit at s = 0 or s = L
            arr.flags.writeable = False
            object.__setattr__(self, key, arr)
        if macs.sum() <= 0:
            raise ValidationError(f"{self.name}.macs", "must not all be 0")

    @property
    def n_blocks(self) -> int:
        return int(self.macs.shape[0])

    @property
    def cuts(self) -> np.ndarray:
        """All cut indices ``0..L``."""
        return np.arange(self.n_blocks + 1)

    def _cut(self, s) -> np.ndarray:
        s = np.asarray(s)
        if not np.issubdtype(s.dtype, np.integer):
            if np.any(s != np.round(s)):
                raise ValidationError("split", f"must be an integer cut index, got {s!r}")
            s = s.astype(int)
        if np.any((s < 0) | (s > self.n_blocks)):
            raise ValidationError("split", f"must lie in 0..{self.n_blocks}, got {s!r}")
        return s

    @property
    def flops_total(self) -> float:
        """F_tot = 2 x total MACs."""
        return 2.0 * float(self.macs.sum())

    def flops_client(self, s) -> np.ndarray:
        """F_phi(s): FLOPs of blocks ``1..s``."""
        cum = np.concatenate([[0.0], np.cumsum(self.macs)])
        return 2.0 * cum[self._cut(s)]

    def flops_server(self, s) -> np.ndarray:
        """F_theta(s) = F_tot - F_phi(s)."""
        return self.flops_total - self.flops_client(s)

    def flops_aux(self, s) -> np.ndarray:
        """F_kappa(s): FLOPs of the client exit at cut ``s`` (0 at both ends)."""
        return 2.0 * self.aux_macs[self._cut(s)]

    def params_client(self, s) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(self.params)])[self._cut(s)]

    def params_server(self, s) -> np.ndarray:
        return float(self.params.sum()) - self.params_client(s)

    def params_aux(self, s) -> np.ndarray:
        return self.aux_params[self._cut(s)]

    def beta_flop(self, s) -> np.ndarray:
        """beta(s) = F_phi(s) / F_tot, the split ratio every latency formula uses."""
        return self.flops_client(s) / self.flops_total

    def beta_param(self, s) -> np.ndarray:
        """beta_P(s) = P_phi / (P_phi + P_theta) (reported only)."""
        return self.params_client(s) / float(self.params.sum())

    def beta_param_aux(self, s) -> np.ndarray:
        """beta_P+(s): P_kappa added to the client part and to the total (reported only)."""
        pk = self.params_aux(s)
        return (self.params_client(s) + pk) / (float(self.params.sum()) + pk)

    def beta_aux(self, s) -> np.ndarray:
        """beta_kappa(s) = F_kappa(s) / F_tot."""
        return self.flops_aux(s) / self.flops_total

    def act_bits(self, s, bits_per_element: float = 32.0) -> np.ndarray:
        """b_s: bits uploaded at cut ``s`` (``b_0`` is the raw input)."""
        return bits_per_element * self.act_elems[self._cut(s)]


def _aux_head(elems: int, channels: int | None, n_classes: int) -> tuple[int, int]:
    """Client exit: AdaptiveAvgPool 2x2 + Linear for a feature map with
    ``channels`` channels, Linear for a vector of ``elems`` entries. (MACs, params)."""
    n_in = 4 * channels if channels is not None else elems
    return linear_macs(n_in, n_classes), linear_params(n_in, n_classes)


def digits_cnn(n_classes: int = 10) -> LayeredNetwork:
    """``DigitsSplitCNN`` (8x8 input, padding 1, no normalization), L = 6.

    Blocks: Conv 1->16 | Conv 16->32 + MaxPool | Conv 32->32 | Conv 32->32 + MaxPool +
    Flatten | Linear 128->128 | Linear 128->C. [project choice]
    """
    macs = [conv2d_macs(1, 16, 3, 8, 8), conv2d_macs(16, 32, 3, 8, 8),
            conv2d_macs(32, 32, 3, 4, 4), conv2d_macs(32, 32, 3, 4, 4),
            linear_macs(128, 128), linear_macs(128, n_classes)]
    params = [conv2d_params(1, 16, 3), conv2d_params(16, 32, 3), conv2d_params(32, 32, 3),
              conv2d_params(32, 32, 3), linear_params(128, 128), linear_params(128, n_classes)]
    act = [64, 16 * 64, 32 * 16, 32 * 16, 128, 128, n_classes]
    chans = [None, 16, 32, 32, None, None, None]  # feature-map channels at each cut
    heads = [(0, 0)] + [_aux_head(act[s], chans[s], n_classes) for s in range(1, 6)] + [(0, 0)]
    return LayeredNetwork(macs=np.array(macs), params=np.array(params),
                          act_elems=np.array(act), aux_macs=np.array([h[0] for h in heads]),
                          aux_params=np.array([h[1] for h in heads]), name="digits_cnn")


def digits_mlp(n_classes: int = 10) -> LayeredNetwork:
    """``DigitsSplitMLP``: 64->128->128->64->C, L = 4, exit Linear(->C)."""
    dims = [64, 128, 128, 64, n_classes]
    macs = [linear_macs(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)]
    params = [linear_params(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)]
    heads = [(0, 0)] + [_aux_head(d, None, n_classes) for d in dims[1:-1]] + [(0, 0)]
    return LayeredNetwork(macs=np.array(macs), params=np.array(params), act_elems=np.array(dims),
                          aux_macs=np.array([h[0] for h in heads]),
                          aux_params=np.array([h[1] for h in heads]), name="digits_mlp")


NETWORKS = {"digits_cnn": digits_cnn, "digits_mlp": digits_mlp}

# ----------------------------------------------------------------------------------------
# Inference time [project choice]
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """Device profile of one client: client speed ``f_client`` and server speed ``f_server``
    (FLOP/s), uplink ``rate`` (bit/s), per-offload overhead ``tau0`` (s) and bits per
    activation element. Fields may be numpy arrays (one entry per client): every latency
    function broadcasts. User inputs; no paper values are known. [project choice]"""

    f_client: float | np.ndarray
    f_server: float | np.ndarray
    rate: float | np.ndarray
    tau0: float | np.ndarray = 0.0
    bits_per_element: float = 32.0


def effective_rate(net: LayeredNetwork, s, q) -> np.ndarray:
    """Offload rate with the end-point conventions: ``q = 1`` at ``s = 0`` (everything is
    offloaded, there is no client part), ``q = 0`` at ``s = L`` (no server part)."""
    s = net._cut(s)
    q = np.asarray(q, dtype=float)
    return np.where(s == 0, 1.0, np.where(s == net.n_blocks, 0.0, q))


def client_time(net: LayeredNetwork, s, link: Link) -> np.ndarray:
    """A(s) = (F_phi(s) + F_kappa(s)) / f_C: the part every sample pays."""
    return (net.flops_client(s) + net.flops_aux(s)) / np.asarray(link.f_client, float)


def offload_time(net: LayeredNetwork, s, link: Link) -> np.ndarray:
    """B(s) = b_s / R + F_theta(s) / f_S + tau_0: the extra time of one offloaded sample
    (no queueing; the shared-server model replaces F_theta/f_S by the server sojourn time)."""
    return (net.act_bits(s, link.bits_per_element) / np.asarray(link.rate, float)
            + net.flops_server(s) / np.asarray(link.f_server, float)
            + np.asarray(link.tau0, float))


def latency_splitgp(net: LayeredNetwork, s, q, link: Link) -> np.ndarray:
    """Expected per-sample latency T_SGP(s) = A(s) + q B(s) (also the multi-exit
    baseline with its own ``q``). End-point conventions via :func:`effective_rate`."""
    return client_time(net, s, link) + effective_rate(net, s, q) * offload_time(net, s, link)


def latency_device(net: LayeredNetwork, link: Link) -> np.ndarray:
    """T_dev = F_tot / f_C (local-only personalized model, FedAvg)."""
    return net.flops_total / np.asarray(link.f_client, float)


def latency_offload(net: LayeredNetwork, link: Link) -> np.ndarray:
    """T_off = b_0 / R + F_tot / f_S + tau_0 (raw input to the server)."""
    return offload_time(net, 0, link)


def latency_split(net: LayeredNetwork, s, link: Link) -> np.ndarray:
    """T_SL(s) = F_phi/f_C + b_s/R + F_theta/f_S + tau_0: plain split inference, no client
    exit, always offloading."""
    return net.flops_client(s) / np.asarray(link.f_client, float) + offload_time(net, s, link)


def scheme_latencies(net: LayeredNetwork, s, link: Link, q, q_multi_exit=None) -> dict:
    """Every comparison scheme at cut ``s``: dict name -> latency."""
    return {"on_device": latency_device(net, link), "full_offload": latency_offload(net, link),
            "split": latency_split(net, s, link),
            "multi_exit": latency_splitgp(net, s, q if q_multi_exit is None else q_multi_exit,
                                          link),
            "splitgp": latency_splitgp(net, s, q, link)}


@dataclass(frozen=True)
class Normalized:
    """Normalized quantities (all divided by t_dev = F_tot / f_C)."""

    beta: np.ndarray        # F_phi / F_tot
    beta_kappa: np.ndarray  # F_kappa / F_tot
    omega: np.ndarray       # (b_s / R + tau_0) / t_dev
    omega0: np.ndarray      # (b_0 / R + tau_0) / t_dev
    v: np.ndarray           # f_C / f_S
    t_dev: np.ndarray


def normalized(net: LayeredNetwork, s, link: Link) -> Normalized:
    t_dev = latency_device(net, link)
    rate = np.asarray(link.rate, float)
    tau0 = np.asarray(link.tau0, float)
    return Normalized(
        beta=net.beta_flop(s), beta_kappa=net.beta_aux(s),
        omega=(net.act_bits(s, link.bits_per_element) / rate + tau0) / t_dev,
        omega0=(net.act_bits(0, link.bits_per_element) / rate + tau0) / t_dev,
        v=np.asarray(link.f_client, float) / np.asarray(link.f_server, float), t_dev=t_dev)


def latency_normalized(beta, beta_kappa, q, omega, v) -> np.ndarray:
    """T~ = beta + beta_kappa + q (omega + (1 - beta) v) = T_SGP / t_dev."""
    beta, q = np.asarray(beta, float), np.asarray(q, float)
    return beta + np.asarray(beta_kappa, float) + q * (np.asarray(omega, float)
                                                      + (1.0 - beta) * np.asarray(v, float))


# ----------------------------------------------------------------------------------------
# Split-ratio bounds [project choice]
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """``beta`` beats the reference iff ``beta < value`` where ``sense == +1`` and iff
    ``beta > value`` where ``sense == -1``. Where ``q v = 1`` the comparison does not depend
    on ``beta``: ``sense = +1`` with ``value = +inf`` (always faster) or ``-inf`` (never)."""

    value: np.ndarray
    sense: np.ndarray

    def beats(self, beta) -> np.ndarray:
        beta = np.asarray(beta, float)
        return np.where(self.sense > 0, beta < self.value, beta > self.value)


def _bound(numerator, denominator) -> Bound:
    num, den = np.broadcast_arrays(np.asarray(numerator, float), np.asarray(denominator, float))
    zero = den == 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(zero, np.where(num > 0, np.inf, -np.inf), num / np.where(zero, 1.0, den))
    sense = np.where(den < 0, -1, 1)
    return Bound(value=value, sense=sense)


def beta_max(q, v, omega, beta_kappa, speedup: float = 1.0) -> Bound:
    """Bound against on-device inference: T_SGP <= T_dev / S  <=>  beta (1 - q v) <
    1/S - beta_kappa - q (omega + v). ``value = (1/S - beta_kappa - q (omega + v)) /
    (1 - q v)``; an upper bound when ``q v < 1``, a lower bound when ``q v > 1``."""
    q, v = np.asarray(q, float), np.asarray(v, float)
    num = 1.0 / speedup - np.asarray(beta_kappa, float) - q * (np.asarray(omega, float) + v)
    return _bound(num, 1.0 - q * v)


def beta_off(q, v, omega, omega0, beta_kappa) -> Bound:
    """Bound against full offloading: T_SGP < T_off  <=>  beta (1 - q v) <
    omega_0 + (1 - q) v - beta_kappa - q omega."""
    q, v = np.asarray(q, float), np.asarray(v, float)
    num = (np.asarray(omega0, float) + (1.0 - q) * v - np.asarray(beta_kappa, float)
           - q * np.asarray(omega, float))
    return _bound(num, 1.0 - q * v)


def cut_bounds(net: LayeredNetwork, link: Link, q, cuts=None, speedup: float = 1.0) -> dict:
    """Per-cut bound table ("per-layer nature"): ``q`` has one entry per cut (the
    measured or modelled offload rate at that cut). Returns arrays keyed ``cut, beta,
    beta_param, beta_param_aux, beta_max, sense_max, beta_off, sense_off, device_beating,
    offload_beating, latency``. Scalar device profile (one client)."""
    cuts = net.cuts if cuts is None else net._cut(np.asarray(cuts))
    q = effective_rate(net, cuts, np.broadcast_to(np.asarray(q, float), cuts.shape))
    nz = normalized(net, cuts, link)
    bmax = beta_max(q, nz.v, nz.omega, nz.beta_kappa, speedup)
    boff = beta_off(q, nz.v, nz.omega, nz.omega0, nz.beta_kappa)
    return {"cut": cuts, "beta": nz.beta, "beta_param": net.beta_param(cuts),
            "beta_param_aux": net.beta_param_aux(cuts), "q": q,
            "beta_max": bmax.value, "sense_max": bmax.sense, "beta_off": boff.value,
            "sense_off": boff.sense, "device_beating": bmax.beats(nz.beta),
            "offload_beating": boff.beats(nz.beta),
            "latency": latency_splitgp(net, cuts, q, link)}


def admissible_cut(beta, client_acc, a_req: float, device_beating, offload_beating,
                   latency) -> tuple[int | None, str]:
    """Default cut: among cuts with beta_acc <= beta(s) and both bounds met, the
    largest beta (most personalization), ties to lower latency. Returns ``(index, reason)``;
    ``index`` is ``None`` with the violated side named when the window is empty."""
    beta, acc = np.asarray(beta, float), np.asarray(client_acc, float)
    ok_acc = acc >= a_req
    if not ok_acc.any():
        return None, f"accuracy: no cut reaches client-exit accuracy {a_req:g}"
    beta_acc = beta[ok_acc].min()
    fast = np.asarray(device_beating) & np.asarray(offload_beating)
    window = (beta >= beta_acc) & fast
    if not window.any():
        return None, (f"latency: no cut with beta >= beta_acc = {beta_acc:.4g} beats both "
                      "on-device inference and full offloading")
    idx = np.flatnonzero(window)
    best = idx[np.lexsort((np.asarray(latency, float)[idx], -beta[idx]))[0]]
    return int(best), "ok"


# ----------------------------------------------------------------------------------------
# Entropy, offload rates, accuracy mixtures [follow-up code / project]
# ----------------------------------------------------------------------------------------


def entropy(logits, axis: int = -1) -> np.ndarray:
    """Natural-log entropy of softmax(logits), from log_softmax so that a saturated output
    gives 0, never NaN; clipped to [0, ln C]. [follow-up code]"""
    from scipy.special import log_softmax

    z = np.asarray(logits, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        logp = log_softmax(z, axis=axis)
    p = np.exp(logp)
    terms = np.where(p > 0, p * np.where(np.isfinite(logp), logp, 0.0), 0.0)
    h = -terms.sum(axis=axis)
    return np.clip(h, 0.0, math.log(z.shape[axis]))


def offloads(h, e_th) -> np.ndarray:
    """The offload rule: ``H > E_th`` (strict). [follow-up code]"""
    return np.asarray(h, float) > np.asarray(e_th, float)


def mixture_rate(pi_main, pi_ood, p) -> np.ndarray:
    """q = (pi_main + p pi_ood) / (1 + p); p is #OOD / #main. [project choice]"""
    p = np.asarray(p, float)
    return (np.asarray(pi_main, float) + p * np.asarray(pi_ood, float)) / (1.0 + p)


def mixture_accuracy(a_main, a_ood, p) -> np.ndarray:
    """Acc(p) = (a_main + p a_ood) / (1 + p) (decomposition, exact for the realized
    ratio)."""
    return mixture_rate(a_main, a_ood, p)


def mixture_weights(is_ood, p: float) -> np.ndarray:
    """Sample weights reproducing the test mixture of OOD portion ``p`` without resampling:
    1/((1+p) N_main) per main sample, p/((1+p) N_ood) per OOD sample."""
    is_ood = np.asarray(is_ood, bool)
    n_ood, n_main = int(is_ood.sum()), int((~is_ood).sum())
    check_range("ood_ratio", p, ge=0.0)
    if n_main == 0:
        raise ValidationError("records.is_ood", "must contain at least one main sample")
    if p > 0 and n_ood == 0:
        raise ValidationError("records.is_ood", f"has no OOD sample but ood_ratio = {p:g} > 0")
    w_ood = p / ((1.0 + p) * n_ood) if n_ood else 0.0
    return np.where(is_ood, w_ood, 1.0 / ((1.0 + p) * n_main))


@dataclass(frozen=True)
class OffloadCurve:
    """Empirical step curves over candidate thresholds: ``e`` increasing, ``q``
    offload rate (non-increasing), ``acc`` accuracy, ``acc_client`` / ``acc_server`` the
    all-local and all-offloaded accuracies. ``kept`` (optional): the part of ``acc``
    answered by the client exit (share of all requests kept and correct); ``acc - kept`` is
    the offloaded part. The on-time objective (split method ``timely``) needs it."""

    e: np.ndarray
    q: np.ndarray
    acc: np.ndarray
    kept: np.ndarray | None = None

    @property
    def acc_client(self) -> float:
        return float(self.acc[-1])

    @property
    def acc_server(self) -> float:
        return float(self.acc[0])

    def at(self, e_th) -> tuple[np.ndarray, np.ndarray]:
        """(q, acc) at arbitrary thresholds: the step value of the largest candidate <= e."""
        i = np.clip(np.searchsorted(self.e, np.asarray(e_th, float), side="right") - 1,
                    0, len(self.e) - 1)
        return self.q[i], self.acc[i]

    def select(self, q_bar: float) -> int | None:
        """Index of E* = argmax acc over candidates with q <= q_bar, ties to the larger E;
        ``None`` when ``q_bar < 0``."""
        ok = self.q <= q_bar + 1e-12
        if q_bar < 0 or not ok.any():
            return None
        acc = np.where(ok, self.acc, -np.inf)
        return int(np.flatnonzero(acc == acc.max())[-1])

    def threshold_for_rate(self, q_target: float) -> tuple[float, float, float, float]:
        """Map a target offload rate to thresholds: ``(e_cons, e1, e2, prob)``:
        ``e_cons`` the smallest candidate with q <= q_target (conservative); use ``e2`` with
        probability ``prob`` and ``e1`` otherwise to meet ``q_target`` exactly (e1 < e2,
        q(e1) >= q_target >= q(e2))."""
        ok = np.flatnonzero(self.q <= q_target + 1e-12)
        j = int(ok[0]) if ok.size else len(self.e) - 1
        e_cons = float(self.e[j])
        if j == 0 or self.q[j] >= q_target - 1e-12:
            return e_cons, e_cons, e_cons, 1.0
        q1, q2 = self.q[j - 1], self.q[j]
        prob = float((q1 - q_target) / (q1 - q2))
        return e_cons, float(self.e[j - 1]), e_cons, prob

    def envelope(self) -> OperatingCurve:
        return OperatingCurve.from_points(self.q, self.acc, self.e)


#: Threshold grid of the notebook figures, nats [follow-up code].
E_TH_GRID = (0.05, 0.1, 0.2, 0.4, 0.8, 1.2, 1.6, 2.3)


def offload_curve(h, is_ood, correct_client, correct_server, p: float,
                  n_classes: int, candidates=None) -> OffloadCurve:
    """Empirical q^(E) and A^(E) from validation records over every distinct
    entropy plus -1 (offload all) and ln C (offload none), O(N log N) by sorting.
    ``candidates`` (grid mode): evaluate only these thresholds (plus -1 and ln C).

    Inputs are what the harness measures per validation sample: client-exit entropy ``h``
    (nats), OOD flag, and whether the client exit / server exit classify it correctly."""
    h = np.asarray(h, float)
    n = h.shape[0]
    cc = np.asarray(correct_client, float)
    cs = np.asarray(correct_server, float)
    if cc.shape != (n,) or cs.shape != (n,) or np.shape(is_ood) != (n,):
        raise ValidationError("records", "h, is_ood, correct_client, correct_server must be "
                                         "one-dimensional with equal lengths")
    w = mixture_weights(is_ood, p)
    order = np.argsort(h, kind="stable")
    hs, ws, ccs, css = h[order], w[order], cc[order], cs[order]
    grid = hs if candidates is None else np.asarray(candidates, float).ravel()
    e = np.unique(np.concatenate([[-1.0], grid, [math.log(n_classes)]]))
    k = np.searchsorted(hs, e, side="right")  # samples with H <= E (kept local)
    cw = np.concatenate([[0.0], np.cumsum(ws)])
    ccw = np.concatenate([[0.0], np.cumsum(ws * ccs)])
    csw = np.concatenate([[0.0], np.cumsum(ws * css)])
    q = cw[-1] - cw[k]
    acc = ccw[k] + (csw[-1] - csw[k])
    return OffloadCurve(e=e, q=np.clip(q, 0.0, 1.0), acc=acc, kept=ccw[k])


def headline_threshold(h, is_ood, correct_client, correct_server, n_classes: int,
                       p_grid=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), e_grid=E_TH_GRID) -> float:
    """The threshold of the headline figure: the grid E_th maximizing validation
    accuracy averaged over the p grid, ties to the larger E_th. [project choice]"""
    e_grid = np.asarray(e_grid, float)
    acc = np.zeros(e_grid.size)
    for p in p_grid:
        cv = offload_curve(h, is_ood, correct_client, correct_server, float(p), n_classes,
                           candidates=e_grid)
        acc += cv.at(e_grid)[1]
    best = np.flatnonzero(acc >= acc.max() - 1e-12)
    return float(e_grid[best[-1]])


@dataclass(frozen=True)
class BetaEntropyModel:
    """Synthetic entropy model [project choice]: H / ln C ~ Beta(main_a, main_b)
    on main samples, Beta(ood_a, ood_b) on OOD samples; exit accuracies fixed per sample kind.
    Correctness is modelled as independent of H given the kind (a simplification: a
    measured curve from :func:`offload_curve` captures their dependence)."""

    main_a: float
    main_b: float
    ood_a: float
    ood_b: float
    client_acc_main: float
    client_acc_ood: float
    server_acc_main: float
    server_acc_ood: float
    n_classes: int = 10

    def _sf(self, e_th, a, b) -> np.ndarray:
        """Beta survival function P(H / ln C > e / ln C) (regularized incomplete beta)."""
        from scipy.special import betainc

        x = np.clip(np.asarray(e_th, float) / math.log(self.n_classes), 0.0, 1.0)
        return np.clip(1.0 - betainc(a, b, x), 0.0, 1.0)

    def pi_main(self, e_th) -> np.ndarray:
        """Offload rate on main samples, P(H > E_th)."""
        return self._sf(e_th, self.main_a, self.main_b)

    def pi_ood(self, e_th) -> np.ndarray:
        """Offload rate on OOD samples."""
        return self._sf(e_th, self.ood_a, self.ood_b)

    def rate(self, e_th, p) -> np.ndarray:
        """q(E_th) in closed form."""
        return mixture_rate(self.pi_main(e_th), self.pi_ood(e_th), p)

    def accuracy(self, e_th, p) -> np.ndarray:
        kept, offloaded = self.accuracy_parts(e_th, p)
        return kept + offloaded

    def accuracy_parts(self, e_th, p) -> tuple[np.ndarray, np.ndarray]:
        """The two parts of :meth:`accuracy`: the share of requests answered correctly by the
        client exit (kept, ``H <= E_th``) and by the server exit (offloaded); they sum to
        the accuracy. ``e_th`` and ``p`` broadcast (e.g. a grid against one p per client)."""
        pm, po = self.pi_main(e_th), self.pi_ood(e_th)
        kept = mixture_accuracy(self.client_acc_main * (1 - pm), self.client_acc_ood * (1 - po), p)
        offloaded = mixture_accuracy(self.server_acc_main * pm, self.server_acc_ood * po, p)
        return kept, offloaded

    def curve(self, p: float, n_grid: int = 257) -> OffloadCurve:
        """Candidates -1, then ``n_grid`` points on [0, ln C]."""
        return self.curves([p], n_grid)[0]

    def curves(self, p, n_grid: int = 257) -> list[OffloadCurve]:
        """:meth:`curve` for each OOD portion in ``p``, computed at once."""
        e = np.concatenate([[-1.0], np.linspace(0.0, math.log(self.n_classes), n_grid)])
        ratio = np.asarray(p, float).reshape(-1, 1)
        q = self.rate(e[None, :], ratio)
        kept, off = self.accuracy_parts(e[None, :], ratio)
        acc = kept + off
        return [OffloadCurve(e=e, q=q[k], acc=acc[k], kept=kept[k])
                for k in range(ratio.shape[0])]

    def sample(self, n_main: int, n_ood: int, rng: np.random.Generator) -> dict:
        """Synthetic validation records (h, is_ood, correct_client, correct_server)."""
        ln_c = math.log(self.n_classes)
        h = np.concatenate([rng.beta(self.main_a, self.main_b, n_main),
                            rng.beta(self.ood_a, self.ood_b, n_ood)]) * ln_c
        is_ood = np.repeat([False, True], [n_main, n_ood])
        pc = np.where(is_ood, self.client_acc_ood, self.client_acc_main)
        ps = np.where(is_ood, self.server_acc_ood, self.server_acc_main)
        return {"h": h, "is_ood": is_ood, "correct_client": rng.random(h.size) < pc,
                "correct_server": rng.random(h.size) < ps}


# ----------------------------------------------------------------------------------------
# Operating curves [project choice]
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatingCurve:
    """Concave G(q) = min_j (intercept_j + slope_j q) on [0, 1]; ``vertices_q``,
    ``vertices_acc`` the hull vertices (``vertices_e`` their thresholds, NaN when
    synthetic). Randomizing between the two thresholds of adjacent vertices attains every
    point of the envelope."""

    intercepts: np.ndarray
    slopes: np.ndarray
    vertices_q: np.ndarray = field(default_factory=lambda: np.zeros(0))
    vertices_acc: np.ndarray = field(default_factory=lambda: np.zeros(0))
    vertices_e: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __call__(self, q) -> np.ndarray:
        q = np.asarray(q, float)
        return np.min(self.intercepts[:, None] + self.slopes[:, None] * q.reshape(-1), axis=0
                      ).reshape(q.shape)

    @property
    def peak(self) -> tuple[float, float]:
        """(smallest maximizer, max value) of G on [0, 1]."""
        if self.vertices_q.size:
            i = int(np.flatnonzero(self.vertices_acc >= self.vertices_acc.max() - 1e-12)[0])
            return float(self.vertices_q[i]), float(self.vertices_acc[i])
        grid = np.linspace(0, 1, 1001)
        g = self(grid)
        i = int(np.flatnonzero(g >= g.max() - 1e-12)[0])
        return float(grid[i]), float(g[i])

    @classmethod
    def from_points(cls, q, acc, e=None) -> OperatingCurve:
        """Upper concave hull of the points (q, acc) over their q range."""
        q, acc = np.asarray(q, float), np.asarray(acc, float)
        e = np.full(q.shape, np.nan) if e is None else np.asarray(e, float)
        order = np.lexsort((-acc, q))
        q, acc, e = q[order], acc[order], e[order]
        keep = np.concatenate([[True], np.diff(q) > 0])  # best acc per distinct q
        q, acc, e = q[keep], acc[keep], e[keep]
        hull: list[int] = []
        for i in range(q.size):
            while len(hull) >= 2:
                a, b = hull[-2], hull[-1]
                cross = (q[b] - q[a]) * (acc[i] - acc[a]) - (acc[b] - acc[a]) * (q[i] - q[a])
                if cross >= 0:
                    hull.pop()
                else:
                    break
            hull.append(i)
        hq, ha, he = q[hull], acc[hull], e[hull]
        if hq.size == 1:
            return cls(np.array([ha[0]]), np.array([0.0]), hq, ha, he)
        slopes = np.diff(ha) / np.diff(hq)
        intercepts = ha[:-1] - slopes * hq[:-1]
        return cls(intercepts, slopes, hq, ha, he)

    def pair_for_rate(self, q_target: float) -> tuple[float, float, float]:
        """Thresholds ``(e_lo, e_hi, prob_hi)`` of the hull vertices bracketing
        ``q_target``: using ``e_hi`` with probability ``prob_hi`` attains (q, G(q))."""
        vq, ve = self.vertices_q, self.vertices_e
        j = int(np.clip(np.searchsorted(vq, q_target), 1, vq.size - 1)) if vq.size > 1 else 0
        if vq.size == 1 or q_target <= vq[0]:
            return float(ve[0]), float(ve[0]), 1.0
        q_lo, q_hi = vq[j - 1], vq[j]  # e at q_lo is the larger threshold
        w_hi = float(np.clip((q_target - q_lo) / (q_hi - q_lo), 0.0, 1.0))
        return float(ve[j]), float(ve[j - 1]), 1.0 - w_hi


def envelopes(curves) -> list[OperatingCurve]:
    """``[curve.envelope() for curve in curves]`` for many offload curves at once: curves
    of equal length are hulled together by vectorised elimination (a point on or below the
    chord of its neighbours is no hull vertex; repeat until none is), which gives the same
    strict upper hull as :meth:`OperatingCurve.from_points`."""
    out: list[OperatingCurve | None] = [None] * len(curves)
    by_len: dict[int, list[int]] = {}
    for i, cv in enumerate(curves):
        by_len.setdefault(len(cv.q), []).append(i)
    for idx in by_len.values():
        q = np.array([curves[i].q for i in idx], float)
        acc = np.array([curves[i].acc for i in idx], float)
        e = np.array([curves[i].e for i in idx], float)
        for i, env in zip(idx, _batch_hulls(q, acc, e), strict=True):
            out[i] = env
    return out


def on_time_envelopes(curves, on_time) -> list[OperatingCurve]:
    """Envelopes of each curve's on-time accuracy ``kept(E) + on_time_k (acc(E) - kept(E))``
    [project choice]: its offloaded part counts only with probability ``on_time_k`` (the
    offloaded request answered within its deadline), what the client keeps counts whole.
    The curves need ``kept``; same hulls as :func:`envelopes` of the reweighted curves."""
    on_time = np.broadcast_to(np.asarray(on_time, float), (len(curves),))
    out: list[OperatingCurve | None] = [None] * len(curves)
    by_len: dict[int, list[int]] = {}
    for i, cv in enumerate(curves):
        if cv.kept is None:
            raise ValidationError(f"curves[{i}].kept", "is required for the on-time accuracy "
                                                       "(the part the client exit answers)")
        by_len.setdefault(len(cv.q), []).append(i)
    for idx in by_len.values():
        q = np.array([curves[i].q for i in idx], float)
        kept = np.array([curves[i].kept for i in idx], float)
        acc = np.array([curves[i].acc for i in idx], float)
        e = np.array([curves[i].e for i in idx], float)
        value = kept + on_time[idx, None] * (acc - kept)
        for i, env in zip(idx, _batch_hulls(q, value, e), strict=True):
            out[i] = env
    return out


def _batch_hulls(q, acc, e) -> list[OperatingCurve]:
    """Upper concave hulls of the rows of ``(q, acc)`` (thresholds ``e``)."""
    b, n = q.shape
    order = np.lexsort((-acc, q), axis=-1)
    rows = np.arange(b)[:, None]
    q, acc, e = q[rows, order], acc[rows, order], e[rows, order]
    alive = np.ones((b, n), bool)
    alive[:, 1:] = np.diff(q, axis=1) > 0          # best accuracy per distinct q
    cols = np.broadcast_to(np.arange(n), (b, n))
    while True:
        prev = np.maximum.accumulate(np.where(alive, cols, -1), axis=1)
        prev = np.concatenate([np.full((b, 1), -1), prev[:, :-1]], axis=1)
        nxt = np.minimum.accumulate(np.where(alive, cols, n)[:, ::-1], axis=1)[:, ::-1]
        nxt = np.concatenate([nxt[:, 1:], np.full((b, 1), n)], axis=1)
        inner = alive & (prev >= 0) & (nxt < n)
        pa, na = np.clip(prev, 0, n - 1), np.clip(nxt, 0, n - 1)
        qa, aa = q[rows, pa], acc[rows, pa]
        cross = (q - qa) * (acc[rows, na] - aa) - (acc - aa) * (q[rows, na] - qa)
        drop = inner & (cross >= 0)
        if not drop.any():
            break
        alive &= ~drop
    out = []
    for r in range(b):
        keep = alive[r]
        hq, ha, he = q[r, keep], acc[r, keep], e[r, keep]
        if hq.size == 1:
            out.append(OperatingCurve(np.array([ha[0]]), np.array([0.0]), hq, ha, he))
            continue
        slopes = np.diff(ha) / np.diff(hq)
        out.append(OperatingCurve(ha[:-1] - slopes * hq[:-1], slopes, hq, ha, he))
    return out


def ideal_detector_curve(aC_main, aC_ood, aS_main, aS_ood, p) -> OperatingCurve:
    """Synthetic ideal-detector curve: offload OOD samples first, then main
    ones; concave whenever the server's gain on OOD is at least its gain on main samples."""
    q_star = p / (1.0 + p)
    a0 = (aC_main + p * aC_ood) / (1.0 + p)
    g_ood, g_main = aS_ood - aC_ood, aS_main - aC_main
    if g_ood < g_main:
        raise ValidationError("curve", "ideal-detector curve is concave only when the server's "
                                       "gain on OOD samples >= its gain on main samples")
    qs = np.array([0.0, q_star, 1.0])
    accs = np.array([a0, a0 + g_ood * q_star, a0 + g_ood * q_star + g_main * (1 - q_star)])
    return OperatingCurve.from_points(qs, accs)


# ----------------------------------------------------------------------------------------
# Shared server [project choice]
# ----------------------------------------------------------------------------------------


def server_rate(net: LayeredNetwork, s, f_server) -> np.ndarray:
    """mu(s) = f_S / F_theta(s) requests per second (inf at s = L)."""
    with np.errstate(divide="ignore"):
        return np.asarray(f_server, float) / net.flops_server(s)


def offered_load(q, request_rate) -> float:
    """Lambda = sum_k q_k nu_k (offloaded arrivals, Poisson by thinning)."""
    return float(np.sum(np.asarray(q, float) * np.asarray(request_rate, float)))


def server_sojourn(load, mu) -> np.ndarray:
    """W(Lambda) = 1 / (mu - Lambda), M/M/1 (reuses :func:`queueing.mean_sojourn`)."""
    return mean_sojourn(load, mu)


def queued_latency(client_t, upload_t, q, sojourn) -> np.ndarray:
    """T_k = A_k + q_k (c_k + W): client term plus, when offloaded, upload and server."""
    return np.asarray(client_t, float) + np.asarray(q, float) * (
        np.asarray(upload_t, float) + np.asarray(sojourn, float))


def pk_sojourn(q, request_rate, service) -> np.ndarray:
    """Per-client server sojourn with per-client cuts (M/G/1, exponential mixture,
    Pollaczek-Khinchine): W_q + S_k with W_q = sum nu q S^2 / (1 - sum nu q S)."""
    lam = np.asarray(q, float) * np.asarray(request_rate, float)
    s = np.asarray(service, float)
    rho = float(np.sum(lam * s))
    if rho >= 1.0:
        return np.full(s.shape, np.inf)
    return float(np.sum(lam * s * s)) / (1.0 - rho) + s


def identical_q_max(n_load: float, mu: float, c: float, slack: float,
                    rho_max: float = 0.95) -> float:
    """Largest common offload rate of K identical clients (closed form):
    q c + q / (mu - n q) <= D with n = K nu, D = T_max - A; also q <= rho_max mu / n, q <= 1.
    ``slack`` is D; negative D means infeasible (returns -inf)."""
    if slack < 0:
        return -math.inf
    cap = min(1.0, rho_max * mu / n_load)
    if c == 0:
        root = slack * mu / (slack * n_load + 1.0)
    else:
        a, b, cc = n_load * c, c * mu + slack * n_load + 1.0, slack * mu
        disc = max(b * b - 4 * a * cc, 0.0)
        root = 2 * cc / (b + math.sqrt(disc))  # smaller root, stable form
    return min(cap, root)


# ----------------------------------------------------------------------------------------
# Training identities on plain arrays [follow-up code]
# ----------------------------------------------------------------------------------------


def weighted_average(states: list[dict], alpha) -> dict:
    """sum_k alpha_k state_k per entry (theta averaging, phi-bar). Arithmetic only, so the
    entries may be numpy arrays or torch tensors."""
    alpha = np.asarray(alpha, float)
    if alpha.shape != (len(states),) or np.any(alpha < 0) or not np.isclose(alpha.sum(), 1.0):
        raise ValidationError("alpha", "must hold one non-negative weight per client, sum 1")
    out = {}
    for key in states[0]:
        acc = states[0][key] * float(alpha[0])
        for a, st in zip(alpha[1:], states[1:], strict=True):
            acc = acc + st[key] * float(a)
        out[key] = acc
    return out


def mix_client_sides(states: list[dict], alpha, lam: float) -> list[dict]:
    """lambda-mixing of the client sides: phi_k <- lam phi_k + (1 - lam) phi-bar with
    phi-bar = sum_k alpha_k phi_k (the paper's Eq. (10) according to one reproduction).
    lam = 0 gives every client one shared copy of the average; lam = 1 leaves each unchanged;
    the alpha-weighted mean is preserved for every lam."""
    check_range("lam", lam, ge=0.0, le=1.0)
    bar = weighted_average(states, alpha)
    if lam == 0.0:
        return [dict(bar) for _ in states]
    return [{k: st[k] * lam + bar[k] * (1.0 - lam) for k in st} for st in states]


def splitgp_loss_weights(gamma: float) -> tuple[float, float]:
    """(client-exit weight gamma, server-exit weight 1 - gamma) of the two-exit loss."""
    check_range("gamma", gamma, ge=0.0, le=1.0)
    return float(gamma), 1.0 - float(gamma)


def _softmax_ce(z, y):
    from scipy.special import log_softmax

    logp = log_softmax(z, axis=1)
    n = z.shape[0]
    loss = -float(logp[np.arange(n), y].mean())
    dz = np.exp(logp)
    dz[np.arange(n), y] -= 1.0
    return loss, dz / n


def splitgp_step(params: dict, x, y, gamma: float, lr: float) -> tuple[dict, dict]:
    """One SplitGP SGD step on a tiny numpy network, the reference the torch harness can be
    checked against: client part h = relu(x @ phi), client exit z_C = h @ kappa, server
    z_S = h @ theta. theta steps along -(1-gamma) grad CE_S; kappa along -gamma grad CE_C;
    phi along the sum of both back-propagated through h (detach-and-inject).
    Returns (new params, {"loss_client", "loss_server", "grads"})."""
    wc, ws = splitgp_loss_weights(gamma)
    x = np.asarray(x, float)
    y = np.asarray(y, int)
    pre = x @ params["phi"]
    h = np.maximum(pre, 0.0)
    loss_c, dzc = _softmax_ce(h @ params["kappa"], y)
    loss_s, dzs = _softmax_ce(h @ params["theta"], y)
    g_theta = ws * h.T @ dzs
    g_h = ws * dzs @ params["theta"].T          # what the server returns to the client
    g_kappa = wc * h.T @ dzc
    g_h = g_h + wc * dzc @ params["kappa"].T
    g_phi = x.T @ (g_h * (pre > 0))
    grads = {"phi": g_phi, "kappa": g_kappa, "theta": g_theta}
    new = {k: params[k] - lr * grads[k] for k in ("phi", "kappa", "theta")}
    return new, {"loss_client": loss_c, "loss_server": loss_s, "grads": grads}
