"""prunekit.deprecation: renamed keywords warn once, at the caller's line, and refuse both names."""

from __future__ import annotations

import warnings

import pytest

from prunekit.deprecation import renamed_argument, renamed_value, reset_warnings
from prunekit.errors import InvalidParameterError


# the renamed functions live in a "file" of their own, so that the warning's location tells
# the caller's line (this file) from the renamed function's
_SOURCE = """
def declared(data=None, *, loader=None):
    return renamed_value(loader, "loader", "data", "declared", new_value=data)


def from_kwargs(data=None, **kwargs):
    return renamed_argument(kwargs, "loader", "data", "from_kwargs", new_value=data)
"""
_NAMESPACE = {"renamed_argument": renamed_argument, "renamed_value": renamed_value}
exec(compile(_SOURCE, "<renamed functions>", "exec"), _NAMESPACE)
declared = _NAMESPACE["declared"]
from_kwargs = _NAMESPACE["from_kwargs"]


@pytest.mark.parametrize("fn", [declared, from_kwargs])
def test_old_name_gives_the_value_and_warns_once_at_the_caller(fn):
    reset_warnings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fn(loader=[1]) == [1]
        assert fn(loader=[2]) == [2]
    assert len(caught) == 1
    assert caught[0].category is FutureWarning
    assert f"{fn.__name__}(loader=...)" in str(caught[0].message)
    assert caught[0].filename == __file__  # the line that used the old name, not prunekit's


@pytest.mark.parametrize("fn", [declared, from_kwargs])
def test_new_name_alone_is_silent(fn):
    reset_warnings()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fn([3]) == [3]
        assert fn() is None


@pytest.mark.parametrize("fn", [declared, from_kwargs])
def test_both_names_are_refused(fn):
    with pytest.raises(InvalidParameterError, match=r"loader: expected not given together with data="):
        fn([1], loader=[2])


def test_convert_maps_the_old_value():
    reset_warnings()
    with pytest.warns(FutureWarning):
        assert renamed_value(0.25, "amount", "sparsity", "f", convert=lambda v: 1 - v) == 0.75
