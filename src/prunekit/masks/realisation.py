"""The realisation protocol and registry: how bool keep masks become a model.

A *realisation* takes the keep masks an allocation chose (one bool tensor per
target, True = kept) and makes the model compute with them. prunekit ships
three, registered by name:

* ``reparam``: the layout of ``torch.nn.utils.prune`` (:mod:`.reparam`);
* ``inplace``: zeros in place, a bool mask and an optimizer hook (:mod:`.inplace`);
* ``permanent``: zeros written at once, no mask and no hook (:mod:`.permanent`).

``Pruner(mode=...)``, :func:`prunekit.prune`, :func:`prunekit.apply_masks`,
the command line's ``--mode`` and recipes accept every registered name,
read from this registry at each call.

Adding one is one class and a decorator::

    @prunekit.register_realisation("zero_on_forward")
    class ZeroOnForward(prunekit.Realisation):
        layout = "inplace"
        def masked(self, module): ...
        def apply(self, module, name, keep, description): ...   # returns an undo
        def commit(self, module, name, keep): ...
        def remove(self, module, name): ...

Whatever the strategy, a realised tensor is left in one of three *layouts*,
the only forms the rest of prunekit reads (:func:`prunekit.targets.tensor_state`:
measurement, checkpoints, the next step's allocation):

* ``"reparam"``: Parameter ``<name>_orig``, buffer ``<name>_mask`` and a
  ``torch.nn.utils.prune.BasePruningMethod`` forward pre-hook that sets
  ``module.<name> = orig * mask``;
* ``"inplace"``: Parameter ``<name>`` with its pruned entries zero, buffer
  ``<name>_mask`` (bool);
* ``"dense"``: nothing left to show it was pruned: plain zeros.

A checkpoint records the layout, not the realisation: masks restored by
:func:`prunekit.restore_masks` come back as ``reparam`` or ``inplace``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import InvalidParameterError, did_you_mean
from ..registry import Registry

__all__ = [
    "LAYOUTS",
    "REALISATIONS",
    "Realisation",
    "create_realisation",
    "list_realisations",
    "realisation_of",
    "realisations",
    "register_realisation",
    "unregister_realisation",
]

#: The forms a realised tensor may take (see the module docstring).
LAYOUTS = ("reparam", "inplace", "dense")

Undo = Callable[[], None]


class Realisation:
    """Base class of realisations; subclass it and register it with :func:`register_realisation`.

    Attributes:
        name: the registered name (set by :func:`register_realisation`).
        layout: ``"reparam"``, ``"inplace"`` or ``"dense"``: the form a
            tensor has once realised (checked after :meth:`apply`).

    :func:`prunekit.apply_masks` calls, for a list of targets, :meth:`apply`
    on each (undoing those done if one fails), then :meth:`commit` on each.
    :func:`prunekit.remove` and :func:`prunekit.make_permanent` call
    :meth:`remove` on the tensors :meth:`masked` names. A realisation is
    built without arguments to answer :meth:`masked` and :meth:`remove`, and
    must keep no state of its own between calls (the model holds it).
    """

    name: str = ""
    layout: str = "inplace"

    def masked(self, module: nn.Module) -> list[str]:
        """Names of the tensors of ``module`` this realisation holds masks on.

        Name only the tensors this realisation made, recognised by something
        of its own (the class of its hook): realisations registered by users
        are asked before the built-in ones, and the first to name a tensor owns it.
        """
        return []

    def apply(self, module: nn.Module, name: str, keep: torch.Tensor, description: str) -> Undo:
        """Realise ``keep`` on ``module.<name>``, reversibly; return the function that undoes it.

        ``keep`` is a bool tensor of the parameter's shape that the
        realisation may keep. On a tensor this realisation already masks,
        the new mask is the old one and ``keep`` (``old & keep``).
        ``description`` says what made the mask (criterion, structure, level).
        Changes that cannot be undone (writing zeros) belong in :meth:`commit`.
        """
        raise NotImplementedError

    def commit(self, module: nn.Module, name: str, keep: torch.Tensor) -> None:
        """Finish ``module.<name>`` once every target is applied (must not fail); default: nothing."""

    def remove(self, module: nn.Module, name: str) -> None:
        """Fold the mask into the parameter (pruned entries exact zeros) and drop masks and hooks.

        Afterwards ``module.<name>`` is a plain Parameter and the model's
        outputs are unchanged.
        """
        raise NotImplementedError

    def reapply(self, module: nn.Module, name: str) -> None:
        """Zero the pruned entries again after an update that bypassed the realisation; default: nothing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


REALISATIONS: Registry[Realisation] = Registry("realisation")


def register_realisation(name: str) -> Callable[[type[Realisation]], type[Realisation]]:
    """Class decorator: register a :class:`Realisation` subclass under ``name``.

    The name is then accepted as ``mode=`` by :func:`prunekit.prune`,
    :class:`prunekit.Pruner`, :func:`prunekit.apply_masks` and the command line.
    """

    def add(cls: type[Realisation]) -> type[Realisation]:
        if not (isinstance(cls, type) and issubclass(cls, Realisation)):
            raise InvalidParameterError(
                "realisation", "a subclass of prunekit.Realisation", cls,
                "Fix: class MyRealisation(prunekit.Realisation): ...",
            )
        if cls.layout not in LAYOUTS:
            raise InvalidParameterError(
                "layout", "one of " + ", ".join(repr(x) for x in LAYOUTS), cls.layout,
                f"Fix: set {cls.__name__}.layout to the form a realised tensor takes.",
            )
        REALISATIONS.register(name, cls)
        cls.name = name.lower()
        return cls

    return add


def unregister_realisation(name: str) -> None:
    """Remove the realisation ``name`` (for tests and plugins; tensors it masks stay masked)."""
    REALISATIONS.unregister(name)
    _PROBES.pop(str(name).lower(), None)


def list_realisations(pattern: str = "*") -> list[str]:
    """Names of registered realisations matching the wildcard ``pattern``."""
    return REALISATIONS.names(pattern)


def create_realisation(name: str) -> Realisation:
    """A new instance of the realisation registered under ``name``.

    An unknown name raises :class:`~prunekit.InvalidParameterError` for
    ``mode`` with the registered names and the closest one.
    """
    if not isinstance(name, str) or name not in REALISATIONS:
        names = list_realisations()
        raise InvalidParameterError(
            "mode", "a registered realisation (" + ", ".join(names) + ")", name,
            ("Fix: pick one of them (prunekit.list_realisations())." + did_you_mean(str(name), names)).strip(),
        )
    return REALISATIONS.get(name)()


_PROBES: dict[str, tuple[Callable[..., Realisation], Realisation]] = {}


def realisations() -> list[Realisation]:
    """One instance of every registered realisation, those registered by users first.

    Asked in this order which realisation masks a tensor, so a user's
    realisation whose hooks subclass a built-in's is found before it.
    """
    out = []
    for name in REALISATIONS.names():
        factory = REALISATIONS.get(name)
        cached = _PROBES.get(name)
        if cached is None or cached[0] is not factory:
            cached = (factory, factory())
            _PROBES[name] = cached
        out.append(cached[1])
    builtin = ("reparam", "inplace", "permanent")
    return sorted(out, key=lambda r: builtin.index(r.name) if r.name in builtin else -1)


def realisation_of(module: nn.Module, name: str) -> Realisation | None:
    """The realisation that masks ``module.<name>``, or None (dense, or plain zeros)."""
    for realisation in realisations():
        if name in realisation.masked(module):
            return realisation
    return None
