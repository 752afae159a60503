"""prunekit.native: the optional compiled kernels of the in-place mode's optimizer updates."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import inplace_pair
from torch import nn

import prunekit
from prunekit import native


def _pruned(seed: int = 0):
    return inplace_pair(0.6, seed)


@pytest.mark.slow
@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.RMSprop(p, lr=1e-2),
    lambda p: torch.optim.Adagrad(p, lr=1e-2, weight_decay=0.1),
])
def test_post_step_mask_kernel_equals_multiplication(make_opt, native_kernels):
    """Optimizers without a fused update keep torch's step and the generic mask pass, in the kernel."""
    model, reference, masks = _pruned()
    native_kernels.clear()  # pruning itself zeroed the weights through the kernel too
    opt, ref_opt = make_opt(model.parameters()), make_opt(reference.parameters())
    torch.manual_seed(2)
    for _ in range(3):
        x = torch.randn(16, 300)
        for m, o in ((model, opt), (reference, ref_opt)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
        with torch.no_grad():
            reference[0].weight.mul_(masks[0])
            reference[2].weight.mul_(masks[1])
    assert [name for name, _ in native_kernels] == ["mask_"] * 6  # two masked weights, three steps
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)  # selecting is exact: no arithmetic differs


@pytest.mark.slow
def test_unsupported_tensors_take_the_stock_path(native_kernels):
    """float16 weights are not handed to the kernels; the update still masks them."""
    torch.manual_seed(0)
    model = nn.Linear(300, 256).to(torch.float16)
    prunekit.prune(model, 0.5, mode="inplace")
    keep = model.weight_mask.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 300, dtype=torch.float16)).float().square().mean().backward()
        opt.step()
    assert native_kernels == []
    assert not model.weight[~keep].any() and model.weight[keep].all()


def test_enable_without_compiler_names_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_KERNELS", None)
    monkeypatch.setattr(native, "_BUILT", None)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # no existing build to fall back on
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    assert "no-such-compiler-xyz" in " ".join(native.missing_requirements())
    assert not native.available()
    with pytest.raises(native.NativeBuildError, match=r"no-such-compiler-xyz.*Fix:"):
        native.enable()
    assert not native.enabled()


