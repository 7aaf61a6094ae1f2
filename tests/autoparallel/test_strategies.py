"""Shard strategies: exact tuples, device-count products, producer/consumer layouts, placement vs Topology,
parameter layouts vs parallel/layout.py, and one-line errors for impossible (dp, mp, ep)."""
from pathlib import Path

import numpy as np
import pytest

from locmoe_ms.config import load_config
from locmoe_ms.errors import UserInputError
from locmoe_ms.autoparallel import checks, layouts, table as op_table
from locmoe_ms.autoparallel.mesh import ParallelSizes
from locmoe_ms.parallel.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ["tiny_cpu", "pangu_sigma_64n", "pangu_sigma_128n", "pangu_sigma_256n"]
PANGU = CONFIGS[1:]


def config(name, *overrides):
    return load_config(ROOT / "model_configs" / f"{name}.yaml", list(overrides))


def setup(name):
    cfg = config(name)
    sizes = ParallelSizes.from_config(cfg)
    return cfg, sizes, checks.tensor_sizes(cfg, sizes)


@pytest.mark.parametrize("name, nodes, dp, ep, batch", [
    ("pangu_sigma_64n", 8, 8, 8, 256), ("pangu_sigma_128n", 16, 16, 16, 512), ("pangu_sigma_256n", 32, 32, 16, 1024)])
def test_pangu_configs_follow_table_1(name, nodes, dp, ep, batch):
    cfg = config(name)
    m, par = cfg.model, cfg.parallel_config
    assert (m.num_heads, len(m.sparse_layers), m.hidden_size, m.compute_dtype) == (40, 8, 5120, "float16")
    assert (cfg.moe_config.expert_num, par.model_parallel, par.communicator) == (16, 8, "hccl")
    assert (par.nodes, par.devices_per_node, par.data_parallel, par.expert_parallel) == (nodes, 8, dp, ep)
    assert cfg.virtual_devices == nodes * 8 == dp * par.model_parallel
    # Table 1's batch_size 32 per data-parallel group, run as 16 micro-batches of 2 sequences per group
    assert cfg.train.batch_size == batch == 32 * dp and cfg.train.micro_batches == 16
    assert cfg.micro_batch_size == 2 * dp and checks.tensor_sizes(cfg, ParallelSizes(dp, 8, ep))["C"] == 160


def test_exact_strategies_64_devices():
    ins = layouts.in_strategies(ParallelSizes(dp=8, mp=8, ep=8))
    assert ins["embedding.gather"] == ((8, 1), (8, 1))  # vocabulary parallel: rows over mp, token ids over dp
    assert ins["attention.query"] == ins["attention.key"] == ins["attention.value"] == ((8, 1, 1), (1, 8))
    assert ins["attention.scores"] == ins["attention.context"] == ((8, 8, 1, 1), (8, 8, 1, 1))
    assert ins["attention.softmax"] == ((8, 8, 1, 1),)
    assert ins["attention.out"] == ((8, 1, 8), (8, 1))
    assert ins["query_layer.query"] == ((1, 1), (1, 8))
    assert ins["ffn.w_in"] == ((8, 1, 1), (1, 8)) and ins["ffn.w_out"] == ((8, 1, 8), (8, 1))
    assert ins["gate"] == ((8, 1), (1, 1)) and ins["router.softmax"] == ((8, 1),)
    assert ins["dispatch"] == ((8, 1, 1), (8, 1, 1)) and ins["combine"] == ((8, 1, 1), (8, 1, 1))
    assert ins["dispatch.match"] == ((8, 1, 1), (1, 1, 1))
    assert ins["exchange.send_slice"] == ((8, 1, 8, 1),)  # [G, E, C, h]
    assert ins["exchange.all_to_all"] == ((1, 8, 8, 1),)
    assert ins["exchange.all_gather"] == ((1, 8, 1, 1),)
    assert ins["experts.w_in"] == ((8, 1, 1), (8, 1, 8)) and ins["experts.b_in"] == ((8, 1, 8), (8, 1, 8))
    assert ins["experts.w_out"] == ((8, 1, 8), (8, 8, 1))
    assert ins["head.logits"] == ((8, 1), (1, 8))  # the tied head's vocabulary columns over mp
    assert ins["loss.max"] == ins["loss.sum"] == ins["loss.pick_sum"] == ((8, 8),) and ins["loss.one_hot"] == ((8, 8), (), ())
    assert layouts.output_strategies(ParallelSizes(8, 8, 8))["experts.w_out"] == (8, 1, 1)


