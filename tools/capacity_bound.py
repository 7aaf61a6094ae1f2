#!/usr/bin/env python3
"""Critical expert capacity (LocMoE, Theorem 1): ec_min = 1 / (n * p_delta).

p_delta = 1 - I_{delta^2}(1/2, (d-1)/2) is the probability that a token drawn uniformly on the unit sphere of
R^d has |cos| >= delta with a gating row; I is the regularised incomplete beta (scipy.special.betainc). The
paper's large-d form replaces p_delta with erfc(sqrt(delta^2 d / (2 - delta^2))).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locmoe_ms.errors import ArgumentParser, UserInputError, exits_on_bad_input  # noqa: E402
from locmoe_ms.moe.capacity_bound import (assignment_probability, critical_capacity,  # noqa: E402
                                    log10_assignment_probability_large_d)

CAVEATS = """caveats:
  - It is a lower bound on an expected value under assumptions that real activations break: tokens uniform on the
    unit sphere, orthogonal gating rows of equal norm (GrAP gives both of the latter), a hard cosine threshold delta.
  - It is vacuous once n * p_delta > 1 (ec_min < 1 slot): any capacity of one or more satisfies it.
  - At the paper's delta = 0.03 with d = 5120 and n = 16 it is about 2 tokens per expert: far below any capacity
    used in practice, so it says little about how far the capacity factor can really be lowered.
  - delta is measurable on a trained model: the cosine between tokens and the gating row of their expert.
"""


def _positive(name: str, value: float, integer: bool = False) -> None:
    if not math.isfinite(value) or value <= 0 or (integer and value != int(value)):
        raise UserInputError(f"--{name} = {value}: must be a positive {'integer' if integer else 'number'}")


def _tokens(value: float) -> str:
    if not math.isfinite(value):
        return "unbounded (> 1e308)"
    return f"{value:.4f}" if value < 1e6 else f"{value:.4g}"


def _power(log10: float) -> str:
    """10**log10 as a readable number, also far outside float64's range."""
    if abs(log10) < 300:
        return f"{10.0 ** log10:.6g}"
    exponent = math.floor(log10)
    return f"{10.0 ** (log10 - exponent):.4f}e{exponent}"


@exits_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="capacity_bound.py", description=__doc__, epilog=CAVEATS,
                            formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    parser.add_argument("--delta", type=float, required=True, help="cosine threshold, 0 < delta < 1 (paper: 0.03)")
    parser.add_argument("--hidden", type=int, required=True, help="token dimension d (PanGu-Sigma: 5120)")
    parser.add_argument("--experts", type=int, required=True, help="number of experts n (paper: 16)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    _positive("hidden", args.hidden, integer=True)
    _positive("experts", args.experts, integer=True)
    if not 0 < args.delta < 1:
        raise UserInputError(f"--delta = {args.delta}: must be strictly between 0 and 1")
    if args.hidden < 2:
        raise UserInputError(f"--hidden = {args.hidden}: must be >= 2")
    exact, approx = critical_capacity(args.delta, args.hidden, args.experts)
    log10_p_erfc = log10_assignment_probability_large_d(args.delta, args.hidden)
    result = {
        "delta": args.delta, "hidden": args.hidden, "experts": args.experts,
        "p_delta_betainc": assignment_probability(args.delta, args.hidden),
        "log10_p_delta_erfc": log10_p_erfc,
        # JSON has no infinity: null where the bound exceeds float64's range
        "ec_min_betainc": exact if math.isfinite(exact) else None,
        "log10_ec_min_erfc": -math.log10(args.experts) - log10_p_erfc,
        "ec_min_erfc": approx if math.isfinite(approx) else None,
        "vacuous": exact < 1.0,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"delta={args.delta} d={args.hidden} n={args.experts}")
    print(f"p_delta (incomplete beta) = {result['p_delta_betainc']:.6g}   ec_min = {_tokens(exact)} tokens per "
          f"expert")
    print(f"p_delta (erfc, large d)   = {_power(log10_p_erfc)}   ec_min = "
          f"{_tokens(approx) if math.isfinite(approx) else _power(result['log10_ec_min_erfc'])} tokens per expert")
    if result["vacuous"]:
        print("note: ec_min < 1, so the bound is vacuous here (n * p_delta > 1)")
    if not math.isfinite(exact):
        print("note: p_delta is below float64's range (1e-308): no capacity a cluster can hold meets the bound")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
