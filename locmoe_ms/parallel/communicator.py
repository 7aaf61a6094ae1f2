"""Collectives behind one interface, chosen by parallel_config.communicator (README.md: "Several processes").

Each method returns a Cell for one group of ranks (a tuple of world ranks that contains this rank):
- all_to_all(group):  [g, *s] -> [g, *s]; row i of the result is row `group.index(me)` of rank group[i]'s input.
- all_gather(group):  [*s] -> [g, *s]; row i is rank group[i]'s input.
- all_reduce(group):  [*s] -> [*s]; the sum over the group.
Backward passes are the adjoints: all_to_all for all_to_all, a reduce-scatter (sum) for all_gather, all_reduce for
all_reduce, so gradients through an exchange are exact.

`local` is one process (world 1, identities). `hccl` uses MindSpore's AlltoAll/AllGather/AllReduce on groups made
with create_group (Ascend; never run on Ascend hardware here). `cpu` runs under msrun on CPU, where MindSpore 2.10
only has world-group AllGather/AllReduce: it emulates the group collectives exactly on top of a world AllGather
(pure data movement, so results are bit-for-bit those of the real collective) with custom backward passes.
"""
from __future__ import annotations

import numpy as np
from mindspore import Tensor, nn, ops

from locmoe_ms.errors import UserInputError

Group = tuple[int, ...]


class Identity(nn.Cell):
    def construct(self, x):
        return x


class _Stack1(nn.Cell):
    """all_gather / all_to_all in a group of one: add or keep the leading group axis."""

    def __init__(self, add_axis: bool):
        super().__init__()
        self.add_axis = add_axis

    def construct(self, x):
        return ops.expand_dims(x, 0) if self.add_axis else x


class Communicator:
    """One process's view of the job: its rank, the world size and group collectives."""

    name = "base"

    def __init__(self, rank: int, world: int):
        self.rank = rank
        self.world = world

    def _check(self, group: Group) -> None:
        if self.rank not in group:
            raise ValueError(f"rank {self.rank} is not in group {group}")

    def all_to_all(self, group: Group) -> nn.Cell:
        raise NotImplementedError

    def all_gather(self, group: Group) -> nn.Cell:
        raise NotImplementedError

    def all_reduce(self, group: Group) -> nn.Cell:
        raise NotImplementedError


class LocalCommunicator(Communicator):
    """One process: every group is (0,)."""

    name = "local"

    def __init__(self):
        super().__init__(0, 1)

    def all_to_all(self, group: Group) -> nn.Cell:
        self._check(group)
        return _Stack1(add_axis=False)

    def all_gather(self, group: Group) -> nn.Cell:
        self._check(group)
        return _Stack1(add_axis=True)

    def all_reduce(self, group: Group) -> nn.Cell:
        self._check(group)
        return Identity()


# ---- cpu: emulation over the world group ---------------------------------------------------------------------

class _WorldGather(nn.Cell):
    """[*s] -> [world, *s] with the world AllGather (MindSpore concatenates along axis 0)."""

    def __init__(self, world: int):
        super().__init__()
        self.world = world
        self.gather = ops.AllGather()

    def construct(self, x):
        flat = self.gather(ops.expand_dims(x, 0))
        return flat.reshape((self.world,) + x.shape)


class EmulatedAllToAll(nn.Cell):
    """out[i] = input of rank group[i], row pos(me); its own adjoint, so the backward is the same exchange."""

    def __init__(self, world: int, rank: int, group: Group):
        super().__init__()
        self.gather = _WorldGather(world)
        self.sources = Tensor(np.array(group, np.int32))
        self.me = Tensor(np.array(group.index(rank), np.int32))

    def _exchange(self, x):
        every = self.gather(x)                                    # [world, g, *s]
        mine = ops.gather(every, self.me, 1)                      # [world, *s]: what each rank sends to me
        return ops.gather(mine, self.sources, 0)                  # [g, *s]

    def construct(self, x):
        return self._exchange(x)

    def bprop(self, x, out, dout):
        return (self._exchange(dout),)


class EmulatedAllGather(nn.Cell):
    """out[i] = input of rank group[i]; backward: the sum over the group of each rank's gradient for my row."""

    def __init__(self, world: int, rank: int, group: Group):
        super().__init__()
        self.gather = _WorldGather(world)
        self.members = Tensor(np.array(group, np.int32))
        self.me = Tensor(np.array(group.index(rank), np.int32))

    def construct(self, x):
        return ops.gather(self.gather(x), self.members, 0)

    def bprop(self, x, out, dout):
        every = ops.gather(self.gather(dout), self.members, 0)    # [g, g, *s]: each member's gradient
        return (ops.gather(every, self.me, 1).sum(axis=0),)


