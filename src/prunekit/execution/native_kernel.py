"""Building and loading the compiled sparse Linear kernel (optional, like :mod:`prunekit.native`).

The kernel (source in :mod:`.kernel_source`) is compiled on first use with
``torch.utils.cpp_extension.load_inline`` (a C++ compiler and ``ninja`` are
needed; the build takes 30–90 s once and torch caches it under
``TORCH_EXTENSIONS_DIR``). Nothing here is needed by the rest of prunekit:
without a compiler :func:`kernel` raises :class:`~prunekit.native.NativeBuildError`
naming what is missing, and :class:`~prunekit.execution.SparseLinear` computes
with stock torch ops instead (same outputs to float tolerance).

The instruction set is chosen at run time (AVX-512, else AVX2, else scalar).
``PRUNEKIT_SPARSE_ISA=scalar|avx2|avx512`` (or ``isa=`` of
:func:`~prunekit.execution.matmul.sparse_linear`) forces one, for tests and
comparisons; forcing one the CPU lacks is an error, never a silent fallback.
"""

from __future__ import annotations

import logging
import os
import threading
from types import ModuleType

from ..errors import InvalidParameterError
from ..native import NativeBuildError, missing_requirements
from .kernel_source import FUNCTIONS, SOURCE

__all__ = ["ISAS", "PATHS", "available", "check_isa", "check_path", "kernel", "loaded", "loaded_module",
           "supported_isas"]

logger = logging.getLogger(__name__)

#: Bumped whenever the C++ source changes, so a stale cached build is never loaded.
_VERSION = 16
_NAME = f"prunekit_sparse_linear_v{_VERSION}"
#: ISA names, by the code the kernel takes.
ISAS = {"auto": 0, "scalar": 1, "avx2": 2, "avx512": 3}
_ENV = "PRUNEKIT_SPARSE_ISA"
#: The kernel's paths, by the code it takes: ``"bitmask"`` (decode per 16 columns, few rows),
#: ``"index"`` (16-bit column indices and gathers, few rows, very sparse), ``"rows"`` (bitmask,
#: vectorised over rows), ``"tiled"`` (column indices, tiles of 16 rows); ``"auto"`` picks by
#: the number of rows and the density (:mod:`.kernel_source`).
PATHS = {"auto": 0, "bitmask": 1, "index": 2, "rows": 3, "tiled": 4}

_LOCK = threading.Lock()
_MODULE: ModuleType | None = None
#: The build's failure in this process (not retried: the caller falls back to torch ops).
_FAILED: NativeBuildError | None = None


def available() -> bool:
    """True when the kernel is loaded or could be built on this machine."""
    return _MODULE is not None or (_FAILED is None and not missing_requirements())


def loaded() -> bool:
    """True when the kernel is built and loaded in this process."""
    return _MODULE is not None


def loaded_module() -> ModuleType | None:
    """The kernel module when already built in this process, else None (never builds)."""
    return _MODULE


def kernel(verbose: bool = False) -> ModuleType:
    """The compiled kernel module, built on the first call (cached by torch afterwards).

    Raises :class:`~prunekit.native.NativeBuildError` naming what is missing
    (compiler, ``ninja``) or the compiler's failure.
    """
    global _MODULE, _FAILED
    if _MODULE is not None:
        return _MODULE
    with _LOCK:
        if _MODULE is not None:
            return _MODULE
        if _FAILED is not None:
            raise _FAILED
        missing = missing_requirements()
        if missing:
            raise NativeBuildError(
                "prunekit.execution: cannot build the sparse Linear kernel, missing " + "; ".join(missing)
                + ". Fix: install what is missing (pip install 'prunekit[native]' and a C++ compiler), or use "
                "kernels=('csr',) / stay dense."
            )
        from torch.utils.cpp_extension import load_inline

        logger.info("building prunekit's sparse Linear kernel (%s; cached after the first build)", _NAME)
        try:
            module = load_inline(name=_NAME, cpp_sources=SOURCE, functions=FUNCTIONS,
                                 extra_cflags=["-O3", "-fopenmp", "-std=c++17"], verbose=verbose)
        except (RuntimeError, OSError, ImportError) as exc:
            _FAILED = NativeBuildError(
                f"prunekit.execution: building the sparse Linear kernel failed: {exc}. "
                "Fix: check the compiler output (prunekit.execution.native_kernel.kernel(verbose=True)), "
                "or use kernels=('csr',)."
            )
            raise _FAILED from exc
        _MODULE = module
        return module


def supported_isas(bf16: bool = False) -> list[str]:
    """The instruction sets the kernel can use on this CPU (builds the kernel)."""
    return list(kernel().supported_isas(bf16))


def check_isa(isa: str | None, param: str = "isa") -> int:
    """The kernel's code of ``isa`` (``None``: ``$PRUNEKIT_SPARSE_ISA``, else ``"auto"``)."""
    if isa is None:
        isa = os.environ.get(_ENV, "auto") or "auto"
        param = _ENV
    if not isinstance(isa, str) or isa not in ISAS:
        raise InvalidParameterError(param, "one of " + ", ".join(map(repr, ISAS)), isa,
                                    "Fix: pass isa='auto' (or unset PRUNEKIT_SPARSE_ISA).")
    return ISAS[isa]


def check_path(path: str) -> int:
    """The kernel's code of ``path`` (one of :data:`PATHS`)."""
    if not isinstance(path, str) or path not in PATHS:
        raise InvalidParameterError("path", "one of " + ", ".join(map(repr, PATHS)), path,
                                    "Fix: pass path='auto' (the kernel picks by rows and density).")
    return PATHS[path]