def test_exact_expert_strategies_256_devices():
    ins = layouts.in_strategies(ParallelSizes(dp=32, mp=8, ep=16))
    assert ins["experts.w_in"] == ((16, 2, 1), (16, 1, 8))
    # the exchange's view is token-group-major, so numeric strategies order the devices (edp, ep, mp) like Topology
    assert ins["exchange.all_to_all"] == ((2, 16, 8, 1),) and ins["exchange.send_slice"] == ((32, 1, 8, 1),)
    assert ins["dispatch"] == ((32, 1, 1), (32, 1, 1)) and ins["attention.query"] == ((32, 1, 1), (1, 8))


@pytest.mark.parametrize("name", CONFIGS)
def test_products_match_device_count(name):
    _, sizes, dims = setup(name)
    for key, strategy in layouts.in_strategies(sizes).items():
        for split in strategy:
            assert sizes.devices % int(np.prod(split)) == 0, (key, split)
    # the expert matmuls and the exchange use every device exactly once
    for key in ("experts.w_in", "experts.w_out", "exchange.all_to_all"):
        spec = op_table.OPS[key]
        used = {a for layout in spec.inputs for _, axes in layout for a in axes}
        assert int(np.prod([sizes.axis(a) for a in used])) == sizes.devices, key
    assert checks.check_strategies(sizes, dims).problems == []


@pytest.mark.parametrize("name", CONFIGS)
def test_producer_and_consumer_layouts_agree(name):
    cfg, sizes, dims = setup(name)
    report = checks.check_strategies(sizes, dims)
    assert report.problems == []
    a2a = [("exchange.send_slice", "exchange.all_to_all", "all_to_all:ep"),
           ("exchange.return_slice", "exchange.return_all_to_all", "all_to_all:ep")]
    gathers = [("exchange.all_to_all", "exchange.all_gather", "all_gather:mp"),
               ("exchange.return_all_to_all", "exchange.return_all_gather", "all_gather:mp")]
    expected = a2a + (gathers if sizes.mp > 1 else [])  # tiny_cpu: mp 1, so only the All-to-All communicates
    assert sorted(report.redistributions) == sorted(expected)


def test_checker_catches_bad_layouts(monkeypatch):
    _, sizes, dims = setup("pangu_sigma_64n")
    monkeypatch.setitem(op_table.OPS, "experts.w_in", op_table._op("BatchMatMul", ("E:ep GC:edp h", "E:ep h:mp f"),
                                                        "E:ep GC:edp f:mp"))
    monkeypatch.setitem(op_table.OPS, "exchange.all_gather", op_table._op("StridedSlice", ("G:edp E:ep C:mp h",),
                                                               "G:edp E:ep C:mp h"))
    problems = checks.check_strategies(sizes, dims).problems
    assert any(p.startswith("experts.w_in: contracted dimension split") for p in problems)
    assert any(p.startswith("exchange.all_gather -> exchange.to_experts[0]: produced as G:edp E:ep C:mp h")
               for p in problems)


def test_checker_catches_indivisible_dimension():
    cfg = config("tiny_cpu", "model.num_heads=2")
    sizes = ParallelSizes(dp=2, mp=4, ep=2)  # 2 heads cannot split over 4 tensor-parallel ranks
    problems = checks.check_strategies(sizes, checks.tensor_sizes(cfg, sizes)).problems
    assert "attention.q_heads input 0: dimension H = 2 is not divisible by its split 4 (mp)" in problems


