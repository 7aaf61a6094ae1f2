#!/usr/bin/env python3
"""One MoE layer forward+backward against a dense FFN of the same per-token FLOPs, per router, and the gate alone
(GrAP against dense), all in one process and interleaved step by step so machine noise hits every candidate alike.

Default shape (issue #2): 8 experts, hidden 512, ffn 2048, top-1, capacity factor 1.25, 2048 tokens, fp32, GRAPH.
Prints the median milliseconds of each candidate and the ratios MoE/dense and GrAP/dense gate (the gates also at
PanGu-Sigma's hidden 5120 with 16 experts).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402
from mindspore import Tensor, nn  # noqa: E402

from locmoe_ms.config import ROUTER_GATES, config_from_dict  # noqa: E402
from locmoe_ms.errors import ArgumentParser, UserInputError, exits_on_bad_input  # noqa: E402
from locmoe_ms.layers import FeedForward  # noqa: E402
from locmoe_ms.moe.gates import DenseGate, GrAPGate  # noqa: E402
from locmoe_ms.moe.layer import MoELayer  # noqa: E402
from locmoe_ms.parallel.placement import Placement
from locmoe_ms.parallel.topology import Topology  # noqa: E402
from locmoe_ms.paths import output_file  # noqa: E402


PANGU_HIDDEN, PANGU_EXPERTS = 5120, 16


class ForwardBackward(nn.Cell):
    """The value of sum(out * upstream) (+ router losses) and its gradients w.r.t. the input and every parameter.

    The value is returned on purpose: if only gradients were returned, the compiler would drop forward ops whose
    output no gradient needs (the last matmul of a dense FFN, or of an MoE layer whose router score is constant),
    and the comparison would no longer be the one a training step makes.
    """

    def __init__(self, net: nn.Cell, is_moe: bool):
        super().__init__()
        self.net = net
        self.is_moe = is_moe
        self.weights = ms.ParameterTuple(net.trainable_params())
        self.value_and_grad = ms.value_and_grad(self.objective, grad_position=0, weights=self.weights)

    def objective(self, x, upstream, token_ids, domain_ids):
        if self.is_moe:
            y, aux, loc, *_ = self.net(x, token_ids, domain_ids)
            return (y * upstream).sum() + aux + loc
        return (self.net(x) * upstream).sum()

    def construct(self, x, upstream, token_ids, domain_ids):
        value, (grad_x, _) = self.value_and_grad(x, upstream, token_ids, domain_ids)
        return value, grad_x[0, 0]


class GateOnly(nn.Cell):
    def __init__(self, gate: nn.Cell):
        super().__init__()
        self.gate = gate
        self.weights = ms.ParameterTuple(gate.trainable_params())
        self.value_and_grad = ms.value_and_grad(self.objective, grad_position=0, weights=self.weights)

    def objective(self, x, upstream):
        return (self.gate(x)[0] * upstream).sum()

    def construct(self, x, upstream):
        value, (grad_x, _) = self.value_and_grad(x, upstream)
        return value, grad_x[0, 0]


def layer_config(router: str, hidden: int, ffn: int, experts: int, capacity_factor: float, activation: str):
    return config_from_dict({
        "model": {"hidden_size": hidden, "num_heads": 1, "ffn_hidden_size": ffn, "activation": activation,
                  "seq_length": 2, "num_layers": 1, "sparse_layers": [0]},
        "moe_config": {"expert_num": experts, "router": router, "capacity_factor": capacity_factor},
        "parallel_config": {"nodes": 1, "devices_per_node": 1, "data_parallel": 1, "expert_parallel": 1},
        "train": {"batch_size": 1},
    })


def sync(outputs) -> None:
    """Wait for the results (and so for the whole step)."""
    for out in outputs:
        out.asnumpy()


def measure(candidates: dict, steps: int, warmup: int, burst: int = 3) -> dict[str, float]:
    """Median ms per candidate. Each step runs every candidate, in a new random order, `burst` times back to back
    and times all but the first call: with a fixed order and single calls, the candidate that followed the largest
    one paid for its cold caches (the GrAP gate, listed first, looked 1.4x slower than the dense gate)."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in candidates}
    order = np.random.default_rng(0)
    for _ in range(steps):
        for name in order.permutation(list(candidates)):
            fn = candidates[name]
            fn()
            start = time.perf_counter()
            for _ in range(burst - 1):
                fn()
            times[name].append((time.perf_counter() - start) * 1e3 / (burst - 1))
    return {name: float(np.median(t)) for name, t in times.items()}


