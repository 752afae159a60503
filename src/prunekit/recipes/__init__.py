"""YAML recipes: *what* to prune and how it is realised, separated from *when*.

A recipe names a model, a data set, dense training, the fine-tuning every run
gets, and a list of runs compared side by side, every run starting from the
same dense weights and getting the same training budget as the dense
reference::

    title: LeNet-5 on the embedded MNIST subset     # optional
    seed: 0                                           # optional
    model: {name: lenet5, weights: null, kwargs: {}}
    data: {name: mnist_embedded, path: null, batch_size: 64, eval_batch_size: 256,
           limit_train: null, limit_test: null, kwargs: {normalize: mnist}}
    train: {epochs: 3, optimizer: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0,
            lr_schedule: none, max_steps: null}
    runs:
      - name: magnitude-global                  # masks: zeros in tensors of unchanged shape
        prune:
          criterion: magnitude                  # prunekit list scores
          structure: element                    # element, 2:4, block:4x4, kernel, channel, ...
          scope: global                         # local | global | lamp | erk
          sparsity: [0.5, 0.8, 0.9]             # a list: one run per value (named magnitude-global-0.5, ...)
          mode: inplace                         # inplace | reparam
          schedule: {name: agp, start: 0, end: 2, unit: epoch}   # optional; default one-shot
          # include, exclude, types, params, overrides, normalize, min_keep
      - name: shrink-channels                   # channels physically removed (prunekit.structural_prune)
        shrink:
          macs_target: 0.5                      # exactly one of sparsity, macs_target, latency_target
          criterion: l1                         # a group criterion (l1, l2, taylor, hrank, ...)
          scope: local
          round_to: 2
          # normalize, max_layer_ratio, steps, exclude, allocation (ranking | latency),
          # data: {split: train, samples: 128, batch_size: 8} for data-driven criteria
      - name: heads                             # attention heads removed (prunekit.prune_heads)
        heads: {sparsity: 0.25, criterion: magnitude, scope: local}
        neurons: {sparsity: 0.25}               # and MLP neurons (prunekit.prune_mlp_neurons)
      - name: wanda-owl                         # layer-wise one-shot masks (prunekit.oneshot_prune)
        oneshot:
          method: wanda                         # wanda | sparsegpt | magnitude
          sparsity: 0.5                         # or structure: "2:4"
          owl: true
          data: {split: train, samples: 64}     # the calibration set
    finetune: {epochs: 2, optimizer: sgd, lr: 0.01}   # after the stages, for every run and the dense reference
    evaluate: {metric: accuracy, latency: {batch_size: 1, repeats: 30, warmup: 5, threads: null}}
    export: {checkpoint: true, permanent: true, onnx: false, dense: false}   # onnx, dense: also .onnx, plain dense

A run applies its stages in the order shrink, heads, neurons, then prune or
oneshot; then it fine-tunes with an optimizer built for the model as it is
then (smaller after a physical stage). The older ``pruners:`` list (each item
a ``prune`` stage with a ``name``) is still read, with a FutureWarning.

:func:`load_recipe` reads a file (``yaml.safe_load`` semantics, the node tree
composed with ``yaml.compose`` so every key keeps its line) and returns a
validated :class:`Recipe`. Every mistake raises
:class:`~prunekit.errors.InvalidParameterError` naming the file, the line and
the key: ``recipe.yaml line 12, runs[2].shrink.macs_target: expected a float
in (0, 1] or None, got 1.5. Fix: e.g. macs_target: 0.5.``. Relative paths
(``model.weights``, ``data.path``) are relative to the recipe's folder.

A stage's keys, types, ranges, choices and defaults are the declared
parameters of the function it calls (:mod:`prunekit.params`: ``PRUNE_PARAMS``,
``STRUCTURAL_PARAMS``, ``HEADS_PARAMS``, ``NEURONS_PARAMS``,
``ONESHOT_PARAMS``), so a value the function refuses the recipe refuses in the
same words; :func:`stage_schema` gives a stage's schema
(:mod:`prunekit.recipes.declared` lists where a recipe differs).
"""

from .declared import stage_schema
from .parse import example_recipe_path, list_example_recipes, load_recipe, parse_recipe
from .specs import (
    METRICS,
    STAGE_ORDER,
    DataSpec,
    EvaluateSpec,
    ExportSpec,
    HeadsSpec,
    LatencySpec,
    ModelSpec,
    NeuronsSpec,
    OneShotSpec,
    PrunerSpec,
    Recipe,
    RunSpec,
    ShrinkSpec,
    StageData,
    TrainSpec,
)

__all__ = [
    "ModelSpec",
    "DataSpec",
    "TrainSpec",
    "PrunerSpec",
    "ShrinkSpec",
    "HeadsSpec",
    "NeuronsSpec",
    "OneShotSpec",
    "StageData",
    "LatencySpec",
    "EvaluateSpec",
    "ExportSpec",
    "RunSpec",
    "Recipe",
    "METRICS",
    "STAGE_ORDER",
    "load_recipe",
    "parse_recipe",
    "example_recipe_path",
    "list_example_recipes",
    "stage_schema",
]
