"""AdamW with linear warm-up and cosine decay to min_learning_rate."""
from __future__ import annotations

import math

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from locmoe_ms.config import TrainConfig


def learning_rates(train: TrainConfig) -> np.ndarray:
    """The learning rate of every step 0..max_steps-1."""
    steps = np.arange(train.max_steps, dtype=np.float64)
    warm = train.warmup_steps
    decay_len = max(1, train.max_steps - warm)
    cosine = train.min_learning_rate + 0.5 * (train.learning_rate - train.min_learning_rate) * (
        1 + np.cos(math.pi * np.clip(steps - warm, 0, decay_len) / decay_len))
    warmup = train.learning_rate * (steps + 1) / max(1, warm)
    return np.where(steps < warm, warmup, cosine).astype(np.float32)


def build_optimizer(params: list, train: TrainConfig) -> nn.Optimizer:
    """AdamWeightDecay; biases, LayerNorm parameters and embeddings get no weight decay."""
    decay = [p for p in params if p.ndim >= 2 and "embedding" not in p.name]
    rest = [p for p in params if not (p.ndim >= 2 and "embedding" not in p.name)]
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return nn.AdamWeightDecay(groups, learning_rate=Tensor(learning_rates(train), ms.float32))
