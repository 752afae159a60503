"""One vocabulary across the public API: ``sparsity``, ``data``, ``"element"``.

Each renamed keyword still works under its old name for one release: it gives
the same result, warns once (a FutureWarning naming the new keyword), and
given together with the new name it is an InvalidParameterError. A walk over
the public callables keeps old-style parameter names from coming back: every
``ratio``/``amount``/``batches``/``batch``/``loader``/``calibration`` parameter
is either a deprecated alias listed in :data:`DEPRECATED` (and documented as
deprecated in its docstring) or a name kept on purpose in :data:`KEPT`.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import prunekit
from prunekit.analysis import score_sum, sensitivity_analysis
from prunekit.deprecation import reset_warnings
from prunekit.measure import evaluate_accuracy, evaluate_perplexity
from prunekit.scores import OBD, SNIP, Criterion, GraSP, SynFlow, diagonal_fisher

#: Old parameter names of the vocabulary (``sparsity`` and ``data`` replace them).
OLD_NAMES = ("ratio", "amount", "batches", "batch", "loader", "calibration", "bn_loader")

#: The deprecated keyword aliases of public callables: ``(callable, old keyword) -> new keyword``.
#: The lead copies this table into README's "deprecated names" section.
DEPRECATED: dict[tuple[str, str], str] = {
    ("prunekit.fit", "loader"): "data",
    ("prunekit.evaluate", "loader"): "data",
    ("prunekit.oneshot_prune", "calibration"): "data",
    ("prunekit.prune_pretrained", "calibration"): "data",
    ("prunekit.zero_cost_proxies", "batch"): "data",
    ("prunekit.structural_prune", "ratio"): "sparsity",
    ("prunekit.structural_prune", "batches"): "data",
    ("prunekit.prune_heads", "ratio"): "sparsity",
    ("prunekit.prune_heads", "batches"): "data",
    ("prunekit.prune_mlp_neurons", "ratio"): "sparsity",
    ("prunekit.prune_mlp_neurons", "batches"): "data",
    ("prunekit.score_heads", "batches"): "data",
    ("prunekit.score_mlp_neurons", "batches"): "data",
    ("prunekit.measure.evaluate_accuracy", "loader"): "data",
    ("prunekit.measure.evaluate_perplexity", "loader"): "data",
    ("prunekit.analysis.score_sum", "batch"): "data",
    ("prunekit.analysis.linear_path_errors", "loader"): "data",
    ("prunekit.analysis.linear_path_errors", "bn_loader"): "bn_data",
    ("prunekit.scores.OBD", "batches"): "max_batches",
    ("prunekit.scores.diagonal_fisher", "batches"): "max_batches",
    ("prunekit.allocation.keep_counts", "ratio"): "sparsity",
    ("prunekit.allocation.allocate_channels", "ratio"): "sparsity",
    ("prunekit.surgery.LatencyTable", "batch"): "batch_size",
}

#: Old-style names kept on purpose (not deprecated), with the reason.
KEPT: dict[tuple[str, str], str] = {
    ("prunekit.integrations.PrunekitPruning", "amount"): "Lightning's ModelPruning keyword, as its users expect",
    ("prunekit.integrations.PrunekitPruning.apply_pruning", "amount"): "Lightning's ModelPruning method",
    ("prunekit.prune", "amount"): "torch's relative amount, offered beside sparsity",
    ("prunekit.Pruner.step", "amount"): "torch's relative amount, offered beside sparsity",
    ("prunekit.Pruner.allocate", "amount"): "torch's relative amount, offered beside sparsity",
    ("prunekit.integrations.PrunekitPruning.on_train_batch_start", "batch"): "Lightning's hook signature",
    ("prunekit.measure.AccuracyResult", "batches"): "a result field: the number of batches evaluated",
    ("prunekit.measure.PerplexityResult", "batches"): "a result field: the number of batches evaluated",
    ("prunekit.surgery.LayerSpec", "batch"): "a batch size in the latency table's key",
    ("prunekit.measure.compare", "loader"): "measure/compare.py is renamed with the report (data= to come)",
}

#: The packages whose exports are public (``prunekit.__all__`` first).
PUBLIC_PACKAGES = (
    "prunekit", "prunekit.measure", "prunekit.analysis", "prunekit.oneshot", "prunekit.scores",
    "prunekit.learned", "prunekit.lottery", "prunekit.data", "prunekit.surgery", "prunekit.allocation",
    "prunekit.integrations", "prunekit.controller",
)


def _public_signatures() -> dict[str, tuple[Callable[..., Any], inspect.Signature]]:
    """``{qualified name: (callable, signature)}`` of every exported callable and public method,
    each under the first name it is exported by (``prunekit.x`` before ``prunekit.surgery.x``)."""
    found: dict[str, tuple[Callable[..., Any], inspect.Signature]] = {}
    seen: set[int] = set()
    for package in PUBLIC_PACKAGES:
        module = importlib.import_module(package)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name, None)
            if not callable(obj):
                continue
            items = [(f"{package}.{name}", obj)]
            if isinstance(obj, type):
                items += [(f"{package}.{name}.{k}", v) for k, v in vars(obj).items()
                          if inspect.isfunction(v) and not k.startswith("_")]
            for qualified, fn in items:
                if id(fn) in seen:
                    continue
                seen.add(id(fn))
                try:
                    found[qualified] = (fn, inspect.signature(fn))
                except (TypeError, ValueError):
                    continue
    return found


def test_no_public_callable_takes_an_old_name_unless_it_is_a_listed_alias():
    signatures = _public_signatures()
    unlisted, undocumented = [], []
    for qualified, (fn, sig) in signatures.items():
        for param in sig.parameters:
            if param not in OLD_NAMES:
                continue
            key = (qualified, param)
            if key in KEPT:
                continue
            if key not in DEPRECATED:
                unlisted.append(key)
                continue
            doc = " ".join((inspect.getdoc(fn) or "").split())
            if not re.search(rf"\b{param}\b[^.]*deprecated", doc):
                undocumented.append(key)
    assert not unlisted, f"old-style parameter names without a deprecated alias entry: {unlisted}"
    assert not undocumented, f"deprecated aliases not documented as such in the docstring: {undocumented}"


def test_every_listed_alias_exists_and_its_new_name_too():
    signatures = _public_signatures()
    for (qualified, old), new in DEPRECATED.items():
        assert qualified in signatures, qualified
        params = signatures[qualified][1].parameters
        assert old in params and new in params, (qualified, old, new)
    for qualified, param in KEPT:
        assert qualified in signatures and param in signatures[qualified][1].parameters, (qualified, param)


def test_no_public_default_is_the_old_unstructured_spelling():
    bad = [(q, p.name) for q, (_, sig) in _public_signatures().items() for p in sig.parameters.values()
           if isinstance(p.default, str) and p.default == "unstructured"]
    assert not bad


# -- each renamed keyword: same result, one warning, clash -------------------------------------


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 6, generator=g)
    y = torch.randint(0, 3, (12,), generator=g)
    return [(x[:6], y[:6]), (x[6:], y[6:])]


class _TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(11, 8)
        self.out = nn.Linear(8, 11)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(x))


def _lm_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    ids = torch.randint(0, 11, (2, 3, 5), generator=torch.Generator().manual_seed(0))
    return [(ids[0], ids[1])]


def _evaluate_accuracy(**kw: Any) -> Any:
    return evaluate_accuracy(_classifier(), **kw).to_dict()


def _evaluate_perplexity(**kw: Any) -> Any:
    return evaluate_perplexity(_TinyLM(), **{k: _lm_batches() for k in kw}).to_dict()


def _zero_cost_proxies(**kw: Any) -> Any:
    return prunekit.zero_cost_proxies(_classifier(), names=["grad_norm", "snip"], **{k: v[0] for k, v in kw.items()})


def _score_sum(**kw: Any) -> Any:
    model = _classifier()
    return score_sum("snip", model, prunekit.select_targets(model), **{k: v[0] for k, v in kw.items()})


def _gpt() -> nn.Module:
    torch.manual_seed(0)
    return prunekit.create_model("gpt_tiny", vocab_size=32, n_layer=1, n_embd=16, n_head=2, block_size=16).eval()


def _ids() -> torch.Tensor:
    return torch.randint(0, 32, (4, 8), generator=torch.Generator().manual_seed(1))


def _oneshot_prune(**kw: Any) -> Any:
    model = _gpt()
    prunekit.oneshot_prune(model, method="wanda", sparsity=0.5, **{k: _ids() for k in kw})
    return [p.detach().clone() for p in model.parameters()]


def _fisher_sum(**kw: Any) -> Any:
    model = _classifier()
    targets = prunekit.select_targets(model)
    return [f.sum().item() for f in diagonal_fisher(model, targets, _batches(), **{k: 1 for k in kw})]


def _obd(**kw: Any) -> Any:
    model = _classifier()
    crit = OBD(**{k: 1 for k in kw})
    targets = prunekit.select_targets(model)
    crit.prepare(model, targets, data=_batches())
    return [crit.score(t).sum().item() for t in targets]


def _latency_table(**kw: Any) -> Any:
    table = prunekit.surgery.LatencyTable(timer=lambda spec: float(spec.batch), **{k: 4 for k in kw})
    spec = prunekit.surgery.LayerSpec("linear", 2, 2, (1, 1), (1, 1), (0, 0), 1, (1, 1), table.batch_size, 1)
    return table.batch_size, table.batch, table(spec)


def _snip_context(key: str, make: Callable[[], Any] = SNIP) -> Callable[..., Any]:
    """``prepare(..., <key>=batches)``: the data of a criterion's context under an old name."""

    def call(**kw: Any) -> Any:
        model = _classifier()
        crit = make()
        targets = prunekit.select_targets(model)
        crit.prepare(model, targets, **{k: (_batches() if key != "batch" else _batches()[0]) for k in kw})
        return [crit.score(t).sum().item() for t in targets]

    call.criterion = make.__name__  # type: ignore[attr-defined]
    return call


