"""Optional compiled CPU kernels for the lean (``inplace``) mode's optimizer updates.

Stock torch ops cannot read a 1-byte mask inside an arithmetic update without
first converting it: ``p.addcmul_(d, mask_u8, value=-lr)`` materialises the
mask as a float temporary (4 bytes a weight, fresh pages every step), and an
extra pass over every masked weight after each step costs about as much as
SGD's whole update. The kernels here fold the mask into the update itself and
read it byte by byte in the same loop:

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
``masked_adam_``
    one pass of ``torch.optim.Adam`` / ``AdamW`` (Kingma & Ba 2015;
    Loshchilov & Hutter 2019 for the decoupled decay) with the mask folded in,
    for step ``t`` (already counted by the caller)::

        g ← −∇ if maximize else ∇;   g ← g + wd·p  (Adam)  or  p ← p·(1 − lr·wd)  (AdamW)
        m ← m + (1 − β₁)·(g − m);    v ← β₂·v + (1 − β₂)·g²;   v̂ ← max(v̂, v) (amsgrad)
        p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)  where mask,  0  elsewhere

    one pass over ``p``, ``∇``, ``m``, ``v`` and the mask, where torch's
    foreach Adam makes about eight.
``mask_``
    ``p ← p where mask, 0 elsewhere`` (the generic post-step pass of other
    optimizers) without the float temporary.

Every loop is compiled for AVX-512, AVX2 and the baseline x86-64 ISA, chosen at
load time. The kernels are built with ``torch.utils.cpp_extension.load_inline``
(a C++ compiler and ``ninja`` must be installed; the build takes 20–60 s) into
a folder named after this source's version, torch's version and Python's
(under ``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``).

The in-place mode uses them by default (:func:`kernels`): the first time it
updates a weight, an existing build is loaded; where none exists and a C++
compiler and ``ninja`` are present, they are built once for this machine (a
WARNING says so: it takes about a minute, once), as :func:`prunekit.to_sparse`
builds its own kernel; where they cannot be built, an INFO line says what is
missing and the stock-op path is used. :func:`enable` (or
``PRUNEKIT_NATIVE=1``) builds them on request and raises where it cannot;
``PRUNEKIT_NATIVE=0`` or :func:`disable` keeps the stock-op path (nothing is
built or loaded), which gives the same weights up to the rounding of the fused
arithmetic.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import threading
from pathlib import Path
from types import ModuleType

import torch

__all__ = [
    "NativeBuildError",
    "available",
    "build_directory",
    "disable",
    "enable",
    "enabled",
    "kernels",
    "missing_requirements",
    "usable",
    "use_default",
]

logger = logging.getLogger(__name__)

#: Bumped whenever the C++ source changes, so a stale cached build is never loaded.
_VERSION = 10
_NAME = f"prunekit_native_v{_VERSION}"

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>
#include <ATen/Dispatch.h>
#include <algorithm>
#include <cmath>

// Each loop is compiled for AVX-512, AVX2 and the baseline ISA, chosen when the
// library is loaded (GCC/Clang function multi-versioning on x86-64): one build
// runs on any x86-64 CPU, and uses the wide registers where they exist.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__INTEL_COMPILER)
#define PK_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define PK_AVX512 1
#include <immintrin.h>
#else
#define PK_CLONES
#define PK_AVX512 0
#endif
#define PK_INLINE inline __attribute__((always_inline))

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

// -- p *= mask ---------------------------------------------------------------------
template <typename T>
PK_INLINE void mask_range(T* __restrict__ P, const uint8_t* __restrict__ M, int64_t lo, int64_t hi) {
  // a multiply, not a select: without vector masks a select compiles to a mispredicted branch
  for (int64_t i = lo; i < hi; ++i) P[i] = P[i] * static_cast<T>(M[i]);
}
PK_CLONES void mask_f32(float* P, const uint8_t* M, int64_t lo, int64_t hi) { mask_range(P, M, lo, hi); }
PK_CLONES void mask_f64(double* P, const uint8_t* M, int64_t lo, int64_t hi) { mask_range(P, M, lo, hi); }

// -- SGD -------------------------------------------------------------------------------
struct SgdArgs {
  double lr, weight_decay, momentum, dampening;
  bool maximize;
};

// One instantiation per option set so that no branch is left inside the loop.
template <typename T, bool HAS_BUF, bool FIRST, bool NESTEROV>
PK_INLINE void sgd_range(T* __restrict__ P, const T* __restrict__ G, T* __restrict__ B,
                         const uint8_t* __restrict__ M, int64_t lo, int64_t hi, const SgdArgs& o) {
  const T a = static_cast<T>(o.lr), wd = static_cast<T>(o.weight_decay);
  const T sign = o.maximize ? T(-1) : T(1);
  const T mu = static_cast<T>(o.momentum), keep = static_cast<T>(1.0 - o.dampening);
  for (int64_t i = lo; i < hi; ++i) {
    const T w = P[i];
    T d = sign * G[i] + wd * w;  // wd = 0 adds an exact zero
    if constexpr (HAS_BUF) {
      T bv;
      if constexpr (FIRST) bv = d;
      else bv = B[i] * mu + keep * d;
      B[i] = bv;
      if constexpr (NESTEROV) d = d + mu * bv;
      else d = bv;
    }
    // times the 0/1 mask (branch-free): pruned entries are 0 before and after
    P[i] = (w - a * d) * static_cast<T>(M[i]);
  }
}

#define PK_SGD(T, NAME)                                                                                   \
  PK_CLONES void NAME(T* P, const T* G, T* B, const uint8_t* M, int64_t lo, int64_t hi, const SgdArgs& o, \
                      bool first, bool nesterov) {                                                        \
    if (!B) sgd_range<T, false, false, false>(P, G, B, M, lo, hi, o);                                     \
    else if (first && nesterov) sgd_range<T, true, true, true>(P, G, B, M, lo, hi, o);                    \
    else if (first) sgd_range<T, true, true, false>(P, G, B, M, lo, hi, o);                               \
    else if (nesterov) sgd_range<T, true, false, true>(P, G, B, M, lo, hi, o);                            \
    else sgd_range<T, true, false, false>(P, G, B, M, lo, hi, o);                                         \
  }
PK_SGD(float, sgd_f32)
PK_SGD(double, sgd_f64)

#if PK_AVX512
// float32 SGD written out for AVX-512: the mask bytes become a lane mask and the result is
// stored through it (pruned lanes get +0), where the portable loop converts each byte to a
// float and multiplies (two more instructions a lane, measurable on a memory-bound pass).
template <bool HAS_BUF, bool FIRST, bool NESTEROV>
__attribute__((target("avx512f"))) void sgd_avx512_range(float* __restrict__ P, const float* __restrict__ G,
                                                         float* __restrict__ B, const uint8_t* __restrict__ M,
                                                         int64_t lo, int64_t hi, const SgdArgs& o) {
  const __m512 a = _mm512_set1_ps(static_cast<float>(o.lr)), wd = _mm512_set1_ps(static_cast<float>(o.weight_decay));
  const __m512 sign = _mm512_set1_ps(o.maximize ? -1.0f : 1.0f), mu = _mm512_set1_ps(static_cast<float>(o.momentum));
  const __m512 keep = _mm512_set1_ps(static_cast<float>(1.0 - o.dampening));
  int64_t i = lo;
  for (; i + 16 <= hi; i += 16) {
    const __m512 w = _mm512_loadu_ps(P + i);
    __m512 d = _mm512_add_ps(_mm512_mul_ps(sign, _mm512_loadu_ps(G + i)), _mm512_mul_ps(wd, w));
    if constexpr (HAS_BUF) {
      __m512 bv;
      if constexpr (FIRST) bv = d;
      else bv = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(B + i), mu), _mm512_mul_ps(keep, d));
      _mm512_storeu_ps(B + i, bv);
      if constexpr (NESTEROV) d = _mm512_add_ps(d, _mm512_mul_ps(mu, bv));
      else d = bv;
    }
    const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(M + i)));
    const __mmask16 kept = _mm512_test_epi32_mask(bytes, bytes);
    _mm512_storeu_ps(P + i, _mm512_maskz_mov_ps(kept, _mm512_sub_ps(w, _mm512_mul_ps(a, d))));
  }
  if (i < hi) sgd_f32(P, G, B, M, i, hi, o, FIRST, NESTEROV);  // the last < 16 entries: the portable loop
}

__attribute__((target("avx512f"))) void sgd_avx512(float* P, const float* G, float* B, const uint8_t* M, int64_t lo,
                                                   int64_t hi, const SgdArgs& o, bool first, bool nesterov) {
  if (!B) sgd_avx512_range<false, false, false>(P, G, B, M, lo, hi, o);
  else if (first && nesterov) sgd_avx512_range<true, true, true>(P, G, B, M, lo, hi, o);
  else if (first) sgd_avx512_range<true, true, false>(P, G, B, M, lo, hi, o);
  else if (nesterov) sgd_avx512_range<true, false, true>(P, G, B, M, lo, hi, o);
  else sgd_avx512_range<true, false, false>(P, G, B, M, lo, hi, o);
}

__attribute__((target("avx512f"))) void mask_avx512(float* __restrict__ P, const uint8_t* __restrict__ M, int64_t lo, int64_t hi) {
  int64_t i = lo;
  for (; i + 16 <= hi; i += 16) {
    const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(M + i)));
    _mm512_storeu_ps(P + i, _mm512_maskz_mov_ps(_mm512_test_epi32_mask(bytes, bytes), _mm512_loadu_ps(P + i)));
  }
  if (i < hi) mask_f32(P, M, i, hi);
}

const bool kHasAvx512 = __builtin_cpu_supports("avx512f");
#else
const bool kHasAvx512 = false;
#endif

void sgd_any(float* P, const float* G, float* B, const uint8_t* M, int64_t lo, int64_t hi, const SgdArgs& o, bool f, bool n) {
#if PK_AVX512
  if (kHasAvx512) return sgd_avx512(P, G, B, M, lo, hi, o, f, n);
#endif
  sgd_f32(P, G, B, M, lo, hi, o, f, n);
}
void sgd_any(double* P, const double* G, double* B, const uint8_t* M, int64_t lo, int64_t hi, const SgdArgs& o, bool f, bool n) { sgd_f64(P, G, B, M, lo, hi, o, f, n); }

void mask_any(float* P, const uint8_t* M, int64_t lo, int64_t hi) {
#if PK_AVX512
  if (kHasAvx512) return mask_avx512(P, M, lo, hi);
#endif
  mask_f32(P, M, lo, hi);
}
void mask_any(double* P, const uint8_t* M, int64_t lo, int64_t hi) { mask_f64(P, M, lo, hi); }

// -- Adam / AdamW ----------------------------------------------------------------------
struct AdamArgs {
  double beta1, beta2, eps, weight_decay, decay, step_size, bias_correction2_sqrt;
  bool decoupled, maximize;
};

template <typename T, bool AMSGRAD, bool DECOUPLED>
PK_INLINE void adam_range(T* __restrict__ P, const T* __restrict__ G, T* __restrict__ EA, T* __restrict__ ES,
                          T* __restrict__ MX, const uint8_t* __restrict__ M, int64_t lo, int64_t hi, const AdamArgs& o) {
  const T sign = o.maximize ? T(-1) : T(1);
  const T wd = DECOUPLED ? T(0) : static_cast<T>(o.weight_decay);
  const T decay = static_cast<T>(o.decay);  // 1 - lr*wd for AdamW, 1 otherwise
  const T w1 = static_cast<T>(1.0 - o.beta1), b2 = static_cast<T>(o.beta2), w2 = static_cast<T>(1.0 - o.beta2);
  const T eps = static_cast<T>(o.eps), ss = static_cast<T>(o.step_size), bc2 = static_cast<T>(o.bias_correction2_sqrt);
  for (int64_t i = lo; i < hi; ++i) {
    T w = P[i];
    T g = sign * G[i];
    if constexpr (DECOUPLED) w = w * decay;
    else g = g + wd * w;  // wd = 0 adds an exact zero
    const T m0 = EA[i];
    const T m = m0 + w1 * (g - m0);
    const T v = ES[i] * b2 + w2 * g * g;
    EA[i] = m;
    ES[i] = v;
    T vv = v;
    if constexpr (AMSGRAD) {
      vv = std::max(MX[i], v);
      MX[i] = vv;
    }
    const T denom = std::sqrt(vv) / bc2 + eps;
    P[i] = (w + ss * (m / denom)) * static_cast<T>(M[i]);
  }
}

#define PK_ADAM(T, NAME)                                                                                      \
  PK_CLONES void NAME(T* P, const T* G, T* EA, T* ES, T* MX, const uint8_t* M, int64_t lo, int64_t hi,        \
                      const AdamArgs& o) {                                                                    \
    if (MX && o.decoupled) adam_range<T, true, true>(P, G, EA, ES, MX, M, lo, hi, o);                         \
    else if (MX) adam_range<T, true, false>(P, G, EA, ES, MX, M, lo, hi, o);                                  \
    else if (o.decoupled) adam_range<T, false, true>(P, G, EA, ES, MX, M, lo, hi, o);                         \
    else adam_range<T, false, false>(P, G, EA, ES, MX, M, lo, hi, o);                                         \
  }
PK_ADAM(float, adam_f32)
PK_ADAM(double, adam_f64)
void adam_any(float* P, const float* G, float* EA, float* ES, float* MX, const uint8_t* M, int64_t lo, int64_t hi, const AdamArgs& o) { adam_f32(P, G, EA, ES, MX, M, lo, hi, o); }
void adam_any(double* P, const double* G, double* EA, double* ES, double* MX, const uint8_t* M, int64_t lo, int64_t hi, const AdamArgs& o) { adam_f64(P, G, EA, ES, MX, M, lo, hi, o); }

}  // namespace

void mask_(torch::Tensor p, torch::Tensor m) {
  check_pair(p, m);
  const uint8_t* M = reinterpret_cast<const uint8_t*>(m.data_ptr());
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "prunekit_mask_", [&] {
    scalar_t* P = p.data_ptr<scalar_t>();
    at::parallel_for(0, p.numel(), kGrain, [&](int64_t b, int64_t e) { mask_any(P, M, b, e); });
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
  const SgdArgs o{lr, weight_decay, momentum, dampening, maximize};
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "prunekit_masked_sgd_", [&] {
    scalar_t* P = p.data_ptr<scalar_t>();
    const scalar_t* G = g.data_ptr<scalar_t>();
    scalar_t* B = has_buf ? buf->data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, p.numel(), kGrain, [&](int64_t lo, int64_t hi) { sgd_any(P, G, B, M, lo, hi, o, first, nesterov); });
  });
}

// One torch.optim.Adam / AdamW step of one tensor (the step counter already advanced by
// the caller, which passes step_size = -lr / (1 - beta1^t) and sqrt(1 - beta2^t)) with
// the mask folded into the last line. max_exp_avg_sq: given exactly when amsgrad.
void masked_adam_(torch::Tensor p, torch::Tensor g, torch::Tensor m, torch::Tensor exp_avg, torch::Tensor exp_avg_sq,
                  c10::optional<torch::Tensor> max_exp_avg_sq, double lr, double beta1, double beta2, double eps,
                  double weight_decay, bool decoupled, bool maximize, double step_size, double bias_correction2_sqrt) {
  check_pair(p, m);
  check_like(p, g, "grad");
  check_like(p, exp_avg, "exp_avg");
  check_like(p, exp_avg_sq, "exp_avg_sq");
  const bool ams = max_exp_avg_sq.has_value() && max_exp_avg_sq->defined();
  if (ams) check_like(p, *max_exp_avg_sq, "max_exp_avg_sq");
  const uint8_t* M = reinterpret_cast<const uint8_t*>(m.data_ptr());
  const double decay = (decoupled && weight_decay != 0.0) ? 1.0 - lr * weight_decay : 1.0;
  const AdamArgs o{beta1, beta2, eps, weight_decay, decay, step_size, bias_correction2_sqrt, decoupled, maximize};
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "prunekit_masked_adam_", [&] {
    scalar_t* P = p.data_ptr<scalar_t>();
    const scalar_t* G = g.data_ptr<scalar_t>();
    scalar_t* EA = exp_avg.data_ptr<scalar_t>();
    scalar_t* ES = exp_avg_sq.data_ptr<scalar_t>();
    scalar_t* MX = ams ? max_exp_avg_sq->data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, p.numel(), kGrain, [&](int64_t lo, int64_t hi) { adam_any(P, G, EA, ES, MX, M, lo, hi, o); });
  });
}
"""

