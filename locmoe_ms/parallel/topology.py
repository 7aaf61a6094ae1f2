"""Cluster topology: nodes x devices per node, data/tensor/expert groups, expert placement, where tokens live.

Ranks are numbered node by node. Tensor-parallel groups are `model_parallel` consecutive ranks (inside one node);
data-parallel index j = rank // model_parallel owns batch rows [j*B/dp, (j+1)*B/dp) and is one *token group*.
Expert-parallel rank of a device = j % expert_parallel; it holds experts [k*n/ep, (k+1)*n/ep). In one process the
same object describes a *virtual* cluster, so routing statistics and the locality loss equal the cluster's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from locmoe_ms.errors import UserInputError


@dataclass(frozen=True)
class Topology:
    nodes: int
    devices_per_node: int
    expert_num: int
    model_parallel: int = 1
    expert_parallel: int = 1
    placement: tuple[tuple[int, ...], ...] | None = None  # optional explicit expert -> devices holding a copy

    def __post_init__(self) -> None:
        # invariants; the user-facing rules on these sizes are config.check_parallel_sizes (one place for all)
        assert self.devices_per_node % self.model_parallel == 0, "a tensor-parallel group must stay in a node"
        assert self.token_groups % self.expert_parallel == 0 and self.expert_num % self.expert_parallel == 0
        if self.placement is not None and len(self.placement) != self.expert_num:
            raise UserInputError(f"placement has {len(self.placement)} entries: need one per expert ({self.expert_num})")

    @classmethod
    def from_config(cls, cfg) -> "Topology":
        par = cfg.parallel_config
        return cls(par.nodes, par.devices_per_node, cfg.moe_config.expert_num, par.model_parallel, par.expert_parallel)

    def check_rank_table(self, path: str) -> None:
        """The rank table a launcher exported must describe this cluster: nodes servers of devices_per_node each."""
        from locmoe_ms.cluster.rank_table import load_rank_table

        table = load_rank_table(path)
        per_server = sorted({len(server["device"]) for server in table["server_list"]})
        servers = len(table["server_list"])
        if servers != self.nodes or per_server != [self.devices_per_node]:
            raise UserInputError(f"RANK_TABLE_FILE {path}: {servers} servers with {per_server} devices each; "
                                 f"parallel_config asks for nodes = {self.nodes} with devices_per_node = "
                                 f"{self.devices_per_node}")

    @property
    def world(self) -> int:
        return self.nodes * self.devices_per_node

    @property
    def token_groups(self) -> int:
        """Data-parallel size: groups of devices that hold distinct tokens."""
        return self.world // self.model_parallel

    def node_of_rank(self, rank: int) -> int:
        return rank // self.devices_per_node

    # ---- the groups of one rank, as tuples of world ranks (ranks are numbered node by node) ----
    def tensor_group(self, rank: int) -> tuple[int, ...]:
        """Ranks that share rank's tokens (tensor/model parallel), consecutive inside one node."""
        start = rank - rank % self.model_parallel
        return tuple(range(start, start + self.model_parallel))

    def data_group(self, rank: int) -> tuple[int, ...]:
        """One rank per token group, with rank's tensor-parallel index: sums over it count every token once."""
        return tuple(g * self.model_parallel + rank % self.model_parallel for g in range(self.token_groups))

    def expert_group(self, rank: int) -> tuple[int, ...]:
        """The expert_parallel ranks rank exchanges tokens with (same tensor-parallel index), in expert-block order."""
        mp, ep = self.model_parallel, self.expert_parallel
        first = (rank // mp) // ep * ep
        return tuple((first + k) * mp + rank % mp for k in range(ep))

    def expert_replica_group(self, rank: int) -> tuple[int, ...]:
        """Every rank holding the same expert block as rank (data-parallel and tensor-parallel copies)."""
        block = self.expert_block(rank)
        return tuple(r for r in range(self.world) if self.expert_block(r) == block)

    def expert_block(self, rank: int) -> int:
        """Expert-parallel rank: which block of expert_num / expert_parallel experts rank holds."""
        return (rank // self.model_parallel) % self.expert_parallel

    def token_group_of_rank(self, rank: int) -> int:
        return rank // self.model_parallel

    def node_of_group(self, group: int) -> int:
        return self.node_of_rank(group * self.model_parallel)

    def experts_of_rank(self, rank: int) -> list[int]:
        if self.placement is not None:
            return [e for e, devs in enumerate(self.placement) if rank in devs]
        per = self.expert_num // self.expert_parallel
        block = self.expert_block(rank)
        return list(range(block * per, (block + 1) * per))

    def node_expert_mask(self) -> np.ndarray:
        """[nodes, experts] True where a copy of the expert is resident on the node."""
        mask = np.zeros((self.nodes, self.expert_num), dtype=bool)
        for rank in range(self.world):
            mask[self.node_of_rank(rank), self.experts_of_rank(rank)] = True
        return mask

    def group_local_mask(self) -> np.ndarray:
        """[token_groups, experts] True where the expert is on the token group's node."""
        nodes = self.node_expert_mask()
        return np.stack([nodes[self.node_of_group(g)] for g in range(self.token_groups)])

    def locality_target(self, eps: float) -> tuple[np.ndarray, np.ndarray]:
        """Per token group: D = (1-eps)*uniform(local experts) + eps*uniform(all), and whether any expert is local."""
        local = self.group_local_mask().astype(np.float64)
        count = local.sum(axis=1, keepdims=True)
        has_local = count[:, 0] > 0
        uniform_local = np.divide(local, count, out=np.zeros_like(local), where=count > 0)
        target = (1.0 - eps) * uniform_local + eps / self.expert_num
        target[~has_local] = 1.0 / self.expert_num
        return target.astype(np.float32), has_local.astype(np.float32)
