"""Physical removal of attention heads and MLP neurons.

Where each head's or neuron's rows and columns lie is an
:class:`~prunekit.coupling.units.AttentionSpec` /
:class:`~prunekit.coupling.units.MlpSpec` (:mod:`prunekit.coupling.units`,
found by :func:`prunekit.coupling.attention_layers` and
:func:`prunekit.coupling.mlp_layers`). Removing head ``h`` keeps every
position of every unit slice except ``offset + h*head_dim ... offset +
(h+1)*head_dim - 1``; an MLP neuron is the same with a width of 1 (the
producer's output row, the consumer's input column). The slicing itself is
:func:`prunekit.surgery.slicing.keep_slices`.

Grouped-query attention (LLaMA, ``num_key_value_heads < num_attention_heads``):
query head ``h`` reads key/value head ``h // g`` with ``g = H / KV``
(``repeat_kv``). A removal is accepted when, afterwards, every key/value head
still in use serves the same number of query heads; a key/value head is
removed exactly when all of its query heads are. That allows both removing
whole groups (a KV head with all its query heads) and removing the same
number of query heads from every group, and any mix that leaves the groups
equal; anything else is refused, because ``repeat_kv`` needs one group size.

``nn.MultiheadAttention`` modules that lose heads are replaced by
:class:`~prunekit.surgery.pruned_mha.PrunedMultiheadAttention`.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..coupling.families import attention_layers, hf_family, mlp_layers
from ..coupling.units import AttentionSpec, MlpSpec, UnitSlice, mha_spec
from ..deprecation import renamed_argument
from ..errors import InvalidParameterError, did_you_mean
from ..params import HEADS_PARAMS, NEURONS_PARAMS
from ..scores.heads import head_scores, neuron_scores, resolve_scores
from ..validation import checked_keywords, validate
from .head_selection import (
    check_multiples,
    check_same_count,
    head_multiple,
    round_plan,
    select_heads,
    select_neurons,
    select_uniform,
)
from .hf import update_config
from .history import add_history, surgery_history
from .pruned_mha import replace_mha
from .slicing import SurgeryRecord, replay, update_module_attributes

__all__ = [
    "after_replay",
    "before_replay",
    "plan_heads",
    "prune_heads",
    "prune_mlp_neurons",
    "remove_heads",
    "remove_neurons",
    "replay_heads",
]

logger = logging.getLogger(__name__)


# -- planning ---------------------------------------------------------------------------


def _unit_list(param: str, layer: Any, units: Any, size: int, what: str) -> list[int]:
    """Validate a list of unit indices to remove (sorted on return)."""
    try:
        if isinstance(units, (str, bytes)):
            raise TypeError
        values = [int(u) for u in units]
        if any(int(u) != u for u in units):
            raise TypeError
    except (TypeError, ValueError):
        raise InvalidParameterError(param, f"a list of {what} indices for layer {layer!r}", units) from None
    bad = [u for u in values if not 0 <= u < size]
    if bad:
        raise InvalidParameterError(
            param, f"{what} indices in [0, {size}) for layer {layer!r}", bad,
            f"Fix: layer {layer!r} has {size} {what}s.",
        )
    if len(set(values)) != len(values):
        raise InvalidParameterError(param, f"distinct {what} indices for layer {layer!r}", values)
    if len(values) == size:
        raise InvalidParameterError(
            param, f"fewer than all {size} {what}s of layer {layer!r}", values,
            "Fix: keep at least one; removing a whole layer is not head/neuron surgery.",
        )
    return sorted(values)


def plan_heads(spec: AttentionSpec, heads: Sequence[int], layer: Any = None) -> tuple[list[int], list[int]]:
    """Validate removing ``heads`` from ``spec``; return (kept query heads, kept KV heads).

    Raises :class:`InvalidParameterError` for bad indices, all heads, or a
    grouped-query removal that leaves key/value groups of different sizes.
    """
    layer = spec.module if layer is None else layer
    remove = set(_unit_list("heads_to_prune", layer, heads, spec.num_heads, "head"))
    keep_q = [h for h in range(spec.num_heads) if h not in remove]
    per_group = Counter(h // spec.group_size for h in keep_q)
    if len(set(per_group.values())) > 1:
        raise InvalidParameterError(
            "heads_to_prune",
            f"a grouped-query removal that leaves every key/value group of layer {layer!r} with the same "
            f"number of query heads ({spec.num_kv_heads} groups of {spec.group_size})",
            sorted(remove),
            "Fix: remove whole groups (a KV head with all its query heads) or the same number of query "
            "heads from every group (gqa='group' or gqa='query' when pruning by ratio).",
        )
    return keep_q, sorted(per_group)


# -- slicing ----------------------------------------------------------------------------


def _slice_blocks(model: nn.Module, removals: Sequence[tuple[UnitSlice, Sequence[int]]], record: SurgeryRecord) -> None:
    """Remove units from blocks; blocks of the same tensor are cut together."""
    drop: dict[tuple[str, str, int], set[int]] = {}
    for block, units in removals:
        for tensor, dim in block.tensors:
            drop.setdefault((block.module, tensor, dim), set()).update(block.positions(units))
    for (module_name, tensor, dim), gone in drop.items():
        if not gone:
            continue
        size = getattr(model.get_submodule(module_name), tensor).shape[dim]
        keep = torch.tensor([i for i in range(size) if i not in gone], dtype=torch.long)
        record.slice(model, module_name, tensor, dim, keep)
    for module_name in dict.fromkeys(key[0] for key in drop):
        update_module_attributes(model.get_submodule(module_name))


def _set_attributes(model: nn.Module, module_name: str, values: Mapping[str, int], record: SurgeryRecord) -> None:
    module = model.get_submodule(module_name)
    for key, value in values.items():
        setattr(module, key, value)
    heads = record.extra.setdefault("heads", {})
    heads.setdefault("attributes", {}).setdefault(module_name, {}).update(values)


def remove_heads(model: nn.Module, spec: AttentionSpec, heads: Sequence[int], record: SurgeryRecord) -> None:
    """Remove query ``heads`` from ``spec`` (and KV heads left without query heads).

    Validates before touching anything; ``spec`` is stale afterwards (derive it again).
    """
    keep_q, keep_kv = plan_heads(spec, heads)
    gone_q = [h for h in range(spec.num_heads) if h not in keep_q]
    gone_kv = [h for h in range(spec.num_kv_heads) if h not in keep_kv]
    if not gone_q:
        return
    removals = [(b, gone_q) for b in spec.query + spec.output] + [(b, gone_kv) for b in spec.key_value]
    _slice_blocks(model, removals, record)
    h, kv = len(keep_q), len(keep_kv)
    _set_attributes(model, spec.module, spec.attributes(h, kv), record)
    record.kept[spec.module] = keep_q
    logger.info("%s: %d -> %d heads (%d -> %d key/value heads)", spec.module, spec.num_heads, h, spec.num_kv_heads, kv)


def remove_neurons(model: nn.Module, spec: MlpSpec, neurons: Sequence[int], record: SurgeryRecord, layer: Any = None) -> None:
    """Remove hidden ``neurons`` of one MLP (producers' rows, consumers' columns)."""
    gone = _unit_list("neurons_to_prune", spec.module if layer is None else layer, neurons, spec.size, "neuron")
    if not gone:
        return
    _slice_blocks(model, [(b, gone) for b in spec.producers + spec.consumers], record)
    _set_attributes(model, spec.module, spec.attributes(spec.size - len(gone)), record)
    logger.info("%s: %d -> %d neurons", spec.module, spec.size, spec.size - len(gone))


# -- replay -----------------------------------------------------------------------------


def before_replay(model: nn.Module, extra: Mapping[str, Any]) -> None:
    """Replace the ``nn.MultiheadAttention`` modules a head surgery replaced (a no-op without heads)."""
    scratch = SurgeryRecord()
    for name in extra.get("heads", {}).get("replaced", []):
        module = model.get_submodule(name)
        if not isinstance(module, nn.MultiheadAttention):
            raise InvalidParameterError(
                "record", f"an nn.MultiheadAttention at {name!r}", f"<{type(module).__name__}>",
                "Fix: load into a fresh model of the class the record was made on.",
            )
        replace_mha(model, name, scratch)


def after_replay(model: nn.Module, extra: Mapping[str, Any]) -> None:
    """Set the head/neuron count attributes a head surgery set (a no-op without heads)."""
    for name, values in extra.get("heads", {}).get("attributes", {}).items():
        module = model.get_submodule(name)
        for key, value in values.items():
            setattr(module, key, value)
    config = extra.get("heads", {}).get("config")
    if config and getattr(model, "config", None) is not None:
        for key, value in config.items():
            setattr(model.config, key, value)
        family = hf_family(model)
        if family is not None:  # the merged history may hold per-layer fields a later pass made stale
            update_config(model, family)


def replay_heads(model: nn.Module, record: SurgeryRecord) -> SurgeryRecord:
    """Replay a head/neuron surgery on a fresh model of the original class."""
    before_replay(model, record.extra)
    new = replay(model, record.removals)
    after_replay(model, record.extra)
    new.extra.update(record.extra)
    new.kept.update(record.kept)
    return new


# -- discovery and the public entry points ------------------------------------------------


def _check_sparsity(sparsity: Any) -> None:
    if sparsity is not None and (isinstance(sparsity, bool) or not isinstance(sparsity, (int, float))
                                 or not 0.0 <= sparsity < 1.0):
        raise InvalidParameterError("sparsity", "a fraction in [0, 1) of units to remove", sparsity,
                                    "Fix: e.g. sparsity=0.25.")


def _check_request(param: str, request: Any, sparsity: Any) -> None:
    _check_sparsity(sparsity)
    if (request is None) == (sparsity is None):
        raise InvalidParameterError(
            param, f"exactly one of {param} and sparsity", f"<{param}={request!r}, sparsity={sparsity!r}>",
            f"Fix: pass {param}={{layer: [indices]}} or sparsity=0.25.",
        )
    if request is not None and not isinstance(request, Mapping):
        raise InvalidParameterError(param, "a mapping {layer: [indices to remove]}", request)


def _check_keys(param: str, request: Mapping[Any, Any], specs: Mapping[Any, Any]) -> None:
    for key in request:
        if key not in specs:
            names = [str(k) for k in specs]
            raise InvalidParameterError(
                param, "layers among " + (", ".join(repr(k) for k in list(specs)[:12]) or "<none found>"), key,
                ("Fix: use a key of attention_layers(model) / mlp_layers(model)." + did_you_mean(str(key), names)),
            )


def _add_history(model: nn.Module, record: SurgeryRecord) -> None:
    """Append to the model's surgery history (for ``save_shrunk``), merging the "heads" extra."""
    if not record.removals:
        return
    merged = copy.deepcopy(surgery_history(model).extra.get("heads", {}))
    new = record.extra.get("heads", {})
    merged["replaced"] = merged.get("replaced", []) + new.get("replaced", [])
    for name, values in new.get("attributes", {}).items():
        merged.setdefault("attributes", {}).setdefault(name, {}).update(values)
    merged.setdefault("config", {}).update(new.get("config", {}))
    add_history(model, SurgeryRecord(removals=record.removals, kept=record.kept, extra={"heads": merged}))


