"""Optional compiled CPU kernels for the lean (``inplace``) mode's optimizer updates.

Stock torch ops cannot read a 1-byte mask inside an arithmetic update without
first converting it: ``p.addcmul_(d, mask_u8, value=-lr)`` materialises the
mask as a float temporary (4 bytes a weight, fresh pages every step), and that
conversion is most of what the in-place mode still costs over a dense SGD step
(docs/benchmarks.md §2). The kernels here read the mask byte by byte in the
same loop as the update:

``masked_sgd_``
    one pass of ``torch.optim.SGD``'s per-tensor arithmetic (Sutskever et al.
    2013 momentum as torch implements it) with the mask folded in::

        g ← −∇ if maximize else ∇;   g ← g + wd·p
        b ← g  (first step)  or  b ← μ·b + (1 − τ)·g
        d ← g + μ·b  (Nesterov)  or  b  (momentum)  or  g  (μ = 0)
        p ← p − lr·d  where mask,  0  elsewhere

    reading ``p``, ``∇``, ``mask`` (and ``b``) once and writing ``p`` (and
    ``b``) once, where torch's own update plus a re-mask pass reads the weights
    twice.
``mask_``
    ``p ← p where mask, 0 elsewhere`` (the generic post-step pass of other
    optimizers) without the float temporary.

They are compiled on first use with ``torch.utils.cpp_extension.load_inline``
(a C++ compiler and ``ninja`` must be installed; the build takes 20–60 s once
and is cached by torch under ``TORCH_EXTENSIONS_DIR``). Nothing is compiled
unless asked: call :func:`enable` (or set ``PRUNEKIT_NATIVE=1`` before the
first optimizer step). Without them prunekit uses the stock-op path, which
gives the same weights up to the rounding of one fused multiply-add.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from types import ModuleType

import torch

__all__ = ["NativeBuildError", "available", "disable", "enable", "enabled", "kernels", "missing_requirements", "usable"]

logger = logging.getLogger(__name__)

#: Bumped whenever the C++ source changes, so a stale cached build is never loaded.
_VERSION = 8
_NAME = f"prunekit_native_v{_VERSION}"

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>
#include <ATen/Dispatch.h>

namespace {

constexpr int64_t kGrain = 32768;

void check_pair(const torch::Tensor& p, const torch::Tensor& m) {
  TORCH_CHECK(p.device().is_cpu() && m.device().is_cpu(), "prunekit native kernels run on CPU tensors");
  TORCH_CHECK(p.is_contiguous() && m.is_contiguous(), "prunekit native kernels need contiguous tensors");
  TORCH_CHECK(m.scalar_type() == torch::kBool || m.scalar_type() == torch::kByte, "mask must be bool or uint8");
  TORCH_CHECK(p.numel() == m.numel(), "mask and parameter differ in size");
}

void check_like(const torch::Tensor& p, const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), what, " must be a contiguous CPU tensor");
  TORCH_CHECK(t.scalar_type() == p.scalar_type() && t.numel() == p.numel(), what, " must match the parameter");
}

}  // namespace

void mask_(torch::Tensor p, torch::Tensor m) {
  check_pair(p, m);
  const uint8_t* M = reinterpret_cast<const uint8_t*>(m.data_ptr());
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "prunekit_mask_", [&] {
    scalar_t* P = p.data_ptr<scalar_t>();
    at::parallel_for(0, p.numel(), kGrain, [&](int64_t b, int64_t e) {
      // a multiply, not a select: with random masks a select compiles to a mispredicted branch
      for (int64_t i = b; i < e; ++i) P[i] = P[i] * static_cast<scalar_t>(M[i]);
    });
  });
}

// The loop of masked_sgd_, one instantiation per option set so that no branch is left inside it.
template <typename scalar_t, bool HAS_BUF, bool FIRST, bool NESTEROV>
void sgd_loop(scalar_t* __restrict__ P, const scalar_t* __restrict__ G, scalar_t* __restrict__ B,
              const uint8_t* __restrict__ M, int64_t n,
              double lr, double weight_decay, double momentum, double dampening, bool maximize) {
  using opmath_t = at::opmath_type<scalar_t>;
  const opmath_t a = static_cast<opmath_t>(lr), wd = static_cast<opmath_t>(weight_decay);
  const opmath_t sign = maximize ? opmath_t(-1) : opmath_t(1);
  const opmath_t mu = static_cast<opmath_t>(momentum), keep = static_cast<opmath_t>(1.0 - dampening);
  at::parallel_for(0, n, kGrain, [=](int64_t lo, int64_t hi) {
    scalar_t* __restrict__ P_ = P;
    const scalar_t* __restrict__ G_ = G;
    scalar_t* __restrict__ B_ = B;
    const uint8_t* __restrict__ M_ = M;
    for (int64_t i = lo; i < hi; ++i) {
      const opmath_t w = static_cast<opmath_t>(P_[i]);
      opmath_t d = sign * static_cast<opmath_t>(G_[i]) + wd * w;  // wd = 0 adds an exact zero
      if constexpr (HAS_BUF) {
        scalar_t bv;
        if constexpr (FIRST) {
          bv = static_cast<scalar_t>(d);
        } else {
          const scalar_t scaled = static_cast<scalar_t>(static_cast<opmath_t>(B_[i]) * mu);
          bv = static_cast<scalar_t>(static_cast<opmath_t>(scaled) + keep * d);
        }
        B_[i] = bv;
        if constexpr (NESTEROV) d = d + mu * static_cast<opmath_t>(bv);
        else d = static_cast<opmath_t>(bv);
      }
      // times the 0/1 mask (branch-free): pruned entries are 0 before and after
      P_[i] = static_cast<scalar_t>((w - a * d) * static_cast<opmath_t>(M_[i]));
    }
  });
}

// One torch.optim.SGD step of one tensor with the mask folded into the last line.
// buf: the momentum buffer (None when momentum == 0); first: buf is initialised
// from the gradient (torch's first step) instead of being updated.
void masked_sgd_(torch::Tensor p, torch::Tensor g, torch::Tensor m, c10::optional<torch::Tensor> buf,
                 double lr, double weight_decay, double momentum, double dampening,
                 bool nesterov, bool maximize, bool first) {
  check_pair(p, m);
  check_like(p, g, "grad");
  const bool has_buf = buf.has_value() && buf->defined();
  TORCH_CHECK(has_buf == (momentum != 0.0), "a momentum buffer is needed exactly when momentum != 0");
  if (has_buf) check_like(p, *buf, "momentum_buffer");
  const uint8_t* M = reinterpret_cast<const uint8_t*>(m.data_ptr());
  const int64_t n = p.numel();
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "prunekit_masked_sgd_", [&] {
    scalar_t* P = p.data_ptr<scalar_t>();
    const scalar_t* G = g.data_ptr<scalar_t>();
    scalar_t* B = has_buf ? buf->data_ptr<scalar_t>() : nullptr;
    if (!has_buf) sgd_loop<scalar_t, false, false, false>(P, G, B, M, n, lr, weight_decay, momentum, dampening, maximize);
    else if (first && nesterov) sgd_loop<scalar_t, true, true, true>(P, G, B, M, n, lr, weight_decay, momentum, dampening, maximize);
    else if (first) sgd_loop<scalar_t, true, true, false>(P, G, B, M, n, lr, weight_decay, momentum, dampening, maximize);
    else if (nesterov) sgd_loop<scalar_t, true, false, true>(P, G, B, M, n, lr, weight_decay, momentum, dampening, maximize);
    else sgd_loop<scalar_t, true, false, false>(P, G, B, M, n, lr, weight_decay, momentum, dampening, maximize);
  });
}
"""