_FUNCTIONS = ["mask_", "masked_sgd_", "masked_adam_"]
_CFLAGS = ["-O3", "-fopenmp", "-std=c++17", "-fno-math-errno"]
#: Written beside the library after a successful build: what it was built from.
_STAMP = "prunekit-build-stamp.txt"

_LOCK = threading.Lock()
_KERNELS: ModuleType | None = None
#: The module once built or loaded in this process; :func:`disable` keeps it so that a later :func:`enable` is instant.
_BUILT: ModuleType | None = None
#: Whether ``PRUNEKIT_NATIVE=1`` was acted on already (one attempt per process).
_ENV_TRIED = False
#: Whether an existing build may be loaded by default (cleared by :func:`disable`).
_AUTO = True
#: Whether the default load of an existing build was tried already (one attempt per process).
_AUTO_TRIED = False


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


def _fingerprint() -> str:
    """What a build must match to be loaded: the source, the flags, torch's and Python's versions."""
    digest = hashlib.sha256("\0".join([_SOURCE, *_FUNCTIONS, *_CFLAGS]).encode()).hexdigest()
    return f"{_NAME} torch {torch.__version__} python {sys.version_info[0]}.{sys.version_info[1]} source {digest}"


def build_directory() -> Path:
    """The folder of this version's build: ``$TORCH_EXTENSIONS_DIR`` (default torch's
    ``~/.cache/torch_extensions``) / ``prunekit-torch<version>-py<version>`` / the source version."""
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    folder = f"prunekit-torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}{getattr(sys, 'abiflags', '')}"
    return Path(root) / folder / _NAME


