"""The event a recipe run reports (:class:`StageProgress`), a :class:`~prunekit.progress.ProgressEvent`."""

from __future__ import annotations

from ..progress import LegacyEvent

__all__ = ["StageProgress"]


class StageProgress(LegacyEvent):
    """What a recipe run reports: a :class:`~prunekit.progress.ProgressEvent` whose ``stage``
    is ``"dense"`` or a run's name, ``done`` the training steps finished of ``total``
    (``done == total`` once the stage is measured or done), ``detail`` its status:
    ``"start"`` (a training phase begins), ``"step"`` (``figures`` ``loss``),
    ``"measure"``, ``"done"`` (``figures`` ``seconds``) or ``"skipped"`` (finished
    before; ``figures`` ``seconds`` it took then).

    Deprecated: the old attributes ``status`` (now ``detail``), ``index``, ``count``,
    ``step``, ``loss`` and ``seconds`` still answer for one release and warn with the new form.
    """

    _new_forms = {"status": "detail", "index": "the order in which the stages first report (no field of its own)",
                  "count": "the number of runs + 1 (no field of its own)", "step": "done",
                  "loss": "figures['loss']", "seconds": "figures['seconds']"}

    def __init__(self, stage: str, status: str, index: int, count: int, step: int = 0, total: int = 0,
                 loss: float | None = None, seconds: float | None = None, *, done: int | None = None) -> None:
        figures = {"loss": float(loss)} if loss is not None else {}
        if seconds is not None:
            figures["seconds"] = float(seconds)
        super().__init__(stage, step if done is None else done, total, figures, status)
        self._keep_legacy(status=status, index=index, count=count, step=step, loss=loss, seconds=seconds)
