"""Ascend dry run: the real training step compiled for one rank of a virtual cluster (tools/ascend_dryrun.py).

Stand-in CANN libraries only let MindSpore's Ascend plugin load; the layouts and collectives checked here come from
MindSpore's compiler (parameter_layout_dict, the step_parallel_end / validate IR). Expectations are written by hand
or computed from parallel/layout.py and Topology, never taken from the tool's own checks. Each compile runs in a
subprocess with a timeout. Run with: pytest -m ascend_dryrun tests/autoparallel/test_ascend_dryrun.py
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from locmoe_ms.config import load_config
from locmoe_ms.parallel.layout import parameter_split
from locmoe_ms.parallel.topology import Topology
from tests.conftest import MISSING, dryrun

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "ascend_dryrun.py"
pytestmark = [pytest.mark.ascend_dryrun,
              pytest.mark.skipif(bool(MISSING), reason=f"building stand-in CANN libraries needs {', '.join(MISSING)}")]

# 2 nodes x 8, tp 2, ep 8 (the explicit-mode job of the Ascend issue), small enough to compile in seconds
EXPLICIT = ["--devices", "16", "--mode", "explicit", "--set", "model.num_layers=2", "--set", "model.sparse_layers=[1]",
            "--set", "model.seq_length=64", "--set", "model.vocab_size=1024", "--set", "data.vocab_limit=1024",
            "--set", "parallel_config.devices_per_node=8", "--set", "parallel_config.data_parallel=8",
            "--set", "parallel_config.model_parallel=2", "--set", "parallel_config.expert_parallel=8",
            "--set", "parallel_config.exchange=groupwise", "--set", "train.batch_size=16"]
# 8 devices, tp 2, ep 4 (one node of 8 would make every group intra-node; 2 x 4 keeps the nodes apart)
AUTO = ["--devices", "8", "--mode", "auto", "--set", "parallel_config.model_parallel=2",
        "--set", "parallel_config.data_parallel=4", "--set", "parallel_config.expert_parallel=4",
        "--set", "parallel_config.exchange=groupwise"]
# moe_config's off-by-default router health options, all on (docs/results: the health suite)
HEALTH = ["--set", "moe_config.grap_relu=false", "--set", "moe_config.z_loss_factor=0.001",
          "--set", "moe_config.router_jitter=0.01", "--set", "moe_config.bias_balance_rate=0.001"]


def groups(result: dict) -> set[tuple[str, str]]:
    return {(c["op"], c["group"]) for c in result["collectives"] if c["op"] != "_MirrorOperator"}


RANK_15 = {("AlltoAll", "locmoe_1_3_5_7_9_11_13_15"),       # expert exchange: the expert-parallel group
           ("AllGather", "locmoe_14_15"),                    # group-wise: the tensor-parallel group (node 1)
           ("ReduceScatter", "locmoe_14_15"),                # its backward
           ("AllReduce", "locmoe_1_3_5_7_9_11_13_15"),       # global-batch sums over the data group
           ("AllReduce", "locmoe_14_15"),                    # expert gradients over the expert's copies
           ("AllReduce", "hccl_world_group")}                # dense gradients, overflow flag


@pytest.mark.parametrize("rank, options, expected", [
    (15, [], RANK_15),
    (0, [], {("AlltoAll", "locmoe_0_2_4_6_8_10_12_14"), ("AllGather", "locmoe_0_1"), ("ReduceScatter", "locmoe_0_1"),
             ("AllReduce", "locmoe_0_2_4_6_8_10_12_14"), ("AllReduce", "locmoe_0_1"),
             ("AllReduce", "hccl_world_group")}),
    # bias balancing sums the load over the data group, as the auxiliary loss does; float16 moves the expert path
    (15, [*HEALTH, "--set", "model.compute_dtype=float16"], RANK_15),
], ids=["rank15", "rank0", "rank15-health-float16"])
def test_explicit_train_step_uses_the_topology_groups(cann_stub, tmp_path, rank, options, expected):
    code, out, result = dryrun(cann_stub, tmp_path, *EXPLICIT, *options, "--rank", str(rank),
                               "--set", "train.loss_scale=dynamic")
    assert result is not None and result["compiled"], out
    assert code == 0 and "checks: pass" in out, out
    assert groups(result) == expected
    assert result["rows"] == [2 * (rank // 2), 2 * (rank // 2) + 2]  # token group rank // tp: 2 of 16 sequences
    exchange = [c for c in result["collectives"] if c["op"] == "AlltoAll"]
    # forward + backward of dispatch and combine, each [ep, experts per rank, capacity, hidden / tp]
    assert len(exchange) == 4 and all(c["shape"][:2] == [8, 1] and c["shape"][-1] == 128 for c in exchange)
    assert all("moe-MoELayer/exchange-ExpertExchange" in c["scope"] for c in exchange)
    moved = "Float16" if "model.compute_dtype=float16" in options else "Float32"  # the expert path's dtype
    assert {c["dtype"] for c in result["collectives"] if "exchange-ExpertExchange" in c["scope"]
            and c["op"] in ("AlltoAll", "AllGather")} == {moved}


EP_GROUP, TP_GROUP = [0, 2, 4, 6], [0, 1]  # of rank 0 in AUTO's cluster (2 nodes x 4, tp 2, ep 4)


def _exchange(result: dict, layer: int) -> list[tuple[str, list[int]]]:
    """(op, ranks) of the collectives MindSpore put in sparse block `layer`'s exchange layouts."""
    return [(c["op"], c["ranks"]) for c in result["collectives"]
            if f"{layer}-SparseBlock/moe-MoELayer/layouts-GroupwiseLayouts" in c["scope"]]


