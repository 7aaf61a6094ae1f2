"""What one process trains in explicit mode (and in one process): its placement in the cluster, its share of the
model, the train step around it, and the `Training` record that the loop and the dry run take in either mode."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from locmoe_ms.config import Config
from locmoe_ms.model.network import build_model
from locmoe_ms.parallel.communicator import build_communicator
from locmoe_ms.parallel.layout import expert_shard
from locmoe_ms.parallel.placement import Placement
from locmoe_ms.parallel.topology import Topology
from locmoe_ms.train import checkpoint
from locmoe_ms.train.optim import build_optimizer
from locmoe_ms.train.step import TrainStep


def build_placement(cfg: Config) -> Placement:
    """One process emulating the config's cluster, or (communicator cpu/hccl) this rank of a real job.

    Collectives are initialised first: msrun also runs this script in its scheduler process, which must stop in
    init() before it touches data or files."""
    topology = Topology.from_config(cfg)
    if cfg.parallel_config.communicator == "hccl" and os.environ.get("RANK_TABLE_FILE"):
        topology.check_rank_table(os.environ["RANK_TABLE_FILE"])
    comm = build_communicator(cfg.parallel_config.communicator, cfg.virtual_devices)
    return Placement(topology, comm)


def build_rank_model(cfg: Config, placement: Placement, init_from: Path | None = None):
    """The loss network of this process, from fresh weights or (init_from) the model weights of a checkpoint such
    as an upcycled one. A rank starts from its share of the one-process model's weights, so a distributed run
    starts exactly where the one-process run starts."""
    full = build_model(cfg)  # first, in every process: the same random draws
    if init_from is not None:  # any config: every model parameter by name and shape; optimizer state ignored
        params, _ = checkpoint.load(init_from)
        checkpoint.restore(full, params, init_from, model_only=True)
    if not placement.distributed:
        return full
    block, blocks = placement.topology.expert_block(placement.rank), placement.topology.expert_parallel
    shares = {}
    for param in full.get_parameters():  # the draws in the same order; one whole tensor in memory at a time
        value = param.asnumpy()
        shares[param.name] = expert_shard(param.name, value, block, blocks).copy()  # a view would keep it whole
        param.set_data(Tensor(np.zeros((1,) * value.ndim, value.dtype)), slice_shape=True)  # frees the whole one
        del value
    del full
    loss_net = build_model(cfg, placement=placement)
    for param in loss_net.get_parameters():  # frozen ones too: bias balancing's balance_bias of init_from
        param.set_data(Tensor(shares.pop(param.name)))
    return loss_net


@dataclass
class Training:
    """What this process trains: the loss network, the train step around it, its rows of every micro-batch (of
    every global batch when train.micro_batches is 1) and its rank (None in a one-process run). Built the same way
    by locmoe-train and by the Ascend dry-run compile."""
    loss_net: nn.Cell
    step: TrainStep
    rows: slice
    rank: int | None
    world: int
    label: str
    shard_meta: dict             # checkpoint metadata naming the shard this process holds
    inject_overflow: frozenset = frozenset()
    micro_batches: int = 1
    strategy_file: Path | None = None  # auto mode: the job's strategy checkpoint (rank_r/); saves are then sliced
    compiled: bool = False

    @property
    def sliced(self) -> bool:
        """Whether this process saves and loads its own slices (auto mode) rather than whole tensors."""
        return self.strategy_file is not None

    @property
    def compiling_strategy(self) -> Path:
        """Where MindSpore writes the strategy when this job compiles; it becomes strategy_file once the job
        starts (a resume refused for another strategy leaves the directory's strategy_file as it was)."""
        return self.strategy_file.with_name(f".compiling_{self.strategy_file.name}")

    def local_rows(self, batch: np.ndarray) -> np.ndarray:
        """This process's rows of a global batch: its rows of each micro-batch (consecutive row blocks), one
        micro-batch after another, as the train step takes them."""
        parts = np.split(batch, self.micro_batches)
        return parts[0][self.rows] if len(parts) == 1 else np.concatenate([p[self.rows] for p in parts])

    def inputs(self, tokens: np.ndarray, domains: np.ndarray, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """The train step's inputs for global batch (tokens, domains) at `step` (counted from 1)."""
        inject = math.inf if step in self.inject_overflow else 0.0
        return Tensor(self.local_rows(tokens)), Tensor(self.local_rows(domains)), Tensor(inject, ms.float32)

    def compile(self, cfg: Config) -> None:
        """Compile the train step for cfg's batch without running it. In auto mode this is when MindSpore slices
        the parameters and writes the strategy checkpoint, so a sliced checkpoint can be loaded only after it."""
        if self.compiled:
            return
        tokens = np.zeros((cfg.train.batch_size, cfg.model.seq_length + 1), np.int32)
        self.step.compile(*self.inputs(tokens, np.zeros(cfg.train.batch_size, np.int32), 0))
        self.compiled = True


def build_explicit_training(cfg: Config, init_from: Path | None = None) -> Training:
    """Collectives, model and train step of explicit mode: a per-rank model, the exchange over the communicator
    (one process emulates the cluster with `local`). Auto mode's counterpart is autoparallel/build.py."""
    placement = build_placement(cfg)
    loss_net = build_rank_model(cfg, placement, init_from)
    step = TrainStep(loss_net, build_optimizer(loss_net.trainable_params(), cfg.train), cfg.train, placement)
    step.set_train(True)  # dropout on; evaluate() switches it off for its batches
    rank, topo = (placement.rank if placement.distributed else None), placement.topology
    shard = {} if rank is None else {"rank": rank, "world_size": topo.world, "expert_parallel_rank":
                                     topo.expert_block(rank), "model_parallel_rank": rank % topo.model_parallel}
    return Training(loss_net, step, placement.batch_rows(cfg.micro_batch_size), rank, placement.comm.world,
                    placement.label, shard, frozenset(cfg.train.inject_overflow_steps) if not rank else frozenset(),
                    cfg.train.micro_batches)