_LOCK = threading.Lock()
_KERNELS: ModuleType | None = None
#: The module once built in this process; :func:`disable` keeps it so that a later :func:`enable` is instant.
_BUILT: ModuleType | None = None
#: Whether ``PRUNEKIT_NATIVE=1`` was acted on already (one attempt per process).
_ENV_TRIED = False


class NativeBuildError(RuntimeError):
    """The optional kernels cannot be built here; the message says what is missing and the fix."""


def _compiler() -> str:
    return os.environ.get("CXX", "c++")


def _expose_pip_ninja() -> None:
    """Put the ``ninja`` of the pip package on PATH when it is installed but its folder is not on PATH
    (a Python run without activating its environment); torch looks for ``ninja`` on PATH only."""
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja  # the pip package (prunekit[native])
    except ImportError:
        return
    folder = getattr(ninja, "BIN_DIR", None)
    if folder and shutil.which("ninja", path=folder) is not None:
        os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")
        logger.info("prunekit.native: added %s (pip's ninja) to PATH for the build", folder)


def missing_requirements() -> list[str]:
    """What this machine lacks to build the kernels (empty when it can)."""
    from torch.utils.cpp_extension import is_ninja_available

    _expose_pip_ninja()
    missing = []
    if shutil.which(_compiler()) is None:
        missing.append(f"a C++ compiler ({_compiler()!r} is not on PATH; install g++ or set CXX)")
    if not is_ninja_available():
        missing.append("ninja (pip install ninja, or the system package)")
    return missing


