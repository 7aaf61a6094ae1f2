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

BYTES_PER_VALUE = 4  # float32 payload
TRAFFIC_KINDS = ("same_device", "intra_node", "inter_node")


def _destination_kinds(placement: Placement, group: tuple[int, ...]) -> np.ndarray:
    """[g, 3] one-hot: is group[i] this rank, another rank of this node, or a rank of another node."""
    topo, me = placement.topology, placement.rank
    kinds = np.zeros((len(group), 3), np.float32)
    for i, rank in enumerate(group):
        kinds[i, 0 if rank == me else 1 if topo.node_of_rank(rank) == topo.node_of_rank(me) else 2] = 1.0
    return kinds


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
                 mode: str = "plain", chunks: int = 1, count_aware: bool = False):
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
        self.kinds = Tensor(_destination_kinds(placement, ep_group))
        self.row_bytes = float(self.width * BYTES_PER_VALUE)
        self.gather_bytes = Tensor(np.array([0.0, float(self.tp - 1), 0.0], np.float32))  # TP group: one node
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
            send_mask = (self.positions < send_fill.reshape(ep, per, 1, 1)).astype(ms.float32)
            recv_mask = (self.positions < recv_fill.reshape(ep, per, 1, 1)).astype(ms.float32)
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
        if self.count_aware:
            out_rows = send_fill.sum(axis=1)                              # to each destination, dispatch
            back_rows = recv_fill.sum(axis=1)                             # to each source, combine
        else:
            out_rows = ops.fill(ms.float32, (self.ep,), float(self.per * self.capacity))
            back_rows = out_rows
        rows = (out_rows + back_rows).reshape(self.ep, 1)
        exchanged = (rows * self.kinds).sum(axis=0) * self.row_bytes
        if not self.groupwise:
            return exchanged
        # All-Gather: my received slices (dispatch) and returned slices (combine) go to the t-1 other TP ranks
        gathered_rows = recv_fill.sum() + send_fill.sum() if self.count_aware else \
            float(2 * self.ep * self.per * self.capacity)
        return exchanged + self.gather_bytes * gathered_rows * self.row_bytes


def build_exchange(placement: Placement, experts: nn.Cell, expert_num: int, capacity: int, hidden: int,
                   mode: str, chunks: int, count_aware: bool) -> nn.Cell:
    """The exchange for this process: LocalExchange in one process, ExpertExchange across ranks."""
    if not placement.distributed:
        return LocalExchange(experts)
    return ExpertExchange(placement, experts, expert_num, capacity, hidden, mode, chunks, count_aware)
