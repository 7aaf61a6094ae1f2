"""Auto-parallel mode (parallel_config.mode: auto): one full-batch model that MindSpore shards (Ascend only).

Every rank builds the same one-process model (all token groups and experts, LocalExchange: no explicit
exchange), MindSpore's auto-parallel partitions it from the layouts of parallel/strategies.py (applied by
context.apply_shard_strategies) and inserts the collectives itself, gradients' included: the train step wraps
the loss network with no gradient reducer. The graph takes the global batch on every rank (full_batch).
Compiled, never run, here: tools/ascend_dryrun.py --mode auto.
"""
from __future__ import annotations

from pathlib import Path

from mindspore import nn

from locmoe_ms.model.layers import BiasAdd
from locmoe_ms.model.loss import CrossEntropy, own_primitives
from locmoe_ms.model.network import build_model
from locmoe_ms.parallel.context import apply_shard_strategies, set_parallel_context


class AutodiffBiasAdd(nn.Cell):
    """BiasAdd's forward with MindSpore's own backward pass."""
    construct = BiasAdd.construct


class AutodiffCrossEntropy(nn.Cell):
    """CrossEntropy's forward (and primitives) with MindSpore's own backward pass."""

    def __init__(self):
        super().__init__()
        own_primitives(self)

    construct = CrossEntropy.construct


# Cells whose custom backward pass (there for speed on CPU) auto-parallel cannot partition: in the dry-run compile
# BiasAdd's kept the attention biases whole and made a row-parallel projection fail in the backward pass ("Bprop
# MatMulExt ... 256 and 128"), and CrossEntropy's gathered the whole [tokens, vocabulary] logits on every rank.
AUTODIFF: dict[type, type] = {BiasAdd: AutodiffBiasAdd, CrossEntropy: AutodiffCrossEntropy}


def use_autodiff(network: nn.Cell) -> list[str]:
    """Replace the AUTODIFF cells of `network` in place (same forward, no parameters); returns their paths."""
    replaced = []
    cells = dict(network.cells_and_names())
    for path, cell in list(cells.items()):
        if type(cell) in AUTODIFF:
            parent, _, attr = path.rpartition(".")
            setattr(cells[parent] if parent else network, attr, AUTODIFF[type(cell)]())
            replaced.append(path)
    return replaced


def build_auto_model(cfg, init_from: Path | None = None, strategy_file: str | None = None) -> tuple[nn.Cell, slice]:
    """Parallel context, the full-batch loss network with its shard strategies, and the rows of the global batch
    this rank feeds (all of them: full_batch). `init_from`: a checkpoint whose model weights to start from
    (one-process names, full shapes; MindSpore slices them). `strategy_file`: save the strategy checkpoint there."""
    set_parallel_context(cfg, strategy_file=strategy_file)
    loss_net = build_model(cfg)
    if init_from is not None:
        from locmoe_ms.train import checkpoint

        params, _ = checkpoint.load(init_from)
        checkpoint.restore(loss_net, params, init_from, model_only=True)
    use_autodiff(loss_net)
    apply_shard_strategies(loss_net, cfg)
    return loss_net, slice(None)
