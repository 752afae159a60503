"""Schedules: formulas, events, monotonicity, validation."""

import math

import pytest

import prunekit
from prunekit.schedules import AGP, Exponential, Iterative, Linear, OneShot, create_schedule, list_schedules


def test_agp_matches_zhu_gupta_formula():
    s = AGP(final=0.9, initial=0.1, start=2, end=12, frequency=2)
    n_dt = 10
    for t, level in s.events():
        expected = 0.9 + (0.1 - 0.9) * (1 - (t - 2) / n_dt) ** 3
        assert level == pytest.approx(expected, abs=1e-12)
    assert s.events()[0] == (2, pytest.approx(0.1))
    assert s.events()[-1] == (12, pytest.approx(0.9))


def test_events_only_at_frequency():
    s = Linear(final=0.6, start=1, end=7, frequency=3)
    assert [t for t, _ in s.events()] == [1, 4, 7]
    assert s.sparsity_at(0) is None and s.sparsity_at(2) is None and s.sparsity_at(8) is None
    assert s.sparsity_at(4) == pytest.approx(0.3)
    assert s.current(5) == pytest.approx(0.3)
    assert s.current(100) == pytest.approx(0.6)
    assert s.current(0) == 0.0


def test_exponential_keeps_constant_density_ratio():
    s = Exponential(final=0.99, start=0, end=4)
    densities = [1 - level for _, level in s.events()]
    ratios = [b / a for a, b in zip(densities, densities[1:])]
    assert all(r == pytest.approx(ratios[0]) for r in ratios)
    assert densities[-1] == pytest.approx(0.01)


def test_iterative_equal_and_geometric():
    eq = Iterative(final=0.8, steps=4, spacing="equal", start=5, frequency=2)
    assert eq.events() == [(5, pytest.approx(0.2)), (7, pytest.approx(0.4)), (9, pytest.approx(0.6)), (11, pytest.approx(0.8))]
    geo = Iterative(final=0.8, steps=3, spacing="geometric")
    kept = [1 - s for _, s in geo.events()]
    assert kept[0] == pytest.approx(0.2 ** (1 / 3))
    assert kept[1] / kept[0] == pytest.approx(kept[2] / kept[1])


def test_oneshot_and_monotone():
    assert OneShot(final=0.5, start=3).events() == [(3, 0.5)]
    for s in (AGP(final=0.95, end=20), Linear(final=0.5, end=9, frequency=3), Exponential(final=0.9, end=5)):
        levels = [x for _, x in s.events()]
        assert all(b >= a for a, b in zip(levels, levels[1:]))


def test_registry_and_pruner_stepping():
    assert {"agp", "exponential", "iterative", "linear", "oneshot"} <= set(list_schedules())
    s = create_schedule("agp", final=0.75, end=3)
    model = prunekit.create_model("tutorial_lenet")
    pruner = prunekit.Pruner(model, scope="global")
    seen = []
    for t in range(5):
        level = s.sparsity_at(t)
        if level is not None:
            pruner.step(level)
            seen.append(pruner.report().sparsity)
    assert len(seen) == 4
    assert all(b >= a for a, b in zip(seen, seen[1:]))
    assert seen[-1] == pytest.approx(0.75, abs=1e-4)


@pytest.mark.parametrize(
    "kwargs, param",
    [
        (dict(final=1.5), "final"),
        (dict(final=0.5, start=5, end=2), "end"),
        (dict(final=0.5, end=5, frequency=2), "end"),
        (dict(final=0.5, unit="minute"), "unit"),
        (dict(final=0.5, initial=0.7), "initial"),
        (dict(final=0.5, frequency=0), "frequency"),
    ],
)
def test_bad_schedules_name_the_parameter(kwargs, param):
    with pytest.raises(prunekit.InvalidParameterError, match=f"^{param}:"):
        Linear(**kwargs)


def test_unknown_schedule_suggests():
    with pytest.raises(prunekit.InvalidParameterError, match="Did you mean 'agp'"):
        create_schedule("agpp", final=0.5)
    assert math.isfinite(Exponential(final=1.0, end=2).events()[-1][1])
