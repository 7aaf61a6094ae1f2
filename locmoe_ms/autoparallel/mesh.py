"""The device mesh of auto mode: (dp, mp, ep) sizes and the layout notation of the op table (autoparallel/table.py).

Devices form one mesh ("edp", "ep", "mp") of sizes (dp/ep, ep, mp), numbered row-major as MindSpore numbers a
device matrix: rank = (edp_index * ep + ep_index) * mp + mp_index. That is Topology's numbering: tensor-parallel
groups are mp consecutive ranks, token group j = rank // mp, expert block j % ep. Data parallel "dp" is the two
outer axes together. A dimension is written `symbol[:axes]` ("B:dp S h" = batch split over dp).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

MESH_AXES = ("edp", "ep", "mp")
ALIASES = {"dp": ("edp", "ep"), "edp": ("edp",), "ep": ("ep",), "mp": ("mp",)}

Dim = tuple[str, tuple[str, ...]]  # (size symbol, mesh axes splitting it, outermost first)
TensorLayout = tuple[Dim, ...]


@dataclass(frozen=True)
class ParallelSizes:
    dp: int
    mp: int
    ep: int

    @classmethod
    def from_config(cls, cfg) -> "ParallelSizes":
        par = cfg.parallel_config
        return cls(par.data_parallel, par.model_parallel, par.expert_parallel)

    @property
    def devices(self) -> int:
        return self.dp * self.mp

    @property
    def edp(self) -> int:
        """Expert data parallel: copies of every expert (dp / ep)."""
        return self.dp // self.ep

    def axis(self, name: str) -> int:
        return {"edp": self.edp, "ep": self.ep, "mp": self.mp}[name]

    def split(self, axes: tuple[str, ...]) -> int:
        return prod(self.axis(a) for a in axes)

    def coordinates(self, rank: int) -> dict[str, int]:
        """Mesh coordinates of a rank (MindSpore's row-major device matrix)."""
        return {"edp": rank // (self.ep * self.mp), "ep": rank // self.mp % self.ep, "mp": rank % self.mp}


def parse(spec: str) -> TensorLayout:
    """'B:dp S h:mp' -> (('B', ('edp', 'ep')), ('S', ()), ('h', ('mp',))); '' is a scalar."""
    dims = []
    for token in spec.split():
        sym, _, axes = token.partition(":")
        dims.append((sym, tuple(a for part in axes.split("+") if part for a in ALIASES[part])))
    return tuple(dims)


def show(layout: TensorLayout) -> str:
    return " ".join(sym + (":" + "+".join(axes) if axes else "") for sym, axes in layout) or "scalar"
