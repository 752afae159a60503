"""Unknown keyword arguments get the project's error form, with the closest real name.

Python's own ``TypeError: f() got an unexpected keyword argument 'scop'``
names neither the parameters that exist nor a fix. :func:`checked_keywords`
wraps a public function so that such a call raises
:class:`UnknownArgumentError` (an :class:`~prunekit.errors.InvalidParameterError`
that is also a ``TypeError``, so existing ``except TypeError`` code still
works) listing the parameters and suggesting the closest one. The wrapper
keeps the function's signature and docstring, so ``help()`` is unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import InvalidParameterError, did_you_mean

__all__ = ["UnknownArgumentError", "checked_keywords"]

F = TypeVar("F", bound=Callable[..., Any])


class UnknownArgumentError(InvalidParameterError, TypeError):
    """A keyword argument the function does not have."""


def checked_keywords(fn: F) -> F:
    """``fn`` with unknown keyword arguments refused in the error form (see the module doc)."""
    signature = inspect.signature(fn)
    named = [n for n, p in signature.parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"]
    open_ended = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    where = fn.__qualname__.replace(".__init__", "")

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not open_ended:
            unknown = [k for k in kwargs if k not in signature.parameters]
            if unknown:
                raise UnknownArgumentError(
                    unknown[0], f"a keyword argument of {where} ({', '.join(named)})", f"<{unknown[0]}=...>",
                    ("Fix: remove it or use one of the listed names." + did_you_mean(unknown[0], named)).strip(),
                )
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
