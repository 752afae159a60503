"""Importance of the channels of dependency groups: one score per channel, higher = keep.

A group criterion is called as ``criterion(model, groups)`` and returns
``{group.name: Tensor of shape (group.size,)}``. Criteria that need data take
``data`` (an iterable of ``(inputs, targets)`` batches, or of whatever
``loss_fn`` understands) when they are built (``batches=`` is its deprecated
name). They are scores of the ``group`` unit space of the one score registry,
:data:`prunekit.scores.SCORES` (``create_score("l2", "group")``;
``create_group_criterion`` and ``list_group_criteria`` are deprecated aliases).

Which tensors a group's score sums over (``roles``): every coupled slice by
default, i.e. the producers' output rows and biases (``"out"``), the
consumers' input columns (``"in"``, a flatten into a Linear gives each channel
its ``H·W`` columns) and the per-channel parameters of norms, PReLU and
embeddings (``"norm"``: BatchNorm ``weight`` and ``bias``). Buffers (running
statistics) are never scored. ``roles=("out",)`` gives the classic
filter norm of Li et al. 2017.

==============  ===================================================================
name            score of channel ``c`` of a group
==============  ===================================================================
``magnitude``   (alias ``l1``) ``sum |w|`` over the channel's entries in every slice (Li et al. 2017,
                "Pruning Filters for Efficient ConvNets", summed over the group as in
                Fang et al. 2023, "DepGraph")
``l2``          ``sqrt(sum w²)`` over the same entries
``slimming``    ``sum |γ|`` over the BatchNorm layers of the group (Liu et al. 2017,
                "Learning Efficient Convolutional Networks through Network Slimming");
                train with :func:`prunekit.surgery.regularizers.bn_l1_penalty`
``taylor``      ``mean_b |sum w·∂L_b/∂w|`` over the group's parameter entries and the
                batches ``b`` (first-order Taylor expansion of the loss change when the
                channel is removed; Molchanov et al. 2017 / 2019, "Importance
                Estimation for Neural Network Pruning")
``hrank``       mean over images and over the group's BatchNorm (else producer) outputs
                of ``rank(F_c)``, the matrix rank of the channel's ``H×W`` feature map
                (Lin et al. 2020, "HRank: Filter Pruning using High-Rank Feature Map")
``thinet``      greedy removal order that keeps the consumers' outputs closest (Luo et al.
                2017, "ThiNet"); with least-squares rescaling of the kept input channels
``random``      uniform random (the control)
==============  ===================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import forward_logits, split_batch, to_device
from ..losses import LossFn, classification_loss
from ..errors import InvalidParameterError
from ..coupling.groups import ROLES, Group, Slice
from ..deprecation import renamed_value, warn_once
from .registry import create_score, list_scores, register_score

__all__ = [
    "GroupCriterion",
    "GroupMagnitude",
    "BNScaling",
    "GroupTaylor",
    "HRank",
    "ThiNet",
    "GroupRandom",
    "create_group_criterion",
    "list_group_criteria",
    "channel_values",
]

logger = logging.getLogger(__name__)

Scores = dict[str, torch.Tensor]


# -- reading a group's slices ------------------------------------------------------------


def _current(s: Slice) -> torch.Tensor:
    """The tensor as the forward pass sees it (masked for reparam, zeros for in-place masks)."""
    value = getattr(s.module, s.tensor, None)
    return value if isinstance(value, torch.Tensor) else s.tensor_value()


def channel_values(s: Slice, tensor: torch.Tensor | None = None) -> torch.Tensor:
    """The entries of ``tensor`` (default: the slice's tensor) that belong to each channel,
    as a ``(group size, entries per channel)`` matrix."""
    t = _current(s) if tensor is None else tensor
    picked = t.index_select(s.dim, s.index.reshape(-1).to(t.device))
    picked = picked.movedim(s.dim, 0)
    return picked.reshape(s.index.shape[0], -1)


def _read_values(s: Slice) -> torch.Tensor:
    """:func:`channel_values` for reading only: a view of the tensor, without a copy, when the
    slice holds every position of its dim in order (a whole producer or consumer)."""
    t = _current(s)
    flat = s.index.reshape(-1)
    if flat.numel() != t.shape[s.dim] or not bool((flat == torch.arange(flat.numel(), device=flat.device)).all()):
        return channel_values(s)
    return t.movedim(s.dim, 0).reshape(s.index.shape[0], -1).contiguous()


def _scored(group: Group, roles: Sequence[str]) -> list[Slice]:
    """The group's parameter slices of the given roles (buffers such as running statistics are skipped)."""
    out = []
    for s in group.slices:
        if s.role not in roles:
            continue
        if s.tensor in s.module._parameters or s.tensor + "_orig" in s.module._parameters:
            out.append(s)
    return out


def _check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    items = (roles,) if isinstance(roles, str) else tuple(roles)
    if not items or any(r not in ROLES for r in items):
        raise InvalidParameterError("roles", f"a non-empty subset of {ROLES}", roles,
                                    "Fix: e.g. roles=('out',) for the producers' filters only.")
    return items


def _check_data(name: str, data: Any, batches: Any) -> list[Any]:
    """The batches of ``data`` (``batches`` is its deprecated name; giving both is an error)."""
    data = renamed_value(batches, "batches", "data", f"the {name!r} group criterion", new_value=data)
    if data is None:
        raise InvalidParameterError(
            "data", f"data for the {name!r} criterion: a few (inputs, targets) batches", None,
            "Fix: pass data=[(x, y), ...] (e.g. a list of 4 batches from the training loader).",
        )
    items = list(data)
    if not items:
        raise InvalidParameterError("data", "at least one batch", "<empty>")
    return items


# -- the interface ----------------------------------------------------------------------------


class GroupCriterion:
    """Scores the channels of dependency groups. Subclasses implement :meth:`score`.

    ``comparable``: whether scores of different groups may be ranked against
    each other (global allocation); ``needs_data``: whether ``data`` is needed.
    """

    name = "?"
    comparable = True
    needs_data = False

    def score(self, model: nn.Module, groups: Sequence[Group]) -> Scores:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, model: nn.Module, groups: Sequence[Group]) -> Scores:
        scores = self.score(model, groups)
        for g in groups:
            s = scores[g.name]
            if s.shape != (g.size,):
                raise RuntimeError(f"{self.name} gave {tuple(s.shape)} scores for group {g.name} of {g.size}")
        return scores

    def after_selection(self, model: nn.Module, groups: Sequence[Group], keep: Mapping[str, torch.Tensor]) -> None:
        """Called with the chosen channels before they are removed (ThiNet rescales here)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# -- magnitude -----------------------------------------------------------------------------------


class GroupMagnitude(GroupCriterion):
    """Group L1 (``p=1``: ``sum |w|``) or L2 (``p=2``: ``sqrt(sum w²)``) over the channel's
    entries in every slice of the given ``roles`` (default all)."""

    def __init__(self, p: int = 1, roles: Iterable[str] = ROLES) -> None:
        if p not in (1, 2):
            raise InvalidParameterError("p", "1 or 2", p)
        self.p = p
        self.roles = _check_roles(roles)
        self.name = "magnitude" if p == 1 else "l2"

    @torch.no_grad()
    def score(self, model: nn.Module, groups: Sequence[Group]) -> Scores:
        out: Scores = {}
        for g in groups:
            total = torch.zeros(g.size, dtype=torch.float64)
            for s in _scored(g, self.roles):
                v = _read_values(s).detach()
                if self.p == 1:  # |w| is exact in any float dtype: sum it in float64 without a float64 copy
                    total += v.abs().sum(1, dtype=torch.float64).cpu()
                else:
                    v = v.double()
                    total += (v * v).sum(1).cpu()
            out[g.name] = (total if self.p == 1 else total.sqrt()).float()
        return out


def group_l1(roles: Iterable[str] = ROLES) -> GroupMagnitude:
    """Group L1 norm ``sum |w|`` of each channel's entries (Li et al. 2017; DepGraph's group norm)."""
    return GroupMagnitude(1, roles)


def group_l2(roles: Iterable[str] = ROLES) -> GroupMagnitude:
    """Group L2 norm ``sqrt(sum w²)`` of each channel's entries."""
    return GroupMagnitude(2, roles)