def _warn_if_nothing(sparsity: float | None, record: SurgeryRecord, what: str, sizes: Mapping[Any, int]) -> None:
    """A positive ``sparsity`` that removes nothing (every count rounds to 0) is said, not silent."""
    if sparsity and not record.removals:
        smallest = min(sizes.values(), default=0)
        logger.warning("sparsity=%g removed no %s: every layer's count rounds to 0 (the smallest has %d); "
                       "sparsity=%.3g removes one from it", sparsity, what, smallest, 1.0 / max(smallest, 1))


@checked_keywords
def prune_heads(
    model: nn.Module,
    heads_to_prune: Mapping[Any, Sequence[int]] | None = None,
    *,
    sparsity: float | None = None,
    importance: str | Mapping[Any, torch.Tensor] = "magnitude",
    data: Any = None,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    gqa: str = "query",
    scope: str = "local",
    round_to: int | None = None,
    uniform: bool = False,
    ratio: float | None = None,
    batches: Any = None,
) -> SurgeryRecord:
    """Physically remove attention heads; return the :class:`SurgeryRecord`.

    Either ``heads_to_prune={layer: [head, ...]}`` (keys from
    :func:`prunekit.coupling.attention_layers`: layer indices for Hugging Face models, module
    names for ``nn.MultiheadAttention`` and timm-style attention), or ``sparsity``, the fraction of
    heads to remove, chosen by ``importance`` (a head score of
    :mod:`prunekit.scores.heads`: ``"magnitude"`` (L1), ``"l2"``,
    ``"gradient"`` = Michel et al. 2019 with ``data``, or your own
    ``{layer: scores}``). ``ratio=`` and ``batches=`` are the deprecated names
    of ``sparsity=`` and ``data=``. Grouped-query attention keeps
    equal groups (``gqa``, see :func:`plan_heads`). For Hugging Face models the
    config is updated (:mod:`prunekit.surgery.hf`: stock transformers loads LLaMA, ViT
    and DeiT with the same count in every layer; other results need
    :func:`prunekit.surgery.load_pretrained`). ``nn.MultiheadAttention`` modules that lose heads are
    replaced by :class:`~prunekit.surgery.pruned_mha.PrunedMultiheadAttention`. ``round_to``
    keeps ``kept heads x head_dim`` of every layer a multiple of it (so N:M kernels,
    e.g. 2:4 with ``round_to=4``, take the projections): with ``sparsity`` each layer's
    kept count moves to the nearest such multiple (lowest scores removed first); an
    explicit ``heads_to_prune`` that leaves another count is refused. ``uniform=True``
    keeps the same number of heads in every layer (and, under grouped-query attention, the
    same number of key/value heads; :func:`~prunekit.surgery.head_selection.select_uniform`),
    each layer's by its own importance, as Minitron (Muralidharan et al. 2024) does, so one
    config value describes the model; an explicit request with other counts, or
    ``scope="global"``, is refused. Everything is validated before the model is touched.
    """
    old = {k: v for k, v in (("ratio", ratio), ("batches", batches)) if v is not None}
    sparsity = renamed_argument(old, "ratio", "sparsity", "prune_heads", new_value=sparsity)
    data = renamed_argument(old, "batches", "data", "prune_heads", new_value=data)
    validate(HEADS_PARAMS, {"sparsity": sparsity, "importance": importance, "gqa": gqa, "scope": scope,
                            "round_to": round_to, "uniform": uniform})
    if uniform and scope != "local":
        raise InvalidParameterError(
            "scope", "'local' with uniform=True (the same number of heads in every layer)", scope,
            "Fix: scope='local', or uniform=False for a global ranking (different counts per layer).")
    _check_request("heads_to_prune", heads_to_prune, sparsity)
    specs = attention_layers(model)
    if not specs:
        raise InvalidParameterError(
            "model", "a model with attention layers (Hugging Face BERT/DistilBERT/GPT-2/LLaMA/ViT/DeiT, "
            "nn.MultiheadAttention, timm-style attention with qkv/proj/num_heads, or a module type whose "
            "layer handler gives an attention spec)",
            f"<{type(model).__name__}>",
            "Fix: register a LayerHandler(attention=...) for your attention module type "
            "(prunekit.register_layer_handler).",
        )
    multiples = {k: head_multiple(round_to, s.head_dim) for k, s in specs.items()}
    if sparsity is not None:
        scores = resolve_scores(model, specs, importance, head_scores, data=data, loss_fn=loss_fn)
        if uniform and all(s.group_size == 1 for s in specs.values()):
            heads_to_prune = select_uniform({k: s.num_heads for k, s in specs.items()}, scores, sparsity)
        else:
            heads_to_prune = select_heads(specs, scores, sparsity, gqa=gqa, scope=scope)
        if round_to is not None:  # grouped-query layers keep their plan (checked below)
            free = {k: s.num_heads for k, s in specs.items() if s.group_size == 1}
            heads_to_prune = {**heads_to_prune, **round_plan(heads_to_prune, free, scores, multiples, round_to,
                                                             what="head")}
    _check_keys("heads_to_prune", heads_to_prune, specs)
    plans = {k: plan_heads(s, heads_to_prune.get(k, ()), k) for k, s in specs.items()}
    if round_to is not None:  # explicit requests, and grouped-query layers chosen by sparsity
        param = "heads_to_prune" if sparsity is None else "round_to"
        check_multiples(param, {k: len(q) for k, (q, _) in plans.items()}, {k: s.num_heads for k, s in specs.items()},
                        multiples, round_to, "head")
    if uniform:
        check_same_count("heads_to_prune", "heads", {k: len(q) for k, (q, _) in plans.items()})
        check_same_count("heads_to_prune", "key/value heads", {k: len(kv) for k, (_, kv) in plans.items()})
    family = hf_family(model)
    record = SurgeryRecord()
    for key, spec in specs.items():
        heads = list(heads_to_prune.get(key, ()))
        if not heads:
            continue
        if isinstance(model.get_submodule(spec.module), nn.MultiheadAttention):
            spec = mha_spec(spec.module, replace_mha(model, spec.module, record))
        remove_heads(model, spec, heads, record)
    if family is not None and record.removals:
        record.extra.setdefault("heads", {})["config"] = update_config(model, family)
    _warn_if_nothing(sparsity, record, "heads", {k: s.num_heads for k, s in specs.items()})
    _add_history(model, record)
    return record