def _library_path() -> Path | None:
    """The built library when a complete build of exactly this source exists, else None."""
    folder = build_directory()
    stamp = folder / _STAMP
    try:
        if stamp.read_text().strip() != _fingerprint():
            return None
    except OSError:
        return None
    for candidate in folder.glob(f"{_NAME}*.so"):
        return candidate
    return None


def _load_built() -> ModuleType | None:
    """Import an existing build (no compiler involved), or None where there is none or it does not load."""
    path = _library_path()
    if path is None:
        return None
    try:
        spec = importlib.util.spec_from_file_location(_NAME, path)
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (ImportError, OSError) as exc:
        logger.warning("prunekit.native: the build at %s does not load (%s); using the stock-op path", path, exc)
        return None
    if not all(hasattr(module, name) for name in _FUNCTIONS):
        return None
    return module


def available() -> bool:
    """True when the kernels are loaded, or built already, or could be built on this machine."""
    return _KERNELS is not None or _library_path() is not None or not missing_requirements()


def enabled() -> bool:
    """True when the kernels are loaded and used by the in-place mode."""
    return _KERNELS is not None


def enable(verbose: bool = False) -> ModuleType:
    """Load the kernels, compiling them first where no build of this version exists (cached
    for every later process: see :func:`build_directory`); the in-place mode then uses them.

    Raises :class:`NativeBuildError` naming what is missing (compiler,
    ``ninja``) or the compiler's failure; nothing is changed then.
    """
    global _KERNELS, _BUILT, _AUTO
    with _LOCK:
        if _KERNELS is not None:
            return _KERNELS
        module = _BUILT or _load_built()
        if module is None:
            module = _build(verbose)
        _KERNELS = _BUILT = module
        _AUTO = True
        return module


