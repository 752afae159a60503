"""The small character-level GPT used by ``oneshot_gpt.py``, trained once and cached.

``get_model(args)`` returns ``(model, tokenizer, train_ids, val_ids)``: a
``prunekit.zoo`` GPT (``gpt_tiny`` with a wider config) trained with AdamW on
the first 90% of tinyshakespeare's characters; the last 10% is held out for
perplexity. The weights are cached in ``benchmarks/cache/`` as safetensors,
keyed by config, data file size and training budget, so the training runs once.

Run on its own to train (``nice -n 10 python benchmarks/oneshot_gpt_model.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import prunekit
from prunekit.data.text import CharTokenizer, read_text
from _common import SHARED_DATA

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
DATA = SHARED_DATA / "tinyshakespeare" / "input.txt"

CONFIG = {"vocab_size": 65, "block_size": 128, "n_layer": 4, "n_head": 6, "n_embd": 192}
TRAIN = {"batch": 16, "lr": 3e-3, "warmup": 30, "minutes": 30.0, "seed": 0, "weight_decay": 0.1}


def data(path: Path = DATA) -> tuple[CharTokenizer, torch.Tensor, torch.Tensor]:
    """Tokenizer and the train (first 90%) / held-out (last 10%) character ids."""
    text = read_text(path)
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    cut = int(len(ids) * 0.9)
    return tok, ids[:cut], ids[cut:]


def cache_path(config: dict, train: dict, path: Path = DATA) -> Path:
    key = json.dumps({"config": config, "train": train, "data": os.path.getsize(path)}, sort_keys=True)
    return CACHE / f"oneshot_gpt_{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"


def train(model: torch.nn.Module, ids: torch.Tensor, cfg: dict, log=print) -> dict:
    """AdamW with linear warm-up and cosine decay over a wall-clock budget of ``cfg['minutes']``.

    The schedule follows the elapsed share of the budget (not a step count), so
    it ends at the budget whatever the load of the shared machine.
    """
    gen = torch.Generator().manual_seed(cfg["seed"])
    block = model.block_size
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                             {"params": other, "weight_decay": 0.0}], lr=cfg["lr"], betas=(0.9, 0.99))
    budget = cfg["minutes"] * 60.0
    t0 = time.perf_counter()
    step = 0
    model.train()
    while (elapsed := time.perf_counter() - t0) < budget:
        frac = elapsed / budget
        lr = cfg["lr"] * min(1.0, (step + 1) / cfg["warmup"]) * max(0.05, 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(ids) - block - 1, (cfg["batch"],), generator=gen)
        x = torch.stack([ids[s: s + block] for s in starts])
        y = torch.stack([ids[s + 1: s + block + 1] for s in starts])
        loss = F.cross_entropy(model(x).reshape(-1, model.lm_head.out_features), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            log(f"step {step} loss {loss.item():.4f} lr {lr:.2e} {time.perf_counter() - t0:.0f}s")
    model.eval()
    return {"steps": step, "seconds": time.perf_counter() - t0}


def get_model(config: dict | None = None, train_cfg: dict | None = None, allow_train: bool = True, log=print):
    """The cached trained model (training it first if needed), tokenizer, train and held-out ids."""
    config = dict(CONFIG if config is None else config)
    train_cfg = dict(TRAIN if train_cfg is None else train_cfg)
    tok, train_ids, val_ids = data()
    config["vocab_size"] = tok.vocab_size
    path = cache_path(config, train_cfg)
    torch.manual_seed(train_cfg["seed"])
    model = prunekit.create_model("gpt_tiny", **config)
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        model.eval()
        return model, tok, train_ids, val_ids
    if not allow_train:
        raise SystemExit(f"no cached model at {path}; train it first: nice -n 10 python {__file__}")
    info = train(model, train_ids, train_cfg, log)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
              metadata={"config": json.dumps(config), "train": json.dumps(train_cfg), "info": json.dumps(info)})
    os.replace(tmp, path)
    log(f"cached {path}")
    return model, tok, train_ids, val_ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=TRAIN["minutes"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = dict(TRAIN, minutes=args.minutes)
    get_model(train_cfg=cfg, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
