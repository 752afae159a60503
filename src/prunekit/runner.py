"""Run a recipe: dense model, then every pruner, measured alike, resumable.

:func:`run_recipe` (or :class:`Runner`) executes a :class:`~prunekit.recipes.Recipe`:

1. build the model from the zoo; load ``model.weights`` if given, otherwise
   train it densely with ``train``; measure the dense model;
2. for each run (a pruner at one sparsity): start from a copy of the dense
   weights, prune (one-shot before fine-tuning, or at the events of the
   pruner's schedule during fine-tuning), fine-tune, make the masks permanent
   if asked, save the sparse checkpoint, measure;
3. write the report (``report.json``; ``prunekit.measure.report.write_report``
   adds Markdown/HTML/plots when it is installed).

Output folder (``out_dir``)::

    recipe.yaml                      the normalised recipe that ran
    state/recipe.json                its fingerprint (sha256) and prunekit version
    state/dense.safetensors          dense weights (trained or loaded)
    state/dense.json                 dense measures, training history, time
    state/run-<name>.json            one finished run: its report entry, time
    checkpoints/<name>.safetensors   the pruned model (prunekit sparse format)
    report.json (+ .md, .html, plots with write_report)

Resuming: every stage writes its result atomically (``atomic_write``), the
JSON last, so a stage counts as finished exactly when its JSON exists; a new
start skips finished stages and logs ``skipped`` for each. A recipe whose
fingerprint differs from the one stored in ``state/recipe.json`` is refused
(use another ``out_dir`` or ``restart=True``, which deletes ``state/``,
``checkpoints/`` and the report files first).

Measures (``MEASURES`` in the report): ``params``, ``nonzero`` (all
parameters), ``macs``/``effective_macs`` (per sample: MACs of a batch of one;
effective skips zero weights), ``bytes_dense`` (dense safetensors) and
``bytes_compressed`` (:func:`prunekit.save_sparse`), ``latency_ms`` (median
over ``evaluate.latency.repeats`` at ``latency_batch`` inputs, on
``evaluate.latency.threads`` threads; None without latency), ``metric``
(accuracy, perplexity or loss on the evaluation split) and ``loss``.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torch.utils.data import default_collate

from .errors import InvalidParameterError
from .io import atomic_write, atomic_write_text, read_json_object, save_sparse
from .recipes import Recipe, RunSpec, TrainSpec, load_recipe
from .training import TrainProgress, fit

__all__ = ["StageProgress", "Runner", "run_recipe", "write_report_files", "MEASURE_KEYS"]

logger = logging.getLogger(__name__)

MEASURE_KEYS = ("params", "nonzero", "macs", "effective_macs", "bytes_dense", "bytes_compressed",
                "latency_ms", "latency_batch", "metric", "loss")
STATE_VERSION = 1
REPORT_FILES = ("report.json", "report.md", "report.html")


@dataclass
class StageProgress:
    """What the ``progress`` callback receives.

    ``status``: ``"start"`` (a stage begins; ``total`` = its training steps),
    ``"step"`` (a training step; ``step``/``total``, ``loss``), ``"measure"``,
    ``"done"`` (``seconds`` it took) or ``"skipped"`` (finished before).
    ``stage`` is ``"dense"`` or a run name; ``index``/``count`` place it among
    all stages.
    """

    stage: str
    status: str
    index: int
    count: int
    step: int = 0
    total: int = 0
    loss: float | None = None
    seconds: float | None = None


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._+-" else "_" for c in name)


class Runner:
    """Executes a recipe into ``out_dir``; :meth:`run` returns the report dict.

    After :meth:`run`: ``files`` maps each written report file's kind to its
    path, ``timings`` each stage to its seconds (time of the run that computed
    it), ``skipped`` lists the stages reused from an earlier start and
    ``warnings`` anything the caller should show.
    """

    def __init__(
        self,
        recipe: Recipe | str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        *,
        restart: bool = False,
        progress: Callable[[StageProgress], None] | None = None,
    ) -> None:
        self.recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
        self.out = Path(out_dir)
        self.state = self.out / "state"
        self.restart = restart
        self.progress = progress
        self.fingerprint = self.recipe.fingerprint()
        self.runs = self.recipe.runs()
        self.files: dict[str, Path] = {}
        self.timings: dict[str, float] = {}
        self.skipped: list[str] = []
        self.computed: list[str] = []
        self.warnings: list[str] = []
        self._count = 1 + len(self.runs)

    # -- helpers ---------------------------------------------------------------------

    def _emit(self, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress(StageProgress(count=self._count, **kwargs))

    def _write_json(self, path: Path, value: Any) -> None:
        atomic_write_text(path, json.dumps(value, indent=2) + "\n")

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        value = read_json_object(path, then="the stage runs again")
        if value is None or value.get("fingerprint") != self.fingerprint:
            return None
        return value

    # -- output folder -------------------------------------------------------------------

    def _prepare_out(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise InvalidParameterError("--out", "a folder (or a path to create one)", os.fspath(self.out),
                                        "Fix: pick another --out.")
        if self.restart:
            for sub in ("state", "checkpoints"):
                if (self.out / sub).is_dir():
                    shutil.rmtree(self.out / sub)
            for name in REPORT_FILES:
                (self.out / name).unlink(missing_ok=True)
            logger.info("restart: removed earlier results in %s", self.out)
        stored = None
        marker = self.state / "recipe.json"
        if marker.is_file():
            try:
                stored = json.loads(marker.read_text(encoding="utf-8")).get("fingerprint")
            except (OSError, json.JSONDecodeError, AttributeError):
                stored = "<unreadable>"
        if stored is not None and stored != self.fingerprint:
            raise InvalidParameterError(
                "--out",
                f"a folder holding results of this recipe (fingerprint {self.fingerprint[:12]})",
                f"<{os.fspath(self.out)} holds results of another recipe (fingerprint {str(stored)[:12]})>",
                "Fix: the recipe changed since those results; use a new --out, or pass --restart "
                "(restart=True) to discard them.",
            )
        self.state.mkdir(parents=True, exist_ok=True)
        if stored is None:
            self._write_json(marker, {"fingerprint": self.fingerprint, "state_version": STATE_VERSION,
                                      "prunekit": _version(), "created": _now()})
        atomic_write_text(self.out / "recipe.yaml", self.recipe.to_yaml())

    # -- data ------------------------------------------------------------------------------

    def _datasets(self) -> tuple[Dataset, Dataset]:
        from .data import create_dataset

        spec = self.recipe.data
        path = self.recipe.resolve_path(spec.path)
        where = f"{self.recipe.source}, data"
        try:
            train = create_dataset(spec.name, path=path, split=spec.train_split, **spec.kwargs)
            test = create_dataset(spec.name, path=path, split=spec.eval_split, **spec.kwargs)
        except InvalidParameterError as exc:
            raise InvalidParameterError(f"{where}: {exc.param}", exc.expected, exc.got, exc.fix) from None
        except TypeError as exc:
            raise InvalidParameterError(f"{where}.kwargs", f"arguments that {spec.name!r} accepts",
                                        sorted(spec.kwargs), f"Fix: check the keys ({exc}).") from None
        return _limit(train, spec.limit_train), _limit(test, spec.limit_test)

    def _loader(self, dataset: Dataset, seed: int) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=self.recipe.data.batch_size, shuffle=True, generator=generator)

    def _example(self, dataset: Dataset, n: int) -> Any:
        n = min(n, len(dataset))  # type: ignore[arg-type]
        inputs = default_collate([dataset[i] for i in range(n)])[0]
        return inputs

    # -- models ------------------------------------------------------------------------------

    def _build_model(self) -> nn.Module:
        from .zoo import create_model

        spec = self.recipe.model
        try:
            return create_model(spec.name, **spec.kwargs)
        except InvalidParameterError as exc:
            raise InvalidParameterError(f"{self.recipe.source}, model.kwargs", exc.expected, exc.got, exc.fix) from None

    def _make_pruner(self, model: nn.Module, run: RunSpec) -> Any:
        from .pruner import Pruner

        p = run.pruner
        try:
            return Pruner(model, criterion=p.criterion, structure=p.structure, scope=p.scope,
                          include=list(p.include) if p.include else None,
                          exclude=list(p.exclude) if p.exclude else None,
                          types=list(p.types) if p.types else None, params=list(p.params),
                          overrides=p.overrides or None, normalize=p.normalize, min_keep=p.min_keep, mode=p.mode)
        except InvalidParameterError as exc:
            raise InvalidParameterError(f"{run.where}.{exc.param}", exc.expected, exc.got, exc.fix) from None

    def _make_schedule(self, run: RunSpec) -> Any:
        from .schedules import create_schedule

        spec = run.pruner.schedule
        if spec is None:
            return None
        final = run.sparsity
        if final is None:  # N:M: its structure fixes the level
            from .structures import create_structure

            final = create_structure(run.pruner.structure).fixed_sparsity
        return create_schedule(spec["name"], final=final, **{k: v for k, v in spec.items() if k != "name"})

    def _preflight(self, train_len: int) -> None:
        """Build every pruner on a fresh model before any training, so a recipe
        that cannot run fails at once, pointing at its pruner."""
        model = self._build_model()
        steps = -(-train_len // self.recipe.data.batch_size) * self.recipe.finetune.epochs
        if self.recipe.finetune.max_steps is not None:
            steps = min(steps, self.recipe.finetune.max_steps)
        for run in self.runs:
            pruner = self._make_pruner(model, run)
            for target in pruner.targets:
                try:
                    pruner.structure.check(target)
                except InvalidParameterError as exc:
                    raise InvalidParameterError(f"{run.where}.structure", exc.expected, exc.got, exc.fix) from None
            schedule = self._make_schedule(run)
            if schedule is not None and schedule.unit == "step" and schedule.end >= steps:
                raise InvalidParameterError(
                    f"{run.where}.schedule.end", f"a step < {steps} (the fine-tuning steps)", schedule.end,
                    "Fix: end the schedule earlier or fine-tune longer.")

    # -- training and measuring -------------------------------------------------------------------

    def _fit(self, model: nn.Module, loader: DataLoader, spec: TrainSpec, stage: str, index: int,
             pruner: Any = None, schedule: Any = None) -> dict[str, Any]:
        total = len(loader) * spec.epochs
        if spec.max_steps is not None:
            total = min(total, spec.max_steps)
        self._emit(stage=stage, status="start", index=index, total=total)

        def report(p: TrainProgress) -> None:
            self._emit(stage=stage, status="step", index=index, step=p.step, total=p.total_steps, loss=p.loss)

        result = fit(model, loader, epochs=spec.epochs, optimizer=spec.optimizer, lr=spec.lr,
                     momentum=spec.momentum, weight_decay=spec.weight_decay, lr_schedule=spec.lr_schedule,
                     max_steps=spec.max_steps, pruner=pruner, schedule=schedule, progress=report)
        return {"epoch_losses": [float(v) for v in result.epoch_losses],
                "pruning_events": [[int(t), float(s)] for t, s in result.pruning_events], "steps": result.steps}

    def _measure(self, model: nn.Module, test: Dataset, stage: str, index: int) -> dict[str, Any]:
        from .measure import count_macs, count_parameters, evaluate_accuracy, evaluate_perplexity
        from .measure import measure_latency, model_size

        self._emit(stage=stage, status="measure", index=index)
        evaluate = self.recipe.evaluate
        counts = count_parameters(model)
        macs = count_macs(model, self._example(test, 1))
        sizes = model_size(model)
        loader = DataLoader(test, batch_size=self.recipe.data.eval_batch_size, shuffle=False)
        if evaluate.metric == "perplexity":
            lm = evaluate_perplexity(model, loader)
            metric, loss = lm.perplexity, lm.loss
        else:
            acc = evaluate_accuracy(model, loader)
            metric, loss = (acc.accuracy if evaluate.metric == "accuracy" else acc.loss), acc.loss
        latency_ms = latency_batch = None
        if evaluate.latency is not None:
            lat = evaluate.latency
            example = self._example(test, lat.batch_size)
            timing = measure_latency(model, example, warmup=lat.warmup, repeats=lat.repeats, threads=lat.threads)
            latency_ms, latency_batch = timing.median_ms, timing.batch_size
        return {"params": counts.params, "nonzero": counts.nonzero, "macs": macs.dense_macs,
                "effective_macs": macs.effective_macs, "bytes_dense": sizes.dense_bytes,
                "bytes_compressed": sizes.compressed_bytes, "latency_ms": latency_ms,
                "latency_batch": latency_batch, "metric": float(metric), "loss": float(loss)}

    # -- stages -----------------------------------------------------------------------------------

    def _dense(self, train: Dataset, test: Dataset) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        weights_path = self.state / "dense.safetensors"
        info_path = self.state / "dense.json"
        info = self._read_json(info_path)
        if info is not None and weights_path.is_file():
            state = load_file(str(weights_path))
            logger.info("stage dense: skipped (finished before; %s)", weights_path)
            self.skipped.append("dense")
            self.timings["dense"] = float(info.get("seconds", 0.0))
            self._emit(stage="dense", status="skipped", index=0, seconds=self.timings["dense"])
            return state, info
        start = time.perf_counter()
        torch.manual_seed(self.recipe.seed)
        model = self._build_model()
        history: dict[str, Any] = {"epoch_losses": []}
        if self.recipe.model.weights is not None:
            from .io import load_pruned_state_dict, load_state_dict_file

            path = self.recipe.resolve_path(self.recipe.model.weights)
            load_pruned_state_dict(model, load_state_dict_file(path))
            from .masks import make_permanent

            make_permanent(model)
            source = path
        else:
            assert self.recipe.train is not None
            history = self._fit(model, self._loader(train, self.recipe.seed), self.recipe.train, "dense", 0)
            source = "trained"
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        atomic_write(weights_path, lambda tmp: save_file(state, tmp, metadata={"source": str(source)}))
        measures = self._measure(model, test, "dense", 0)
        seconds = time.perf_counter() - start
        info = {"fingerprint": self.fingerprint, "measures": measures, "history": history,
                "source": str(source), "seconds": seconds, "finished": _now()}
        self._write_json(info_path, info)
        self.timings["dense"] = seconds
        self.computed.append("dense")
        logger.info("stage dense: done in %.1f s (metric %.4f)", seconds, measures["metric"])
        self._emit(stage="dense", status="done", index=0, seconds=seconds)
        return state, info

    def _run(self, index: int, run: RunSpec, dense_state: dict[str, torch.Tensor], train: Dataset,
             test: Dataset) -> dict[str, Any]:
        from .measure.sparsity import sparsity_report

        safe = _file_safe(run.name)
        info_path = self.state / f"run-{safe}.json"
        ckpt = self.out / "checkpoints" / f"{safe}.safetensors"
        info = self._read_json(info_path)
        if info is not None and (not self.recipe.export.sparse_checkpoint or ckpt.is_file()):
            logger.info("stage %s: skipped (finished before; %s)", run.name, info_path)
            self.skipped.append(run.name)
            self.timings[run.name] = float(info.get("seconds", 0.0))
            self._emit(stage=run.name, status="skipped", index=index, seconds=self.timings[run.name])
            return info["entry"]
        start = time.perf_counter()
        seed = (self.recipe.seed + zlib.crc32(run.name.encode())) % (2**31)
        torch.manual_seed(seed)
        model = self._build_model()
        model.load_state_dict(dense_state)
        pruner = self._make_pruner(model, run)
        schedule = self._make_schedule(run)
        if schedule is None:
            pruner.step(run.sparsity)
            history = self._fit(model, self._loader(train, seed), self.recipe.finetune, run.name, index)
        else:
            history = self._fit(model, self._loader(train, seed), self.recipe.finetune, run.name, index,
                                pruner=pruner, schedule=schedule)
        if self.recipe.export.permanent:
            pruner.make_permanent()
        report = sparsity_report(model)
        layers = [{"name": r.name, "shape": list(r.shape), "params": r.params, "nonzero": r.nonzero,
                   "sparsity": r.sparsity} for r in report.rows]
        if self.recipe.export.sparse_checkpoint:
            save_sparse(model, ckpt, metadata={"recipe": self.fingerprint, "run": run.name,
                                               "model": self.recipe.model.name})
        measures = self._measure(model, test, run.name, index)
        achieved = report.sparsity
        entry = {
            "name": run.name,
            "method": run.method(),
            "sparsity": float(run.sparsity if run.sparsity is not None else achieved),
            "measures": measures,
            "layers": layers,
            "history": {"epoch_losses": history["epoch_losses"]},
        }
        seconds = time.perf_counter() - start
        self._write_json(info_path, {"fingerprint": self.fingerprint, "entry": entry,
                                     "pruning_events": history["pruning_events"], "seconds": seconds,
                                     "checkpoint": str(ckpt) if self.recipe.export.sparse_checkpoint else None,
                                     "finished": _now()})
        self.timings[run.name] = seconds
        self.computed.append(run.name)
        logger.info("stage %s: done in %.1f s (sparsity %.3f, metric %.4f)", run.name, seconds, achieved,
                    measures["metric"])
        self._emit(stage=run.name, status="done", index=index, seconds=seconds)
        return entry

    # -- the whole thing ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self._prepare_out()
        train, test = self._datasets()
        self._preflight(len(train))  # type: ignore[arg-type]
        dense_state, dense_info = self._dense(train, test)
        entries = [self._run(i + 1, run, dense_state, train, test) for i, run in enumerate(self.runs)]
        recipe = self.recipe
        report = {
            "title": recipe.title or f"{recipe.model.name} on {recipe.data.name}: {len(entries)} pruning runs",
            "created": _now(),
            "model": {"name": recipe.model.name, "params": int(dense_info["measures"]["params"])},
            "metric": {"name": recipe.evaluate.metric, "higher_is_better": recipe.evaluate.higher_is_better},
            "dense": dense_info["measures"],
            "runs": entries,
            "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                            "platform": platform.platform(), "prunekit": _version()},
        }
        self.files, self.warnings = write_report_files(report, self.out)
        return report


def write_report_files(report: dict[str, Any], out_dir: str | os.PathLike[str]
                       ) -> tuple[dict[str, Path], list[str]]:
    """Write ``report.json``, then call ``prunekit.measure.report.write_report``
    when that module is installed (Markdown, HTML, plots). Returns the files
    written and warnings (a missing or failing ``write_report`` is reported,
    never silently skipped)."""
    out = Path(out_dir)
    path = out / "report.json"
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    files: dict[str, Path] = {"json": path}
    warnings: list[str] = []
    logger.info("wrote %s", path)
    if importlib.util.find_spec("prunekit.measure.report") is None:
        message = ("prunekit.measure.report is not installed: wrote report.json only "
                   "(no Markdown/HTML/plots)")
        logger.warning(message)
        warnings.append(message)
        return files, warnings
    try:
        module = importlib.import_module("prunekit.measure.report")
        written = module.write_report(report, out)
    except Exception as exc:  # a rendering bug must not lose the computed results
        message = f"write_report failed ({type(exc).__name__}: {exc}); report.json was written"
        logger.warning(message)
        warnings.append(message)
        return files, warnings
    for kind, file in dict(written or {}).items():
        files[str(kind)] = Path(file)
    logger.info("write_report wrote %s", ", ".join(str(p) for p in files.values()))
    return files, warnings


def run_recipe(
    recipe: Recipe | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    restart: bool = False,
    progress: Callable[[StageProgress], None] | None = None,
) -> dict[str, Any]:
    """Execute ``recipe`` (a :class:`~prunekit.recipes.Recipe` or a YAML path)
    into ``out_dir`` and return the report dict; resumes finished stages."""
    return Runner(recipe, out_dir, restart=restart, progress=progress).run()


def _limit(dataset: Dataset, limit: int | None) -> Dataset:
    """The first ``limit`` items; array data sets become one in-memory TensorDataset (fast batches)."""
    n = len(dataset)  # type: ignore[arg-type]
    if limit is not None:
        n = min(n, limit)
    tensors = getattr(dataset, "tensors", None)
    if callable(tensors) and getattr(dataset, "transform", None) is None:
        x, y = tensors()
        return TensorDataset(x[:n], y[:n])
    return dataset if n == len(dataset) else Subset(dataset, range(n))  # type: ignore[arg-type]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    from . import __version__

    return __version__
