"""Perplexity: of a split during training, of the unigram baseline, and of a saved checkpoint (locmoe-eval)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from mindspore import Tensor

from locmoe_ms.config import Config
from locmoe_ms.data.dataset import eval_batches, prepare_data
from locmoe_ms.data.sharding import row_domains
from locmoe_ms.errors import UserInputError
from locmoe_ms.model.network import build_model
from locmoe_ms.train import checkpoint
from locmoe_ms.train.device import set_context


def evaluate(loss_net, split, cfg: Config, rows: slice = slice(None), layout: np.ndarray | None = None) -> float:
    """Perplexity over the first eval_batches batches of a split (LM loss only, no router losses), in eval mode
    (dropout off); the network's train/eval mode is restored afterwards. `layout`: domain-sharded batches
    (data/sharding.py), as in training. Each batch goes through the network one micro-batch at a time (the size
    it is built for); the micro-batches are equal, so the mean of their losses is the batch's.

    Under msrun each rank passes its `rows` of every micro-batch; the loss network averages over ranks."""
    was_training = loss_net.training
    loss_net.set_train(False)
    k = cfg.train.micro_batches
    try:
        losses = [float(loss_net(Tensor(t[rows]), Tensor(d[rows]))[1]) for tokens, domains in
                  eval_batches(split, cfg.train.batch_size, cfg.train.eval_batches, layout)
                  for t, d in zip(np.split(tokens, k), np.split(domains, k))]
    finally:
        loss_net.set_train(was_training)
    if not losses:
        raise UserInputError(f"train.batch_size = {cfg.train.batch_size}: the evaluation split has fewer sequences")
    return float(math.exp(np.mean(losses)))


def unigram_perplexity(train, valid, vocab: int) -> float:
    """Perplexity of the valid labels under the train labels' unigram distribution (add-one smoothing)."""
    counts = np.bincount(train.tokens[:, 1:].ravel(), minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(np.exp(-logp[valid.tokens[:, 1:].ravel()].mean()))


def evaluate_checkpoint(cfg: Config, path: Path) -> dict:
    """Validation and test perplexity of a saved checkpoint."""
    set_context(cfg)
    params, meta = checkpoint.load(path)
    checkpoint.check_same_model(path, meta, cfg)
    splits = prepare_data(cfg)
    loss_net = build_model(cfg)
    checkpoint.restore(loss_net, params, path, model_only=True)
    result = {"checkpoint": str(path), "step": int(meta["step"]),
              "valid_ppl": evaluate(loss_net, splits["valid"], cfg, layout=row_domains(cfg)),
              "test_ppl": evaluate(loss_net, splits["test"], cfg, layout=row_domains(cfg))}
    if "valid_ppl" in meta:
        result["valid_ppl_at_save"] = float(meta["valid_ppl"])
    return result