def _batches_for(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: _batches() for k in kw}


CASES = [
    (lambda **kw: _evaluate_accuracy(**_batches_for(kw)), "loader", "data",
     "prunekit.measure.evaluate_accuracy(loader=...)"),
    (_evaluate_perplexity, "loader", "data", "prunekit.measure.evaluate_perplexity(loader=...)"),
    (lambda **kw: _zero_cost_proxies(**_batches_for(kw)), "batch", "data", "prunekit.zero_cost_proxies(batch=...)"),
    (lambda **kw: _score_sum(**_batches_for(kw)), "batch", "data", "prunekit.analysis.score_sum(batch=...)"),
    (_oneshot_prune, "calibration", "data", "prunekit.oneshot_prune(calibration=...)"),
    (_fisher_sum, "batches", "max_batches", "prunekit.scores.diagonal_fisher(batches=...)"),
    (_obd, "batches", "max_batches", "prunekit.scores.OBD(batches=...)"),
    (_latency_table, "batch", "batch_size", "prunekit.surgery.LatencyTable(batch=...)"),
    (_snip_context("batches"), "batches", "data", "Criterion.prepare(batches=...)"),
    (_snip_context("batch"), "batch", "data", "Criterion.prepare(batch=...)"),
    (_snip_context("loader"), "loader", "data", "Criterion.prepare(loader=...)"),
    (_snip_context("calibration"), "calibration", "data", "Criterion.prepare(calibration=...)"),
    (_snip_context("loader", GraSP), "loader", "data", "Criterion.prepare(loader=...)"),
    (_snip_context("batches", SynFlow), "batches", "data", "Criterion.prepare(batches=...)"),
]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and a and torch.is_tensor(a[0]):
        return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("call, old, new, message", CASES,
                         ids=[f"{c[3]}-{getattr(c[0], 'criterion', '')}" for c in CASES])
