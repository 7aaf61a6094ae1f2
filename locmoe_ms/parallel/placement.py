"""What one process computes: the whole virtual cluster (one process) or one rank's share of a real job.

In one process every token group and every expert lives here and the communicator is `local`. Under msrun or a
launcher, rank r holds token group r // model_parallel (its rows of the global batch) and expert block
topology.expert_block(r); sums over the data group make statistics and losses global.
"""
from __future__ import annotations

from mindspore import Tensor, nn

from locmoe_ms.parallel.communicator import Communicator, LocalCommunicator
from locmoe_ms.parallel.topology import Topology


class Placement:
    def __init__(self, topology: Topology, comm: Communicator | None = None):
        self.topology = topology
        self.comm = comm or LocalCommunicator()
        if self.distributed and self.comm.world != topology.world:
            raise ValueError(f"{self.comm.world} ranks for a topology of {topology.world} devices")

    @property
    def distributed(self) -> bool:
        return self.comm.world > 1

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def token_groups(self) -> tuple[int, ...]:
        """Token groups (data-parallel ranks) whose tokens this process routes, in batch order."""
        if not self.distributed:
            return tuple(range(self.topology.token_groups))
        return (self.topology.token_group_of_rank(self.rank),)

    @property
    def experts(self) -> tuple[int, ...]:
        if not self.distributed:
            return tuple(range(self.topology.expert_num))
        return tuple(self.topology.experts_of_rank(self.rank))

    @property
    def batch_share(self) -> float:
        """Fraction of the global batch this process holds."""
        return len(self.token_groups) / self.topology.token_groups

    def global_tokens(self, tokens: int) -> int:
        """Tokens of the global batch, given the `tokens` this process holds."""
        return round(tokens / self.batch_share)

    def batch_rows(self, batch_size: int) -> slice:
        """The rows of a global batch that this process computes."""
        groups = self.topology.token_groups
        first, last = self.token_groups[0], self.token_groups[-1] + 1
        return slice(first * batch_size // groups, last * batch_size // groups)

    @property
    def label(self) -> str:
        if not self.distributed:
            return f"one process emulating {self.topology.world} devices"
        experts = self.experts
        return (f"rank {self.rank} of {self.comm.world} ({self.comm.name}): token group {self.token_groups[0]}, "
                f"experts {experts[0]}-{experts[-1]}, node {self.topology.node_of_rank(self.rank)}")

    def data_sum(self) -> nn.Cell:
        """Sum over the ranks that hold distinct tokens (identity in one process)."""
        return self.comm.all_reduce(self.topology.data_group(self.rank) if self.distributed else (0,))

    def group_mean(self) -> nn.Cell:
        """Mean over token groups of a per-process value (identity in one process)."""
        return GroupMean(self.data_sum(), self.topology.token_groups if self.distributed else 1)


class GroupMean(nn.Cell):
    def __init__(self, data_sum: nn.Cell, groups: int):
        super().__init__()
        self.data_sum = data_sum
        self.scale = 1.0 / groups

    def construct(self, x: Tensor) -> Tensor:
        return self.data_sum(x) * self.scale
