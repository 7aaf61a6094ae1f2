"""Parameters of a freshly built model, as locmoe-train initialises them (global seed train.seed, then build)."""
from __future__ import annotations

import mindspore as ms
import numpy as np

from locmoe_ms.config import Config
from locmoe_ms.model.network import build_model, model_shapes
from locmoe_ms.train.optim import build_optimizer
from locmoe_ms.train.step import TrainStep

ROUTER_MARK = ".moe.router."  # every learned router parameter (gate weight and bias) and its moments has this


def is_router_parameter(name: str) -> bool:
    return ROUTER_MARK in name


def fresh_parameters(cfg: Config, optimizer: bool = False) -> dict[str, np.ndarray]:
    """Name -> initial value for `cfg` (one process, the whole model); with `optimizer` also the AdamW moments
    (zeros), global_step and learning_rate, named as in a locmoe-train checkpoint."""
    ms.set_seed(cfg.train.seed)
    net = build_model(cfg)
    cell = TrainStep(net, build_optimizer(net.trainable_params(), cfg.train), cfg.train) if optimizer \
        else net
    return {p.name: p.asnumpy() for p in cell.get_parameters()}


def parameter_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Model parameter name -> full shape for `cfg`, without initialising the values."""
    return model_shapes(cfg)[0]
