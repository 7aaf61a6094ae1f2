"""Domain-sharded batches (data.node_domains): the token groups of node n read only documents of one domain, as
PanGu-Sigma's clusters of domain data; the locality loss then has a reason to keep tokens on their node."""
from __future__ import annotations

import numpy as np

from locmoe_ms.config import Config
from locmoe_ms.data.corpus import DOMAIN_NAMES
from locmoe_ms.data.dataset import BatchStream
from locmoe_ms.data.packing import PackedSplit
from locmoe_ms.errors import UserInputError
from locmoe_ms.parallel.topology import Topology


def row_domains(cfg: Config) -> np.ndarray | None:
    """The domain id each row of a global batch reads (rows are ordered by token group within each micro-batch),
    or None for i.i.d. batches."""
    if not cfg.data.node_domains:
        return None
    topology = Topology.from_config(cfg)
    micro = cfg.micro_batch_size
    group_of_row = np.arange(cfg.train.batch_size) % micro // (micro // topology.token_groups)
    return np.array([cfg.data.node_domains[topology.node_of_group(int(g))] for g in group_of_row], np.int32)


def domain_name(domain: int) -> str:
    return DOMAIN_NAMES.get(domain, f"domain {domain}")


def domain_rows(split: PackedSplit, domain: int, name: str) -> PackedSplit:
    """The rows of one domain; none is a one-line error naming the domain and the split."""
    rows = split.domains == domain
    if not rows.any():
        raise UserInputError(f"data.node_domains: domain {domain} ({domain_name(domain)}) has no sequence in the "
                             f"{name} split")
    return PackedSplit(split.tokens[rows], split.domains[rows])


class DomainBatchStream:
    """Batches laid out by `layout` (row_domains): one shuffled BatchStream per domain fills that domain's rows.
    `state()` / `restore()` give the exact position of every domain's stream."""

    def __init__(self, split: PackedSplit, layout: np.ndarray, seed: int):
        self.layout = layout
        self.streams = {int(d): BatchStream(domain_rows(split, int(d), "train"), int((layout == d).sum()), seed,
                                            key=(int(d),)) for d in np.unique(layout)}

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        tokens = domains = None
        for d, stream in self.streams.items():
            part, part_domains = stream.next()
            if tokens is None:
                tokens = np.empty((len(self.layout), part.shape[1]), part.dtype)
                domains = np.empty(len(self.layout), part_domains.dtype)
            tokens[self.layout == d] = part
            domains[self.layout == d] = part_domains
        return tokens, domains

    def state(self) -> dict:
        return {str(d): stream.state() for d, stream in self.streams.items()}

    def restore(self, state: dict) -> None:
        for d, stream in self.streams.items():
            stream.restore(state[str(d)])
