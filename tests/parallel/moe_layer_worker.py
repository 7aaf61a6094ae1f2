"""One msrun worker: the expert-parallel MoE layer against the single-process layer on the same global batch.

Usage (under msrun): moe_layer_worker.py OUT_DIR MODEL_PARALLEL EXPERT_PARALLEL CASES [DIE_RANK]
CASES is a comma-separated list of ROUTER/EXCHANGE (EXCHANGE a key of EXCHANGES). Writes OUT_DIR/rank{r}.json
with, per case, the largest differences (output, loss, gradients) and the byte counters. With DIE_RANK, that rank exits with code 3 before
the first collective (the launcher must then fail, not hang).
"""
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402
from mindspore import Tensor, nn  # noqa: E402

from locmoe_ms.config import config_from_dict  # noqa: E402
from locmoe_ms.moe.layer import MoELayer  # noqa: E402
from locmoe_ms.parallel.communicator import build_communicator  # noqa: E402
from locmoe_ms.parallel.layout import expert_shard  # noqa: E402
from locmoe_ms.parallel.placement import Placement  # noqa: E402
from locmoe_ms.parallel.topology import Topology  # noqa: E402
from locmoe_ms.train.step import GradientReducer  # noqa: E402

TOKENS, HIDDEN, EXPERTS, VOCAB = 128, 16, 4, 64
# name -> (exchange, chunks, count_aware)
EXCHANGES = {"plain": ("plain", 1, False), "groupwise": ("groupwise", 1, False),
             "overlapped": ("groupwise", 3, False), "count_aware": ("groupwise", 2, True)}


class Objective(nn.Cell):
    """The global scalar sum(y * upstream) + aux + locality, the same value on every rank."""

    def __init__(self, layer: MoELayer, placement: Placement):
        super().__init__()
        self.moe = layer
        self.data_sum = placement.data_sum()
        self.group_mean = placement.group_mean()

    def construct(self, x, ids, domains, upstream):
        y, aux, loc, load, dropped, local, traffic = self.moe(x, ids, domains)
        return self.data_sum((y * upstream).sum()) + aux + self.group_mean(loc), y, traffic, load, dropped


def config(router: str, mp: int, ep: int, exchange: str, chunks: int, count_aware: bool):
    return config_from_dict({
        "model": {"hidden_size": HIDDEN, "num_heads": 2, "ffn_hidden_size": 32, "vocab_size": VOCAB,
                  "seq_length": 16, "num_layers": 2, "sparse_layers": [1]},
        "moe_config": {"expert_num": EXPERTS, "router": router, "capacity_factor": 1.0, "locality_loss_factor": 0.5,
                       "aux_loss_factor": 0.1},
        "parallel_config": {"nodes": 2, "devices_per_node": 2, "data_parallel": 4 // mp, "model_parallel": mp,
                            "expert_parallel": ep, "communicator": "cpu", "exchange": exchange,
                            "exchange_chunks": chunks, "count_aware": count_aware},
        "train": {"batch_size": 8},
    })


def worst(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) if np.size(a) else 0.0


def compare(cfg, comm, rng) -> dict:
    """Run the single-process layer and this rank's expert-parallel layer on the same global batch."""
    topology = Topology.from_config(cfg)
    x = rng.normal(0, 1, (TOKENS, HIDDEN)).astype(np.float32)
    ids = rng.integers(0, VOCAB, TOKENS).astype(np.int32)
    domains = np.zeros(TOKENS, np.int32)
    upstream = rng.normal(0, 1, (TOKENS, HIDDEN)).astype(np.float32)

    holder = nn.SequentialCell()  # a name prefix keeps its parameters apart from the rank layer's in GRAPH mode
    holder.reference = Objective(MoELayer(cfg, Placement(topology), TOKENS), Placement(topology))
    full = holder.reference
    for p in full.trainable_params():
        p.set_data(Tensor(rng.normal(0, 0.3, p.shape).astype(np.float32)))
    full_params = {p.name.split(".", 1)[1]: p.asnumpy() for p in full.trainable_params()}
    grad_full = ms.value_and_grad(full, (0,), full.trainable_params(), has_aux=True)
    (ref_loss, ref_y, _, ref_load, ref_dropped), (ref_gx, ref_gp) = grad_full(
        Tensor(x), Tensor(ids), Tensor(domains), Tensor(upstream))
    ref_grads = dict(zip(full_params, ref_gp))

    placement = Placement(topology, comm)
    rank = comm.rank
    rows = placement.batch_rows(TOKENS)
    mine = Objective(MoELayer(cfg, placement, rows.stop - rows.start), placement)
    block = topology.expert_block(rank)

    def own(name: str, value: np.ndarray) -> np.ndarray:
        return expert_shard(name, value, block, topology.expert_parallel)

    for p in mine.trainable_params():
        p.set_data(Tensor(own(p.name, full_params[p.name])))
    params = mine.trainable_params()
    grad_mine = ms.value_and_grad(mine, (0,), params, has_aux=True)
    (loss, y, traffic, load, dropped), (gx, gp) = grad_mine(
        Tensor(x[rows]), Tensor(ids[rows]), Tensor(domains[rows]), Tensor(upstream[rows]))
    gp = GradientReducer(params, placement)(gp)
    gx = comm.all_reduce(topology.tensor_group(rank))(gx) * (1.0 / comm.world)
    return {
        "loss": float(loss), "ref_loss": float(ref_loss),
        "output": worst(y.asnumpy(), ref_y.asnumpy()[rows]),
        "grad_x": worst(gx.asnumpy(), ref_gx.asnumpy()[rows]),
        "grads": {p.name: worst(g.asnumpy(), own(p.name, ref_grads[p.name].asnumpy())) for p, g in zip(params, gp)},
        "load": worst(load.asnumpy(), ref_load.asnumpy()),
        "dropped": float(dropped), "ref_dropped": float(ref_dropped),
        "bytes": traffic.asnumpy().tolist(), "ids": ids.tolist(), "capacity": mine.moe.capacity,
    }


def main() -> None:
    out_dir, mp, ep, cases = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
    die_rank = int(sys.argv[5]) if len(sys.argv) > 5 else -1
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    comm = build_communicator("cpu", 4)
    if comm.rank == die_rank:
        os._exit(3)
    results = {}
    for case in cases:
        router, name = case.split("/")
        cfg = config(router, mp, ep, *EXCHANGES[name])
        results[case] = compare(cfg, comm, np.random.default_rng(0))
    Path(out_dir, f"rank{comm.rank}.json").write_text(json.dumps({"rank": comm.rank, "results": results}))


if __name__ == "__main__":
    main()
