"""prunekit.validation: declared constraints, the checks, argparse arguments and the schema
fragment derived from one declaration; prunekit.params: the declarations of prune and
structural_prune."""

from __future__ import annotations

import argparse
import numbers

import pytest
import torch

import prunekit
from prunekit.errors import InvalidParameterError
from prunekit.params import PRUNE_PARAMS, STRUCTURAL_PARAMS
from prunekit.validation import (
    REQUIRED,
    AnyOf,
    Flag,
    Fraction,
    Interval,
    Options,
    Param,
    PathLike,
    RealNotInt,
    Spec,
    Strings,
    add_arguments,
    cli_error,
    cli_values,
    declare,
    defaults,
    schema,
    validate,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ValueError(message)


@pytest.mark.parametrize("closed, accepted, refused", [
    ("both", [0.0, 0.5, 1.0], [-0.1, 1.1]),
    ("left", [0.0, 0.99], [1.0]),
    ("right", [1.0, 0.01], [0.0]),
    ("neither", [0.5], [0.0, 1.0]),
])
def test_interval_bounds(closed, accepted, refused):
    c = Interval(numbers.Real, 0, 1, closed)
    assert all(c.accepts(v) for v in accepted) and not any(c.accepts(v) for v in refused)
    assert not c.accepts(True) and not c.accepts("0.5")


def test_interval_kinds_and_descriptions():
    assert Interval(numbers.Integral, 1, None).describe() == "an int >= 1"
    assert Interval(numbers.Real, 0, 1, "right").describe() == "a float in (0, 1]"
    assert Interval(RealNotInt, 0, 1).accepts(0.5) and not Interval(RealNotInt, 0, 1).accepts(1)
    assert Interval(numbers.Integral, 0, None).convert(3, "n") == 3
    assert isinstance(Interval(numbers.Real, 0, None).convert(3, "x"), float)
    with pytest.raises(InvalidParameterError, match=r"^n: expected an int >= 1, got 0\. Fix: e\.g\. n=2\.$"):
        Interval(numbers.Integral, 1, None, example=2).convert(0, "n")


def test_fraction_text_refuses_bare_ints_with_a_fix_that_works():
    f = Fraction(count_option="--count")
    assert f.from_text("0.25", "--sparsity") == 0.25 and f.from_text("1.0", "--sparsity") == 1.0
    with pytest.raises(InvalidParameterError) as info:
        f.from_text("1", "--sparsity")
    assert info.value.param == "--sparsity" and "--count 1" in info.value.fix and "write 1.0" in info.value.fix
    assert f.from_text(info.value.fix.split("write ")[1].split(";")[0], "--sparsity") == 1.0  # the fix parses
    with pytest.raises(InvalidParameterError, match="use --count 7"):
        f.from_text("7", "--sparsity")
    with pytest.raises(InvalidParameterError, match=r"got 'half'"):
        f.from_text("half", "--sparsity")


def test_options_read_live_and_suggest():
    names = ["alpha"]
    c = Options(lambda: names, "thing")
    assert not c.accepts("beta")
    names.append("beta")
    assert c.accepts("beta") and c.choices() == ["alpha", "beta"]
    with pytest.raises(InvalidParameterError, match="Did you mean 'alpha'"):
        c.convert("alpah", "kind")


def test_spec_uses_the_registry_words():
    c = Spec(prunekit.create_structure, prunekit.list_structures, "structure", "2:4")
    assert c.accepts("2:4") and c.accepts("block:4x4") and not c.accepts("chanel")
    with pytest.raises(InvalidParameterError) as info:
        c.convert("chanel", "--structure")
    assert info.value.param == "--structure" and "Did you mean 'channel'?" in info.value.fix


def test_anyof_and_none():
    c = AnyOf(Fraction(), Interval(numbers.Integral, 0, None), None)
    assert c.convert(None, "s") is None and c.convert(3, "s") == 3 and c.convert(0.5, "s") == 0.5
    assert c.describe() == "a fraction in [0, 1], an int >= 0 or None"
    with pytest.raises(InvalidParameterError, match="expected a fraction in"):
        c.convert(1.5, "s")


def test_path_like(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    assert PathLike("file").accepts(tmp_path / "f.txt") and not PathLike("file").accepts(tmp_path / "g.txt")
    assert PathLike("dir").accepts(str(tmp_path)) and not PathLike("dir").accepts(tmp_path / "f.txt")
    assert not PathLike().accepts("")


DECLS = declare(
    Param("sparsity", AnyOf(Fraction(count_option="--count"), None), None, "fraction pruned"),
    Param("scope", Options(("local", "global"), "scope"), "local", "how to rank"),
    Param("max_layer_ratio", AnyOf(Interval(numbers.Real, 0, 1), None), None, "cap"),
    Param("name", Strings(), REQUIRED, "a name", option="name"),
    Param("verbose", Flag(), False, "talk"),
    Param("tags", AnyOf(Strings(), None), None, "tags", repeat=True),
    Param("hidden", Interval(numbers.Integral, 0, None), 3, "not on the command line", option=None),
)


def test_validate_checks_given_values_and_names_the_parameter():
    assert validate(DECLS, {"sparsity": 0.5, "scope": "global"}) == {"sparsity": 0.5, "scope": "global"}
    with pytest.raises(InvalidParameterError, match="^scope: expected a scope among local, global, got 'globl'"):
        validate(DECLS, {"scope": "globl"})
    with pytest.raises(InvalidParameterError, match="Did you mean 'scope'"):
        validate(DECLS, {"scpoe": "local"})
    assert defaults(DECLS) == {"sparsity": None, "scope": "local", "max_layer_ratio": None, "verbose": False,
                               "tags": None, "hidden": 3}
    with pytest.raises(InvalidParameterError, match="declared once"):
        declare(DECLS["scope"], DECLS["scope"])


def test_add_arguments_and_cli_values():
    parser = _Parser(prog="t")
    add_arguments(parser, DECLS)
    args = parser.parse_args(["n1", "--sparsity", "0.25", "--tags", "a", "--tags", "b", "--verbose"])
    values = cli_values(args, DECLS)
    assert values == {"sparsity": 0.25, "scope": "local", "max_layer_ratio": None, "name": "n1", "verbose": True,
                      "tags": ["a", "b"]}
    assert args.scope is None  # what was not given can be told apart from the default
    with pytest.raises(ValueError, match=r"^argument --sparsity: expected a fraction in \[0, 1\] written with a "
                                         r"decimal point, got '1'\. Fix: for 100% write 1\.0; to prune a number"):
        parser.parse_args(["n1", "--sparsity", "1"])
    with pytest.raises(ValueError, match=r"--scope: expected a scope among local, global, got 'glob'.*'global'"):
        parser.parse_args(["n1", "--scope", "glob"])
    assert "[local, global] (default: local)" in " ".join(parser.format_help().split())
    assert "--hidden" not in parser.format_help()


def test_cli_error_renames_declared_parameters():
    exc = InvalidParameterError("max_layer_ratio", "a float in [0, 1)", 2.0,
                                "Fix: relax max_layer_ratio, or max_layer_ratio=0.5.")
    cli = cli_error(exc, DECLS)
    assert str(cli) == ("--max-layer-ratio: expected a float in [0, 1), got 2.0. Fix: relax --max-layer-ratio, "
                        "or --max-layer-ratio 0.5.")
    other = InvalidParameterError("overrides", "a mapping", 1)
    assert cli_error(other, DECLS) is other


def test_schema_fragment():
    fragment = schema(DECLS)
    assert fragment["scope"] == {"expected": "a scope among local, global", "help": "how to rank",
                                 "default": "local", "choices": ["local", "global"]}
    assert "default" not in fragment["name"]
    prune = schema(PRUNE_PARAMS)
    assert set(prune) == {"sparsity", "amount", "criterion", "structure", "scope", "normalize", "min_keep", "include",
                          "exclude", "params", "mode", "types", "overrides"}
    assert prune["scope"]["choices"] == ["local", "global", "lamp", "erk"]
    assert "magnitude" in prune["criterion"]["expected"]


def test_prune_declarations_follow_the_registries():
    class Halves(prunekit.Criterion):
        """Test criterion."""

        def score(self, target):
            return target.original.detach().abs()

    prunekit.register_criterion("halves_test")(Halves)
    try:
        assert validate(PRUNE_PARAMS, {"criterion": "halves_test"}) == {"criterion": "halves_test"}
        model = torch.nn.Sequential(torch.nn.Linear(4, 4))
        prunekit.prune(model, 0.5, criterion="halves_test")
        assert int((model[0].weight == 0).sum()) == 8
    finally:
        prunekit.scores.SCORES.unregister("halves_test")
    with pytest.raises(InvalidParameterError, match="criterion: expected a registered criterion"):
        validate(PRUNE_PARAMS, {"criterion": "halves_test"})


def test_pruner_validates_with_the_declarations():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(InvalidParameterError, match="^mode: expected a realisation among inplace, permanent, reparam, got 'in-place'.*Did you mean 'inplace'"):
        prunekit.Pruner(model, mode="in-place")
    with pytest.raises(InvalidParameterError, match="^min_keep: expected an int >= 0"):
        prunekit.Pruner(model, min_keep=-1)
    assert not prunekit.masks.pruned_tensors(model)


def test_structural_declarations():
    assert validate(STRUCTURAL_PARAMS, {"criterion": "magnitude", "sparsity": 0.3, "round_to": 8}) == {
        "criterion": "magnitude", "sparsity": 0.3, "round_to": 8}
    with pytest.raises(InvalidParameterError, match=r"^sparsity: expected a fraction in \[0, 1\)"):
        validate(STRUCTURAL_PARAMS, {"sparsity": 1.0})
    with pytest.raises(InvalidParameterError, match="Did you mean 'slimming'"):
        validate(STRUCTURAL_PARAMS, {"criterion": "slimmin"})
    assert STRUCTURAL_PARAMS["sparsity"].cli_name == "--sparsity"
    assert schema(STRUCTURAL_PARAMS)["allocation"]["choices"] == ["ranking", "latency"]