@pytest.fixture(scope="module")
def auto_forward(cann_stub, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auto")
    return dryrun(cann_stub, tmp, *AUTO, "--step", "forward")


def _config(overrides: list[str]):
    sets = [v for k, v in zip(overrides, overrides[1:]) if k == "--set"]
    return load_config(ROOT / "model_configs" / "tiny_cpu.yaml", sets + ["parallel_config.communicator=hccl",
                                                                          "parallel_config.mode=auto"])


def _layout_mismatches(result: dict, names) -> list[str]:
    """Parameters whose MindSpore slice or shard differs from layout.py's split and Topology's placement."""
    cfg = _config(AUTO)
    par = cfg.parallel_config
    topo, rank = Topology.from_config(cfg), result["rank"]
    bad = []
    for name in names:
        shape, (matrix, tensor_map, piece) = result["shapes"][name], result["layouts"][name]
        split = parameter_split(name)
        want = list(shape)
        for axis, blocks, shard in ((split.expert_axis, par.expert_parallel, topo.expert_block(rank)),
                                    (split.model_axis, par.model_parallel, rank % par.model_parallel)):
            if axis is None:
                continue
            want[axis] //= blocks
            # MindSpore: device matrix row-major, tensor-map value d names axis len(matrix) - 1 - d
            d = tensor_map[axis]
            coords = [rank // int(_prod(matrix[i + 1:])) % matrix[i] for i in range(len(matrix))]
            if d == -1 or coords[len(matrix) - 1 - d] != shard:
                bad.append(f"{name}: rank {rank} does not hold shard {shard} of axis {axis}")
        if piece != want:
            bad.append(f"{name}: slice {piece}, layout.py gives {want}")
    return bad


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def test_auto_mode_compiles_and_lays_out_experts_and_dense_weights(auto_forward):
    code, out, result = auto_forward
    assert result is not None and result["compiled"], out
    assert result["rows"] == [0, 16]  # full_batch: every rank feeds the global batch
    names = [n for n in result["shapes"] if n.endswith((".moe.experts.w_in", ".moe.experts.w_out", ".moe.experts.b_in",
                                                        ".moe.experts.b_out", "attention.query.weight",
                                                        "attention.key.weight", "attention.value.weight",
                                                        "attention.out.weight", "ffn.w_in.weight",
                                                        "ffn.w_out.weight", "ffn.w_in.bias"))]
    # 2 sparse layers' experts; q/k/v/out weights of 4 blocks + query layer; FFN w_in, w_out, bias of 2 dense + query
    assert len(names) == 2 * 4 + 4 * 5 + 3 * 3
    assert _layout_mismatches(result, names) == []
    experts = result["layouts"]["network.blocks.1.moe.experts.w_in"]
    assert experts[2] == [2, 256, 512]  # 8 experts over ep 4, FFN 1024 over tp 2


def test_auto_mode_lays_out_every_parameter_as_layout_py(auto_forward):
    _, out, result = auto_forward
    assert len(result["shapes"]) == 87 and _layout_mismatches(result, list(result["shapes"])) == []
    # MindSpore's strategy checkpoint holds every parameter, with the slices layout.py gives
    cfg = _config(AUTO)
    splits = {"ep": cfg.parallel_config.expert_parallel, "mp": cfg.parallel_config.model_parallel}
    for name, shape in result["shapes"].items():
        saved = result["strategy_ckpt"][name]
        matrix, tensor_map = saved["dev_matrix"], saved["tensor_map"]
        piece = [n // (matrix[len(matrix) - 1 - d] if d != -1 else 1) for n, d in zip(shape, tensor_map)]
        split = parameter_split(name)
        want = [n // (splits["ep"] if i == split.expert_axis else splits["mp"] if i == split.model_axis else 1)
                for i, n in enumerate(shape)]
        assert piece == want, name


def test_auto_mode_compiles_the_real_train_step(cann_stub, tmp_path):
    """locmoe-train's TrainStep (AdamWeightDecay, dynamic loss scale, no gradient reducer) on the auto model, with
    every router health option on: no unlisted redistribution, every weight and moment laid out as layout.py, and
    each sparse layer's balance_bias whole on every rank with no optimizer moment (its rule updates it, not a
    gradient)."""
    code, out, result = dryrun(cann_stub, tmp_path, *AUTO, *HEALTH, "--set", "train.loss_scale=dynamic")
    assert result is not None and result["compiled"], out
    moments = [p + n for n in result["shapes"] for p in ("adam_m.", "adam_v.")]
    shapes = {**result["shapes"], **{m: result["shapes"][m[7:]] for m in moments}}
    assert _layout_mismatches({**result, "shapes": shapes}, list(shapes)) == []  # optimizer moments too
    for layer in (1, 3):
        exchange = _exchange(result, layer)
        assert exchange.count(("AlltoAll", EP_GROUP)) == 2 and exchange.count(("AllGather", TP_GROUP)) == 2, out
    mirrors = {tuple(c["ranks"]) for c in result["collectives"] if c["op"] == "_MirrorOperator"}
    assert mirrors == {(0, 2, 4, 6), (0, 1, 2, 3, 4, 5, 6, 7), (0, 1)}  # gradients: over dp, world, tp
    _assert_only_listed_redistributions(code, out, result)
    biases = sorted(n for n in result["layouts"] if "balance_bias" in n)
    assert biases == ["network.blocks.1.moe.router.balance_bias", "network.blocks.3.moe.router.balance_bias"]
    for name in biases:
        _, tensor_map, piece = result["layouts"][name]
        assert tensor_map == [-1] and piece == [8], name  # 8 experts, not split
        assert name not in result["shapes"] and f"adam_m.{name}" not in result["layouts"], name  # no gradient


def _assert_only_listed_redistributions(code: int, out: str, result: dict) -> None:
    """Every forward redistribution is one autoparallel/table.py plans (the exchange) or accepts (GATHERED)."""
    assert result["unlisted"] == [] and code == 0 and "checks: pass" in out, out
    forward = [c for c in result["collectives"] if c["kind"] == "redistribution" and "Gradients" not in c["scope"]]
    exchange = [c for c in forward if "layouts-GroupwiseLayouts" in c["scope"]]
    gathered = [c for c in forward if c["op"] == "AllGather" and c not in exchange]
    assert {c["op"] for c in exchange} == {"AlltoAll", "AllGather"} and len(exchange) + len(gathered) == len(forward)
    assert sum(row[4] for row in result["gathered"]) >= len(gathered), out  # each a small router statistic


# one of pangu_sigma_64n's 16 micro-batches (2 sequences per data-parallel group): all 16 compile as 16 copies of
# the model's graph, 400 s at 2 blocks on 2 cores against 22 s for one
ONE_MICRO_BATCH_64N = ["--set", "train.batch_size=16", "--set", "train.micro_batches=1"]


def test_pangu_64n_with_two_expert_copies_has_no_unlisted_redistribution(cann_stub, tmp_path):
    """pangu_sigma_64n cut to 2 layers and sequence 256, as README's dry-run command, with expert_parallel 4: dp 8,
    mp 8, ep 4, so every expert has dp / ep = 2 copies, as in pangu_sigma_256n (dp 32, ep 16), at a quarter of its
    devices. Only Layouts keep that rank order on the expert ops: without them MindSpore gathered the experts'
    [E, G*C, f] activation over mp and ep. Rank 45 is in the second copy (edp 1, ep 1, mp 5)."""
    code, out, result = dryrun(cann_stub, tmp_path, "--mode", "auto", "--rank", "45", "--set", "model.num_layers=2",
                               "--set", "model.sparse_layers=[1]", "--set", "model.seq_length=256",
                               "--set", "parallel_config.expert_parallel=4", *ONE_MICRO_BATCH_64N,
                               config="model_configs/pangu_sigma_64n.yaml")
    assert result is not None and result["compiled"], out
    _assert_only_listed_redistributions(code, out, result)
    exchange = [c for c in result["collectives"] if "layouts-GroupwiseLayouts" in c["scope"]
                and c["kind"] == "redistribution" and "Gradients" not in c["scope"]]
    # by hand: rank = (edp * ep + ep_index) * mp + mp_index; the expert group varies ep_index, the tensor group mp_index
    assert sorted((c["op"], c["ranks"]) for c in exchange) == [("AllGather", list(range(40, 48)))] * 2 + \
        [("AlltoAll", [37, 45, 53, 61])] * 2, out
    # the expert path moves compute_dtype: float16 in the PanGu configs
    assert {c["dtype"] for c in exchange} == {"Float16"}, exchange


def test_auto_mode_exchange_is_groupwise(auto_forward):
    """Each sparse layer: dispatch and return are an AlltoAll over the expert-parallel group of 1/mp of the slots
    and an AllGather inside the tensor-parallel group (the op table's intended redistributions, LocMoE 3.2)."""
    _, out, result = auto_forward
    for layer in (1, 3):
        exchange = _exchange(result, layer)
        assert exchange.count(("AlltoAll", EP_GROUP)) == 2 and exchange.count(("AllGather", TP_GROUP)) == 2, out
        assert {op for op, ranks in exchange if ranks == EP_GROUP} == {"AlltoAll"}  # the full payload never gathers
    # dispatch and combine move no token between ranks (the gate's matmul is pinned over dp, so the MoE input
    # is never split further over the tensor-parallel group)
    assert [c for c in result["collectives"] if "dispatcher-Dispatcher" in c["scope"]] == []


def test_collectives_are_read_from_both_ir_forms():
    from locmoe_ms.autoparallel.dryrun import parse_collectives
    ir = """  %3(CNode_1) = AllGather(%2) {instance name: redistribution_op_6AllGather_} primitive_attrs: {group: "2-500", fusion: I64(0), group_ranks: "0-1", rank_size: I64(2)} cnode_primal_attrs: {x: "1"}
      : (<Tensor[Float32], (256, 256)>) -> (<null>)
      # Scope: (Default/network-PanGuSigmaLM/blocks-CellList/0-DenseBlock/attention-Attention)
  %147(CNode_2) = AlltoAll(%146) {instance name: exchange} primitive_attrs: {split_dim: I64(0), group: "locmoe_1_3_5_7", rank_size: I64(4)} cnode_attrs: {checkpoint: Bool(1)}
      : (<Tensor[Float16], (4, 1, 20, 128)>) -> (<Tensor[Float16], (4, 1, 20, 128)>)
      # Fullname with scope: (Default/loss_net-LanguageModelLoss/network-PanGuSigmaLM/moe-MoELayer/exchange-ExpertExchange)
  %4(CNode_3) = PrimFunc_StridedSlice(%3, (I64(0), I64(0))) {instance name: send_slice}
      : (<Tensor[Float16], (8, 16)>, <Tuple[Int64*2], TupleShape(NoShape, NoShape)>) -> (<Tensor[Float16], (8, 16)>)
      # Scope: (Default/moe-MoELayer/layouts-GroupwiseLayouts)
  %5(CNode_4) = PrimFunc_Reshape(%4, (I64(2), I64(64))) {instance name: redistribution_op_1Reshape_}
      : (<null>, <Tuple[Int64*2], TupleShape(NoShape, NoShape)>) -> (<null>)
      # Scope: (Default/moe-MoELayer/layouts-GroupwiseLayouts)
  %6(CNode_5) = AlltoAll(%5) {instance name: redistribution_op_2AlltoAll_} primitive_attrs: {group: "4-9", group_ranks: "0-2-4-6", rank_size: I64(4)}
      : (<null>) -> (<null>)
      # Scope: (Default/moe-MoELayer/layouts-GroupwiseLayouts)
"""
    first, second, inserted = parse_collectives(ir, world=8)
    # the parallel passes leave the nodes they insert untyped: the operand's type is followed back to a typed node
    assert (inserted.op, inserted.ranks, inserted.dtype) == ("AlltoAll", (0, 2, 4, 6), "Float16")
    assert (first.op, first.ranks, first.kind, first.shape, first.dtype) == ("AllGather", (0, 1), "redistribution",
                                                                            (256, 256), "Float32")
    assert first.scope.endswith("0-DenseBlock/attention-Attention")
    assert (second.op, second.group, second.ranks, second.kind) == ("AlltoAll", "locmoe_1_3_5_7", (1, 3, 5, 7), "model")
    assert second.scope.endswith("moe-MoELayer/exchange-ExpertExchange") and second.shape == (4, 1, 20, 128)
    assert second.dtype == "Float16"


def test_bad_input_is_one_line(tmp_path):
    for args, message in ((["model_configs/nope.yaml"], "model_configs/nope.yaml: config not found"),
                          (["model_configs/tiny_cpu.yaml", "--devices", "6"],
                           "--devices 6: must be a positive multiple of parallel_config.devices_per_node (4)")):
        proc = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert proc.returncode == 2 and proc.stderr.strip() == f"error: {message}" and not proc.stdout
    # no stub libraries cached and no compiler on PATH
    proc = subprocess.run([sys.executable, str(TOOL), "model_configs/tiny_cpu.yaml"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, "PATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)})
    assert proc.returncode == 2 and proc.stderr.strip() == ("error: building the stand-in CANN libraries needs gcc, "
                                                            "g++, nm, readelf; missing: gcc, g++, nm, readelf")


def test_auto_mode_256_devices_keeps_topology_rank_order(cann_stub, tmp_path):
    """pangu_sigma_256n (dp 32, mp 8, ep 16: two copies of every expert): rank 130 (node 16, expert block 0 of the
    second copy) exchanges over Topology's groups, holds Topology's expert shard, and has no redistribution
    the op table does not list (the train step of this shape: the 64n test above with expert_parallel 4)."""
    code, out, result = dryrun(cann_stub, tmp_path, "--mode", "auto", "--rank", "130", "--step", "forward",
                               "--set", "model.num_layers=2", "--set", "model.sparse_layers=[1]",
                               "--set", "model.seq_length=256", "--set", "model.vocab_size=4096",
                               "--set", "data.vocab_limit=4096", "--set", "train.batch_size=64",
                               "--set", "train.micro_batches=1", config="model_configs/pangu_sigma_256n.yaml")
    assert result is not None and result["compiled"], out
    exchange = _exchange(result, 1)
    ep_group, tp_group = list(range(130, 256, 8)), list(range(128, 136))
    assert exchange.count(("AlltoAll", ep_group)) == 2 and exchange.count(("AllGather", tp_group)) == 2, out
    matrix, tensor_map, piece = result["layouts"]["network.blocks.1.moe.experts.w_in"]
    assert piece == [1, 5120, 2560]  # 16 experts over ep 16, FFN 20480 over mp 8
    coords = [130 // _prod(matrix[i + 1:]) % matrix[i] for i in range(len(matrix))]
    assert coords[len(matrix) - 1 - tensor_map[0]] == 0  # expert block of rank 130: (130 // 8) % 16
    _assert_only_listed_redistributions(code, out, result)


# the parallel optimizer (parallel_config.optimizer_shard) and the memory plan's static bytes
OPT = ["--set", "parallel_config.optimizer_shard=true"]
PANGU_CUT = ["--mode", "auto", "--set", "model.num_layers=2", "--set", "model.sparse_layers=[1]",
             "--set", "model.seq_length=256", *ONE_MICRO_BATCH_64N]


def _config_of(config: str, args: list[str]):
    """The config the tool compiles for these arguments (its --set, --mode and --devices)."""
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"] + ["parallel_config.communicator=hccl"]
    if "--mode" in args:
        sets.append(f"parallel_config.mode={args[args.index('--mode') + 1]}")
    cfg = load_config(ROOT / config, sets)
    if "--devices" in args:
        nodes = int(args[args.index("--devices") + 1]) // cfg.parallel_config.devices_per_node
        cfg = load_config(ROOT / config, sets + [f"parallel_config.nodes={nodes}"])
    return cfg


def _group_size(name: str, world: int) -> int:
    """Devices of a MindSpore group by its name: 'N-<hash>' for created groups."""
    return 1 if not name else world if name == "hccl_world_group" else int(name.split("-")[0])


@pytest.mark.parametrize("config, args, rank", [
    ("model_configs/tiny_cpu.yaml", AUTO + OPT + ["--set", "train.micro_batches=2"], 0),
    ("model_configs/tiny_cpu.yaml", AUTO + OPT, 7),
    ("model_configs/pangu_sigma_64n.yaml", PANGU_CUT + OPT, 63),
    ("model_configs/pangu_sigma_64n.yaml", PANGU_CUT, 0),
], ids=["tiny-8-opt-2-micro-batches-rank0", "tiny-8-opt-rank7", "pangu64n-opt-rank63", "pangu64n-rank0"])
def test_memory_plan_static_bytes_equal_the_compiled_layouts(cann_stub, tmp_path, config, args, rank):
    """The train step compiles with the tool's checks passing (every weight and moment stored as planned, the
    parallel optimizer's collectives where planned: with 2 micro-batches one weight AllGather per step and one
    gradient ReduceScatter per micro-batch; nothing unlisted: the cross-entropy over the split vocabulary gathers
    no logits), and the plan's weight + moment bytes equal
    those of the compiled parameter_layout_dict: each entry's slice shape split again over its optimizer-shard
    group, the group's size read from MindSpore's group name."""
    from math import prod

    from locmoe_ms.autoparallel.dryrun import model_parameter
    from locmoe_ms.model.network import model_shapes
    from locmoe_ms.planning.memory import parameter_slices, static_bytes

    code, out, result = dryrun(cann_stub, tmp_path, *args, "--rank", str(rank), config=config)
    assert code == 0, out[-3000:]
    cfg = _config_of(config, args)
    full, trainable = model_shapes(cfg)
    world = cfg.virtual_devices
    compiled = sum(prod(piece) // _group_size(result["opt_shard_groups"].get(name, ""), world) * 4
                   for name, (_, _, piece) in result["layouts"].items() if model_parameter(name) in full)
    plan = static_bytes(parameter_slices(cfg, full), trainable)
    assert plan.weights + plan.moments == compiled
    m, mp = cfg.model, cfg.parallel_config.model_parallel  # vocabulary parallel: the embedding's rows over mp
    assert result["layouts"]["network.word_embedding"][2] == [m.vocab_size // mp, m.hidden_size]
    if not cfg.parallel_config.optimizer_shard:
        assert result["opt_shard_groups"] == {} and not result.get("optimizer_counts")
        return
    # by hand: dense weights split over mp are gathered over the data-parallel group, whole embeddings over all
    topo = Topology.from_config(cfg)
    gathers = {tuple(ranks) for op, ranks, _ in result["optimizer_counts"] if op == "AllGather"}
    scatters = {tuple(ranks) for op, ranks, _ in result["optimizer_counts"] if op == "ReduceScatter"}
    assert gathers == scatters == {topo.data_group(rank), tuple(range(world))}
    weight = "network.blocks.0.attention.query.weight"
    assert result["opt_shard_groups"][weight] == result["opt_shard_groups"][f"adam_m.{weight}"]
    assert _group_size(result["opt_shard_groups"][weight], world) == cfg.parallel_config.data_parallel
    assert result["strategy_ckpt"][weight]["opt_weight_shard_size"] == -1