@checked_keywords
def prune_mlp_neurons(
    model: nn.Module,
    neurons_to_prune: Mapping[int, Sequence[int]] | None = None,
    *,
    sparsity: float | None = None,
    importance: str | Mapping[Any, torch.Tensor] = "magnitude",
    data: Any = None,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    round_to: int | None = None,
    uniform: bool = False,
    ratio: float | None = None,
    batches: Any = None,
) -> SurgeryRecord:
    """Physically remove MLP hidden neurons of a transformer (Hugging Face, or MLP modules
    whose layer handler gives an MLP spec, such as the zoo GPT's).

    The hidden (intermediate) dimension: BERT/ViT ``intermediate``/``fc1`` rows
    and ``output``/``fc2`` columns, DistilBERT ``lin1``/``lin2``, GPT-2
    ``c_fc``/``c_proj`` (``Conv1D``), LLaMA ``gate_proj`` and ``up_proj`` rows
    and ``down_proj`` columns. Either ``neurons_to_prune={layer: [neuron, ...]}``
    or ``sparsity``, the fraction removed (the same number in every layer),
    chosen by ``importance`` (``"magnitude"`` (L1), ``"l2"``, ``"gradient"``
    with a gate per neuron and ``data``, or ``{layer: scores}``). ``ratio=``
    and ``batches=`` are the deprecated names of ``sparsity=`` and ``data=``. For a Hugging
    Face model the config's width field (``intermediate_size``, ``hidden_dim``,
    ``n_inner``) is updated (counts that differ between layers go to
    ``config.prunekit_mlp_sizes``, which only :func:`prunekit.surgery.load_pretrained`
    reads). ``round_to``
    keeps every layer's neuron count a multiple of it (so a later N:M pass, e.g. 2:4
    with ``round_to=4``, takes the second projection): with ``sparsity`` the kept count
    moves to the nearest multiple (lowest scores removed first); an explicit
    ``neurons_to_prune`` that leaves another count is refused. ``uniform=True`` keeps the
    same number of neurons in every layer even where layers differ in width (a model pruned
    per layer before; :func:`~prunekit.surgery.head_selection.select_uniform`), each layer's by
    its own importance (Minitron, Muralidharan et al. 2024); an explicit request with other
    counts is refused.
    """
    old = {k: v for k, v in (("ratio", ratio), ("batches", batches)) if v is not None}
    sparsity = renamed_argument(old, "ratio", "sparsity", "prune_mlp_neurons", new_value=sparsity)
    data = renamed_argument(old, "batches", "data", "prune_mlp_neurons", new_value=data)
    validate(NEURONS_PARAMS, {"sparsity": sparsity, "importance": importance, "round_to": round_to,
                              "uniform": uniform})
    _check_request("neurons_to_prune", neurons_to_prune, sparsity)
    specs = mlp_layers(model)
    sizes = {k: s.size for k, s in specs.items()}
    multiples = {k: round_to or 1 for k in specs}
    if sparsity is not None:
        scores = resolve_scores(model, specs, importance, neuron_scores, data=data, loss_fn=loss_fn)
        neurons_to_prune = (select_uniform if uniform else select_neurons)(sizes, scores, sparsity)
        if round_to is not None:
            neurons_to_prune = round_plan(neurons_to_prune, sizes, scores, multiples, round_to, what="neuron")
    _check_keys("neurons_to_prune", neurons_to_prune, specs)
    kept = [s.size - len(_unit_list("neurons_to_prune", k, neurons_to_prune.get(k, ()), s.size, "neuron"))
            for k, s in specs.items()]
    if round_to is not None:
        check_multiples("neurons_to_prune", dict(zip(specs, kept)), sizes, multiples, round_to, "neuron")
    if uniform:
        check_same_count("neurons_to_prune", "MLP neurons", dict(zip(specs, kept)))
    family = hf_family(model)
    record = SurgeryRecord()
    for key, spec in specs.items():
        remove_neurons(model, spec, list(neurons_to_prune.get(key, ())), record, key)
    if family is not None and record.removals:
        record.extra.setdefault("heads", {})["config"] = update_config(model, family)
    _warn_if_nothing(sparsity, record, "MLP neurons", {k: s.size for k, s in specs.items()})
    _add_history(model, record)
    return record