def _build(verbose: bool) -> ModuleType:
    missing = missing_requirements()
    if missing:
        raise NativeBuildError(
            "prunekit.native.enable: cannot build the compiled kernels, missing " + "; ".join(missing)
            + ". Fix: install what is missing, or keep the stock-op path (do not call enable)."
        )
    from torch.utils.cpp_extension import load_inline

    folder = build_directory()
    folder.mkdir(parents=True, exist_ok=True)
    logger.info("building prunekit's native kernels (%s) in %s", _NAME, folder)
    try:
        module = load_inline(
            name=_NAME,
            cpp_sources=_SOURCE,
            functions=_FUNCTIONS,
            extra_cflags=_CFLAGS,
            build_directory=str(folder),
            verbose=verbose,
        )
    except (RuntimeError, OSError, ImportError) as exc:
        raise NativeBuildError(
            f"prunekit.native.enable: building the compiled kernels failed: {exc}. "
            "Fix: check the compiler output (enable(verbose=True)), or keep the stock-op path."
        ) from exc
    (folder / _STAMP).write_text(_fingerprint() + "\n")
    logger.info("prunekit native kernels built and loaded")
    return module


def disable() -> None:
    """Stop using the kernels, also an existing build (the in-place mode returns to the stock-op path)."""
    global _KERNELS, _AUTO
    with _LOCK:
        _KERNELS = None
        _AUTO = False