def test_old_keyword_works_warns_once_and_clashes_with_the_new(call, old, new, message):
    reset_warnings()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name warns about nothing
        expected = call(**{new: True})
    with pytest.warns(FutureWarning, match=re.escape(message)) as record:
        got = call(**{old: True})
    assert sum(issubclass(w.category, FutureWarning) for w in record) == 1
    assert _same(got, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        call(**{old: True})
    with pytest.raises(prunekit.InvalidParameterError) as info:
        call(**{old: True, new: True})
    assert info.value.param == old


def test_prune_pretrained_old_keyword_gives_the_same_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "in")
    reset_warnings()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prunekit.prune_pretrained(tmp_path / "in", tmp_path / "new", data=_ids(), sparsity=0.5)
    with pytest.warns(FutureWarning, match=re.escape("prunekit.prune_pretrained(calibration=...)")):
        prunekit.prune_pretrained(tmp_path / "in", tmp_path / "old", calibration=_ids(), sparsity=0.5)
    load = transformers.AutoModelForCausalLM.from_pretrained
    new, old = load(tmp_path / "new").state_dict(), load(tmp_path / "old").state_dict()
    assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new)
    with pytest.raises(prunekit.InvalidParameterError) as info:
        prunekit.prune_pretrained(tmp_path / "in", tmp_path / "both", data=_ids(), calibration=_ids())
    assert info.value.param == "calibration" and not (tmp_path / "both").exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_criterion_context_with_two_old_data_keys_is_an_error():
    model = _classifier()
    with pytest.raises(prunekit.InvalidParameterError):
        SNIP().prepare(model, prunekit.select_targets(model), batches=_batches(), loader=_batches())


def test_obd_context_count_under_its_old_name_is_max_batches_not_data():
    model = _classifier()
    targets = prunekit.select_targets(model)
    one, old = OBD(max_batches=1), OBD()
    one.prepare(model, targets, data=_batches())
    reset_warnings()
    with pytest.warns(FutureWarning, match=re.escape("OBD.prepare(batches=...)")):
        old.prepare(model, targets, data=_batches(), batches=1)
    assert all(torch.equal(one.score(t), old.score(t)) for t in targets)


class _SeesData(Criterion):
    """A user's criterion: magnitude scores, and it records the data its ``prepare`` received."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def prepare(self, model: nn.Module, targets: Any, **context: Any) -> None:
        self.seen.append(context.get("data"))

    def score(self, target: Any) -> torch.Tensor:
        return target.effective().abs()


def test_sensitivity_context_gives_a_users_criterion_data_under_an_old_key():
    crit, batches = _SeesData(), _batches()
    reset_warnings()
    with pytest.warns(FutureWarning, match=re.escape("Criterion.prepare(loader=...)")):
        sensitivity_analysis(_classifier(), lambda m: 0.0, sparsities=(0.5,), criterion=crit,
                             context={"loader": batches})
    assert crit.seen == [batches]


def test_oneshot_structure_default_is_element():
    result = prunekit.oneshot_prune(_gpt(), _ids(), "magnitude", 0.5)
    assert result.structure == "element"
