"""Expert capacity arithmetic: slots per expert and per (token group, expert).

Pure arithmetic on the config's numbers, on the floor just above config.py's data classes: the config rules
(auto mode's capacity per token group), the MoE layer, the shard strategies and the cluster model all call it.
Imports nothing of the package.
"""
from __future__ import annotations

import math


def expert_capacity(tokens: int, capacity_factor: float, expert_parallel: int, experts: int,
                    min_capacity: int = 1) -> int:
    """Slots per expert for one token source: ceil(tokens * cf / (ep * n)), at least `min_capacity`.

    `tokens` counts the tokens of the ep sources that exchange with each other, so ep * n is the number of
    (source, expert) pairs sharing them.
    """
    return max(min_capacity, math.ceil(tokens * capacity_factor / (expert_parallel * experts)))


def group_capacity(tokens_per_group: int, moe, expert_parallel: int) -> int:
    """Slots per (token group, expert) for moe_config `moe`: the expert_parallel token groups that exchange with
    each other hold expert_parallel * tokens_per_group tokens (MoELayer, the config rules and the strategies)."""
    return expert_capacity(tokens_per_group * expert_parallel, moe.capacity_factor, expert_parallel, moe.expert_num,
                           moe.min_capacity)
