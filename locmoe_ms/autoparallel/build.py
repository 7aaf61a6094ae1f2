"""Auto-parallel mode (parallel_config.mode: auto): one full-batch model that MindSpore shards (Ascend only).

Every rank builds the same one-process model (all token groups and experts, LocalExchange: no explicit
exchange), MindSpore's auto-parallel partitions it from the layouts of the op table (autoparallel/table.py,
applied by autoparallel/apply.py) and inserts the collectives itself, gradients' included: the train step wraps
the loss network with no gradient reducer. The graph takes the global batch on every rank (full_batch).
Compiled, never run, here: tools/ascend_dryrun.py --mode auto.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from mindspore import nn

from locmoe_ms.autoparallel.apply import apply_shard_strategies
from locmoe_ms.autoparallel.context import save_strategy, set_parallel_context
from locmoe_ms.config import Config
from locmoe_ms.layers import BiasAdd
from locmoe_ms.model.loss import CrossEntropy, VocabParallelCrossEntropy
from locmoe_ms.model.network import build_model
from locmoe_ms.parallel.communicator import WorldAllReduce
from locmoe_ms.train import checkpoint
from locmoe_ms.train.build import Training
from locmoe_ms.train.optim import build_optimizer
from locmoe_ms.train.step import TrainStep


class AutodiffBiasAdd(nn.Cell):
    """BiasAdd's forward with MindSpore's own backward pass."""
    construct = BiasAdd.construct


# Cells whose custom backward pass (there for speed on CPU) auto-parallel cannot partition: in the dry-run compile
# BiasAdd's kept the attention biases whole and made a row-parallel projection fail in the backward pass ("Bprop
# MatMulExt ... 256 and 128"), and CrossEntropy's gathered the whole [tokens, vocabulary] logits on every rank; its
# auto-mode form takes the vocabulary split over model parallel (model/loss.py VocabParallelCrossEntropy).
AUTODIFF: dict[type, type] = {BiasAdd: AutodiffBiasAdd, CrossEntropy: VocabParallelCrossEntropy}


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


def build_auto_model(cfg, init_from: Path | None = None) -> tuple[nn.Cell, slice]:
    """Parallel context, the full-batch loss network with its shard strategies, and the rows of the global batch
    this rank feeds (all of them: full_batch). `init_from`: a checkpoint whose model weights to start from
    (one-process names, full shapes; MindSpore slices them)."""
    set_parallel_context(cfg)
    loss_net = build_model(cfg)
    if init_from is not None:
        params, _ = checkpoint.load(init_from)
        checkpoint.restore(loss_net, params, init_from, model_only=True)
    use_autodiff(loss_net)
    apply_shard_strategies(loss_net, cfg)
    return loss_net, slice(None)


def build_auto_training(cfg: Config, init_from: Path | None = None, output_dir: Path | None = None) -> Training:
    """Collectives, model and train step of auto mode: one full-batch model sharded by MindSpore's auto-parallel;
    the train step sums only the overflow flag over the world (MindSpore inserts every other collective).
    MindSpore writes the job's strategy checkpoint into this rank's directory of `output_dir` at compile time
    (a temporary directory without it); checkpoints are then this rank's slices."""
    from mindspore.communication import get_group_size, get_rank

    loss_net, rows = build_auto_model(cfg, init_from)
    rank, world = get_rank(), get_group_size()
    if output_dir is None:
        output_dir = Path(tempfile.mkdtemp(prefix="locmoe_strategy_"))
    strategy = checkpoint.rank_dir(output_dir, rank) / checkpoint.STRATEGY_FILE
    optimizer = build_optimizer(loss_net.trainable_params(), cfg.train)
    step = TrainStep(loss_net, optimizer, cfg.train, world_sum=WorldAllReduce() if world > 1 else None)
    step.set_train(True)
    training = Training(loss_net, step, rows, rank, world, f"rank {rank} of {world} (auto-parallel)",
                        {"rank": rank, "world_size": world, "mode": "auto"},
                        frozenset(cfg.train.inject_overflow_steps) if rank == 0 else frozenset(),
                        cfg.train.micro_batches, strategy)
    save_strategy(training.compiling_strategy)
    return training
