"""The ``permanent`` realisation: zeros written at once, no mask and no hook.

The same as applying masks in another mode and calling
:func:`prunekit.make_permanent` right away, without the detour: the pruned
entries become plain zeros of the parameter (layout ``"dense"``), the model
runs and saves as a dense one, and optimizers may revive the zeros. Nothing
records what was pruned, so a later step ranks the zeros with every other
entry (a magnitude criterion prunes them first).
"""

from __future__ import annotations

import torch
from torch import nn

from .inplace import multiply
from .realisation import Realisation, Undo, register_realisation

__all__ = ["Permanent"]


def _nothing() -> None:
    pass


@register_realisation("permanent")
class Permanent(Realisation):
    """``p *= keep`` once every target is checked; nothing is left to remove."""

    layout = "dense"

    def apply(self, module: nn.Module, name: str, keep: torch.Tensor, description: str) -> Undo:
        return _nothing

    def commit(self, module: nn.Module, name: str, keep: torch.Tensor) -> None:
        multiply([module._parameters[name]], [keep])