register_score("magnitude", unit_spaces=("group",), aliases=("l1", "group_l1"))(group_l1)
register_score("l2", unit_spaces=("group",), aliases=("group_norm", "group_l2"))(group_l2)


# -- network slimming ------------------------------------------------------------------------------


def _bn_slices(group: Group) -> list[Slice]:
    return [s for s in group.norms() if s.tensor == "weight" and isinstance(s.module, nn.modules.batchnorm._NormBase)]


class BNScaling(GroupCriterion):
    """Network slimming (Liu et al. 2017): the BatchNorm scales ``sum |γ_c|`` of each channel.

    The sum runs over the BatchNorm layers of the group (a residual group couples several). Groups without BatchNorm are an error."""

    name = "slimming"

    @torch.no_grad()
    def score(self, model: nn.Module, groups: Sequence[Group]) -> Scores:
        missing = [g.name for g in groups if not _bn_slices(g)]
        if missing:
            raise InvalidParameterError(
                "criterion", "'slimming' on groups that each have a BatchNorm", f"<groups without BN: {missing[:5]}>",
                "Fix: exclude= those layers, or use criterion='l1'.",
            )
        return {g.name: sum(channel_values(s).detach().abs().sum(1).float().cpu() for s in _bn_slices(g))
                for g in groups}


