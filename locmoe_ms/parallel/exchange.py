"""The expert exchange: dispatch buffer -> the ranks that hold the experts -> back (README.md, "Several processes").

Written once above the communicator interface, so the CPU multi-process tests run the code Ascend runs.

- plain: an All-to-All over the expert-parallel group; every tensor-parallel rank sends the full payload.
- groupwise (LocMoE, paper section 3.2): tensor-parallel rank i of a group of t sends only hidden slice i over the
  expert-parallel group, then an All-Gather inside the tensor-parallel group (one node) restores the full tensor;
  the combine runs the same way back. Inter-node bytes fall by t.
- chunks k > 1: the capacity axis is cut into k chunks and each chunk is exchanged, computed and returned on its
  own, so the exchange of one chunk can overlap the expert FFN of another (on Ascend the scheduler runs them on
  separate streams; on CPU the result is the same, only the order of work changes).
- count_aware: only filled slots count as sent, as AlltoAllV with per-destination counts would send them. The
  padded buffer still moves on CPU (static shapes); the rows past each expert's fill are zeroed exactly as the
  receiver of an AlltoAllV would leave them, and the byte counters count filled rows only.

Bytes (forward pass: dispatch + combine; the backward pass moves the same again) are returned per call as
[to the same device, to another device of the same node, to another node].
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from locmoe_ms.parallel.placement import Placement
from locmoe_ms.parallel.topology import Topology

VALUE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}  # the payload moves in model.compute_dtype
TRAFFIC_KINDS = ("same_device", "intra_node", "inter_node")


def destination_kinds(topology: Topology, rank: int, group: tuple[int, ...]) -> np.ndarray:
    """[g, 3] one-hot: is group[i] this rank, another rank of this node, or a rank of another node."""
    kinds = np.zeros((len(group), 3), np.float32)
    for i, other in enumerate(group):
        same_node = topology.node_of_rank(other) == topology.node_of_rank(rank)
        kinds[i, 0 if other == rank else 1 if same_node else 2] = 1.0
    return kinds


def exchange_terms(topology: Topology, rank: int, hidden: int, mode: str, dtype: str
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """What rank's byte counters multiply: destination kinds [ep, 3] of its expert group, kinds [3] of the t-1
    All-Gather peers (group-wise; the tensor-parallel group is one node, so intra-node) and bytes per slot row of
    the payload in `dtype` (model.compute_dtype, what the exchange moves)."""
    tp = topology.model_parallel
    groupwise = mode == "groupwise" and tp > 1
    kinds = destination_kinds(topology, rank, topology.expert_group(rank))
    gather_kinds = np.array([0.0, float(tp - 1) if groupwise else 0.0, 0.0], np.float32)
    return kinds, gather_kinds, float((hidden // tp if groupwise else hidden) * VALUE_BYTES[dtype])


def all_to_all_rows(send_fill, recv_fill, kinds, slots: int, count_aware: bool):
    """Slot rows rank sends over the expert group in the forward dispatch and combine, per kind [3].

    send_fill [ep, per]: its filled slots per destination's experts; recv_fill [ep, per]: each source's fill of its
    experts; slots = per * capacity, the padded rows per destination. Works on NumPy arrays and on Tensors in a
    graph (the exchange's counters and tools/cluster_model.py call it alike)."""
    if count_aware:
        rows = (send_fill.sum(axis=1) + recv_fill.sum(axis=1)).reshape(-1, 1)  # dispatch + combine per peer
        return (rows * kinds).sum(axis=0)
    return kinds.sum(axis=0) * (2.0 * slots)


def all_gather_rows(send_fill, recv_fill, gather_kinds, slots: int, ep: int, count_aware: bool):
    """Group-wise: slot rows rank sends to its t-1 tensor-parallel peers (received slices for its experts, then the
    returned slices), per kind [3]; zero for the plain exchange (gather_kinds zero)."""
    rows = recv_fill.sum() + send_fill.sum() if count_aware else 2.0 * ep * slots
    return gather_kinds * rows


def chunk_bounds(capacity: int, chunks: int) -> list[tuple[int, int]]:
    """Split [0, capacity) into min(chunks, capacity) nearly equal ranges."""
    chunks = max(1, min(chunks, capacity))
    edges = [capacity * i // chunks for i in range(chunks + 1)]
    return list(zip(edges[:-1], edges[1:]))


class LocalExchange(nn.Cell):
    """One process: the experts see the dispatch buffer as it is; nothing is sent."""

    def __init__(self, experts: nn.Cell):
        super().__init__()
        self.experts = experts

    def construct(self, buffer: Tensor, fill: Tensor):
        return self.experts(buffer), ops.zeros((3,), ms.float32)


class ExpertExchange(nn.Cell):
    """construct(buffer [E, C, h], fill [E] filled slots per expert) -> (expert output [E, C, h], bytes [3]).

    `experts` holds this rank's E / ep experts and maps [E/ep, slots, h] -> [E/ep, slots, h].
    """

    def __init__(self, placement: Placement, experts: nn.Cell, expert_num: int, capacity: int, hidden: int,
                 mode: str = "plain", chunks: int = 1, count_aware: bool = False, dtype: str = "float32"):
        super().__init__()
        topo, comm, rank = placement.topology, placement.comm, placement.rank
        self.experts = experts
        ep_group, tp_group = topo.expert_group(rank), topo.tensor_group(rank)
        self.ep, self.tp = len(ep_group), len(tp_group)
        self.groupwise = mode == "groupwise" and self.tp > 1
        if self.groupwise and hidden % self.tp:
            raise ValueError(f"groupwise exchange: hidden size {hidden} not divisible by model_parallel {self.tp}")
        self.per = expert_num // self.ep
        self.capacity = capacity
        self.hidden = hidden
        self.width = hidden // self.tp if self.groupwise else hidden
        self.offset = (rank % self.tp) * self.width if self.groupwise else 0
        self.bounds = chunk_bounds(capacity, chunks)
        self.count_aware = count_aware
        self.all_to_all = comm.all_to_all(ep_group)
        self.tp_gather = comm.all_gather(tp_group)
        kinds, gather_kinds, self.row_bytes = exchange_terms(topo, rank, hidden, mode, dtype)
        self.kinds, self.gather_kinds = Tensor(kinds), Tensor(gather_kinds)
        self.positions = Tensor(np.arange(capacity, dtype=np.float32).reshape(1, 1, capacity, 1))

    def _restore(self, part: Tensor) -> Tensor:
        """Group-wise: [ep, per, c, h/t] slices of the t ranks -> [ep, per, c, h] (All-Gather in the TP group)."""
        if not self.groupwise:
            return part
        gathered = self.tp_gather(part)                                   # [t, ep, per, c, h/t]
        return gathered.transpose(1, 2, 3, 0, 4).reshape(part.shape[:-1] + (self.hidden,))

    def _slice(self, x: Tensor) -> Tensor:
        return x[..., self.offset:self.offset + self.width] if self.groupwise else x

    def construct(self, buffer: Tensor, fill: Tensor):
        ep, per, hidden = self.ep, self.per, self.hidden
        send = self._slice(buffer.reshape(ep, per, self.capacity, hidden))
        # filled slots: mine per destination block, and what every source fills of my experts
        send_fill = fill.astype(ms.float32).reshape(ep, per)
        recv_fill = send_fill
        send_mask = recv_mask = self.positions
        if self.count_aware:
            recv_fill = self.all_to_all(send_fill)                        # [ep sources, per]: their fill of mine
            send_mask = (self.positions < send_fill.reshape(ep, per, 1, 1)).astype(buffer.dtype)
            recv_mask = (self.positions < recv_fill.reshape(ep, per, 1, 1)).astype(buffer.dtype)
        outputs = ()
        for start, stop in self.bounds:
            size = stop - start
            received = self.all_to_all(send[:, :, start:stop])              # [ep sources, per, c, h']
            if self.count_aware:
                received = received * recv_mask[:, :, start:stop]
            full = self._restore(received)                                # [ep, per, c, h]
            out = self.experts(full.transpose(1, 0, 2, 3).reshape(per, ep * size, hidden))
            back = self._slice(out.reshape(per, ep, size, hidden).transpose(1, 0, 2, 3))
            returned = self.all_to_all(back)                              # [ep owners, per, c, h']
            if self.count_aware:
                returned = returned * send_mask[:, :, start:stop]
            outputs += (self._restore(returned),)
        result = outputs[0] if len(outputs) == 1 else ops.concat(outputs, axis=2)
        return result.reshape(ep * per, self.capacity, hidden), self._bytes(send_fill, recv_fill)

    def _bytes(self, send_fill: Tensor, recv_fill: Tensor) -> Tensor:
        """[same device, intra-node, inter-node] bytes this rank sends in the forward dispatch and combine."""
        slots = self.per * self.capacity
        rows = all_to_all_rows(send_fill, recv_fill, self.kinds, slots, self.count_aware) + \
            all_gather_rows(send_fill, recv_fill, self.gather_kinds, slots, self.ep, self.count_aware)
        return rows * self.row_bytes


def build_exchange(placement: Placement, experts: nn.Cell, expert_num: int, capacity: int, hidden: int,
                   mode: str, chunks: int, count_aware: bool, dtype: str) -> nn.Cell:
    """The exchange for this process: LocalExchange in one process, ExpertExchange across ranks; the payload
    moves in `dtype` (model.compute_dtype)."""
    if not placement.distributed:
        return LocalExchange(experts)
    return ExpertExchange(placement, experts, expert_num, capacity, hidden, mode, chunks, count_aware, dtype)