def available() -> bool:
    """True when the kernels are loaded or could be built on this machine."""
    return _KERNELS is not None or not missing_requirements()


def enabled() -> bool:
    """True when the kernels are loaded and used by the in-place mode."""
    return _KERNELS is not None


def enable(verbose: bool = False) -> ModuleType:
    """Compile (once, cached by torch) and load the kernels; the in-place mode then uses them.

    Raises :class:`NativeBuildError` naming what is missing (compiler,
    ``ninja``) or the compiler's failure; nothing is changed then.
    """
    global _KERNELS, _BUILT
    with _LOCK:
        if _KERNELS is not None:
            return _KERNELS
        if _BUILT is not None:
            _KERNELS = _BUILT
            return _BUILT
        missing = missing_requirements()
        if missing:
            raise NativeBuildError(
                "prunekit.native.enable: cannot build the compiled kernels, missing " + "; ".join(missing)
                + ". Fix: install what is missing, or keep the stock-op path (do not call enable)."
            )
        from torch.utils.cpp_extension import load_inline

        logger.info("building prunekit's native kernels (%s; cached after the first build)", _NAME)
        try:
            module = load_inline(
                name=_NAME,
                cpp_sources=_SOURCE,
                functions=["mask_", "masked_sgd_"],
                extra_cflags=["-O3", "-fopenmp", "-std=c++17"],
                verbose=verbose,
            )
        except (RuntimeError, OSError, ImportError) as exc:
            raise NativeBuildError(
                f"prunekit.native.enable: building the compiled kernels failed: {exc}. "
                "Fix: check the compiler output (enable(verbose=True)), or keep the stock-op path."
            ) from exc
        _KERNELS = _BUILT = module
        logger.info("prunekit native kernels loaded")
        return module


def disable() -> None:
    """Stop using the kernels (the in-place mode returns to the stock-op path)."""
    global _KERNELS
    with _LOCK:
        _KERNELS = None


def kernels() -> ModuleType | None:
    """The loaded kernel module, or None. ``PRUNEKIT_NATIVE=1`` enables on first call."""
    if _KERNELS is None and os.environ.get("PRUNEKIT_NATIVE") == "1" and not _ENV_TRIED:
        _enable_from_env()
    return _KERNELS



def _enable_from_env() -> None:
    global _ENV_TRIED
    _ENV_TRIED = True
    try:
        enable()
    except NativeBuildError as exc:
        logger.warning("PRUNEKIT_NATIVE=1 but the kernels are not used: %s", exc)


#: dtypes the kernels are used for: those whose arithmetic matches torch's op by op
_DTYPES = (torch.float32, torch.float64)


def usable(param: torch.Tensor, *others: torch.Tensor | None) -> bool:
    """True when ``param`` and the tensors updated with it fit the kernels (CPU, contiguous, floating)."""
    if param.device.type != "cpu" or param.dtype not in _DTYPES or not param.is_contiguous():
        return False
    return all(
        t is None or (t.device.type == "cpu" and t.is_contiguous() and t.numel() == param.numel()
                      and (t.dtype == param.dtype or t.dtype in (torch.bool, torch.uint8)))
        for t in others
    )