def test_environment_variable_failure_is_logged_not_silent(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_KERNELS", None)
    monkeypatch.setattr(native, "_BUILT", None)
    monkeypatch.setattr(native, "_ENV_TRIED", False)
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    monkeypatch.setenv("PRUNEKIT_NATIVE", "1")
    with caplog.at_level("WARNING", logger="prunekit.native"):
        assert native.kernels() is None
    assert "PRUNEKIT_NATIVE=1 but the kernels are not used" in caplog.text
    # training still works, on the stock path
    model, _, masks = _pruned()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    model(torch.randn(4, 300)).sum().backward()
    opt.step()
    assert not model[0].weight[~masks[0]].any()


@pytest.mark.slow
def test_enable_twice_returns_the_same_module(_native_module, monkeypatch):
    monkeypatch.setattr(native, "_KERNELS", None)
    monkeypatch.setattr(native, "_BUILT", None)
    first = native.enable()
    assert native.enable() is first and native.enabled()
    native.disable()
    assert not native.enabled()


def test_pip_ninja_is_found_off_path(monkeypatch, tmp_path):
    """A ninja installed by pip into a folder that is not on PATH is still found."""
    import sys
    import types

    exe = tmp_path / "ninja"
    exe.write_text("#!/bin/sh\necho 1.11.1\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setitem(sys.modules, "ninja", types.SimpleNamespace(BIN_DIR=str(tmp_path)))
    native._expose_pip_ninja()
    assert native.shutil.which("ninja") == str(exe)


def _fresh_state(monkeypatch, tmp_path=None, compiler=False):
    """prunekit.native as in a new process, with no PRUNEKIT_NATIVE set, on a machine with or
    without a compiler; a real compilation fails the test (tests that expect one stub ``_build``)."""
    for name, value in (("_KERNELS", None), ("_BUILT", None), ("_AUTO", True), ("_AUTO_TRIED", False), ("_ENV_TRIED", False)):
        monkeypatch.setattr(native, name, value)
    monkeypatch.delenv("PRUNEKIT_NATIVE", raising=False)
    if tmp_path is not None:
        monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(native, "missing_requirements", lambda: [] if compiler else ["a C++ compiler (none in this test)"])

    def no_compile(verbose):
        raise AssertionError("compiled although it should not have")

    monkeypatch.setattr(native, "_build", no_compile)


def _stub_build(monkeypatch, result):
    """Replace the compiler: each build is recorded and returns ``result`` (or raises it)."""
    builds = []

    def build(verbose):
        builds.append(verbose)
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(native, "_build", build)
    return builds


def test_without_a_build_the_default_builds_once_where_a_compiler_exists(monkeypatch, tmp_path, caplog):
    _fresh_state(monkeypatch, tmp_path, compiler=True)
    built = SimpleNamespace(mask_=None, masked_sgd_=None, masked_adam_=None)
    builds = _stub_build(monkeypatch, built)
    with caplog.at_level("WARNING", logger="prunekit.native"):
        assert native.kernels() is built and native.enabled()
    assert builds == [False] and "building the in-place mode's compiled optimizer kernels once" in caplog.text
    assert native.kernels() is built and builds == [False]  # once per process, then loaded by later ones


def test_a_default_build_that_fails_warns_and_keeps_stock_ops(monkeypatch, tmp_path, caplog):
    _fresh_state(monkeypatch, tmp_path, compiler=True)
    builds = _stub_build(monkeypatch, native.NativeBuildError("prunekit.native.enable: building failed: boom."))
    with caplog.at_level("WARNING", logger="prunekit.native"):
        assert native.kernels() is None and not native.enabled()
    assert "boom" in caplog.text and "uses stock torch ops" in caplog.text
    assert native.kernels() is None and builds == [False]  # not tried again at every step


def test_the_environment_opt_out_builds_nothing(monkeypatch, tmp_path):
    _fresh_state(monkeypatch, tmp_path, compiler=True)
    monkeypatch.setenv("PRUNEKIT_NATIVE", "0")
    assert native.kernels() is None  # _build would raise: nothing is compiled


def test_without_a_build_or_a_compiler_the_default_is_the_stock_path(monkeypatch, tmp_path, caplog):
    _fresh_state(monkeypatch, tmp_path)
    with caplog.at_level("INFO", logger="prunekit.native"):
        assert native.kernels() is None and not native.enabled()
    assert "cannot be built here (missing a C++ compiler" in caplog.text
    assert native.kernels() is None and not native.enabled()
    model, _, masks = _pruned()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 300)).square().mean().backward()
        opt.step()
    assert not model[0].weight[~masks[0]].any()


def test_a_build_of_other_sources_is_not_loaded(monkeypatch, tmp_path, caplog):
    _fresh_state(monkeypatch, tmp_path)
    folder = native.build_directory()
    folder.mkdir(parents=True)
    (folder / f"{native._NAME}.so").write_bytes(b"not a library")
    (folder / native._STAMP).write_text("built from something else\n")
    with caplog.at_level("WARNING", logger="prunekit.native"):
        assert native.kernels() is None
    assert "does not load" not in caplog.text  # not even tried
    # a matching stamp beside a library that does not load: a warning, and the stock path
    monkeypatch.setattr(native, "_AUTO_TRIED", False)
    (folder / native._STAMP).write_text(native._fingerprint() + "\n")
    with caplog.at_level("WARNING", logger="prunekit.native"):
        assert native.kernels() is None
    assert "does not load" in caplog.text


@pytest.mark.slow
def test_an_existing_build_is_used_by_default_without_compiling(_native_module, monkeypatch):
    _fresh_state(monkeypatch)  # the build of the session fixture, in the default folder
    module = native.kernels()
    assert module is not None and hasattr(module, "masked_adam_") and native.enabled()
    model, _, masks = _pruned()
    before = model[0].weight.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    opt.zero_grad()
    model(torch.randn(4, 300)).square().mean().backward()
    opt.step()
    assert not torch.equal(model[0].weight, before) and not model[0].weight[~masks[0]].any()
    native.disable()  # switched off: not loaded again by the next call
    assert native.kernels() is None
    native.use_default()
    assert native.kernels() is module
    monkeypatch.setenv("PRUNEKIT_NATIVE", "0")  # the environment's opt-out
    native.use_default()
    assert native.kernels() is None
