"""Reading a Hugging Face model folder tensor by tensor, and writing one shard by shard.

* :func:`build_skeleton`: the model from ``config.json`` with every parameter
  on the meta device (shapes and dtypes, no storage): the class named in
  ``config.architectures`` (``LlamaForCausalLM``, ``BertModel``,
  ``BertForSequenceClassification``, ``DistilBertModel`` …); without one, the
  causal LM when the checkpoint holds all its weights, else the bare model
  (``AutoModel``). Encoder-decoder models and classes transformers does not
  provide are refused, naming what was found. Parameters are sent to
  meta as they are registered, the same trick as accelerate's
  ``init_empty_weights(include_buffers=False)``: buffers that are not saved
  in checkpoints (LLaMA's rotary ``inv_freq``) are still computed by the
  model's own constructor, and ties (GPT-2's head and embedding) are kept,
  since tying re-registers the same meta parameter.
* :class:`SafetensorsFolder`: which file holds which tensor
  (``model.safetensors``, or the shards listed in
  ``model.safetensors.index.json``), read lazily with ``safe_open`` (no
  pickle), a file handle open only while its tensors are read.
* :class:`TensorSlots`: puts tensors into the skeleton by name (every module
  holding a tied parameter gets the new one) and sends them back to meta.
* :class:`ShardWriter`: ``model-0000i-of-0000n.safetensors`` shards written
  with :func:`prunekit.io.atomic_write` and ``model.safetensors.index.json``,
  the layout ``from_pretrained`` reads.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from ..errors import InvalidParameterError
from ..io.sparse_file import safetensors_writer
from ..io import atomic_write, atomic_write_text

__all__ = ["SUPPORTED_MODELS", "SafetensorsFolder", "ShardWriter", "TensorSlots", "build_skeleton",
           "copy_side_files", "describe_config", "parameters_on_meta"]

logger = logging.getLogger(__name__)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
#: Files of a model folder that hold weights (not copied to the pruned folder).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


class SafetensorsFolder:
    """The safetensors files of a Hugging Face model folder and which tensor lives in which file."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not (self.folder / "config.json").is_file():
            raise InvalidParameterError("model_dir", "a Hugging Face model folder with a config.json", str(folder),
                                        "Fix: pass the folder written by save_pretrained.")
        index, single = self.folder / INDEX_FILE, self.folder / SINGLE_FILE
        if index.is_file():
            self.weight_map: dict[str, str] = dict(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
        elif single.is_file():
            with safe_open(str(single), framework="pt") as handle:
                self.weight_map = dict.fromkeys(handle.keys(), SINGLE_FILE)
        else:
            raise InvalidParameterError(
                "model_dir", f"a folder with {SINGLE_FILE} or {INDEX_FILE}", str(folder),
                "Fix: save the model with save_pretrained(..., safe_serialization=True), or load it with "
                "from_pretrained and call prunekit.oneshot_prune.")

    def floating_dtype(self) -> torch.dtype | None:
        """The dtype of the first floating tensor stored (what ``dtype="auto"`` loads)."""
        for key, file in self.weight_map.items():
            with safe_open(str(self.folder / file), framework="pt") as handle:
                dtype = _DTYPES.get(handle.get_slice(key).get_dtype())
            if dtype is not None:
                return dtype
        return None

    def read(self, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        """The tensors stored under ``keys`` (on the CPU), each file opened once."""
        by_file: dict[str, list[str]] = {}
        for key in keys:
            by_file.setdefault(self.weight_map[key], []).append(key)
        out = {}
        for file, names in by_file.items():
            with safe_open(str(self.folder / file), framework="pt", device="cpu") as handle:
                for key in names:
                    out[key] = handle.get_tensor(key)
        return out


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """While open, every parameter a module registers is sent to the meta device (buffers are not).

    It patches ``nn.Module.register_parameter`` for the whole process: modules
    built by other threads meanwhile get meta parameters too.
    """
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


#: What :func:`prunekit.oneshot.prune_pretrained` reads, in the words of its errors.
SUPPORTED_MODELS = ("a decoder-only causal LM (LLaMA family, Mistral, Qwen2, GPT-2, OPT ...) or an encoder-only "
                    "model (BERT, RoBERTa, DistilBERT ...), bare or with a task head")
_IN_MEMORY_FIX = ("Fix: load it with from_pretrained and prune it in memory (prunekit.prune(model, 0.5) prunes "
                  "every Linear by magnitude).")


def describe_config(config: Any) -> str:
    """``BertForSequenceClassification (model_type 'bert')``: what a folder holds, for error messages."""
    names = getattr(config, "architectures", None) or []
    return f"{names[0] if names else '<no architectures>'} (model_type {getattr(config, 'model_type', None)!r})"


def _model_type(folder: SafetensorsFolder) -> Any:
    try:
        return json.loads((folder.folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def _load_config(folder: SafetensorsFolder) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder.folder)
    except (ValueError, KeyError, OSError):
        raise InvalidParameterError(
            "model_dir", f"a config.json of {SUPPORTED_MODELS}, of a model type transformers knows",
            f"model_type {_model_type(folder)!r}", _IN_MEMORY_FIX + " Code shipped with the model "
            "loads with from_pretrained(..., trust_remote_code=True); then call prunekit.oneshot_prune.") from None


def _model_class(config: Any, folder: SafetensorsFolder, dtype: torch.dtype) -> Callable[..., nn.Module]:
    """What builds the skeleton from ``(config, dtype=...)`` (see the module docstring)."""
    import transformers

    found = describe_config(config)
    if getattr(config, "is_encoder_decoder", False):
        raise InvalidParameterError("model_dir", SUPPORTED_MODELS, f"{found}, an encoder-decoder model",
                                    _IN_MEMORY_FIX)
    names = getattr(config, "architectures", None) or []
    if names:
        cls = getattr(transformers, str(names[0]), None)
        if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
            raise InvalidParameterError(
                "model_dir", f"{SUPPORTED_MODELS}, a class transformers provides", found,
                "Fix: load it with from_pretrained(..., trust_remote_code=True) and call prunekit.oneshot_prune "
                "(blocks='<path>' when its blocks are not found).")
        return cls._from_config
    try:
        with parameters_on_meta():
            causal = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    except ValueError:  # no causal LM for this model type (DistilBERT ...)
        return transformers.AutoModel.from_config
    slots = TensorSlots(causal, folder)
    complete = all(slots.key(name) is not None for name, _ in causal.named_parameters())
    return transformers.AutoModelForCausalLM.from_config if complete else transformers.AutoModel.from_config


def build_skeleton(folder: SafetensorsFolder) -> nn.Module:
    """The model of ``folder``'s ``config.json`` (the class of ``config.architectures``; see the module
    docstring) with its parameters on meta, in the checkpoint's dtype (``config.dtype``, else the first
    floating tensor's: what ``from_pretrained`` loads by default).

    Raises:
        InvalidParameterError: (``model_dir``) a model type transformers does not know, an
            encoder-decoder model, or an architecture transformers does not provide; naming what
            the folder holds and what is supported.
    """
    config = _load_config(folder)
    dtype = getattr(config, "dtype", None) or folder.floating_dtype() or torch.float32
    build = _model_class(config, folder, dtype)
    with parameters_on_meta():
        model = build(config, dtype=dtype)
    logger.info("%s read as %s", folder.folder, type(model).__name__)
    return model.eval()


class TensorSlots:
    """Where each checkpoint tensor goes in a skeleton: ``put`` materialises, ``clear`` sends back to meta.

    A name of the model maps to the checkpoint's key: the same name, or the
    name without / with the model's ``base_model_prefix`` (checkpoints saved
    from the bare model, e.g. ``h.0.attn.c_attn.weight`` for GPT-2).
    """

    def __init__(self, model: nn.Module, folder: SafetensorsFolder) -> None:
        self.model = model
        self.folder = folder
        self._holders: dict[str, list[tuple[nn.Module, str]]] = {}  # first name -> every (module, attr) of it
        first: dict[int, str] = {}
        for module_name, module in model.named_modules(remove_duplicate=False):
            for attr, param in module._parameters.items():
                if param is not None:
                    name = first.setdefault(id(param), f"{module_name}.{attr}" if module_name else attr)
                    self._holders.setdefault(name, []).append((module, attr))
        self._aliases: dict[str, list[str]] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            self._aliases.setdefault(first[id(param)], []).append(name)
        self._buffers = [f"{mn}.{bn}" if mn else bn for mn, m in model.named_modules() for bn, b in m._buffers.items()
                         if b is not None and bn not in m._non_persistent_buffers_set]

    def key(self, name: str) -> str | None:
        """The checkpoint key of parameter or buffer ``name`` (any alias of a tied one), or None."""
        prefix = getattr(self.model, "base_model_prefix", "") or ""
        for alias in self._aliases.get(name, [name]):
            candidates = [alias]
            if prefix and alias.startswith(prefix + "."):
                candidates.append(alias[len(prefix) + 1:])
            elif prefix:
                candidates.append(f"{prefix}.{alias}")
            for candidate in candidates:
                if candidate in self.folder.weight_map:
                    return candidate
        return None

    def names(self, under: str, inside: bool = True) -> tuple[list[str], list[str]]:
        """Parameters (first name of a tied one) and persistent buffers whose names start with ``under``
        (``inside=False``: those that do not)."""
        def pick(names: Iterable[str]) -> list[str]:
            return [n for n in names if n.startswith(under) == inside]

        return pick(self._holders), pick(self._buffers)

    def check_complete(self) -> None:
        """Raise unless the checkpoint holds every parameter of the model (before anything is read)."""
        missing = [name for name in self._holders if self.key(name) is None]
        if missing:
            raise InvalidParameterError(
                "model_dir", "a checkpoint holding every parameter of the model",
                f"{self.folder.folder} without {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1
                                                                 else ""),
                "Fix: load it with from_pretrained (which initialises missing weights) and call oneshot_prune.")

    def put(self, params: list[str], buffers: list[str], device: torch.device) -> None:
        """Read ``params`` and ``buffers`` from the checkpoint into the model (in the model's dtypes)."""
        keys = {name: self.key(name) for name in (*params, *buffers)}
        tensors = self.folder.read(k for k in keys.values() if k is not None)
        for name in params:
            holders = self._holders[name]
            old = holders[0][0]._parameters[holders[0][1]]
            new = nn.Parameter(tensors.pop(keys[name]).to(device=device, dtype=old.dtype),  # type: ignore[arg-type]
                               requires_grad=old.requires_grad)
            for module, attr in holders:
                module._parameters[attr] = new
        for name in buffers:
            module_name, _, attr = name.rpartition(".")
            module = self.model.get_submodule(module_name)
            if keys[name] is None:
                logger.info("buffer %s is not in the checkpoint: the value computed by the model is kept", name)
                continue
            module._buffers[attr] = tensors.pop(keys[name]).to(device=device, dtype=module._buffers[attr].dtype)

    def clear(self, params: list[str]) -> None:
        """Send ``params`` back to the meta device (shape and dtype kept)."""
        for name in params:
            holders = self._holders[name]
            old = holders[0][0]._parameters[holders[0][1]]
            meta = nn.Parameter(torch.empty(old.shape, dtype=old.dtype, device="meta"),
                                requires_grad=old.requires_grad)
            for module, attr in holders:
                module._parameters[attr] = meta

    def state(self, params: list[str], buffers: list[str]) -> dict[str, torch.Tensor]:
        """The current values of ``params`` and ``buffers`` under the model's names, on the CPU, for saving.

        A tied parameter is saved once, under the name Hugging Face keeps
        (not one of the model's ``all_tied_weights_keys``).
        """
        tied = set(getattr(self.model, "all_tied_weights_keys", None) or {})
        out = {}
        for name in params:
            kept = next((a for a in self._aliases[name] if a not in tied), name)
            module, attr = self._holders[name][0]
            out[kept] = module._parameters[attr].detach().to("cpu").contiguous()
        for name in buffers:
            module_name, _, attr = name.rpartition(".")
            out[name] = self.model.get_submodule(module_name)._buffers[attr].detach().to("cpu").contiguous()
        return out


class ShardWriter:
    """Writes ``count`` shards and the index ``from_pretrained`` reads (see the module docstring)."""

    def __init__(self, directory: Path, count: int) -> None:
        self.directory = directory
        self.count = count
        self.weight_map: dict[str, str] = {}
        self.total_size = 0

    def write(self, number: int, tensors: dict[str, torch.Tensor]) -> None:
        """Shard ``number`` (1-based) holding ``tensors``."""
        file = f"model-{number:05d}-of-{self.count:05d}.safetensors"
        atomic_write(self.directory / file, safetensors_writer(tensors, {"format": "pt"}))
        self.weight_map.update(dict.fromkeys(tensors, file))
        self.total_size += sum(t.numel() * t.element_size() for t in tensors.values())

    def close(self) -> None:
        index: dict[str, Any] = {"metadata": {"total_size": self.total_size},
                                 "weight_map": dict(sorted(self.weight_map.items()))}
        atomic_write_text(self.directory / INDEX_FILE, json.dumps(index, indent=2))


def copy_side_files(source: Path, target: Path) -> list[str]:
    """Copy the files of a model folder that are not weights (config, tokenizer, generation config)."""
    copied = []
    for path in sorted(source.iterdir()):
        if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES) and not path.name.endswith(".index.json"):
            shutil.copy2(path, target / path.name)
            copied.append(path.name)
    return copied
