"""Run a recipe: dense model, then every run, trained alike, measured alike, resumable.

:func:`run_recipe` (or :class:`Runner`) executes a :class:`~prunekit.recipes.Recipe`:

1. check everything before anything is written: the output folder, the data,
   and a dry run of every run's stages on a fresh model;
2. ``dense``: build the model; load ``model.weights`` or train it with
   ``train`` (T steps): the starting point of every run. Then the dense
   *reference* continues from it with ``finetune`` (F steps) and is
   measured. Every pruned run also starts from the starting point and gets
   the same ``finetune``, so every model in the report saw T + F training
   steps: the budgets are equal by construction;
3. each run: a copy of the starting point, its stages (shrink, heads, neurons,
   prune or oneshot), fine-tuning (the optimizer built for the model as it is
   then), masks made permanent if asked, the model saved (shrunk ones with
   :func:`prunekit.save_shrunk`, masked ones with :func:`prunekit.save_sparse`),
   measured;
4. the report (``report.json``, Markdown, HTML, plots).

Output folder (``out_dir``)::

    recipe.yaml                      the normalised recipe that ran
    .prunekit.lock                   held while a run writes (one run per folder)
    state/recipe.json                its fingerprint (sha256) and prunekit version
    state/manifest.json              the sha256 of every file below, recorded when it was written
    state/dense.safetensors          the starting point (trained or loaded)
    state/pretrain.json              its training history
    state/dense.json                 the dense reference's measures
    state/run-<name>.json            one finished run: its report entry, time
    checkpoints/<name>.safetensors   the run's model (save_shrunk or save_sparse format)
    report.json, report.md, report.html, plots/*.png

Resuming: every stage writes its result atomically (``atomic_write``), the
JSON last, and records each file's sha256 in ``state/manifest.json``
(:class:`prunekit.rundir.Manifest`); a stage counts as finished exactly when
its JSON and its files exist with their recorded hashes. A new start skips
finished stages and logs ``skipped`` for each; a damaged or replaced file is
logged and its stage computed again, never reused. A recipe whose fingerprint
differs from the one stored in ``state/recipe.json`` is refused (use another
``out_dir`` or ``restart=True``, which deletes ``state/``, ``checkpoints/`` and
the report files first).

A start holds the folder's lock (:class:`prunekit.rundir.RunLock`) throughout:
a second run on the same folder is refused. It removes temporary files a killed
run left, and checks everything (recipe, data, model, weights file, a dry run)
before it writes; a start that fails before any stage finished leaves no
fingerprint behind, so the corrected command runs. A write that fails (full
disk, read-only folder) is an :class:`~prunekit.errors.InvalidParameterError`
and keeps every file written before; a finished run on read-only media is
reported without writing.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import shutil
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from .. import __version__, load_shrunk, save_shrunk
from ..errors import InvalidParameterError
from ..export import export_onnx, require_onnx, save_dense
from ..io.sparse_file import safetensors_writer
from ..io import (
    atomic_write_text,
    load_pruned_state_dict,
    load_sparse,
    load_state_dict_file,
    save_sparse,
)
from ..masks import make_permanent
from ..measure.sparsity import sparsity_report
from ..progress import ProgressArg, ProgressCallback, ProgressEvent, check_progress, progress_reporter
from ..rundir import Manifest, RunLock, clean_temporary, write_errors
from ..recipes import Recipe, RunSpec, StageData, TrainSpec, load_recipe
from ..training import fit
from ..zoo import create_model
from . import measures as M
from .latency import interleaved_latency
from .sparse_timing import SUFFIX, save_converted, sparse_copies
from .realise import apply_stages
from .report_files import write_report_files
from .stage_progress import StageProgress

__all__ = ["StageProgress", "Runner", "run_recipe"]

logger = logging.getLogger(__name__)

STATE_VERSION = 3
REPORT_FILES = ("report.json", "report.md", "report.html")


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._+-" else "_" for c in name)


class Runner:
    """Executes a recipe into ``out_dir``; :meth:`run` returns the report dict.

    After :meth:`run`: ``files`` maps each written report file's kind to its
    path, ``timings`` each stage to its seconds (time of the run that computed
    it), ``skipped`` lists the stages reused from an earlier start and
    ``warnings`` anything the caller should show.

    ``progress``: ``True`` for a progress bar on stderr, or a callable receiving a
    :class:`StageProgress` (a :class:`~prunekit.progress.ProgressEvent`) at each stage's
    start, training step, measurement and end; by default events are logged at DEBUG only.
    """

    def __init__(
        self,
        recipe: Recipe | str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        *,
        restart: bool = False,
        progress: ProgressArg = None,
    ) -> None:
        check_progress(progress)
        self.recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
        self.out = Path(out_dir)
        self.state = self.out / "state"
        self.restart = restart
        self.progress = progress
        self._tell: ProgressCallback | None = None  # while run() reports
        self._stage_steps: dict[str, int] = {}  # each stage's training steps so far
        self.fingerprint = self.recipe.fingerprint()
        self.runs = self.recipe.runs()
        self.files: dict[str, Path] = {}
        self.timings: dict[str, float] = {}
        self.skipped: list[str] = []
        self.computed: list[str] = []
        self.warnings: list[str] = []
        self._count = 1 + len(self.runs)
        self._batches_per_epoch = 0
        self.lock = RunLock(self.out, "--out")
        self.manifest: Manifest | None = None
        self._finished_any = False

    # -- helpers ---------------------------------------------------------------------

    def _emit(self, *, stage: str, status: str, **kwargs: Any) -> None:
        """A :class:`StageProgress` to the reporter; ``done == total`` at ``measure``/``done``/``skipped``."""
        if status == "start":
            self._stage_steps[stage] = 0
        elif status == "step":
            self._stage_steps[stage] = int(kwargs["step"])
        else:
            steps = self._stage_steps.get(stage, 0)
            kwargs = {**kwargs, "done": steps, "total": steps}
        if self._tell is not None:
            self._tell(StageProgress(stage, status, count=self._count, **kwargs))

    @property
    def _files(self) -> Manifest:
        if self.manifest is None:
            self.manifest = Manifest(self.out, "--out", "state/manifest.json")
        return self.manifest

    def _write_json(self, path: Path, value: Any) -> None:
        self._files.write_json(path, value)
        self._finished_any = True

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        value = self._files.read_json(path)
        if value is None or value.get("fingerprint") != self.fingerprint:
            return None
        return value

    def _build_model(self) -> nn.Module:
        spec = self.recipe.model
        try:
            return create_model(spec.name, **spec.kwargs)
        except InvalidParameterError as exc:
            raise InvalidParameterError(f"{self.recipe.source}, model.kwargs", exc.expected, exc.got, exc.fix) from None

    def _steps(self, spec: TrainSpec | None) -> int:
        return 0 if spec is None else spec.steps(self._batches_per_epoch)

    # -- output folder -------------------------------------------------------------------

    def _check_out(self) -> None:
        """Refuse an unusable ``--out`` or one holding another recipe's results (reads only)."""
        if self.out.exists() and not self.out.is_dir():
            raise InvalidParameterError("--out", "a folder (or a path to create one)", os.fspath(self.out),
                                        "Fix: pick another --out.")
        stored = self._stored_fingerprint()
        if not self.restart and stored == "<unreadable>":
            raise InvalidParameterError(
                "--out", "a folder whose state/recipe.json is readable",
                f"<{os.fspath(self.state / 'recipe.json')}: damaged>",
                "Fix: pass --restart (restart=True) to discard the results in it, or use a new --out.")
        if not self.restart and stored is not None and stored != self.fingerprint:
            raise InvalidParameterError(
                "--out",
                f"a folder holding results of this recipe (fingerprint {self.fingerprint[:12]})",
                f"<{os.fspath(self.out)} holds results of another recipe (fingerprint {str(stored)[:12]})>",
                "Fix: the recipe changed since those results; use a new --out, or pass --restart "
                "(restart=True) to discard them.",
            )

    def _stored_fingerprint(self) -> str | None:
        marker = self.state / "recipe.json"
        if not marker.is_file():
            return None
        try:
            return str(json.loads(marker.read_text(encoding="utf-8")).get("fingerprint"))
        except (OSError, ValueError, AttributeError):  # ValueError: bad JSON or bad UTF-8
            return "<unreadable>"

    def _prepare_out(self) -> bool:
        """Restart if asked, write the fingerprint unless stored; True when this start wrote it."""
        if self.restart:
            for sub in ("state", "checkpoints"):
                if (self.out / sub).is_dir():
                    shutil.rmtree(self.out / sub)
            for name in REPORT_FILES:
                (self.out / name).unlink(missing_ok=True)
            logger.info("restart: removed earlier results in %s", self.out)
            self.manifest = None
        created = False
        with write_errors(self.out, "--out"):
            self.state.mkdir(parents=True, exist_ok=True)
        if self._stored_fingerprint() is None:
            self._files.write_json(self.state / "recipe.json", {"fingerprint": self.fingerprint,
                                                                "state_version": STATE_VERSION,
                                                                "prunekit": __version__, "created": _now()})
            created = True
        text = self.recipe.to_yaml()
        yaml_path = self.out / "recipe.yaml"
        if not (yaml_path.is_file() and yaml_path.read_text(encoding="utf-8") == text):
            with write_errors(self.out, "--out"):
                atomic_write_text(yaml_path, text)
        return created

    def _forget_start(self) -> None:
        """Undo a start that failed before any stage finished: no fingerprint stays behind."""
        for path in (self.state / "recipe.json", self.state / "manifest.json", self.out / "recipe.yaml"):
            path.unlink(missing_ok=True)
        for folder in (self.state, self.out / "checkpoints"):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        self.manifest = None
        logger.info("the start failed before any stage finished; removed its fingerprint from %s", self.out)

    # -- stages ------------------------------------------------------------------------------

    def _data_for(self, dry: bool) -> Callable[[StageData, str], list[Any]]:
        def data_for(spec: StageData, where: str) -> list[Any]:
            return M.stage_batches(self.recipe, spec, where, samples=min(spec.samples, 2) if dry else None)

        return data_for

    def _preflight(self, test: Dataset) -> None:
        """Every run's stages on a fresh, untrained model, before any training, so a
        recipe that cannot run fails at once, pointing at its key."""
        weights = self.recipe.model.weights
        if weights is not None and not Path(str(self.recipe.resolve_path(weights))).exists():
            raise InvalidParameterError(f"{self.recipe.source}, model.weights", "a weights file that exists",
                                        str(self.recipe.resolve_path(weights)),
                                        "Fix: correct the path (relative paths start at the recipe's folder).")
        example = M.example(test, 1)
        finetune_steps = self._steps(self.recipe.finetune)
        for run in self.runs:
            torch.manual_seed(self.recipe.seed)
            apply_stages(self.recipe, self._build_model(), run, example, self._data_for(dry=True),
                         finetune_steps=finetune_steps, dry=True)

    def _fit(self, model: nn.Module, dataset: Dataset, spec: TrainSpec, seed: int, stage: str, index: int,
             pruner: Any = None, schedule: Any = None) -> dict[str, Any]:
        loader = M.loader(self.recipe, dataset, seed)
        self._emit(stage=stage, status="start", index=index, total=spec.steps(len(loader)))

        def report(p: ProgressEvent) -> None:
            self._emit(stage=stage, status="step", index=index, step=p.done, total=p.total or 0,
                       loss=p.figures["loss"])

        model.train()
        result = fit(model, loader, epochs=spec.epochs, optimizer=spec.optimizer, lr=spec.lr,
                     momentum=spec.momentum, weight_decay=spec.weight_decay, lr_schedule=spec.lr_schedule,
                     max_steps=spec.max_steps, pruner=pruner, schedule=schedule, progress=report)
        return {"epoch_losses": [float(v) for v in result.epoch_losses],
                "pruning_events": [[int(t), float(s)] for t, s in result.pruning_events], "steps": int(result.steps)}

    def _dense(self, train: Dataset, test: Dataset) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        weights_path = self.state / "dense.safetensors"
        pre = self._read_json(self.state / "pretrain.json")
        info = self._read_json(self.state / "dense.json")
        if info is not None and pre is not None and self._files.valid(weights_path):
            logger.info("stage dense: skipped (finished before; %s)", weights_path)
            self.skipped.append("dense")
            self.timings["dense"] = float(info.get("seconds", 0.0))
            self._emit(stage="dense", status="skipped", index=0, seconds=self.timings["dense"])
            return load_file(str(weights_path)), info
        start = time.perf_counter()
        earlier = 0.0  # seconds of a pretraining finished by an earlier start
        if pre is None or not self._files.valid(weights_path):
            torch.manual_seed(self.recipe.seed)
            model = self._build_model()
            history: dict[str, Any] = {"epoch_losses": [], "steps": 0}
            if self.recipe.model.weights is not None:
                path = self.recipe.resolve_path(self.recipe.model.weights)
                load_pruned_state_dict(model, load_state_dict_file(path))
                make_permanent(model)
                source = str(path)
            else:
                assert self.recipe.train is not None  # parse_recipe requires train without weights
                history = self._fit(model, train, self.recipe.train, self.recipe.seed, "dense", 0)
                source = "trained"
            state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
            self._files.forget(self.state / "pretrain.json")
            self._files.write(weights_path, safetensors_writer(state, {"source": source}))
            pre = {"fingerprint": self.fingerprint, "history": history, "source": source,
                   "seconds": time.perf_counter() - start}
            self._write_json(self.state / "pretrain.json", pre)
        else:
            earlier = float(pre.get("seconds", 0.0))
        state = load_file(str(weights_path))
        # the dense reference: the same fine-tuning as every run, no pruning
        seed = _seed(self.recipe.seed, "dense")
        torch.manual_seed(seed)
        model = self._build_model()
        model.load_state_dict(state)
        tuned = self._fit(model, train, self.recipe.finetune, seed, "dense", 0)
        self._emit(stage="dense", status="measure", index=0)
        measures = M.measure(self.recipe, model, test)
        seconds = earlier + time.perf_counter() - start
        budget = {"pretrain_steps": int(pre["history"].get("steps", 0)), "finetune_steps": tuned["steps"]}
        budget["steps"] = budget["pretrain_steps"] + budget["finetune_steps"]
        info = {"fingerprint": self.fingerprint, "measures": measures, "budget": budget,
                "history": {"pretrain": pre["history"], "finetune": tuned}, "source": pre["source"],
                "seconds": seconds, "finished": _now()}
        self._write_json(self.state / "dense.json", info)
        self.timings["dense"] = seconds
        self.computed.append("dense")
        logger.info("stage dense: done in %.1f s (metric %.4f)", seconds, measures["metric"])
        self._emit(stage="dense", status="done", index=0, seconds=seconds)
        return state, info

    def _run(self, index: int, run: RunSpec, dense_state: dict[str, torch.Tensor], pretrain_steps: int,
             train: Dataset, test: Dataset) -> dict[str, Any]:
        safe = _file_safe(run.name)
        info_path = self.state / f"run-{safe}.json"
        ckpt = self.out / "checkpoints" / f"{safe}.safetensors"
        info = self._read_json(info_path)
        extra = self._export_paths(safe)
        if info is not None and (not self.recipe.export.checkpoint or self._files.valid(ckpt)) \
                and self._files.valid(*extra.values()):
            logger.info("stage %s: skipped (finished before; %s)", run.name, info_path)
            self.skipped.append(run.name)
            self.timings[run.name] = float(info.get("seconds", 0.0))
            self._emit(stage=run.name, status="skipped", index=index, seconds=self.timings[run.name])
            return info["entry"]
        start = time.perf_counter()
        seed = _seed(self.recipe.seed, run.name)
        torch.manual_seed(seed)
        model = self._build_model()
        model.load_state_dict(dense_state)
        outcome = apply_stages(self.recipe, model, run, M.example(test, 1), self._data_for(dry=False),
                               finetune_steps=self._steps(self.recipe.finetune))
        history = self._fit(model, train, self.recipe.finetune, seed, run.name, index,
                            pruner=outcome.pruner if outcome.schedule is not None else None,
                            schedule=outcome.schedule)
        if self.recipe.export.permanent:
            make_permanent(model)
        report = sparsity_report(model)
        layers = [{"name": r.name, "shape": list(r.shape), "params": r.params, "nonzero": r.nonzero,
                   "sparsity": r.sparsity} for r in report.rows]
        checkpoint = None
        if self.recipe.export.checkpoint:
            meta = {"recipe": self.fingerprint, "run": run.name, "model": self.recipe.model.name}
            self._files.forget(info_path)
            if run.shrinks:
                self._files.saved(ckpt, lambda: save_shrunk(model, ckpt))
            else:
                self._files.saved(ckpt, lambda: save_sparse(model, ckpt, metadata=meta))
            checkpoint = {"path": f"checkpoints/{ckpt.name}", "format": "shrunk" if run.shrinks else "sparse"}
        exports = self._export(model, extra, info_path, M.example(test, 1))
        self._emit(stage=run.name, status="measure", index=index)
        measures = M.measure(self.recipe, model, test)
        requested = run.sparsity if run.pruner is not None else (run.oneshot.sparsity if run.oneshot else None)
        if requested is None:  # N:M: what the structure gave; shrunk: the fraction of the dense weights gone
            shrunk = 1.0 - measures["nonzero"] / max(1, self._dense_params)
            requested = report.sparsity if not run.shrinks else min(1.0, max(0.0, shrunk))
        entry = {
            "name": run.name,
            "method": run.method(),
            "sparsity": float(requested),
            "measures": measures,
            "layers": layers,
            "history": {"epoch_losses": history["epoch_losses"]},
            "budget": {"pretrain_steps": pretrain_steps, "finetune_steps": history["steps"],
                       "steps": pretrain_steps + history["steps"]},
            "stages": outcome.summary,
            "checkpoint": checkpoint,
        }
        if exports:
            entry["exports"] = exports
        seconds = time.perf_counter() - start
        self._write_json(info_path, {"fingerprint": self.fingerprint, "entry": entry,
                                     "pruning_events": history["pruning_events"], "seconds": seconds,
                                     "finished": _now()})
        self.timings[run.name] = seconds
        self.computed.append(run.name)
        logger.info("stage %s: done in %.1f s (sparsity %.3f, metric %.4f)", run.name, seconds, entry["sparsity"],
                    measures["metric"])
        self._emit(stage=run.name, status="done", index=index, seconds=seconds)
        return entry

    def _export_paths(self, safe: str) -> dict[str, Path]:
        """The files ``export.onnx`` / ``export.dense`` ask for, per format."""
        names = {"onnx": f"{safe}.onnx", "dense": f"{safe}.dense.safetensors", "sparse": f"{safe}.sparse.safetensors"}
        return {k: self.out / "checkpoints" / v for k, v in names.items() if getattr(self.recipe.export, k)}

    def _export(self, model: nn.Module, paths: dict[str, Path], info_path: Path, example: Any) -> dict[str, str]:
        """Write the ONNX (checked in onnxruntime) and plain dense files of one run; their paths in ``out``."""
        if paths:
            self._files.forget(info_path)
        if "onnx" in paths:
            self._files.saved(paths["onnx"], lambda: export_onnx(model, example, paths["onnx"]))
        if "dense" in paths:
            self._files.saved(paths["dense"], lambda: save_dense(model, paths["dense"]))
        if "sparse" in paths:
            lat = self.recipe.evaluate.latency
            self._files.saved(paths["sparse"], lambda: save_converted(model, example, paths["sparse"],
                                                                      None if lat is None else lat.threads))
        return {k: f"checkpoints/{p.name}" for k, p in paths.items()}

    # -- the whole thing ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self._check_out()  # every check reads only: a start that fails them writes nothing
        if self.recipe.export.onnx:
            require_onnx("the recipe's export.onnx")
        train, test = M.load_datasets(self.recipe)
        self._batches_per_epoch = -(-len(train) // self.recipe.data.batch_size)  # type: ignore[arg-type]
        self._preflight(test)
        with self.lock, progress_reporter(self.progress) as report:
            self._tell = report
            try:
                return self._run_locked(train, test)
            finally:
                self._tell = None

    def _run_locked(self, train: Dataset, test: Dataset) -> dict[str, Any]:
        self._check_out()  # again: another run may have finished in the meantime
        if not self.lock.read_only:
            clean_temporary(self.out)
        self.manifest = None
        created = self._prepare_out()
        try:
            dense_state, dense_info = self._dense(train, test)
        except BaseException:
            if created and not self._finished_any:
                self._forget_start()
            raise
        self._dense_params = int(dense_info["measures"]["params"])
        pretrain = int(dense_info["budget"]["pretrain_steps"])
        entries = [self._run(i + 1, run, dense_state, pretrain, train, test) for i, run in enumerate(self.runs)]
        method = self._retime(dense_state, dense_info, entries, test)
        report = self._report(dense_info, entries, len(train), len(test))  # type: ignore[arg-type]
        if method is not None:
            report["environment"]["latency_method"] = method
        if self.lock.read_only:
            self.files = {kind: self.out / name for kind, name in zip(("json", "markdown", "html"), REPORT_FILES)
                          if (self.out / name).is_file()}
            self.warnings = [f"{self.out} is read-only: the report files were not rewritten"]
            logger.warning(self.warnings[0])
        else:
            with write_errors(self.out, "--out"):
                self.files, self.warnings = write_report_files(report, self.out)
        return report

    def _retime(self, dense_state: dict[str, torch.Tensor], dense_info: dict[str, Any],
                entries: list[dict[str, Any]], test: Dataset) -> str | None:
        """Time the dense model and every run's saved model again, together and in turn
        (:func:`~prunekit.runner.latency.interleaved_latency`), so that the load of the machine
        during the whole run does not bias one model against another. Without checkpoints the
        figures measured after each stage stay."""
        lat = self.recipe.evaluate.latency
        if lat is None:
            return None
        paths = [self.out / str((e.get("checkpoint") or {}).get("path", "")) for e in entries]
        if not self.recipe.export.checkpoint or not all(self._files.valid(p) for p in paths):
            return "each model alone, after its stage"
        dense = self._build_model()
        dense.load_state_dict(dense_state)
        models: dict[str, nn.Module] = {"dense": dense}
        for entry, path in zip(entries, paths):
            model = self._build_model()
            if entry["checkpoint"]["format"] == "shrunk":
                models[entry["name"]] = load_shrunk(model, path)
            else:
                load_pruned_state_dict(model, load_sparse(path))  # type: ignore[arg-type]
                models[entry["name"]] = model
        example = M.example(test, lat.batch_size)
        masked = [e["name"] for e in entries if e["checkpoint"]["format"] != "shrunk"]
        copies, sparse = sparse_copies(models, masked, example, lat) if lat.sparse else ({}, {})
        timed = interleaved_latency({**models, **copies}, example, warmup=lat.warmup, repeats=lat.repeats,
                                    threads=lat.threads)
        dense_info["measures"]["latency_ms"] = timed["dense"]
        for entry in entries:
            entry["measures"]["latency_ms"] = timed[entry["name"]]
            if entry["name"] in sparse:
                entry["measures"]["sparse_latency_ms"] = timed.get(entry["name"] + SUFFIX)
                entry["measures"]["sparse_layers"] = sparse[entry["name"]]["layers"]
        return "interleaved: all models timed in turn within each repeat, after all stages"

    def _report(self, dense_info: dict[str, Any], entries: list[dict[str, Any]], n_train: int, n_test: int
                ) -> dict[str, Any]:
        recipe = self.recipe
        data = recipe.data
        lat = recipe.evaluate.latency

        def training(spec: TrainSpec | None, steps: int) -> dict[str, Any] | None:
            if spec is None:
                return None
            return {"steps": steps, "epochs": spec.epochs, "max_steps": spec.max_steps, "batch_size": data.batch_size,
                    "optimizer": spec.optimizer, "lr": spec.lr, "lr_schedule": spec.lr_schedule}

        budget = dense_info["budget"]
        return {
            "title": recipe.title or f"{recipe.model.name} on {recipe.data.name}: {len(entries)} pruning runs",
            "created": _now(),
            "model": {"name": recipe.model.name, "params": int(dense_info["measures"]["params"])},
            "metric": {"name": recipe.evaluate.metric, "higher_is_better": recipe.evaluate.higher_is_better},
            "data": {"name": data.name, "train_split": data.train_split, "eval_split": data.eval_split,
                     "train_samples": n_train, "test_samples": n_test, "batch_size": data.batch_size,
                     "eval_batch_size": data.eval_batch_size},
            "training": {"pretrain": training(recipe.train if recipe.model.weights is None else None,
                                              budget["pretrain_steps"]),
                         "weights": recipe.model.weights,
                         "finetune": training(recipe.finetune, budget["finetune_steps"])},
            "dense": dense_info["measures"],
            "dense_budget": budget,
            "runs": entries,
            "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                            "platform": platform.platform(), "prunekit": __version__,
                            **({"latency_threads": lat.threads or torch.get_num_threads(),
                                "latency_repeats": lat.repeats,
                                "latency_warmup": lat.warmup} if lat is not None else {})},
        }


def run_recipe(
    recipe: Recipe | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    restart: bool = False,
    progress: ProgressArg = None,
) -> dict[str, Any]:
    """Execute ``recipe`` (a :class:`~prunekit.recipes.Recipe` or a YAML path)
    into ``out_dir`` and return the report dict; resumes finished stages.

    ``progress``: ``True`` for a progress bar on stderr, or a callable receiving a
    :class:`StageProgress` (a :class:`~prunekit.progress.ProgressEvent`) at each
    stage's start, training step, measurement and end; default: logged at DEBUG only."""
    return Runner(recipe, out_dir, restart=restart, progress=progress).run()


def _seed(base: int, name: str) -> int:
    return (base + zlib.crc32(name.encode())) % (2**31)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
