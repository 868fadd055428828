"""Accuracy maps: decreasing maps from error proxy e >= 0 to accuracy.

Affine (default): acc(e) = clip(acc_max - kappa e, acc_min, acc_max), linearize exact inside
the clip range. Exponential: acc(e) = acc_min + (acc_max - acc_min) exp(-e / scale), linearize
gives the tangent ``acc(e) ~ intercept - slope * e`` at e0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jointopt.models import (
    ACCURACY_MAPS,
    AffineAccuracy,
    ExponentialAccuracy,
    JointoptError,
    LogisticAccuracy,
    ValidationError,
)
from jointopt.models.accuracy import aggregation_deficit, deficit_slope

SETTINGS = settings(max_examples=80, deadline=None)


@st.composite
def levels(draw):
    acc_max = draw(st.floats(min_value=0.05, max_value=1.0))
    acc_min = draw(st.floats(min_value=0.0, max_value=0.95)) * acc_max
    assume(acc_min < acc_max)
    return acc_max, acc_min


affine_maps = st.builds(
    lambda lv, kappa: AffineAccuracy(acc_max=lv[0], kappa=kappa, acc_min=lv[1]),
    levels(), st.floats(min_value=1e-3, max_value=10.0))
exp_maps = st.builds(
    lambda lv, scale: ExponentialAccuracy(acc_max=lv[0], scale=scale, acc_min=lv[1]),
    levels(), st.floats(min_value=1e-2, max_value=10.0))
logistic_maps = st.builds(
    lambda lv, mid, width: LogisticAccuracy(acc_max=lv[0], midpoint=mid, width=width,
                                            acc_min=lv[1]),
    levels(), st.floats(min_value=-2.0, max_value=5.0), st.floats(min_value=0.05,
                                                                   max_value=3.0))
errors = st.floats(min_value=0.0, max_value=1e3)


# --------------------------------------------------------------------------- affine


@SETTINGS
@given(affine_maps, st.lists(errors, min_size=1, max_size=20))
def test_affine_values_and_clip_range(acc, es):
    e = np.array(es)
    out = acc(e)
    assert out.shape == e.shape
    assert np.all(out >= acc.acc_min) and np.all(out <= acc.acc_max)
    expected = np.clip(acc.acc_max - acc.kappa * e, acc.acc_min, acc.acc_max)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-15)
    assert float(acc(0.0)) == acc.acc_max


@SETTINGS
@given(affine_maps)
def test_affine_saturates_at_acc_min(acc):
    e_floor = (acc.acc_max - acc.acc_min) / acc.kappa
    assert float(acc(e_floor * 1.01 + 1e-9)) == acc.acc_min
    assert float(acc(10 * e_floor + 1.0)) == acc.acc_min


@SETTINGS
@given(affine_maps, errors, st.floats(min_value=1e-6, max_value=100.0))
def test_affine_non_increasing_and_strictly_inside(acc, e, de):
    lo, hi = float(acc(e)), float(acc(e + de))
    assert hi <= lo
    e_floor = (acc.acc_max - acc.acc_min) / acc.kappa
    if e + de < e_floor and acc.kappa * de > 1e-12:
        assert hi < lo  # strictly decreasing where unclipped


@SETTINGS
@given(affine_maps, st.floats(min_value=0.0, max_value=1.0), st.floats(min_value=0.0,
                                                                        max_value=1.0))
def test_affine_linearize_exact_inside_clip_range(acc, u0, u):
    e_floor = (acc.acc_max - acc.acc_min) / acc.kappa
    e0, e = u0 * e_floor, u * e_floor
    intercept, slope = acc.linearize(e0)
    assert slope == pytest.approx(acc.kappa, rel=1e-12)
    assert slope > 0  # decreasing map: acc ~ intercept - slope * e
    assert intercept - slope * e == pytest.approx(float(acc(e)), rel=1e-9, abs=1e-12)
    assert intercept - slope * e0 == pytest.approx(float(acc(e0)), rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------- exponential


@SETTINGS
@given(exp_maps, st.lists(errors, min_size=1, max_size=20))
def test_exponential_values_and_range(acc, es):
    e = np.array(es)
    out = acc(e)
    assert out.shape == e.shape
    expected = acc.acc_min + (acc.acc_max - acc.acc_min) * np.exp(-e / acc.scale)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-15)
    # acc_min + (acc_max - acc_min) * 1 may round one ulp above acc_max (see report).
    ulp = 4 * np.spacing(acc.acc_max)
    assert np.all(out >= acc.acc_min) and np.all(out <= acc.acc_max + ulp)
    assert float(acc(0.0)) == pytest.approx(acc.acc_max, rel=1e-15)
    assert float(acc(1e6 * acc.scale)) == pytest.approx(acc.acc_min, abs=1e-12)


@SETTINGS
@given(exp_maps, st.floats(min_value=0.0, max_value=15.0), st.floats(min_value=1e-3,
                                                                      max_value=5.0))
def test_exponential_strictly_decreasing(acc, u, du):
    e, e2 = u * acc.scale, (u + du) * acc.scale
    assert float(acc(e2)) < float(acc(e))


@SETTINGS
@given(exp_maps, st.floats(min_value=0.0, max_value=8.0))
def test_exponential_linearize_is_the_tangent(acc, u0):
    e0 = u0 * acc.scale
    intercept, slope = acc.linearize(e0)
    # Value at e0.
    assert intercept - slope * e0 == pytest.approx(float(acc(e0)), rel=1e-9, abs=1e-12)
    # Slope: -d acc/de by a central finite difference (step relative to the scale).
    h = 1e-5 * acc.scale
    left = max(e0 - h, 0.0)
    fd = -(float(acc(e0 + h)) - float(acc(left))) / (e0 + h - left)
    assert slope > 0
    assert slope == pytest.approx(fd, rel=1e-4, abs=1e-9)
    # Derived analytically: (acc_max - acc_min)/scale * exp(-e0/scale).
    exact = (acc.acc_max - acc.acc_min) / acc.scale * math.exp(-e0 / acc.scale)
    assert slope == pytest.approx(exact, rel=1e-12)


@SETTINGS
@given(exp_maps, st.floats(min_value=0.0, max_value=8.0), st.floats(min_value=0.0,
                                                                     max_value=20.0))
def test_exponential_tangent_lies_below_convex_map(acc, u0, u):
    """acc is convex in e, so it lies on or above each tangent line."""
    e0, e = u0 * acc.scale, u * acc.scale
    intercept, slope = acc.linearize(e0)
    assert float(acc(e)) >= intercept - slope * e - 1e-12


# --------------------------------------------------------------------------- logistic


@SETTINGS
@given(logistic_maps, st.lists(errors, min_size=1, max_size=20))
def test_logistic_values_range_and_formula(acc, es):
    e = np.array(es)
    out = acc(e)
    assert np.all(out >= acc.acc_min) and np.all(out <= acc.acc_max)
    with np.errstate(over="ignore"):
        expected = acc.acc_min + (acc.acc_max - acc.acc_min) / (
            1 + np.exp((e - acc.midpoint) / acc.width))
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-12)
    span = acc.acc_max - acc.acc_min
    assert float(acc(acc.midpoint)) == pytest.approx(acc.acc_min + span / 2, rel=1e-12)


@SETTINGS
@given(logistic_maps, st.floats(min_value=-4.0, max_value=4.0))
def test_logistic_linearize_is_the_tangent(acc, u0):
    e0 = acc.midpoint + u0 * acc.width
    intercept, slope = acc.linearize(e0)
    assert intercept - slope * e0 == pytest.approx(float(acc(e0)), rel=1e-9, abs=1e-12)
    h = 1e-5 * acc.width
    fd = -(float(acc(e0 + h)) - float(acc(e0 - h))) / (2 * h)
    assert slope > 0
    assert slope == pytest.approx(fd, rel=1e-4, abs=1e-9)


@SETTINGS
@given(logistic_maps, st.floats(min_value=-6.0, max_value=6.0))
def test_logistic_error_of_inverts_the_map(acc, u):
    e = acc.midpoint + u * acc.width
    assert float(acc.error_of(acc(e))) == pytest.approx(e, rel=1e-6, abs=1e-6 * acc.width)


@pytest.mark.parametrize(("kw", "field"), [({"width": 0.0}, "accuracy.width"),
                                           ({"width": -1.0}, "accuracy.width"),
                                           ({"midpoint": float("nan")}, "accuracy.midpoint")])
def test_bad_logistic_shape_rejected(kw, field):
    with pytest.raises(ValidationError) as err:
        LogisticAccuracy(**kw)
    assert err.value.field == field


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("cls", [AffineAccuracy, ExponentialAccuracy, LogisticAccuracy])
@pytest.mark.parametrize(("acc_max", "acc_min"), [(0.5, 0.5), (0.5, 0.7), (0.3, 0.9)])
def test_acc_min_not_below_acc_max_rejected(cls, acc_max, acc_min):
    with pytest.raises(ValidationError) as err:
        cls(acc_max=acc_max, acc_min=acc_min)
    assert err.value.field == "accuracy.acc_min"
    assert isinstance(err.value, JointoptError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("cls", [AffineAccuracy, ExponentialAccuracy])
@pytest.mark.parametrize(("kw", "field"), [
    ({"acc_max": 0.0}, "accuracy.acc_max"),
    ({"acc_max": 1.2}, "accuracy.acc_max"),
    ({"acc_max": float("nan")}, "accuracy.acc_max"),
    ({"acc_min": -0.1}, "accuracy.acc_min"),
])
def test_bad_levels_rejected(cls, kw, field):
    with pytest.raises(ValidationError) as err:
        cls(**kw)
    assert err.value.field == field


@pytest.mark.parametrize("kappa", [0.0, -0.3, float("nan"), float("inf")])
def test_bad_kappa_rejected(kappa):
    with pytest.raises(ValidationError) as err:
        AffineAccuracy(kappa=kappa)
    assert err.value.field == "accuracy.kappa"
    assert "accuracy.kappa" in str(err.value)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_scale_rejected(scale):
    with pytest.raises(ValidationError) as err:
        ExponentialAccuracy(scale=scale)
    assert err.value.field == "accuracy.scale"


def test_registry_and_defaults_are_valid_decreasing_maps():
    assert ACCURACY_MAPS["affine"] is AffineAccuracy
    assert ACCURACY_MAPS["exponential"] is ExponentialAccuracy
    assert ACCURACY_MAPS["logistic"] is LogisticAccuracy
    e = np.linspace(0.0, 5.0, 51)
    for cls in ACCURACY_MAPS.values():
        acc = cls()
        assert 0.0 <= acc.acc_min < acc.acc_max <= 1.0
        out = acc(e)
        assert np.all(np.diff(out) <= 0)
        # the logistic map reaches acc_max only far below its midpoint
        top = acc(acc.midpoint - 40 * acc.width) if cls is LogisticAccuracy else out[0]
        assert top == pytest.approx(acc.acc_max) and out[0] <= acc.acc_max
        intercept, slope = acc.linearize(1.0)
        assert slope > 0 and intercept >= float(acc(1.0))


@given(st.floats(min_value=0.0, max_value=3.0), st.floats(min_value=1e-6, max_value=4.0),
       st.floats(min_value=0.0, max_value=4.0))
def test_deficit_tangent_bounds_the_deficit_and_touches_it(beta, s0, s):
    """The planner's tangent of ``beta sqrt(S)`` at ``s0`` lies on or above it and touches it
    at ``s0`` (``sqrt`` is concave): participation is never valued above the deficit's
    own drop."""
    slope = deficit_slope(beta, s0)
    tangent = beta * math.sqrt(s0) + slope * (s - s0)
    assert aggregation_deficit(beta, 1.0, s) <= tangent + 1e-12
    assert aggregation_deficit(beta, 1.0, s0) == pytest.approx(beta * math.sqrt(s0))
    assert slope == pytest.approx(beta / (2 * math.sqrt(s0)))


def test_deficit_slope_is_zero_without_noise_or_spread_and_refuses_negatives():
    assert deficit_slope(0.0, 0.3) == 0.0
    assert deficit_slope(0.5, 0.0) == 0.0
    with pytest.raises(ValueError, match="beta and spread"):
        deficit_slope(-0.1, 0.3)
    with pytest.raises(ValueError, match="beta and spread"):
        deficit_slope(0.1, -0.3)
