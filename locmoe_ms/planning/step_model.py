"""Step time of a config on a cluster: compute from FLOPs, every collective from its bytes, overlap.

Bytes of the expert exchange come from the functions the exchange's own counters call (parallel/exchange.py:
exchange_terms, all_to_all_rows, all_gather_rows), per rank, from the routing's filled slots. Times are
alpha-beta: bytes / (link bandwidth * the operator's algorithm efficiency) + one start-up latency per message.

- Expert exchange, per sparse layer and pass (forward, backward, recompute): All-to-All over the expert group
  (pairwise: the peers' blocks go one after another, so times add over kinds), then, group-wise, the All-Gather
  in the tensor-parallel group. The slowest rank sets the time (the collective waits for it).
- Overlap (parallel_config.exchange_chunks = k): per chunk the longer of exchange and expert FFN, plus the shorter
  once to fill the pipeline: k * max(e/k, c/k) + min(e/k, c/k); exposed = that minus the expert compute.
- Tensor parallel (dense layers, Megatron-style row/column split, autoparallel/table.py): a ring All-Reduce of
  the [tokens per group, h] activations after attention and after each dense FFN, once forward, once backward,
  again under recompute.
- Data parallel: a ring All-Reduce of the float32 gradients, dense parameters over the data-parallel group and
  expert parameters over the ranks that hold copies of the same experts; `gradient_overlap` of it is hidden.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from locmoe_ms.planning.flops import capacity_of, op_total, parameter_counts, step_ops
from locmoe_ms.planning.hardware import KINDS, Hardware
from locmoe_ms.planning.routing import Routing
from locmoe_ms.config import Config
from locmoe_ms.parallel.exchange import VALUE_BYTES, all_gather_rows, all_to_all_rows, exchange_terms
from locmoe_ms.parallel.topology import Topology

GRADIENT_BYTES = 4  # float32 parameters and gradients (compute_dtype casts only the matmul inputs)


def rank_exchange_bytes(cfg: Config, fill: np.ndarray, rank: int, count_aware: bool | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(All-to-All bytes [3], All-Gather bytes [3]) rank sends in one layer's forward dispatch and combine, for
    fills [G, E]; their sum is what the exchange counts in bytes_sent."""
    par, topo = cfg.parallel_config, Topology.from_config(cfg)
    count_aware = par.count_aware if count_aware is None else count_aware
    ep, per, capacity = topo.expert_parallel, topo.expert_num // topo.expert_parallel, capacity_of(cfg)
    m = cfg.model
    kinds, gather_kinds, row_bytes = exchange_terms(topo, rank, m.hidden_size, par.exchange, m.compute_dtype)
    block = topo.expert_block(rank)
    mine = slice(block * per, (block + 1) * per)
    send = fill[topo.token_group_of_rank(rank)].reshape(ep, per)
    recv = np.stack([fill[topo.token_group_of_rank(r), mine] for r in topo.expert_group(rank)])
    slots = per * capacity
    return (all_to_all_rows(send, recv, kinds, slots, count_aware) * row_bytes,
            all_gather_rows(send, recv, gather_kinds, slots, ep, count_aware) * row_bytes)


def cluster_exchange_bytes(cfg: Config, fill: np.ndarray, count_aware: bool | None = None) -> np.ndarray:
    """[world, 3] bytes every rank's exchange counts for one layer (bytes_sent of its metrics.jsonl)."""
    world = cfg.parallel_config.nodes * cfg.parallel_config.devices_per_node
    return np.stack([sum(rank_exchange_bytes(cfg, fill, r, count_aware)) for r in range(world)])


def _send_time(hw: Hardware, op: str, world: int, data: np.ndarray, messages: np.ndarray) -> float:
    """Bytes [3] and messages [3] by kind, sent one kind after another."""
    eff = hw.op_efficiency(op, world)
    return float(sum(data[k] / (hw.bandwidth[k] * eff) + messages[k] * hw.latency[k] for k in range(3)))


def _ring_all_reduce(hw: Hardware, world: int, size: float, ranks: int, kind: int) -> float:
    if ranks <= 1:
        return 0.0
    return 2 * (ranks - 1) / ranks * size / (hw.bandwidth[kind] * hw.op_efficiency("all_reduce", world)) + \
        2 * (ranks - 1) * hw.latency[kind]


def _group_kind(topo: Topology, group: tuple[int, ...]) -> int:
    return 2 if len({topo.node_of_rank(r) for r in group}) > 1 else 1