@pytest.mark.parametrize("name", CONFIGS)
def test_placement_matches_topology(name):
    cfg, sizes, _ = setup(name)
    topology = Topology.from_config(cfg)
    assert checks.check_topology(sizes, topology) == []
    # the same, read from the MindSpore Layouts apply_shard_strategies passes (row-major device matrix)
    x, w = (layout.to_dict() for layout in layouts.mindspore_layouts(sizes, "experts.w_in"))
    tokens = layouts.mindspore_layouts(sizes, "embedding.gather")[1].to_dict()
    matrix = w["device_matrix"]
    for rank in range(sizes.devices):
        coords = np.unravel_index(rank, matrix)

        def shard(tensor_map_entry):
            dims = tensor_map_entry if isinstance(tensor_map_entry, tuple) else (tensor_map_entry,)
            index = 0
            for d in dims:
                axis = len(matrix) - 1 - d
                index = index * matrix[axis] + int(coords[axis])
            return index

        assert shard(w["tensor_map"][0]) == topology.expert_block(rank)
        assert shard(tokens["tensor_map"][0]) == topology.token_group_of_rank(rank)
    assert x["tensor_map"] == (1, 2, -1) and w["tensor_map"] == (1, -1, 0)  # (ep, edp, -), (ep, -, mp)


def test_placement_mismatch_is_reported():
    cfg, sizes, _ = setup("pangu_sigma_64n")
    topology = Topology.from_config(cfg)
    shuffled = Topology(8, 8, 16, 8, 8, placement=tuple((e,) for e in range(16)))  # expert e only on rank e
    assert checks.check_topology(sizes, topology) == [] and len(checks.check_topology(sizes, shuffled)) == 64


@pytest.fixture(scope="module")
def tiny_network():
    from locmoe_ms.model.network import build_model
    cfg = config("tiny_cpu")
    return cfg, build_model(cfg)


def test_parameter_layouts_agree_with_layout_module(tiny_network):
    from locmoe_ms.autoparallel.apply import shard_plan
    cfg, net = tiny_network
    names = [p.name for p in net.trainable_params()]
    plan = shard_plan(net)
    planned = {name: t for entry in plan.cells for name, t in entry.parameters.items()}
    assert set(planned) | set(plan.other_parameters) == set(names)
    # left to sharding propagation: the embeddings and the router gate (context.CELL_OPS says why)
    left = {n for n in names if n.endswith(".router.gate.bias")}
    assert set(plan.other_parameters) == {"network.word_embedding", "network.position_embedding",
                                          "network.top_query_embedding"} | left
    assert all(t is not None for t in list(planned.values()) + list(plan.other_parameters.values()))
    ops = {entry.path: entry.op for entry in plan.cells}
    assert ops["network.blocks.1.moe.experts"] == "experts.w_in"
    assert ops["network.query_layer.attention.query"] == "query_layer.query"
    assert ops["network.blocks.0.attention.query"] == "attention.query"
    assert "network.blocks.3.moe.router.gate" not in ops and ops["network.final_norm"] == "head.layernorm"
    # the dispatchers of the two sparse blocks own the primitives auto-parallel pins over token groups
    assert {(f"network.blocks.{i}.moe.dispatcher.{attr}", op) for i in (1, 3)
            for attr, op in (("match", "dispatch.match"), ("pad_tokens", "dispatch.pad"), ("pad_slots", "combine.pad"),
                             ("gather_slots", "dispatch"), ("gather_tokens", "combine"))} <= set(plan.primitives)
    # and the matmuls and softmaxes sharding propagation split otherwise (a Linear's op is its matmul)
    prims = dict(plan.primitives)
    assert prims["network.query_layer.attention.query.matmul"] == "query_layer.query"
    assert prims["network.blocks.2.ffn.w_out.matmul"] == "ffn.w_out"
    assert prims["network.blocks.0.attention.scores_matmul"] == "attention.scores"
    assert prims["network.blocks.1.moe.router.gate.matmul"] == "gate"
    assert prims["network.blocks.1.moe.router.softmax"] == "router.softmax"
    assert prims["network.blocks.3.moe.experts.bmm_out"] == "experts.w_out"
    # the experts' bias add and exact GeLU (E:ep before GC:edp: with dp/ep > 1 propagation gathered the activation)
    assert prims["network.blocks.1.moe.experts.add_in"] == "experts.b_in"
    assert {attr: prims[f"network.blocks.1.moe.experts.act.{attr}"] for attr in
            ("scale_in", "erf", "shift", "product", "scale_out")} == {
        "scale_in": "experts.act.scalar", "erf": "experts.act", "shift": "experts.act.scalar",
        "product": "experts.act.product", "scale_out": "experts.act.scalar"}
    assert prims["network.logits_matmul"] == "head.logits"
    assert checks.parameter_mismatches(names) == []
    expert = checks.parameter_split_of(planned["network.blocks.1.moe.experts.w_in"])
    assert (expert.expert_axis, expert.model_axis) == (0, 2)
    value = checks.parameter_split_of(planned["network.blocks.0.attention.value.weight"])
    assert (value.expert_axis, value.model_axis) == (None, 1)