register_score("slimming", unit_spaces=("group",), aliases=("bn_scaling", "bn"))(BNScaling)


# -- Taylor ------------------------------------------------------------------------------------------


def _batch_loss(model: nn.Module, batch: Any, loss_fn: LossFn, index: int, device: torch.device) -> torch.Tensor:
    inputs, targets = split_batch(batch, index)
    inputs, targets = to_device(inputs, device), targets.to(device)
    return loss_fn(forward_logits(model, inputs), targets)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def _forward_batches(model: nn.Module, batches: Sequence[Any], handles: Sequence[Any]) -> None:
    """Run the inputs of ``batches`` through ``model`` in eval mode, then remove the hook ``handles``
    and restore the training flag."""
    was_training = model.training
    device = _device(model)
    try:
        model.eval()
        for i, batch in enumerate(batches):
            inputs, _ = split_batch(batch, i)
            forward_logits(model, to_device(inputs, device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


class GroupTaylor(GroupCriterion):
    """First-order Taylor importance of each channel (Molchanov et al. 2019, eq. 4, summed over the group).

    ``I_c = mean_b | sum_{w in channel c} w · ∂L_b/∂w |`` over the batches ``b`` and the
    group's parameter entries (every role). The loss change when channel ``c`` is
    zeroed is ``≈ -sum w·∂L/∂w``. The model runs in eval mode (no dropout; BatchNorm
    uses its running statistics); gradients already in ``.grad`` are restored."""

    name = "taylor"
    needs_data = True

    def __init__(self, data: Iterable[Any] | None = None, loss_fn: LossFn = classification_loss,
                 batches: Iterable[Any] | None = None) -> None:
        self.batches = _check_data(self.name, data, batches)
        self.loss_fn = loss_fn

    def score(self, model: nn.Module, groups: Sequence[Group]) -> Scores:
        slices = {g.name: _scored(g, ROLES) for g in groups}
        params = [p for p in model.parameters() if p.requires_grad]
        saved = [p.grad for p in params]
        was_training = model.training
        out = {g.name: torch.zeros(g.size, dtype=torch.float64) for g in groups}
        device = _device(model)
        try:
            model.eval()
            for i, batch in enumerate(self.batches):
                for p in params:
                    p.grad = None
                _batch_loss(model, batch, self.loss_fn, i, device).backward()
                with torch.no_grad():
                    for g in groups:
                        total = torch.zeros(g.size, dtype=torch.float64)
                        for s in slices[g.name]:
                            weight = s.tensor_value()
                            if weight.grad is None:
                                continue
                            grad = weight.grad
                            if s.tensor + "_orig" in s.module._parameters:  # reparam: score the masked product
                                weight = _current(s)
                            total += (channel_values(s, weight) * channel_values(s, grad)).double().sum(1).cpu()
                        out[g.name] += total.abs()
        finally:
            for p, grad in zip(params, saved):
                p.grad = grad
            model.train(was_training)
        return {k: (v / len(self.batches)).float() for k, v in out.items()}


register_score("taylor", unit_spaces=("group",), needs="gradients", aliases=("group_taylor",))(GroupTaylor)


# -- HRank ------------------------------------------------------------------------------------------


def _channel_dim(output: torch.Tensor, module: nn.Module) -> int:
    """Where the channels lie in a module's output: dim 1 for conv/BN maps, last for Linear-like."""
    if isinstance(module, (nn.Linear, nn.LayerNorm, nn.Embedding)):
        return output.dim() - 1
    return 1 if output.dim() > 2 else output.dim() - 1


def feature_map_rank(maps: torch.Tensor) -> torch.Tensor:
    """Rank of each feature map: ``maps`` is ``(..., H, W)``; 1-d maps count 1 if non-zero."""
    if maps.dim() >= 3 and maps.shape[-1] > 1 and maps.shape[-2] > 1:
        return torch.linalg.matrix_rank(maps.float()).to(torch.float64)
    return (maps.reshape(*maps.shape[:2], -1).abs().amax(-1) > 0).to(torch.float64) if maps.dim() >= 2 else (
        maps != 0).to(torch.float64)


class HRank(GroupCriterion):
    """HRank (Lin et al. 2020): the average rank of each channel's feature maps over the data.

    ``I_c = mean_{images, layers} rank(F_c)``. The maps are the outputs of the
    group's BatchNorm layers (the producers' outputs when the group has none); a residual group
    averages over all of them. Outputs without two spatial dims count 1 per non-zero map."""

    name = "hrank"
    needs_data = True

    def __init__(self, data: Iterable[Any] | None = None, batches: Iterable[Any] | None = None) -> None:
        self.batches = _check_data(self.name, data, batches)

    @torch.no_grad()
    def score(self, model: nn.Module, groups: Sequence[Group]) -> Scores:
        watched: dict[int, tuple[nn.Module, list[tuple[str, Slice]]]] = {}
        for g in groups:
            sources = _bn_slices(g) or [s for s in g.producers() if s.tensor == "weight"]
            if not sources:
                raise InvalidParameterError("criterion", "'hrank' on groups with a producer or BatchNorm", g.name)
            for s in sources:
                watched.setdefault(id(s.module), (s.module, []))[1].append((g.name, s))
        sums = {g.name: torch.zeros(g.size, dtype=torch.float64) for g in groups}
        counts = {g.name: 0 for g in groups}

        def hook(module: nn.Module, _args: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                return
            cdim = _channel_dim(output, module)
            for name, s in watched[id(module)][1]:
                idx = s.index.reshape(s.index.shape[0], -1)[:, 0].to(output.device)
                maps = output.index_select(cdim, idx).movedim(cdim, 1)  # (N, size, ...)
                ranks = feature_map_rank(maps)  # (N, size)
                sums[name] += ranks.sum(0).cpu()
                counts[name] += maps.shape[0]

        _forward_batches(model, self.batches, [m.register_forward_hook(hook) for m, _ in watched.values()])
        return {name: (sums[name] / max(counts[name], 1)).float() for name in sums}


register_score("hrank", unit_spaces=("group",), needs="batches")(HRank)


# -- ThiNet --------------------------------------------------------------------------------------------


def _check_consumer(module: nn.Module) -> None:
    ok = isinstance(module, nn.Linear) or (
        isinstance(module, nn.Conv2d) and module.groups == 1 and isinstance(module.padding, tuple))
    if not ok:
        raise InvalidParameterError(
            "criterion", "'thinet' on groups whose consumers are Linear or ungrouped Conv2d layers",
            f"<{type(module).__name__}{f' groups={module.groups}' if isinstance(module, nn.Conv2d) else ''}>",
            "Fix: exclude= that layer or use another criterion.",
        )


def _contributions(module: nn.Module, x: torch.Tensor, samples: int, gen: torch.Generator) -> torch.Tensor:
    """``(samples, in positions)``: the contribution of each input channel (position) to
    randomly sampled outputs ``y[n, o, l] = sum_c x̂_c`` of a Linear or Conv consumer (bias left out)."""
    weight = module.weight.detach()
    if isinstance(module, nn.Linear):
        flat = x.reshape(-1, x.shape[-1])
        # drawn on the CPU generator (the same samples on every device), then moved to the data
        rows = torch.randint(0, flat.shape[0], (samples,), generator=gen, device="cpu").to(x.device)
        outs = torch.randint(0, weight.shape[0], (samples,), generator=gen, device="cpu").to(weight.device)
        return flat[rows] * weight[outs]
    _check_consumer(module)  # an ungrouped Conv2d from here
    patches = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)  # (N, C·k, L)
    n, ck, length = patches.shape
    k = ck // weight.shape[1]
    rows = torch.randint(0, n, (samples,), generator=gen, device="cpu").to(x.device)
    locs = torch.randint(0, length, (samples,), generator=gen, device="cpu").to(x.device)
    outs = torch.randint(0, weight.shape[0], (samples,), generator=gen, device="cpu").to(weight.device)
    cols = patches[rows, :, locs].reshape(samples, weight.shape[1], k)
    return (cols * weight[outs].reshape(samples, weight.shape[1], k)).sum(-1)


def greedy_removal_order(x: torch.Tensor) -> torch.Tensor:
    """ThiNet's greedy selection (Luo et al. 2017, Algorithm 1) run to the end: ``x`` is
    ``(samples, channels)`` of contributions; repeatedly remove the channel ``c`` minimising
    ``sum_samples (sum_{j in removed ∪ {c}} x_j)²``. Returns the channels in removal order."""
    x = x.double()
    n = x.shape[1]
    removed = torch.zeros(n, dtype=torch.bool, device=x.device)
    running = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    sq = (x * x).sum(0)
    order = []
    for _ in range(n):
        # ||r + x_c||² = ||r||² + 2 r·x_c + ||x_c||²
        cost = 2 * (running @ x) + sq
        cost[removed] = float("inf")
        c = int(cost.argmin())
        order.append(c)
        removed[c] = True
        running += x[:, c]
    return torch.tensor(order, dtype=torch.long, device=x.device)


def least_squares_scales(x: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """ThiNet's rescaling (Luo et al. 2017, Section 3.3): ``s = argmin ||y - X_kept s||²`` with
    ``y = X·1`` the full output, ``X`` the ``(samples, channels)`` contributions."""
    x = x.double()
    y = x.sum(1, keepdim=True)
    xs = x[:, kept]
    sol = torch.linalg.lstsq(xs, y, driver="gelsd").solution.reshape(-1)
    return sol.float()


class ThiNet(GroupCriterion):
    """ThiNet (Luo, Wu & Lin 2017): channels ranked by how little removing them changes the next layer.

    Channel ``c``'s contributions ``x̂_c`` to ``samples`` random
    outputs of every consumer are collected over ``batches``; channels are ordered by greedy
    removal minimising ``||sum_{removed} x̂||²`` (summed over the consumers), and the score is the
    position in that order (removed first = lowest). Scores are ranks, so only local allocation
    uses them. After selection, with ``rescale=True``, each consumer's input columns of the kept
    channels are multiplied by the least-squares scales that best reconstruct its full output."""

    name = "thinet"
    comparable = False
    needs_data = True

    def __init__(self, data: Iterable[Any] | None = None, samples: int = 2048, rescale: bool = True,
                 seed: int = 0, batches: Iterable[Any] | None = None) -> None:
        self.batches = _check_data(self.name, data, batches)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise InvalidParameterError("samples", "a positive int", samples)
        self.samples, self.rescale, self.seed = samples, bool(rescale), seed
        self._x: dict[str, list[tuple[Slice, torch.Tensor]]] = {}

    def contributions(self, model: nn.Module, groups: Sequence[Group]) -> dict[str, list[tuple[Slice, torch.Tensor]]]:
        """Per group, per consumer slice: ``(samples·batches, group size)`` channel contributions."""
        consumers: dict[int, tuple[nn.Module, list[tuple[str, Slice]]]] = {}
        for g in groups:
            cons = [s for s in g.consumers() if s.tensor == "weight"]
            if not cons:
                raise InvalidParameterError("criterion", "'thinet' on groups that have a consumer layer", g.name)
            for s in cons:
                _check_consumer(s.module)
                consumers.setdefault(id(s.module), (s.module, []))[1].append((g.name, s))
        gen = torch.Generator().manual_seed(self.seed)
        per_batch = max(1, self.samples // len(self.batches))
        collected: dict[str, dict[int, list[torch.Tensor]]] = {g.name: {} for g in groups}

        def hook(module: nn.Module, args: Any) -> None:
            contrib = _contributions(module, args[0].detach(), per_batch, gen)  # (samples, in positions)
            for name, s in consumers[id(module)][1]:
                idx = s.index.reshape(s.index.shape[0], -1)
                per_channel = contrib[:, idx.reshape(-1)].reshape(contrib.shape[0], *idx.shape).sum(-1)
                collected[name].setdefault(id(s), []).append(per_channel.cpu())

        _forward_batches(model, self.batches, [m.register_forward_pre_hook(hook) for m, _ in consumers.values()])
        out: dict[str, list[tuple[Slice, torch.Tensor]]] = {}
        for g in groups:
            out[g.name] = [(s, torch.cat(collected[g.name][id(s)])) for s in g.consumers()
                           if id(s) in collected[g.name]]
        return out

    def score(self, model: nn.Module, groups: Sequence[Group]) -> Scores:
        self._x = self.contributions(model, groups)
        scores: Scores = {}
        for g in groups:
            x = torch.cat([c for _s, c in self._x[g.name]])
            order = greedy_removal_order(x)
            rank = torch.empty(g.size, device=order.device)
            rank[order] = torch.arange(g.size, dtype=torch.float32, device=order.device)
            scores[g.name] = rank
        return scores

    @torch.no_grad()
    def after_selection(self, model: nn.Module, groups: Sequence[Group], keep: Mapping[str, torch.Tensor]) -> None:
        if not self.rescale:
            return
        for g in groups:
            kept = keep.get(g.name)
            if kept is None or kept.numel() == g.size or g.name not in self._x:
                continue
            for s, x in self._x[g.name]:
                scales = least_squares_scales(x, kept)
                weight = s.tensor_value()
                positions = s.index[kept]  # (kept,) or (kept, k)
                shape = [1] * weight.dim()
                shape[s.dim] = -1
                flat = positions.reshape(-1).to(weight.device)
                factor = scales.repeat_interleave(positions.numel() // kept.numel()).to(weight)
                weight.index_copy_(s.dim, flat, weight.index_select(s.dim, flat) * factor.reshape(shape))
                logger.debug("thinet rescaled %d input channels of %s", kept.numel(), s.name)
        self._x = {}


register_score("thinet", unit_spaces=("group",), needs="batches")(ThiNet)


# -- random ---------------------------------------------------------------------------------------------


class GroupRandom(GroupCriterion):
    """Uniform random scores (the control), from ``seed``."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score(self, model: nn.Module, groups: Sequence[Group]) -> Scores:
        gen = torch.Generator().manual_seed(self.seed)
        return {g.name: torch.rand(g.size, generator=gen) for g in groups}


register_score("random", unit_spaces=("group",))(GroupRandom)


# -- registry access ------------------------------------------------------------------------------------


def create_group_criterion(criterion: str | GroupCriterion, **kwargs: Any) -> GroupCriterion:
    """Deprecated alias: ``create_score(criterion, unit_space="group", **kwargs)`` (an instance passes through)."""
    warn_once("prunekit.surgery.create_group_criterion", 'prunekit.scores.create_score(name, unit_space="group")')
    if isinstance(criterion, GroupCriterion):
        return criterion
    if not isinstance(criterion, str):
        raise InvalidParameterError("criterion", f"a name among {list_scores(unit_space='group')} or a GroupCriterion",
                                    f"<{type(criterion).__name__}>")
    return create_score(criterion, "group", **kwargs)


def list_group_criteria(pattern: str = "*") -> list[str]:
    """Deprecated alias: ``list_scores(pattern, unit_space="group")``."""
    warn_once("prunekit.surgery.list_group_criteria", 'prunekit.scores.list_scores(unit_space="group")')
    return list_scores(pattern, unit_space="group")