@dataclass
class Breakdown:
    compute: float                    # s per step, every matmul of the rank
    expert_compute: float             # part of compute: the experts' FFN (forward, backward, recompute)
    all_to_all: float                 # expert exchange: All-to-All (all passes, slowest rank)
    all_gather: float                 # expert exchange: group-wise All-Gather
    exchange_exposed: float           # exchange time not hidden behind the expert FFN
    tensor_parallel: float            # dense layers' All-Reduce
    gradient_all_reduce: float        # data-parallel, exposed part
    flops_per_device: float
    exchange_idle: float = 0.0        # part of the exchange a rank of mean load waits for the slowest rank
    gradient_hidden: float = 0.0      # data-parallel All-Reduce hidden behind the backward (gradient_overlap)
    bytes_per_layer: dict = field(default_factory=dict)   # slowest rank's forward bytes by collective and kind

    @property
    def step(self) -> float:
        return self.compute + self.exchange_exposed + self.tensor_parallel + self.gradient_all_reduce

    @property
    def all_to_all_share(self) -> float:
        return self.all_to_all / self.step

    def categories(self) -> dict[str, float]:
        """The step in the paper's Figure 10 categories (s; they add up to the step): computation alone,
        communication alone (exposed exchange, tensor-parallel and gradient All-Reduces, less the idle wait), the
        overlap (exchange hidden behind the expert FFN, gradients behind the backward) and idle (the part of the
        exposed exchange a rank of mean load spends waiting for the slowest)."""
        hidden = self.all_to_all + self.all_gather - self.exchange_exposed + self.gradient_hidden
        idle = min(self.exchange_idle, self.exchange_exposed)
        return {"computation": self.compute - hidden,
                "communication": self.exchange_exposed + self.tensor_parallel + self.gradient_all_reduce - idle,
                "overlap": hidden, "idle": idle}

    def as_dict(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items()}, "step": self.step,
                "all_to_all_share": self.all_to_all_share}


def step_time(cfg: Config, routing: Routing, hw: Hardware) -> Breakdown:
    m, par = cfg.model, cfg.parallel_config
    micro = cfg.train.micro_batches  # the exchange and the tensor-parallel sums run once per micro-batch
    topo = Topology.from_config(cfg)
    world = topo.world
    rate = hw.peak_flops * hw.efficiency
    ops = step_ops(cfg)
    flops = sum(op_total(op, m.recompute) for op in ops.values()) / world
    passes = 3 if m.recompute else 2
    expert_forward = ops["experts"].forward / len(m.sparse_layers) / world / rate / micro  # one layer, pass, micro
    chunks = max(1, min(par.exchange_chunks, capacity_of(cfg)))
    a2a_total = ag_total = exposed = idle = 0.0
    worst = {}
    for fill in routing.fills:
        times = []
        for rank in range(world):
            a2a, ag = rank_exchange_bytes(cfg, fill, rank)
            kinds, gather_kinds, _ = exchange_terms(topo, rank, m.hidden_size, par.exchange, m.compute_dtype)
            a2a_messages = kinds.sum(axis=0) * 2 * chunks           # one block per peer, dispatch and combine
            ag_messages = gather_kinds * 2 * chunks
            times.append((_send_time(hw, "all_to_all", world, a2a, a2a_messages),
                          _send_time(hw, "all_gather", world, ag, ag_messages), a2a, ag))
        slowest = max(times, key=lambda t: t[0] + t[1])
        worst = {"all_to_all": dict(zip(KINDS, slowest[2].tolist())),
                 "all_gather": dict(zip(KINDS, slowest[3].tolist()))}
        exchange = slowest[0] + slowest[1]
        idle += (exchange - float(np.mean([t[0] + t[1] for t in times]))) * passes * micro
        for compute_scale in (1, 2) + ((1,) if m.recompute else ()):  # forward, backward, recompute
            compute = expert_forward * compute_scale
            a, b = exchange / chunks, compute / chunks
            exposed += (chunks * max(a, b) + min(a, b) - compute) * micro
        a2a_total += slowest[0] * passes * micro
        ag_total += slowest[1] * passes * micro
    tokens_per_group = cfg.micro_batch_size * m.seq_length / topo.token_groups
    activation = tokens_per_group * m.hidden_size * VALUE_BYTES[m.compute_dtype]  # the matmul's partial sums
    sparse = len(m.sparse_layers)
    all_reduces = 2 * (m.num_layers - sparse + 1) + sparse        # attention and FFN of dense blocks, attention
    tp = passes * all_reduces * micro * _ring_all_reduce(hw, world, activation, topo.model_parallel, 1)
    dense_params, expert_params = parameter_counts(cfg)
    data_group, replicas = topo.data_group(0), topo.token_groups // topo.expert_parallel
    expert_group = tuple(r for r in data_group if topo.expert_block(r) == topo.expert_block(0))
    grads = _ring_all_reduce(hw, world, dense_params / topo.model_parallel * GRADIENT_BYTES, len(data_group),
                             _group_kind(topo, data_group)) + \
        _ring_all_reduce(hw, world, expert_params / (topo.expert_parallel * topo.model_parallel) * GRADIENT_BYTES,
                         replicas, _group_kind(topo, expert_group))
    return Breakdown(compute=flops / rate,
                     expert_compute=op_total(ops["experts"], m.recompute) / world / rate,
                     all_to_all=a2a_total, all_gather=ag_total, exchange_exposed=exposed, tensor_parallel=tp,
                     gradient_all_reduce=grads * (1 - hw.gradient_overlap), flops_per_device=flops,
                     bytes_per_layer=worst, exchange_idle=idle, gradient_hidden=grads * hw.gradient_overlap)
