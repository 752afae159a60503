"""Latency-aware allocation (:func:`latency_keep_counts`) is a greedy
approximation of HALP's latency-saliency knapsack (Shen et al. 2022,
"Structural Pruning via Latency-Saliency Knapsack"), in the manner of NetAdapt
(Yang et al. 2018): starting from the current widths, it repeatedly removes
``step`` channels (``lcm(round_to, group.multiple)``; the first move of a group
whose size is not a multiple of ``step`` rounds it down to one) from the group
with the largest

    ΔT_g / ΔI_g,   ΔT_g = T(widths) - T(widths with g smaller)   (modelled latency saved, ms)
                   ΔI_g = Σ of the ``step`` lowest remaining normalised scores of g (importance lost)

where ``T`` is the layer-sum latency model of :mod:`prunekit.measure.layer_latency`,
until the modelled MACs or latency reach the goal. Ties go to the larger MAC
saving, then to the earlier group. The caps are those of :mod:`prunekit.allocation.groups`: ``max_layer_ratio``,
never fewer than ``step`` channels (a group of fewer than ``step`` is left as
it is), at least ``group.multiple``.

Importance. The scores are normalised per group as for ``scope="global"``
in :mod:`prunekit.allocation.groups`, by default by their **sum** (``normalize="sum"``), and then multiplied
by ``L_g``, the number of Conv2d/Linear calls whose width the group sets. So
ΔI_g is the fraction of the group's importance that the move removes, counted
once per layer it thins: 8 of 16 channels of a group setting 2 layers cost
about 2 × 1/2, 8 of 64 channels of a residual stream setting 8 layers about
8 × 1/8. With mean normalisation every move of ``step`` channels costs about the
same (≈ ``step`` × a below-average score), so the latency term alone decides
and small, slow groups are cut to the floor.

Exchanges (``exchange=True``). A CPU convolution's time is a staircase in its
widths: with AVX-512, 56 and 64 output channels cost the same. So a greedy that
removes ``step`` channels at a time sees no saving on the flat steps and never
reaches the next one. After the greedy pass, pairs of groups therefore trade:
one gets one or two levels (``step`` channels each) back, another gives one or
two up. A trade is taken when the goal still holds, the modelled latency does not
rise, the kept importance does not fall, and one of them strictly improves. The
best trade by latency, then importance, is taken, repeatedly, until none is
left. Each trade is a Pareto improvement on the greedy's result, in the manner of
the pairwise-interchange step of knapsack heuristics.
"""

from __future__ import annotations

import logging
from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..errors import InvalidParameterError, check_choice
from ..progress import ProgressArg, ProgressEvent, check_progress, progress_reporter
from ..measure.layer_latency import LatencyTable, LayerSite, predict_latency, site_spec
from .budget import check_max_layer_ratio, check_round_to
from .groups import ChannelGroup, check_group_scores, max_removed, step_of
from .normalize import NORMALIZERS, normalise

__all__ = ["LatencyAllocation", "latency_keep_counts"]

logger = logging.getLogger(__name__)


@dataclass
class LatencyAllocation:
    """What :func:`latency_keep_counts` decided: kept channels per group, and the model's figures
    (latency in ms at the table's batch and threads; MACs of the modelled layers in the example forward)."""

    counts: dict[str, int]
    latency_before_ms: float
    latency_after_ms: float
    macs_before: int
    macs_after: int
    moves: int


