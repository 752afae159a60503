"""Iterative magnitude pruning in levels, as a resumable run directory.

Level 0 trains the dense θ₀ for T iterations (recording θ_k). Level L >= 1
prunes, by weight magnitude, ``rate`` of the weights that survived level L-1
(the output layer at ``output_rate``; per layer or one global ranking), resets
the survivors as ``config.reset`` says (:mod:`prunekit.lottery.rewind`) and
trains them; the controls of ``config.controls`` train beside it on the same
data order. After L levels a fraction ``(1 - rate)^L`` of each layer remains
(of all non-output layers together with ``scope="global"``).

Run directory::

    .prunekit.lock                held while a run writes (one run per directory)
    manifest.json                 the sha256 of every file below, recorded when it was written
    run.json                      config, its fingerprint, data sizes, prunekit version
    init.safetensors              θ₀ (dense state dict)
    rewind.safetensors            θ_k (when rewind_step > 0)
    level_000/ … level_NNN/
        mask.safetensors          {target name: bool keep mask} (levels >= 1)
        model.safetensors         the trained model (prunekit sparse format: weights + masks)
        sparsity.json             sparsity report of the pruned tensors
        metrics.json              accuracy, loss, early-stop iteration, curve, time — written last
        <control>/                the same files for each control (reinit, shuffle)

A level (or control) is finished exactly when its ``metrics.json`` and its
model (and mask) exist with the sha256 recorded when they were written
(:class:`prunekit.rundir.Manifest`); a damaged or replaced file is logged and
computed again, never reused. Every file is written atomically, so a killed run
resumes at the first unfinished one and never recomputes a finished one; the
temporary files a kill leaves are removed on the next start. One process at a
time writes a directory (:class:`prunekit.rundir.RunLock`: a second is refused).
A start that fails before anything finished leaves no ``run.json`` behind;
``restart=True`` discards earlier results first. Every level trains from
files and seeds only (its own init and data-order seeds), so a resumed run
gives bit-exactly the results of an uninterrupted one (on the same machine and
torch thread count: CPU reductions depend on the thread split). A run directory
whose stored fingerprint differs from the config's, or whose data sets had
other sizes, is refused with the changed fields named (the data's contents are
not hashed).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..version import __version__
from ..errors import InvalidParameterError
from ..io.sparse_file import safetensors_writer
from ..io import load_sparse, read_json_object, save_sparse
from ..masks import apply_masks
from ..measure.size import dense_state_dict
from ..measure.sparsity import sparsity_report
from ..deprecation import warn_once
from ..progress import ProgressArg, ProgressCallback, ProgressEvent, check_progress, progress_reporter
from ..pruner import Pruner
from ..rundir import Manifest, RunLock, clean_temporary
from ..targets import Target, pattern_matches, select_targets
from ..training import TrainProgress
from ..zoo import create_model
from .config import LotteryConfig
from .controls import reinit_weights, shuffle_masks
from .loop import Evaluator, as_tensors, derive_seed, train_segment
from .rewind import segment_for, start_weights

__all__ = ["LotteryRun", "level_name", "run_lottery"]

logger = logging.getLogger(__name__)

STATE_VERSION = 2
LevelCallback = Callable[[int, "str | None", TrainProgress], None]


def level_name(level: int) -> str:
    return f"level_{level:03d}"


def _save_state(files: Manifest, path: Path, state: Mapping[str, torch.Tensor]) -> None:
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    files.write(path, safetensors_writer(tensors, {}))


class LotteryRun:
    """An IMP run of ``config`` in ``out_dir`` (created, or resumed when it exists).

    Args:
        config: the run's :class:`~prunekit.lottery.LotteryConfig`.
        out_dir: the run directory.
        train, test, val: data sets of ``(input, label)`` items (or
            ``(inputs, targets)`` tensor pairs), held in memory. The early-stop
            iteration is chosen on ``val`` (Frankle & Carbin hold out 5,000
            training images); without ``val`` on ``test`` (logged).
        model_fn: builds the untrained model; default
            ``create_model(config.model, **config.model_kwargs)``.
        progress: ``True`` for a progress bar, a callable for the events
            (:mod:`prunekit.progress`): stage ``"lottery"`` after each training
            finished or found finished (the ticket of a level, each control;
            ``detail`` ``"level 2"`` / ``"level 2 reinit"``; ``figures``
            ``accuracy`` and ``remaining``), and within each training stage
            ``"fit"`` with parent ``"lottery"`` after every iteration. An
            exception the callable raises stops the run like a kill.
        callback: deprecated (use ``progress``): ``callback(level, control,
            train_progress)`` after every training step (``control`` None for
            the ticket), ``train_progress.step`` the global iteration.
        restart: discard the results already in ``out_dir`` (refused while
            another process runs there).

    After :meth:`run`, ``computed`` and ``skipped`` list the ``(level,
    control)`` pairs trained now and reused from disk.
    """

    def __init__(
        self,
        config: LotteryConfig,
        out_dir: str | os.PathLike[str],
        *,
        train: Any,
        test: Any,
        val: Any = None,
        model_fn: Callable[[], nn.Module] | None = None,
        callback: LevelCallback | None = None,
        restart: bool = False,
        progress: ProgressArg = None,
    ) -> None:
        check_progress(progress)
        if callback is not None:
            warn_once("LotteryRun(callback=...)", "progress=, a function receiving prunekit.progress.ProgressEvent "
                      "(stage 'fit' with parent 'lottery' at every step)")
        if not isinstance(config, LotteryConfig):
            raise InvalidParameterError("config", "a LotteryConfig", type(config).__name__,
                                        "Fix: LotteryConfig(levels=..., rate=...).")
        self.config = config
        self.out = Path(out_dir)
        if model_fn is None:

            def model_fn() -> nn.Module:
                return create_model(config.model, **config.model_kwargs)
        self.model_fn = model_fn
        self.train = as_tensors(train, "train")
        test_t = as_tensors(test, "test")
        val_t = None if val is None else as_tensors(val, "val")
        self.evaluator = Evaluator(test_t, val_t)
        self.data_sizes = {"train": len(self.train[0]), "val": None if val_t is None else len(val_t[0]),
                           "test": len(test_t[0])}
        self.callback = callback
        self.progress = progress
        self._report: ProgressCallback | None = None  # while a public call reports
        self._units = [0, 0]  # trainings done, planned in the outermost reporting call
        self.computed: list[tuple[int, str | None]] = []
        self.skipped: list[tuple[int, str | None]] = []
        self._prepared = False
        self._init: dict[str, torch.Tensor] | None = None
        self.restart = bool(restart)
        self.lock = RunLock(self.out, "out_dir")
        self.files = Manifest(self.out, "out_dir")
        self._fresh = False  # this start wrote run.json
        self._finished = False  # this start finished a level or control

    # -- the run directory -----------------------------------------------------------------

    def locked(self) -> RunLock:
        """The directory's lock, for ``with run.locked(): ...`` around several calls (each
        public call that writes takes it by itself too)."""
        return self.lock

    @contextmanager
    def _reporting(self, planned: int) -> Iterator[None]:
        """Report to ``progress`` during the outermost public call (which plans ``planned`` trainings)."""
        if self._report is not None:
            yield
            return
        with progress_reporter(self.progress) as report:
            self._report, self._units = report, [0, planned]
            report(ProgressEvent("lottery", 0, planned, {}, "starting"))
            try:
                yield
            finally:
                self._report = None

    def _advance(self, level: int, control: str | None, metrics: Mapping[str, Any]) -> None:
        """One training (ticket or control) finished or found finished: a ``"lottery"`` event."""
        if self._report is None:
            return
        self._units[0] += 1
        figures = {k: float(metrics[k]) for k in ("accuracy", "remaining") if isinstance(metrics.get(k), (int, float))}
        self._report(ProgressEvent("lottery", self._units[0], max(self._units), figures, _what(level, control)))

    def _remove_results(self) -> None:
        for name in ("run.json", "manifest.json", "init.safetensors", "rewind.safetensors"):
            (self.out / name).unlink(missing_ok=True)
        for folder in self.out.glob("level_[0-9][0-9][0-9]"):
            if folder.is_dir():
                shutil.rmtree(folder)
        self.files.load()

    def prepare(self) -> None:
        """Create the run directory (run.json, θ₀), or check that it holds this config's run."""
        if self._prepared:
            return
        if self.restart or not (self.out / "run.json").is_file():
            self._new_init()  # before anything is written: an unknown model leaves nothing behind
        with self.lock:
            self._prepare()

    def _new_init(self) -> dict[str, torch.Tensor]:
        if self._init is None:
            torch.manual_seed(self.config.seed)
            self._init = {k: v.detach().clone() for k, v in self.model_fn().state_dict().items()}
        return self._init

    def _prepare(self) -> None:
        if self.restart:
            self._remove_results()
            self.restart = False
            logger.info("restart: removed earlier results in %s", self.out)
        if not self.lock.read_only:
            clean_temporary(self.out)
        self.files.load()
        marker = self.out / "run.json"
        try:
            stored = read_json_object(marker, then="it is computed again")
        except ValueError:  # bytes that are not UTF-8
            stored = None
        if marker.is_file() and stored is None:
            raise InvalidParameterError("out_dir", "a lottery run directory with a readable run.json",
                                        os.fspath(marker), "Fix: use a new out_dir.")
        mine = {"fingerprint": self.config.fingerprint(), "data": self.data_sizes}
        if stored is not None and {k: stored.get(k) for k in mine} != mine:
            old = stored.get("config", {})
            changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in self.config.to_dict().items() if old.get(k) != v]
            if stored.get("data") != self.data_sizes:
                changed.append(f"data sizes: {stored.get('data')} -> {self.data_sizes}")
            raise InvalidParameterError(
                "config",
                f"the config of the run in {os.fspath(self.out)} (fingerprint {str(stored.get('fingerprint'))[:12]})",
                f"<a config with fingerprint {mine['fingerprint'][:12]}; changed: {'; '.join(changed) or '?'}>",
                "Fix: resume with the same config and data, or start the new config in another out_dir.",
            )
        init_path = self.out / "init.safetensors"
        if stored is not None and self.files.valid(init_path):
            self._init = load_file(str(init_path))
        else:
            init = self._new_init()
            if stored is None:
                created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
                self.files.write_json(marker, {**mine, "config": self.config.to_dict(),
                                               "state_version": STATE_VERSION, "prunekit": __version__,
                                               "created": created})
                self._fresh = True
            _save_state(self.files, init_path, init)
        self._prepared = True

    def _forget_start(self) -> None:
        """Undo a start that failed before any level finished: no run.json stays behind."""
        self._remove_results()
        self._prepared = False
        self._fresh = False
        self._init = None
        logger.info("the start failed before any level finished; removed its files from %s", self.out)

    def path(self, level: int, control: str | None = None) -> Path:
        """The directory of ``level`` (or of ``control`` beside it)."""
        base = self.out / level_name(level)
        return base if control is None else base / control

    def metrics(self, level: int, control: str | None = None) -> dict[str, Any] | None:
        """The finished metrics of a level or control, or None."""
        where = self.path(level, control)
        value = self.files.read_json(where / "metrics.json")
        if value is None or value.get("fingerprint") != self.config.fingerprint():
            return None
        needed = [where / "model.safetensors", where / "sparsity.json"]
        if level > 0:
            needed.append(where / "mask.safetensors")
        if level == 0 and control is None and self.config.rewind_step > 0:
            needed.append(self.out / "rewind.safetensors")
        return value if self.files.valid(*needed) else None

    def init_weights(self) -> dict[str, torch.Tensor]:
        """θ₀."""
        self.prepare()
        assert self._init is not None
        return self._init

    def rewind_weights(self) -> dict[str, torch.Tensor]:
        """θ_k (θ₀ when ``rewind_step`` is 0); needs level 0 finished."""
        if self.config.rewind_step == 0:
            return self.init_weights()
        path = self.out / "rewind.safetensors"
        if not self.files.valid(path):
            raise InvalidParameterError("level", "level 0 finished (it records θ_k)", "<no rewind.safetensors>",
                                        "Fix: run level 0 first (LotteryRun.run()).")
        return load_file(str(path))

    def masks(self, level: int) -> dict[str, torch.Tensor] | None:
        """Level ``level``'s keep masks ``{target name: bool}`` (None for the dense level 0)."""
        if level == 0:
            return None
        return load_file(str(self.path(level) / "mask.safetensors"))

    def load_model(self, level: int, control: str | None = None) -> nn.Module:
        """The trained (masked) model of a finished level or control."""
        return load_sparse(self.path(level, control) / "model.safetensors", self.model_fn())  # type: ignore[return-value]

    def targets(self, model: nn.Module) -> list[Target]:
        return select_targets(model, include=self.config.include, exclude=self.config.exclude)

    def output_target(self, targets: list[Target]) -> Target:
        pattern = self.config.output_layer
        if pattern is None:
            return targets[-1]
        chosen = [t for t in targets if pattern_matches(pattern, t.name, t.module_name)]
        if len(chosen) != 1:
            raise InvalidParameterError("output_layer", "a pattern matching exactly one target",
                                        f"<{pattern!r} matches {[t.name for t in chosen]}>",
                                        "Fix: targets are " + ", ".join(t.name for t in targets) + ".")
        return chosen[0]

    def build(self, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None) -> nn.Module:
        """A fresh model holding ``state`` with ``masks`` applied (reparametrised, torch-compatible)."""
        model = self.model_fn()
        model.load_state_dict(state)
        if masks is not None:
            targets = self.targets(model)
            missing = [t.name for t in targets if t.name not in masks]
            if missing:
                raise InvalidParameterError("masks", "one mask per target", f"<no mask for {missing}>")
            apply_masks(targets, [masks[t.name].bool() for t in targets], mode="reparam", description="lottery")
        return model

    # -- pruning ------------------------------------------------------------------------------

    def prune_masks(self, trained: nn.Module, level: int) -> dict[str, torch.Tensor]:
        """Masks of ``level`` from the trained model of ``level - 1``: magnitude pruning to
        ``1 - (1 - rate)^level`` (output layer ``1 - (1 - output_rate)^level``); weights
        already pruned stay pruned and count towards it."""
        targets = self.targets(trained)
        output = self.output_target(targets)
        pruner = Pruner(trained, criterion="magnitude", scope=self.config.scope, targets=targets,
                        overrides={output.name: self.config.sparsity_at(level, output=True)}, mode="reparam")
        keeps = pruner.step(self.config.sparsity_at(level))
        return {t.name: k.detach().clone().bool() for t, k in zip(targets, keeps)}

    # -- levels ---------------------------------------------------------------------------------

    def _finish(self, level: int, control: str | None, model: nn.Module, result: Any,
                masks: Mapping[str, torch.Tensor] | None) -> dict[str, Any]:
        where = self.path(level, control)
        self.files.forget(where / "metrics.json")
        if masks is not None:
            self.files.write(where / "mask.safetensors", safetensors_writer(dict(masks), {}))
        self.files.saved(where / "model.safetensors", lambda: save_sparse(
            model, where / "model.safetensors",
            metadata={"level": level, "control": control, "run": self.config.fingerprint()}))
        names = {t.name for t in self.targets(model)}
        report = sparsity_report(model)
        report.rows = [r for r in report.rows if r.name in names]
        self.files.saved(where / "sparsity.json", lambda: report.to_json(where / "sparsity.json"))
        c = self.config
        kept = sum(int(m.sum()) for m in masks.values()) if masks is not None else report.params
        numel = sum(m.numel() for m in masks.values()) if masks is not None else report.params
        metrics = {
            "fingerprint": c.fingerprint(), "level": level, "control": control, "reset": c.reset,
            "remaining": kept / numel if numel else 1.0,
            "target_remaining": (1 - c.rate) ** level,
            "output_remaining": (1 - c.effective_output_rate) ** level,
            "layers_remaining": {r.name: (r.nonzero / r.params if r.params else 1.0) for r in report.rows},
            **result.summary(),
        }
        self.files.write_json(where / "metrics.json", metrics, 2)
        self._finished = True
        logger.info("%s%s: %.2f%% remaining, accuracy %.4f (early stop %d: %.4f) in %.1f s",
                    level_name(level), f"/{control}" if control else "", 100 * metrics["remaining"],
                    metrics["accuracy"], metrics["early_stop_iteration"], metrics["early_stop_accuracy"],
                    metrics["seconds"])
        return metrics

    def _train(self, level: int, control: str | None, start: Mapping[str, torch.Tensor],
               masks: Mapping[str, torch.Tensor] | None, record_rewind: bool = False) -> dict[str, Any]:
        model = self.build(start, masks)
        capture: tuple[int, ...] = ()
        on_capture = None
        if record_rewind and self.config.rewind_step > 0:
            capture = (self.config.rewind_step,)

            def on_capture(_i: int, m: nn.Module) -> None:
                _save_state(self.files, self.out / "rewind.safetensors", dense_state_dict(m))

        report = self._report
        callback = None
        if self.callback is not None:
            user = self.callback

            def callback(p: TrainProgress) -> None:
                user(level, control, p)

        result = train_segment(model, self.config, self.train, self.evaluator,
                               segment_for(self.config, level, control=control),
                               capture=capture, on_capture=on_capture, callback=callback, report=report,
                               detail=_what(level, control))
        self.computed.append((level, control))
        metrics = self._finish(level, control, model, result, masks)
        self._advance(level, control, metrics)
        return metrics

    def level(self, level: int, *, controls: bool = True) -> dict[str, Any]:
        """Finish ``level`` (and its controls, unless ``controls=False``) unless done;
        return the ticket's metrics. Needs level ``level - 1`` finished (:meth:`run` goes in order)."""
        self._guarded(self.prepare)  # builds θ₀ before taking the lock
        planned = 1 + (len(self.config.controls) if controls and isinstance(level, int) and level > 0 else 0)
        with self.lock, self._reporting(planned):
            return self._guarded(lambda: self._level(level, controls))

    def _guarded(self, call: Callable[[], Any]) -> Any:
        """``call()``; when it fails before this start finished anything, undo the start."""
        try:
            return call()
        except BaseException:
            if self._fresh and not self._finished and not self.lock.read_only:
                with self.lock:
                    self._forget_start()
            raise

    def _level(self, level: int, controls: bool) -> dict[str, Any]:
        self.prepare()
        c = self.config
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= c.levels:
            raise InvalidParameterError("level", f"an int in 0..{c.levels}", level)
        metrics = self.metrics(level)
        if metrics is None:
            if level == 0:
                metrics = self._train(0, None, self.init_weights(), None, record_rewind=True)
            else:
                if self.metrics(level - 1) is None:
                    raise InvalidParameterError("level", f"level {level - 1} finished first", level,
                                                "Fix: call run(), which goes level by level.")
                previous = self.load_model(level - 1)
                masks = self.prune_masks(previous, level)
                rewind = self.rewind_weights() if c.reset == "rewind" else None
                start = start_weights(c, self.init_weights(), rewind, dense_state_dict(previous))
                metrics = self._train(level, None, start, masks)
        else:
            self.skipped.append((level, None))
            logger.info("%s: finished before, skipped", level_name(level))
            self._advance(level, None, metrics)
        if level > 0 and controls:
            for control in c.controls:
                self.control(level, control)
        return metrics

    def control(self, level: int, control: str) -> dict[str, Any]:
        """Train ``control`` beside the finished ``level`` unless done."""
        with self.lock, self._reporting(1):
            return self._control(level, control)

    def _control(self, level: int, control: str) -> dict[str, Any]:
        done = self.metrics(level, control)
        if done is not None:
            self.skipped.append((level, control))
            self._advance(level, control, done)
            return done
        masks = self.masks(level)
        assert masks is not None
        seed = derive_seed(self.config.seed, "level", level, control)
        reset = self.rewind_weights() if self.config.reset == "rewind" else self.init_weights()
        if control == "reinit":
            return self._train(level, control, reinit_weights(self.model_fn, seed), masks)
        return self._train(level, control, reset, shuffle_masks(masks, seed))

    def run(self, until: int | None = None) -> list[dict[str, Any]]:
        """Levels ``0..until`` (default all), resuming; the tickets' metrics in order."""
        last = self.config.levels if until is None else until
        self._guarded(self.prepare)  # builds θ₀ before taking the lock
        planned = last + 1 + last * len(self.config.controls)
        with self.lock, self._reporting(planned):
            return [self.level(level) for level in range(last + 1)]

    def results(self) -> list[dict[str, Any]]:
        """Finished levels' metrics (ticket and controls), without training anything."""
        self.prepare()
        rows = []
        for level in range(self.config.levels + 1):
            metrics = self.metrics(level)
            if metrics is None:
                break
            rows.append({"ticket": metrics, **{c: self.metrics(level, c) for c in self.config.controls}})
        return rows


def run_lottery(config: LotteryConfig, out_dir: str | os.PathLike[str], *, train: Any, test: Any,
                val: Any = None, model_fn: Callable[[], nn.Module] | None = None,
                callback: LevelCallback | None = None, restart: bool = False,
                progress: ProgressArg = None) -> list[dict[str, Any]]:
    """Run (or resume) every level of ``config`` in ``out_dir``; see :class:`LotteryRun`
    (``progress``: ``True`` for a bar, or a callable receiving :class:`~prunekit.progress.ProgressEvent`).

    Returns the tickets' metrics, one dict per level; the controls' metrics (``controls=``)
    are in ``LotteryRun(config, out_dir, ...).results()``, which reads the same directory.
    """
    return LotteryRun(config, out_dir, train=train, test=test, val=val, model_fn=model_fn,
                      callback=callback, restart=restart, progress=progress).run()


def _what(level: int, control: str | None) -> str:
    return f"level {level}" + (f" {control}" if control else "")
