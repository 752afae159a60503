"""``torch.nn.utils.prune`` pruning methods as prunekit criteria.

A subclass of ``torch.nn.utils.prune.BasePruningMethod`` decides a mask itself
(``compute_mask(t, default_mask)``) rather than scoring entries, so
:class:`TorchMethod` gives the pruner the method's masks directly: the keep
mask of a target is exactly the mask ``Method.apply(module, name, ...)`` would
compute (the method on a dense tensor, or through a ``PruningContainer`` over
the entries still unpruned when the tensor is already pruned), and with
``scope="global"`` the mask of ``torch.nn.utils.prune.global_unstructured``.

A method whose ``__init__`` takes ``amount`` receives torch's relative amount
(fraction, or an int count, of the entries still unpruned); any other method
decides how much it prunes, and no level may be given.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn.utils import prune as torch_prune

from ..errors import InvalidParameterError
from ..targets import Target
from .base import Criterion

__all__ = ["TorchMethod", "is_torch_method"]


def is_torch_method(obj: object) -> bool:
    """Whether ``obj`` is a ``torch.nn.utils.prune.BasePruningMethod`` subclass."""
    return isinstance(obj, type) and issubclass(obj, torch_prune.BasePruningMethod)


class TorchMethod(Criterion):
    """A ``BasePruningMethod`` subclass used as ``criterion=``; it decides the masks itself.

    ``args`` and ``kwargs`` (besides ``amount``) go to the method's ``__init__`` at every step."""

    decides_mask = True

    def __init__(self, method: type[torch_prune.BasePruningMethod], name: str | None = None,
                 args: Sequence[Any] = (), **kwargs: Any) -> None:
        if not is_torch_method(method):
            raise InvalidParameterError("criterion", "a torch.nn.utils.prune.BasePruningMethod subclass", method)
        self.method = method
        self.name = name or method.__name__
        self.args = tuple(args)
        self.kwargs = dict(kwargs)
        self.takes_amount = "amount" in inspect.signature(method.__init__).parameters

    def _make(self, amount: float | int | None) -> torch_prune.BasePruningMethod:
        if self.takes_amount:
            if amount is None:
                raise InvalidParameterError(
                    "amount", f"the amount {self.name!r} prunes (a fraction of the unpruned entries, or a count)",
                    None, "Fix: pass amount= (torch's relative amount) or sparsity=.")
            return self.method(*self.args, amount=amount, **self.kwargs)
        if amount is not None:
            raise InvalidParameterError(
                "sparsity", f"None: {self.name!r} decides its mask itself (its __init__ takes no amount)", amount,
                "Fix: leave sparsity and amount out.")
        return self.method(*self.args, **self.kwargs)

    @torch.no_grad()
    def keep_masks(self, targets: Sequence[Target], scope: str,
                   amount: float | int | Sequence[int] | None) -> list[torch.Tensor]:
        """The method's keep masks (bool) for ``targets``, each within the target's current mask.

        ``scope`` is ``"local"`` (``Method.apply`` on each target; ``amount`` may be one count per
        target) or ``"global"`` (``global_unstructured`` over all targets)."""
        if scope == "local":
            amounts = list(amount) if isinstance(amount, (list, tuple)) else [amount] * len(targets)
            return [self._local(t, a) for t, a in zip(targets, amounts)]
        if scope != "global":
            raise InvalidParameterError("scope", f"'local' or 'global' with the torch method {self.name!r}", scope,
                                        "Fix: scope='global' (as torch's global_unstructured) or 'local'.")
        method = self._make(amount)
        if method.PRUNING_TYPE != "unstructured":
            raise InvalidParameterError(
                "scope", f"'local': {self.name!r} is {method.PRUNING_TYPE!r} and torch's global pruning "
                "takes unstructured methods only", scope, "Fix: scope='local'.")
        scores = torch.cat([t.effective().flatten() for t in targets])
        masks = [t.keep_mask() for t in targets]
        default = torch.cat([(torch.ones(t.numel, dtype=torch.bool, device=scores.device) if m is None
                              else m.flatten().to(scores.device)) for t, m in zip(targets, masks)]).to(scores.dtype)
        mask = self._combined(method, scores, default) != 0
        out, start = [], 0
        for t in targets:
            out.append(mask[start:start + t.numel].view(t.shape).to(t.original.device))
            start += t.numel
        return out

    def _local(self, target: Target, amount: float | int | None) -> torch.Tensor:
        method = self._make(amount)
        scores = target.effective()
        current = target.keep_mask()
        if current is None:  # Method.apply on a dense tensor calls the method itself
            mask = method.compute_mask(scores, default_mask=torch.ones_like(scores))
        else:  # on a pruned tensor, a container restricts the method to the unpruned entries
            mask = self._combined(method, scores, current.to(scores.dtype), target.param_name)
        return (mask != 0).to(target.original.device)

    @staticmethod
    def _combined(method: torch_prune.BasePruningMethod, scores: torch.Tensor, default: torch.Tensor,
                  name: str = "temp") -> torch.Tensor:
        container = torch_prune.PruningContainer()
        container._tensor_name = name
        method._tensor_name = name
        container.add_pruning_method(method)
        return container.compute_mask(scores, default_mask=default)

    def score(self, target: Target) -> torch.Tensor:
        raise InvalidParameterError(
            "criterion", "a score of entries", self.name,
            f"Fix: {self.name!r} decides masks itself; use it with structure='element' in prunekit.prune or Pruner.")

    def __repr__(self) -> str:
        return f"TorchMethod({self.name})"