def use_default() -> None:
    """Forget :func:`enable` and :func:`disable`: use an existing build if there is one, else stock ops."""
    global _KERNELS, _AUTO, _AUTO_TRIED
    with _LOCK:
        _KERNELS = None
        _AUTO = True
        _AUTO_TRIED = False


def kernels() -> ModuleType | None:
    """The kernel module the in-place mode uses now, or None for the stock-op path.

    ``PRUNEKIT_NATIVE=1`` enables (building if needed, an error logged where it
    cannot) on the first call; otherwise, unless ``PRUNEKIT_NATIVE=0`` is set or
    :func:`disable` was called, the first call loads an existing build or, where
    none exists and this machine can build one, builds it once (logged at
    WARNING), else logs at INFO what is missing and keeps the stock-op path.
    """
    if _KERNELS is None:
        flag = os.environ.get("PRUNEKIT_NATIVE")
        if flag == "1" and not _ENV_TRIED:
            _enable_from_env()
        elif _AUTO and not _AUTO_TRIED and flag != "0":
            _load_by_default()
    return _KERNELS


def _load_by_default() -> None:
    global _KERNELS, _BUILT, _AUTO_TRIED
    with _LOCK:
        _AUTO_TRIED = True
        module = _BUILT or _load_built()
        if module is not None:
            logger.debug("prunekit.native: using the existing build of the kernels (%s)", build_directory())
        else:
            module = _build_by_default()
        if module is not None:
            _KERNELS = _BUILT = module


def _build_by_default() -> ModuleType | None:
    """Build the kernels once where this machine can (the in-place mode's default), else None."""
    missing = missing_requirements()
    if missing:
        logger.info("prunekit.native: the compiled optimizer kernels cannot be built here (missing %s); the "
                    "in-place mode uses stock torch ops", "; ".join(missing))
        return None
    logger.warning("prunekit.native: building the in-place mode's compiled optimizer kernels once for this "
                   "machine in %s (about a minute; later processes load the build; PRUNEKIT_NATIVE=0 keeps "
                   "stock torch ops)", build_directory())
    try:
        return _build(False)
    except NativeBuildError as exc:
        logger.warning("%s The in-place mode uses stock torch ops.", exc)
        return None


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