class EmulatedAllReduce(nn.Cell):
    """Sum over a sub-group; backward: the same sum of the gradients."""

    def __init__(self, world: int, group: Group):
        super().__init__()
        self.gather = _WorldGather(world)
        self.members = Tensor(np.array(group, np.int32))

    def _sum(self, x):
        return ops.gather(self.gather(x), self.members, 0).sum(axis=0)

    def construct(self, x):
        return self._sum(x)

    def bprop(self, x, out, dout):
        return (self._sum(dout),)


class WorldAllReduce(nn.Cell):
    def __init__(self, group: str | None = None):
        super().__init__()
        self.reduce = ops.AllReduce() if group is None else ops.AllReduce(group=group)

    def construct(self, x):
        return self.reduce(x)


class CpuCommunicator(Communicator):
    """msrun on CPU: group collectives emulated on world AllGather; world sums use AllReduce directly."""

    name = "cpu"

    def all_to_all(self, group: Group) -> nn.Cell:
        self._check(group)
        return _Stack1(False) if len(group) == 1 else EmulatedAllToAll(self.world, self.rank, group)

    def all_gather(self, group: Group) -> nn.Cell:
        self._check(group)
        return _Stack1(True) if len(group) == 1 else EmulatedAllGather(self.world, self.rank, group)

    def all_reduce(self, group: Group) -> nn.Cell:
        self._check(group)
        if len(group) == 1:
            return Identity()
        if tuple(group) == tuple(range(self.world)):
            return WorldAllReduce()
        return EmulatedAllReduce(self.world, group)


# ---- hccl: the real collectives on created groups (Ascend) -------------------------------------------------

class _HcclAllToAll(nn.Cell):
    def __init__(self, size: int, group: str):
        super().__init__()
        self.exchange = ops.AlltoAll(split_count=size, split_dim=0, concat_dim=0, group=group)

    def construct(self, x):
        return self.exchange(x)


class _HcclAllGather(nn.Cell):
    def __init__(self, size: int, group: str):
        super().__init__()
        self.size = size
        self.gather = ops.AllGather(group=group)

    def construct(self, x):
        return self.gather(ops.expand_dims(x, 0)).reshape((self.size,) + x.shape)


class HcclCommunicator(Communicator):
    """Ascend: AlltoAll / AllGather / AllReduce on groups made with create_group (their built-in backward passes)."""

    name = "hccl"

    def __init__(self, rank: int, world: int):
        super().__init__(rank, world)
        self._groups: dict[Group, str] = {}

    def _group_name(self, group: Group) -> str | None:
        if tuple(group) == tuple(range(self.world)):
            return None
        if group not in self._groups:
            from mindspore.communication import create_group
            name = "locmoe_" + "_".join(map(str, group))
            create_group(name, list(group))
            self._groups[group] = name
        return self._groups[group]

    def all_to_all(self, group: Group) -> nn.Cell:
        self._check(group)
        if len(group) == 1:
            return _Stack1(False)
        name = self._group_name(group)
        return _HcclAllToAll(len(group), name if name else "hccl_world_group")

    def all_gather(self, group: Group) -> nn.Cell:
        self._check(group)
        if len(group) == 1:
            return _Stack1(True)
        name = self._group_name(group)
        return _HcclAllGather(len(group), name if name else "hccl_world_group")

    def all_reduce(self, group: Group) -> nn.Cell:
        self._check(group)
        return Identity() if len(group) == 1 else WorldAllReduce(self._group_name(group))


def build_communicator(kind: str, expected_world: int) -> Communicator:
    """The communicator named by parallel_config.communicator; `cpu`/`hccl` initialise MindSpore's collectives."""
    if kind == "local":
        return LocalCommunicator()
    from mindspore.communication import get_group_size, get_rank, init
    try:
        init()
    except Exception as err:  # MindSpore raises RuntimeError with a multi-line message outside msrun
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserInputError(f"parallel_config.communicator = {kind!r}: could not initialise the collectives "
                             f"({first}); start the job with msrun or a launcher from scripts/") from None
    rank, world = get_rank(), get_group_size()
    if world != expected_world:
        raise UserInputError(f"parallel_config.nodes * devices_per_node = {expected_world}: the job has {world} "
                             f"ranks; they must be equal")
    return (CpuCommunicator if kind == "cpu" else HcclCommunicator)(rank, world)
