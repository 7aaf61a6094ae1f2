"""What the LocMoE paper (arXiv 2401.13920) reports about speed, for tools/cluster_model.py --paper.

Only numbers stated in the text: Figures 2, 7, 10 and 11 are images without values.
"""
from __future__ import annotations

CLUSTERS = (64, 128, 256)
ROUTERS = ("switch", "hash", "locmoe")

# All-to-All share of the training time of PanGu-Sigma (section 1; the router is not named)
ALL_TO_ALL_SHARE = {128: 0.1810, 256: 0.2874}
# LocMoE's step-time reduction against a baseline. 64N: Figure 7's average speed-ups 1.15x (Hash) and 1.29x
# (Switch) as 1 - 1/x; the abstract's range 12.68%..22.24% per epoch matches them. 256N: "its performance does
# not surpass the HashMoE" (section 4.2), i.e. a reduction <= 0 against Hash.
REDUCTION = {(64, "hash"): 1 - 1 / 1.15, (64, "switch"): 1 - 1 / 1.29}
REDUCTION_RANGE = (0.1268, 0.2224)
NOT_FASTER = {(256, "hash")}
ALL_TO_ALL_TIME_CUT = 0.0513  # "the time consumption of All-to-All communication decreases by 5.13%"


def paper_reduction(cluster: int, router: str) -> str:
    if (cluster, router) in REDUCTION:
        return f"{REDUCTION[(cluster, router)]:.1%}"
    if (cluster, router) in NOT_FASTER:
        return "<= 0"
    return "-"


def paper_share(cluster: int) -> str:
    return f"{ALL_TO_ALL_SHARE[cluster]:.1%}" if cluster in ALL_TO_ALL_SHARE else "-"