@exits_on_bad_input
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="bench_moe_layer.py", description=__doc__)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--ffn", type=int, default=2048)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--capacity-factor", type=float, default=1.25)
    p.add_argument("--activation", default="gelu", choices=("gelu", "gelu_tanh", "fast_gelu", "relu"))
    p.add_argument("--routers", default=",".join(ROUTER_GATES), help="comma-separated subset of routers")
    p.add_argument("--steps", type=int, default=20, help="timed steps per candidate (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--mode", default="graph", choices=("graph", "pynative"))
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = p.parse_args(argv)
    routers = [r for r in args.routers.split(",") if r]
    for r in routers:
        if r not in ROUTER_GATES:
            raise UserInputError(f"--routers: {r!r} is not a router; allowed: {', '.join(ROUTER_GATES)}")
    for name in ("tokens", "hidden", "ffn", "experts", "steps"):
        if getattr(args, name) < 1:
            raise UserInputError(f"--{name} = {getattr(args, name)}: must be >= 1")
    if args.warmup < 0:
        raise UserInputError(f"--warmup = {args.warmup}: must be >= 0")
    if args.capacity_factor <= 0:
        raise UserInputError(f"--capacity-factor = {args.capacity_factor}: must be > 0")
    if args.hidden < args.experts:
        raise UserInputError(f"--hidden = {args.hidden}: the GrAP gate needs hidden >= --experts ({args.experts})")
    if args.json:
        output_file(args.json, "--json")

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE if args.mode == "graph" else ms.PYNATIVE_MODE)
    ms.set_seed(0)
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(0, 1, (args.tokens, args.hidden)).astype(np.float32))
    upstream = Tensor(rng.normal(0, 1, (args.tokens, args.hidden)).astype(np.float32))
    ids = Tensor(rng.integers(0, 50257, args.tokens).astype(np.int32))
    domains = Tensor(np.zeros(args.tokens, np.int32))

    candidates, capacity, routing = {}, None, {}
    dense = ForwardBackward(FeedForward(args.hidden, args.ffn, args.activation, 0.02), is_moe=False)
    candidates["dense FFN"] = lambda: sync(dense(x, upstream, ids, domains))
    for router in routers:
        cfg = layer_config(router, args.hidden, args.ffn, args.experts, args.capacity_factor, args.activation)
        layer = MoELayer(cfg, Placement(Topology.from_config(cfg)), args.tokens)
        capacity = layer.capacity
        _, _, _, load, dropped, *_ = layer(x, ids, domains)
        routing[router] = (float(np.minimum(load.asnumpy(), capacity).sum()) / (capacity * args.experts),
                           float(dropped.asnumpy()))
        step = ForwardBackward(layer, is_moe=True)
        candidates[f"MoE {router}"] = lambda step=step: sync(step(x, upstream, ids, domains))
    # The gates at this layer's size, and at PanGu-Sigma's (d = 5120, 16 experts) where the dense gate's
    # O(T*d*n) matmul is no longer hidden behind per-op overhead.
    for hidden, experts in ((args.hidden, args.experts), (PANGU_HIDDEN, PANGU_EXPERTS)):
        gx = x if hidden == args.hidden else Tensor(rng.normal(0, 1, (args.tokens, hidden)).astype(np.float32))
        gup = Tensor(rng.normal(0, 1, (args.tokens, experts)).astype(np.float32))
        for kind, gate in (("GrAP", GrAPGate(hidden, experts)), ("dense", DenseGate(hidden, experts))):
            cell = GateOnly(gate)
            candidates[f"gate {kind} {hidden}x{experts}"] = lambda cell=cell, gx=gx, gup=gup: sync(cell(gx, gup))

    print(f"tokens={args.tokens} hidden={args.hidden} ffn={args.ffn} experts={args.experts} "
          f"capacity_factor={args.capacity_factor} (capacity {capacity}/expert) activation={args.activation} "
          f"mode={args.mode} steps={args.steps} (median after {args.warmup} warm-up), forward+backward, fp32",
          flush=True)
    ms_per = measure(candidates, args.steps, args.warmup)
    base = ms_per["dense FFN"]
    print(f"{'candidate':<22} {'ms':>9}  ratio")
    for name, value in ms_per.items():
        is_gate = name.startswith("gate")
        ref = ms_per[name.replace("GrAP", "dense")] if is_gate else base
        label = "vs dense gate" if is_gate else "vs dense FFN"
        router = name.removeprefix("MoE ")
        fill = (f"  (slots filled {routing[router][0]:.0%}, tokens dropped {routing[router][1]:.1%})"
                if router in routing else "")
        print(f"{name:<22} {value:9.2f}  {value / ref:5.3f} {label}{fill}")
    print("note: empty slots are zeros, and the exact GeLU is about twice as fast on zeros on this CPU, so a router\n"
          "that fills fewer slots (at random initialisation) gets a cheaper step; compare the fill column too.")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "capacity": capacity, "median_ms": ms_per, "routing_fill_dropped": routing}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