def latency_keep_counts(
    groups: Sequence[ChannelGroup],
    scores: Mapping[str, torch.Tensor],
    sites: Sequence[LayerSite],
    table: LatencyTable,
    *,
    macs_goal: int | None = None,
    latency_goal_ms: float | None = None,
    normalize: str = "sum",
    max_layer_ratio: float | None = None,
    round_to: int | None = None,
    base_sizes: Mapping[str, int] | None = None,
    exchange: bool = True,
    progress: ProgressArg = None,
) -> LatencyAllocation:
    """Kept channels per group chosen greedily by latency saved per importance lost (module docstring),
    until the modelled layers' MACs are at most ``macs_goal`` or their modelled latency at most
    ``latency_goal_ms`` (exactly one of the two); then, with ``exchange``, improved by pairwise
    exchanges (module docstring).

    ``progress``: ``True`` for a progress bar on stderr, or a callable receiving a
    :class:`~prunekit.progress.ProgressEvent` (stage ``"latency-search"``, ``done`` the
    percentage of the way from the current figure to the goal, ``total`` 100, figures
    ``latency_ms``, ``macs`` and ``moves``); :func:`prunekit.surgery.structural_prune`
    nests it under its ``"search"`` stage. By default nothing is printed.

    Raises:
        InvalidParameterError: bad options, or a goal the caps do not allow to reach.
    """
    check_progress(progress)
    if (macs_goal is None) == (latency_goal_ms is None):
        raise InvalidParameterError("macs_goal", "exactly one of macs_goal= and latency_goal_ms=",
                                    f"<macs_goal={macs_goal}, latency_goal_ms={latency_goal_ms}>")
    normalize = check_choice("normalize", normalize, NORMALIZERS)
    max_layer_ratio = check_max_layer_ratio(max_layer_ratio)
    step_to = check_round_to(round_to)
    check_group_scores(groups, scores)
    caps = {g.name: max_removed(g, int((base_sizes or {}).get(g.name, g.size)), max_layer_ratio) for g in groups}
    lowest = {}
    for g in groups:
        s = scores[g.name].detach().double().cpu()
        if s.shape != (g.size,) or not bool(torch.isfinite(s).all()):
            raise InvalidParameterError(f"scores[{g.name!r}]", f"{g.size} finite scores", f"<{tuple(s.shape)}>")
        lowest[g.name] = torch.sort(normalise(s, normalize)).values
    by_name = {g.name: g for g in groups}
    touching: dict[str, list[int]] = {g.name: [] for g in groups}
    for i, site in enumerate(sites):
        for name in set(site.in_terms) | set(site.out_terms):
            if name in touching:
                touching[name].append(i)
    if normalize == "sum":  # a group counts once per layer whose width it sets
        lowest = {name: v * max(len(touching[name]), 1) for name, v in lowest.items()}
    removed = {g.name: 0 for g in groups}
    cost = [table(site_spec(s, removed, table.batch_size, table.threads)) for s in sites]
    macs = [s.macs(removed) for s in sites]
    latency_before, macs_before = sum(cost), sum(macs)

    def reached() -> bool:
        return sum(macs) <= macs_goal if macs_goal is not None else sum(cost) <= latency_goal_ms  # type: ignore[operator]

    def floor(g: ChannelGroup) -> int:
        """The fewest channels ``g`` may keep: a multiple of its step within the caps (or its size)."""
        step = step_of(g, step_to)
        if g.size < step:
            return g.size
        least = max(step, int(g.multiple), 1, g.size - caps[g.name])
        least = -(-least // step) * step
        return least if least < g.size else g.size

    def candidate(name: str) -> tuple[float, int, int, list[float]] | None:
        """(ratio, MACs saved, channels removed after the move, new site costs) or None when capped."""
        g = by_name[name]
        step = step_of(g, step_to)
        keep = g.size - removed[name]
        new_keep = ((keep - 1) // step) * step
        if keep <= floors[name] or new_keep < floors[name]:
            return None
        trial = dict(removed)
        trial[name] = g.size - new_keep
        new_cost = [table(site_spec(sites[i], trial, table.batch_size, table.threads)) for i in touching[name]]
        saved = sum(cost[i] for i in touching[name]) - sum(new_cost)
        macs_saved = sum(macs[i] - sites[i].macs(trial) for i in touching[name])
        lost = float(lowest[name][removed[name]: trial[name]].sum())
        return saved / max(lost, 1e-12), macs_saved, trial[name], new_cost

    floors = {g.name: floor(g) for g in groups}
    smallest = {g.name: g.size - floors[g.name] for g in groups}
    least_macs = sum(s.macs(smallest) for s in sites)
    least_ms = predict_latency(sites, smallest, table) if latency_goal_ms is not None else float("nan")
    if (least_macs > macs_goal) if macs_goal is not None else (least_ms > latency_goal_ms):  # type: ignore[operator]
        goal = f"MACs {macs_goal:,}" if macs_goal is not None else f"latency {latency_goal_ms:.3f} ms"
        raise InvalidParameterError(
            "macs_target" if macs_goal is not None else "latency_target",
            "a target reachable within the caps (removing every allowed channel still exceeds it)",
            f"<{goal}; at most down to MACs {least_macs:,}"
            + (f", latency {least_ms:.3f} ms>" if latency_goal_ms is not None else ">"),
            "Fix: raise the target, relax max_layer_ratio or round_to, or exclude fewer layers.")
    goal = f"MACs {macs_goal:,}" if macs_goal is not None else f"latency {latency_goal_ms:.3f} ms"
    with progress_reporter(progress) as tell:
        def figures() -> dict[str, float]:
            return {"latency_ms": sum(cost), "macs": sum(macs), "moves": moves}

        def percent() -> int:
            """How far (0..100) the modelled figure has come from where it started towards the goal."""
            start, now, end = ((macs_before, sum(macs), macs_goal) if macs_goal is not None
                               else (latency_before, sum(cost), latency_goal_ms))
            if start <= end:  # type: ignore[operator]
                return 100
            return max(0, min(100, int(100 * (start - now) / (start - end))))  # type: ignore[operator]

        order = {g.name: k for k, g in enumerate(groups)}
        options = {g.name: candidate(g.name) for g in groups}
        moves, told = 0, 0
        tell(ProgressEvent("latency-search", 0, 100, figures(), goal))
        while not reached():
            live = [(c[0], c[1], -order[n], n) for n, c in options.items() if c is not None]
            name = max(live)[3]
            _ratio, _saved, now_removed, new_cost = options[name]  # type: ignore[misc]
            removed[name] = now_removed
            for i, c in zip(touching[name], new_cost):
                cost[i] = c
                macs[i] = sites[i].macs(removed)
            moves += 1
            near = {n for i in touching[name] for n in set(sites[i].in_terms) | set(sites[i].out_terms)} | {name}
            for n in near & options.keys():
                options[n] = candidate(n)
            if told < percent() < 100:  # a measured table need not fall with every move: never report back
                told = percent()
                tell(ProgressEvent("latency-search", told, 100, figures(), goal))
        if exchange:
            moves += _exchange(groups, sites, table, removed, cost, macs, lowest, floors, step_to, touching,
                               macs_goal, latency_goal_ms)
        tell(ProgressEvent("latency-search", 100, 100, figures(), goal))
    counts = {g.name: g.size - removed[g.name] for g in groups}
    logger.info("latency allocation: %d moves, modelled latency %.3f -> %.3f ms, MACs %d -> %d "
                "(table: %d entries, %d measured)", moves, latency_before, sum(cost), macs_before, sum(macs),
                len(table), table.misses)
    return LatencyAllocation(counts, latency_before, sum(cost), macs_before, sum(macs), moves)


def _levels(group: ChannelGroup, floor: int, step: int) -> list[int]:
    """The kept counts the allocation may give ``group``, ascending: the multiples of ``step`` from
    ``floor`` up, and its size."""
    if floor >= group.size:
        return [group.size]
    return list(range(floor, group.size, max(step, 1))) + [group.size]


def _exchange(
    groups: Sequence[ChannelGroup],
    sites: Sequence[LayerSite],
    table: LatencyTable,
    removed: dict[str, int],
    cost: list[float],
    macs: list[int],
    lowest: Mapping[str, torch.Tensor],
    floors: Mapping[str, int],
    step_to: int,
    touching: Mapping[str, list[int]],
    macs_goal: int | None,
    latency_goal_ms: float | None,
    max_rounds: int = 1000,
) -> int:
    """Pairwise exchanges after the greedy pass (module docstring), in place on ``removed``, ``cost``
    and ``macs``; returns how many were made.

    One group gets one or two levels of channels back and another gives one or two up. An exchange
    is taken when the goal still holds, the modelled latency does not rise, the kept importance does
    not fall, and one of the two strictly improves (latency by more than 0.1% of the total). Of those,
    the one saving the most latency is taken, then the one keeping the most importance; repeat until
    none is left. Every exchange improves one of the two without worsening the other, so no state
    comes back and this ends (``max_rounds`` bounds it all the same).
    """
    levels = {g.name: _levels(g, floors[g.name], step_of(g, step_to)) for g in groups}
    prefix = {n: torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(v, 0)]).tolist()
              for n, v in lowest.items()}
    eps = 1e-3 * sum(cost)
    imp_eps = 1e-9 * sum(p[-1] for p in prefix.values())
    made = 0
    for _ in range(max_rounds):
        total_macs, total_ms = sum(macs), sum(cost)
        best: tuple[tuple[float, float], ChainMap[str, int], list[int], list[float], list[int]] | None = None
        for a in groups:
            keep_a = a.size - removed[a.name]
            if keep_a not in levels[a.name]:
                continue
            at_a = levels[a.name].index(keep_a)
            for up in levels[a.name][at_a + 1: at_a + 3]:
                gain = prefix[a.name][a.size - keep_a] - prefix[a.name][a.size - up]
                for b in groups:
                    keep_b = b.size - removed[b.name]
                    if b.name == a.name or keep_b not in levels[b.name]:
                        continue
                    at_b = levels[b.name].index(keep_b)
                    for down in levels[b.name][max(at_b - 2, 0): at_b]:
                        d_imp = gain - (prefix[b.name][b.size - down] - prefix[b.name][b.size - keep_b])
                        if d_imp < 0:
                            continue
                        trial = ChainMap({a.name: a.size - up, b.name: b.size - down}, removed)
                        idx = sorted(set(touching[a.name]) | set(touching[b.name]))
                        new_cost = [table(site_spec(sites[i], trial, table.batch_size, table.threads)) for i in idx]
                        d_ms = sum(new_cost) - sum(cost[i] for i in idx)
                        if d_ms > 0 or (d_ms > -eps and d_imp <= imp_eps):
                            continue
                        new_macs = [sites[i].macs(trial) for i in idx]
                        if macs_goal is not None and total_macs - sum(macs[i] for i in idx) + sum(new_macs) > macs_goal:
                            continue
                        if latency_goal_ms is not None and total_ms + d_ms > latency_goal_ms:
                            continue
                        if best is None or (-d_ms, d_imp) > best[0]:
                            best = ((-d_ms, d_imp), trial, idx, new_cost, new_macs)
        if best is None:
            break
        _key, trial, idx, new_cost, new_macs = best
        removed.update(trial.maps[0])
        for i, c, m in zip(idx, new_cost, new_macs):
            cost[i], macs[i] = c, m
        made += 1
    return made