MP4 = ["parallel_config.model_parallel=4", "parallel_config.data_parallel=16"]


@pytest.mark.parametrize("sizes, overrides, message", [
    ((8, 4, 8), [], "parallel_config.data_parallel = 8: data_parallel * model_parallel (8 * 4) must equal "
                    "nodes * devices_per_node (64)"),
    ((8, 8, 16), [], "parallel_config.expert_parallel = 16: must divide parallel_config.data_parallel (8)"),
    ((4, 16, 4), [], "parallel_config.model_parallel = 16: must divide devices_per_node (8)"),
    ((32, 2, 32), [], "parallel_config.expert_parallel = 32: must divide moe_config.expert_num (16)"),
    # (the config itself, loaded with model_parallel 4, accepts these; the strategies' sizes ask for 8)
    ((8, 8, 8), ["model.num_heads=20", *MP4], "model.num_heads = 20: must be divisible by parallel_config.model_parallel (8)"),
    ((8, 8, 8), ["model.ffn_hidden_size=20484", *MP4],
     "model.ffn_hidden_size = 20484: must be divisible by parallel_config.model_parallel (8)"),
    ((16, 4, 16), ["train.batch_size=8", "train.micro_batches=1"], "train.batch_size = 8: must be divisible by parallel_config.data_parallel (16)"),
    # (loaded in explicit mode, which has no capacity rule; the strategies are auto mode's)
    ((8, 8, 8), ["moe_config.capacity_factor=1.1", "parallel_config.mode=explicit",
                 "parallel_config.optimizer_shard=false"],
     "moe_config.capacity_factor = 1.1: in auto mode the "
                                                    "capacity per token group and expert (141) must be a multiple "
                                                    "of model_parallel (8)"),
    ((0, 8, 8), [], "parallel_config.data_parallel = 0: must be >= 1"),
])
def test_invalid_sizes_raise_one_line(sizes, overrides, message):
    cfg = config("pangu_sigma_64n", *overrides)
    with pytest.raises(UserInputError) as err:
        checks.validate(ParallelSizes(*sizes), 64, cfg)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_valid_sizes_pass():
    for name in CONFIGS:
        cfg, sizes, _ = setup(name)
        checks.validate(sizes, cfg.virtual_devices, cfg)
    # 64 devices can reach Table 1's expert_parallel 16 only with model_parallel 4
    checks.validate(ParallelSizes(16, 4, 16), 64, config("pangu_sigma_64n"))


def test_ascend_only_entry_points_refuse_cpu(tiny_network):
    from locmoe_ms.autoparallel.apply import apply_shard_strategies
    from locmoe_ms.autoparallel.context import set_parallel_context
    cfg, net = tiny_network
    with pytest.raises(UserInputError, match=r"^parallel_config.communicator = 'local': auto-parallel needs"):
        set_parallel_context(cfg)
    with pytest.raises(UserInputError, match=r"^device_target = 'CPU': shard strategies apply on Ascend only"):
        apply_shard_strategies(net, cfg)


def test_strategy_table_lists_every_op():
    table = layouts.strategy_table(ParallelSizes(8, 8, 8))
    assert len(table.splitlines()) == len(op_table.OPS)
    assert "experts.w_in" in table and "((8, 1, 1), (8, 1, 8)) -> (8, 1, 8)" in table
