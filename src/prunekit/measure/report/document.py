"""The report as a list of blocks (headings, paragraphs, bullets, tables, images)
shared by the Markdown and HTML renderers.

The results are two tables, so that every column fits a 1280 px page: quality
and training budget (run, realisation, method, sparsity, metric, Δ, training
steps), then size and speed (parameters, non-zeros, MACs, bytes, latency,
speedup). :func:`results_tables` gives both as plain rows, for any renderer
(the CLI's table included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .fmt import (
    _bytes,
    _delta,
    _int,
    _latency,
    _method_details,
    _method_label,
    _metric,
    _pct,
    _ratio,
    _short,
    _sparsity_of,
    _times,
)

__all__ = ["Heading", "Para", "Bullets", "Table", "Image", "document", "results_tables", "NO_SPEEDUP"]

#: Latency ratios within this distance of 1 count as "no speedup".
NO_SPEEDUP = 0.10

@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Para:
    text: str
    note: bool = False


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    total: bool = False  # last row is a total


@dataclass
class Image:
    src: str
    alt: str


def document(report: Mapping[str, Any], plots: Mapping[str, str]) -> list[Any]:
    metric = report["metric"]
    mname, hib = metric["name"], metric["higher_is_better"]
    dense = report["dense"]
    runs = report["runs"]
    env = report.get("environment") or {}
    blocks: list[Any] = [Heading(1, report["title"])]
    model = report["model"]
    blocks.append(Para(
        f"Model {model['name']} ({model['params']:,} parameters). Created {report['created']}. "
        f"Metric: {mname} ({'higher' if hib else 'lower'} is better). "
        f"{len(runs)} pruned run{'s' if len(runs) != 1 else ''} compared with the dense model."
    ))

    blocks += _setup(report)

    # -- results: two tables, each fits the page
    blocks.append(Heading(2, "Results", "results"))
    everything = [dense, *(r["measures"] for r in runs)]
    batches = {m.get("latency_batch") for m in everything if m.get("latency_ms") is not None}
    for title, (header, rows, numeric) in zip(("Quality and training budget", "Size and speed"),
                                             results_tables(report)):
        blocks.append(Heading(3, title))
        blocks.append(Table(header, rows, numeric))
    blocks += _notes(report, batches)

    # -- plots
    if plots:
        blocks.append(Heading(2, "Plots", "plots"))
        captions = {
            "relative_to_dense": "Each run relative to the dense model (dense = 1; lower is smaller or faster)",
            "metric_vs_sparsity": f"{mname} against sparsity, one line per method; the dense model dashed",
            "sparsity_per_layer": "Sparsity of every layer, one bar per run",
            "sensitivity": "Sensitivity: each layer pruned alone",
        }
        for key in ("relative_to_dense", "metric_vs_sparsity", "sparsity_per_layer"):
            if key in plots:
                blocks.append(Image(plots[key], captions[key]))

    # -- runs
    for run in runs:
        blocks.append(Heading(2, f"Run: {run['name']}"))
        m = run["measures"]
        method = {k: v for k, v in run["method"].items() if k != "stages"}
        items = [f"Method: {_method_details(method)}"]
        for stage, settings in (run["method"].get("stages") or {}).items():
            if isinstance(settings, Mapping):
                shown = {k: v for k, v in settings.items() if v is not None}
                items.append(f"Stage {stage}: {_method_details(shown)}")
        if "shrunk" in _realisation(run):
            items.append(f"Physically smaller: {m['params']:,} parameters against the dense model's "
                         f"{dense['params']:,} ({_pct(_ratio(m['params'], dense['params']), 1)}); "
                         f"{m['nonzero']:,} of them non-zero.")
        else:
            items.append(f"Requested sparsity {_pct(run['sparsity'])}; whole model {_pct(_sparsity_of(m))} zeros "
                         f"({m['nonzero']:,} of {m['params']:,} parameters non-zero).")
        budget = run.get("budget")
        if budget:
            items.append(f"Training: {int(budget['steps']):,} steps ({int(budget.get('pretrain_steps', 0)):,} dense, "
                         f"then {int(budget.get('finetune_steps', 0)):,} fine-tuning after pruning).")
        history = run.get("history") or {}
        losses = history.get("epoch_losses") or []
        if losses:
            items.append(
                f"Fine-tuning: {len(losses)} epoch{'s' if len(losses) != 1 else ''}, loss "
                + " → ".join(f"{float(v):.4f}" for v in losses[:12])
                + (" → …" if len(losses) > 12 else "")
            )
        for key, value in history.items():
            if key != "epoch_losses":
                items.append(f"{key}: {_short(value)}")
        blocks.append(Bullets(items))
        layers = run["layers"]
        if layers:
            rows = [[l["name"], "×".join(str(d) for d in l["shape"]), _int(l["params"]), _int(l["nonzero"]),
                     _pct(l["sparsity"])] for l in layers]
            total_params = sum(l["params"] for l in layers)
            total_nonzero = sum(l["nonzero"] for l in layers)
            rows.append(["total (these layers)", "", _int(total_params), _int(total_nonzero),
                         _pct(_ratio(total_params - total_nonzero, total_params))])
            blocks.append(Table(["layer", "shape", "params", "non-zeros", "sparsity"], rows,
                                 [False, False, True, True, True], total=True))
        else:
            blocks.append(Para("No per-layer figures were recorded for this run."))

    # -- sensitivity
    sens = report.get("sensitivity")
    if sens is not None:
        blocks.append(Heading(2, "Sensitivity analysis", "sensitivity"))
        blocks.append(Para(
            f"Each layer pruned alone to each sparsity of the ladder, the rest of the model dense; "
            f"unpruned {mname}: {_metric(sens['baseline'], mname)}. Drops of layers pruned together "
            f"usually add up to more than any single curve shows."
        ))
        ladder = sorted({float(p[0]) for points in sens["curves"].values() for p in points})
        rows = []
        for layer, points in sens["curves"].items():
            values = {float(p[0]): p[1] for p in points}
            rows.append([layer, *(_metric(values[s], mname) if s in values else "—" for s in ladder)])
        if rows:
            blocks.append(Table(["layer", *(_pct(s, 0) for s in ladder)], rows, [False] + [True] * len(ladder)))
        if "sensitivity" in plots:
            blocks.append(Image(plots["sensitivity"], "Sensitivity: each layer pruned alone"))

    # -- environment
    if env:
        blocks.append(Heading(2, "Environment", "environment"))
        blocks.append(Bullets([f"{k}: {_short(v)}" for k, v in env.items()]))
    return blocks


def _realisation(run: Mapping[str, Any]) -> str:
    method = run["method"]
    if "realisation" in method:
        return str(method["realisation"])
    return "shrunk" if method.get("mode") == "shrunk" else "masks"


def _steps(budget: Mapping[str, Any] | None) -> str:
    if not budget or budget.get("steps") is None:
        return "—"
    return f"{int(budget['steps']):,}"


def results_tables(report: Mapping[str, Any]) -> list[tuple[list[str], list[list[str]], list[bool]]]:
    """The results as two ``(header, rows, numeric columns)`` tables of formatted cells:
    quality and training budget, then size and speed. The first row is the dense reference."""
    metric = report["metric"]
    mname, hib = metric["name"], metric["higher_is_better"]
    dense = report["dense"]
    runs = report["runs"]
    everything = [dense, *(r["measures"] for r in runs)]
    batches = {m.get("latency_batch") for m in everything if m.get("latency_ms") is not None}
    entries: list[tuple[str, Mapping[str, Any] | None, Mapping[str, Any]]] = [("dense", None, dense)]
    entries += [(r["name"], r, r["measures"]) for r in runs]
    quality, cost = [], []
    sparse = any(m.get("sparse_layers") is not None for _n, _r, m in entries)
    for name, run, m in entries:
        latency = _latency(m.get("latency_ms"))
        if len(batches) > 1 and m.get("latency_ms") is not None:
            latency += f" (batch {m.get('latency_batch')})"
        budget = report.get("dense_budget") if run is None else run.get("budget")
        quality.append([
            name,
            "dense" if run is None else _realisation(run),
            "—" if run is None else _method_label(run["method"]),
            _pct(_sparsity_of(m) if run is None else run["sparsity"]),
            _metric(m.get("metric"), mname),
            "—" if run is None else _delta(m.get("metric"), dense.get("metric"), mname, hib),
            _steps(budget),
        ])
        cost.append([
            name,
            _int(m["params"]),
            f"{_int(m['nonzero'])} ({_pct(_ratio(m['nonzero'], m['params']), 1)})",
            _int(m["effective_macs"]),
            _times(_ratio(m["effective_macs"], dense["effective_macs"])),
            _bytes(m["bytes_compressed"]),
            _times(_ratio(m["bytes_compressed"], dense["bytes_dense"])),
            latency,
            "—" if run is None else _times(_ratio(dense.get("latency_ms"), m.get("latency_ms")), 2),
        ] + ([_sparse_cell(m, dense)] if sparse else []))
    return [
        (["run", "realisation", "method", "sparsity", mname, "Δ vs dense", "training steps"], quality,
         [False, False, False, True, True, True, True]),
        (["run", "parameters", "non-zeros", "effective MACs", "MACs × dense", "bytes compressed", "size × dense",
          "latency (ms)", "speedup"] + (["sparse kernels"] if sparse else []), cost,
         [False] + [True] * (9 if sparse else 8)),
    ]


def _sparse_cell(m: Mapping[str, Any], dense: Mapping[str, Any]) -> str:
    """A masked run after ``prunekit.to_sparse``: its speedup over dense and the layers made sparse."""
    layers = m.get("sparse_layers")
    if layers is None:
        return "—"
    if m.get("sparse_latency_ms") is None:
        return f"dense (0/{str(layers).split('/')[-1]})"
    return f"{_times(_ratio(dense.get('latency_ms'), m['sparse_latency_ms']), 2)} ({layers})"


def _setup(report: Mapping[str, Any]) -> list[Any]:
    """The data set sizes and the training budget of every run."""
    data = report.get("data")
    training = report.get("training")
    if not data and not training:
        return []
    blocks: list[Any] = [Heading(2, "Data and training budget", "setup")]
    items = []
    if data:
        items.append(f"Data: {data.get('name')}; training on {data.get('train_samples', 0):,} samples "
                     f"(split {data.get('train_split')!r}), in batches of {data.get('batch_size')}; every figure "
                     f"measured on {data.get('test_samples', 0):,} samples (split {data.get('eval_split')!r}).")
    if training:
        pre = training.get("pretrain")
        if pre:
            items.append(f"Dense training (the starting point of every run): {_budget_text(pre)}.")
        elif training.get("weights"):
            items.append(f"Starting point: the weights {training['weights']} (no dense training here).")
        fine = training.get("finetune")
        if fine:
            items.append(f"Fine-tuning of every run after its pruning, and of the dense reference too: "
                         f"{_budget_text(fine)}; the optimizer is built for the model as it is after pruning.")
    blocks.append(Bullets(items))
    steps = {r["name"]: (r.get("budget") or {}).get("steps") for r in report["runs"]}
    dense_steps = (report.get("dense_budget") or {}).get("steps")
    if dense_steps is not None and steps:
        same = all(v == dense_steps for v in steps.values())
        text = (f"Equal budgets: the dense reference and every run saw {dense_steps:,} training steps."
                if same else
                "Unequal budgets: " + ", ".join(f"{k} {v}" for k, v in steps.items() if v != dense_steps)
                + f" training steps against the dense reference's {dense_steps:,}; compare with care.")
        blocks.append(Para(text, note=not same))
    return blocks


def _budget_text(spec: Mapping[str, Any]) -> str:
    text = f"{int(spec.get('steps') or 0):,} steps"
    if spec.get("epochs") is not None:
        text += f" (at most {spec['epochs']} epoch{'s' if spec['epochs'] != 1 else ''}"
        text += f", capped at {spec['max_steps']:,} steps)" if spec.get("max_steps") else ")"
    return text + (f" of batch {spec['batch_size']}, {spec.get('optimizer')} at lr {spec.get('lr')}, "
                   f"{spec.get('lr_schedule')} schedule")


def _notes(report: Mapping[str, Any], batches: set[Any]) -> list[Any]:
    metric = report["metric"]
    dense = report["dense"]
    runs = report["runs"]
    env = report.get("environment") or {}
    notes = [
        "Ratios (×) divide a run's figure by the dense model's; the size ratio divides the run's compressed "
        "bytes by the dense model's plain bytes. Effective MACs count only multiply-accumulates with a "
        f"non-zero weight (the work a sparse kernel could skip); dense kernels still do all "
        f"{dense['macs']:,} MACs of the dense model.",
    ]
    if any(m.get("latency_ms") is not None for m in [dense, *(r["measures"] for r in runs)]):
        notes += _latency_notes(dense, runs, env, batches)
    else:
        notes.append("Latency was not measured.")
    if all(r["measures"].get("metric") is None for r in runs) and runs:
        notes.append(f"The runs have no {metric['name']}: it was not measured.")
    return [Para(n, note=True) for n in notes]


def _latency_notes(dense: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], env: Mapping[str, Any],
                   batches: set[Any]) -> list[str]:
    notes = []
    threads = env.get("latency_threads", env.get("threads"))
    if len(batches) == 1 and None not in batches:
        setup = [f"batch size {next(iter(batches))}"]
    else:
        setup = ["the batch size noted in each cell" if len(batches) > 1 else "an unrecorded batch size"]
    if isinstance(threads, int) and threads > 0:
        setup.append(f"{threads} CPU thread{'s' if threads != 1 else ''}")
    else:
        setup.append("an unrecorded number of threads")
    if env.get("platform"):
        setup.append(f"on {env['platform']}")
    if env.get("torch"):
        setup.append(f"torch {env['torch']}")
    text = "Latency: one forward pass with " + ", ".join(setup) + "."
    if env.get("latency_repeats") is not None:
        text += f" Median of {env['latency_repeats']} repeats"
        if env.get("latency_warmup") is not None:
            text += f" after {env['latency_warmup']} warm-up runs"
        text += "."
    if str(env.get("latency_method", "")).startswith("interleaved"):
        text += (" All models were timed together after the last stage, in turn within each repeat, so a "
                 "change in the machine's load touches them alike.")
    notes.append(text + " Differences of a few percent are usually timing noise.")

    def ratio(run: Mapping[str, Any]) -> float | None:
        return _ratio(run["measures"].get("latency_ms"), dense.get("latency_ms"))

    def masked(run: Mapping[str, Any]) -> bool:
        return _realisation(run) == "masks"

    flat = [r for r in runs if masked(r) and ratio(r) is not None and abs(ratio(r) - 1.0) <= NO_SPEEDUP]
    if flat:
        element = [r for r in flat if str(r["method"].get("structure", "")).startswith("element")]
        text = (
            f"No speedup for {', '.join(r['name'] for r in flat)}: latency within {int(100 * NO_SPEEDUP)}% "
            "of the dense model. Pruned weights are zeros stored inside dense tensors, and dense CPU kernels "
            "multiply zeros like any other value."
        )
        if element:
            text += (" Unstructured (element) sparsity gives no dense-CPU speedup; it needs sparse kernels "
                     "to turn into wall time.")
        if len(element) < len(flat):
            text += (" Structured sparsity speeds up inference only once the pruned channels or blocks are "
                     "physically removed from the tensors.")
        text += " The gains here are in non-zeros, compressed size and effective MACs."
        notes.append(text)
    converted = [r for r in runs if r["measures"].get("sparse_layers") is not None]
    if converted:
        def said(run: Mapping[str, Any]) -> str:
            fast = _ratio(dense.get("latency_ms"), run["measures"].get("sparse_latency_ms"))
            if fast is None:
                return f"{run['name']} stays dense (no layer faster with a sparse kernel)"
            return f"{run['name']} {fast:.2f}× the dense speed ({run['measures']['sparse_layers']} layers sparse)"

        notes.append(
            "Sparse kernels (prunekit.to_sparse: each pruned Linear and 1×1 convolution computed from its "
            "compressed weights where that is faster at this batch and thread count, timed with the others): "
            + "; ".join(said(r) for r in converted) + ". A kernel wins only where the zeros save more than "
            "decoding them costs: at a few rows per forward, from about half the weights zero; with many rows, "
            "only at high sparsity.")
    fast = [r for r in runs if masked(r) and ratio(r) is not None and ratio(r) < 1.0 - NO_SPEEDUP]
    if fast:
        notes.append(
            f"Faster than the dense model by more than {int(100 * NO_SPEEDUP)}%: "
            f"{', '.join(r['name'] for r in fast)}. Their pruned weights are masked zeros in tensors of "
            "unchanged shape, which dense CPU kernels do not skip, so the pruning itself does not explain the "
            "difference: it is most likely timing noise (few repeats, other load on the machine, warm-up "
            "order). Measure again with more warm-up runs and repeats before relying on it."
        )
    shrunk = [r for r in runs if not masked(r) and ratio(r) is not None]
    if shrunk:
        notes.append(
            "Physically shrunk (channels, heads or neurons removed, smaller tensors): "
            + ", ".join(f"{r['name']} {1.0 / ratio(r):.2f}× the dense speed" for r in shrunk)  # type: ignore[operator]
            + ". Their dense kernels do less work, so the speedup is real on any hardware; the masked runs "
            "keep the dense shapes."
        )
    slow = [r for r in runs if ratio(r) is not None and ratio(r) > 1.0 + NO_SPEEDUP]
    if slow:
        text = (f"Slower than the dense model by more than {int(100 * NO_SPEEDUP)}%: "
                + ", ".join(r["name"] for r in slow) + ".")
        if any(r["method"].get("mode") == "reparam" for r in slow):
            text += (" In reparam mode every forward pass recomputes weight = orig × mask; "
                     "prunekit.make_permanent(model) removes that cost before deployment.")
        notes.append(text)
    return notes
