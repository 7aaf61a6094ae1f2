"""tools/cluster_model.py: byte figures from a real msrun run's trace equal its exchange counters, FLOPs equal a hand
count, bad inputs end in one line and exit 2. (The padded, group-wise and count-aware bytes against the counters of
the layer under msrun: tests/parallel/test_distributed.py.)"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from locmoe_ms.planning.flops import capacity_of, step_ops
from locmoe_ms.planning.routing import read_trace, step_fills
from locmoe_ms.planning.step_model import cluster_exchange_bytes
from locmoe_ms.config import config_from_dict
from tests.conftest import free_port, tool_cases

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "cluster_model.py"
MSRUN = "import sys; from mindspore.parallel.cluster.run import main; sys.argv[0] = 'msrun'; sys.exit(main())"
# 2 nodes x 2 devices, tensor parallel 2, expert parallel 2: group-wise exchange, same-device, intra- and inter-node
CONFIG = {
    "model": {"hidden_size": 32, "num_heads": 2, "ffn_hidden_size": 64, "vocab_size": 257, "seq_length": 32,
              "num_layers": 2, "sparse_layers": [1]},
    "moe_config": {"expert_num": 4, "router": "locmoe", "capacity_factor": 1.0, "locality_loss_factor": 0.1},
    "parallel_config": {"nodes": 2, "devices_per_node": 2, "data_parallel": 2, "model_parallel": 2,
                        "expert_parallel": 2, "exchange": "groupwise", "count_aware": True},
    "train": {"batch_size": 4, "warmup_steps": 0, "max_steps": 2, "log_every": 1, "eval_every": 100,
              "eval_batches": 1, "save_every": 100, "learning_rate": 0.003},
    "data": {"corpus": "wiki_en", "tokenizer": "byte", "max_documents": 300},
}


@pytest.fixture(scope="module")
def trace_run(tmp_path_factory) -> Path:
    """2 count-aware steps under msrun (no evaluation or checkpoint: only the trace and its counters are read)."""
    tmp = tmp_path_factory.mktemp("cluster_model")
    config = tmp / "tp2_ep2.json"
    config.write_text(json.dumps(CONFIG))
    out = tmp / "run"
    run = subprocess.run(
        [sys.executable, "-c", MSRUN, "--worker_num=4", "--local_worker_num=4", f"--master_port={free_port()}",
         f"--log_dir={out / 'log'}", "--join=True", "--cluster_time_out=120", str(ROOT / "locmoe_ms" / "cli.py"),
         "--config", str(config), "--output-dir", str(out), "--set", "parallel_config.communicator=cpu"],
        capture_output=True, text=True, timeout=420, cwd=tmp)
    assert run.returncode == 0, (out / "log" / "worker_0.log").read_text()[-3000:]
    return out


def test_trace_bytes_equal_the_exchange_counters(trace_run):
    """Every rank, step and kind: the model's bytes for the routing the trace recorded equal the rank's bytes_sent."""
    trace = read_trace(trace_run / "rank_0" / "metrics.jsonl", "1:2")
    cfg = trace.config
    assert cfg.parallel_config.count_aware is True
    kinds = ("same_device", "intra_node", "inter_node")
    for step, record in enumerate(trace.records, 1):
        fill = step_fills(record, capacity_of(cfg))[0]
        model = cluster_exchange_bytes(cfg, fill)
        for rank in range(4):
            counted = json.loads((trace_run / f"rank_{rank}" / "metrics.jsonl").read_text().splitlines()[step - 1])
            assert counted["moe_layers"][0]["tokens_per_group"] == record["moe_layers"][0]["tokens_per_group"]
            assert model[rank].tolist() == [counted["moe_layers"][0]["bytes_sent"][k] for k in kinds], (step, rank)
        assert model[:, 1].sum() > 0 and model[:, 2].sum() > 0  # the test covers the All-Gather and other nodes
        assert (model < cluster_exchange_bytes(cfg, fill, count_aware=False)).any()  # unfilled slots not counted


def test_flops_of_one_config_by_hand():
    """small config: T = 4 x 16 = 64 tokens, h 32, f 64, E 4, V 200, 2 blocks (1 sparse) + query layer,
    4 token groups of 16 tokens, capacity ceil(16 * 4 * 1.25 / (4 * 4)) = 5."""
    cfg = config_from_dict({
        "model": {"hidden_size": 32, "num_heads": 2, "ffn_hidden_size": 64, "vocab_size": 200, "seq_length": 16,
                  "num_layers": 2, "sparse_layers": [1]},
        "moe_config": {"expert_num": 4, "router": "switch"},
        "parallel_config": {"nodes": 2, "devices_per_node": 2, "data_parallel": 4, "expert_parallel": 4},
        "train": {"batch_size": 4}})
    ops = step_ops(cfg)
    assert capacity_of(cfg) == 5
    # attention per block: q, k, v, out 4 * 2*64*32*32 = 524288; scores and context 2 * 2*4*16*16*32 = 131072
    assert ops["attention"].forward == 3 * (524288 + 131072)
    assert ops["dense_ffn"].forward == 2 * (2 * 2 * 64 * 32 * 64)        # dense block + query layer
    assert ops["experts"].forward == 2 * 2 * 32 * 64 * (4 * 4 * 5)       # 80 slots, two matmuls
    assert ops["gate"].forward == 2 * 64 * 32 * 4 and ops["gate"].backward == 2 * ops["gate"].forward
    assert ops["lm_head"].forward == 2 * 64 * 32 * 200
    grap = step_ops(config_from_dict({**cfg.to_dict(), "moe_config": {"expert_num": 4, "router": "locmoe"}}))
    assert grap["gate"].backward == grap["gate"].forward                  # constant W: input gradient only


def _tool(*args, cwd=None):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def _trace(tmp: Path, experts: int) -> Path:
    run = tmp / f"trace{experts}"
    run.mkdir()
    cfg = {**CONFIG, "moe_config": {**CONFIG["moe_config"], "expert_num": experts}}
    (run / "config.json").write_text(json.dumps(cfg))
    layer = {"tokens_per_expert": [8] * experts, "tokens_per_group": [[4] * experts] * 2, "local_share": 0.5,
             "dropped_share": 0.0, "bytes_sent": {}}
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "moe_layers": [layer]}) + "\n")
    return run / "metrics.jsonl"


def test_bad_inputs_one_line_exit_2(tmp_path):
    hw = (ROOT / "model_configs" / "hardware" / "ascend910a.yaml").read_text()
    (tmp_path / "unknown.yaml").write_text(hw + "  warp_factor: {value: 9, source: nowhere}\n")
    (tmp_path / "negative.yaml").write_text(hw.replace("value: 12.0", "value: -12.0"))
    config = ROOT / "model_configs" / "pangu_sigma_128n.yaml"
    cases = [
        (["--config", config, "--hardware", tmp_path / "unknown.yaml"], "unknown key 'schedule.warp_factor'"),
        (["--config", config, "--hardware", tmp_path / "negative.yaml"], "links.inter_node = -12.0"),
        (["--config", config, "--trace", _trace(tmp_path, 8)], "routed over 8 experts"),
        (["--config", config, "--trace", tmp_path / "missing.jsonl"], "missing.jsonl: metrics.jsonl not found"),
        (["--config", tmp_path / "missing.yaml"], "missing.yaml: config file not found"),
        (["--config", config, "--zipf", "-1"], "--zipf = -1.0"),
        (["--paper", "--locmoe-chunks", "0"], "--locmoe-chunks = 0: must be >= 1"),
        (["--paper", "--locmoe-capacity-factor", "0"], "--locmoe-capacity-factor = 0.0: must be > 0"),
    ]
    for (args, message), run in zip(cases, tool_cases(TOOL, [args for args, _ in cases])):
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1 and message in lines[0], (args, run.stderr)


def test_a_trace_of_the_same_expert_count_runs(tmp_path):
    """A 16-expert trace from another cluster scales to PanGu-Sigma at 128N; JSON has the breakdown."""
    run = _tool("--config", ROOT / "model_configs" / "pangu_sigma_128n.yaml", "--trace", _trace(tmp_path, 16),
                "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["step"] > result["compute"] > 0 and "scaled" in result["routing"]
    assert np.isclose(result["step"], result["compute"] + result["exchange_exposed"] + result["tensor_parallel"]
                      + result["gradient_all_reduce"])


def test_micro_batches_repeat_the_micro_step_and_reduce_gradients_once():
    """train.micro_batches 16 of 32 sequences on pangu_sigma_128n: compute, the expert exchange and the
    tensor-parallel sums are 16 times those of one batch of 32 (each micro-batch runs them), the data-parallel
    gradient All-Reduce is that of one batch (once per update), and a layer's bytes are one micro-batch's."""
    from locmoe_ms.config import load_config
    from locmoe_ms.planning.hardware import load_hardware
    from locmoe_ms.planning.routing import synthetic_routing
    from locmoe_ms.planning.step_model import step_time

    hw, config = load_hardware(), ROOT / "model_configs" / "pangu_sigma_128n.yaml"
    one = load_config(config, ["train.batch_size=32", "train.micro_batches=1"])
    micro = load_config(config, ["train.batch_size=512", "train.micro_batches=16"])
    assert capacity_of(one) == capacity_of(micro) == 160
    a = step_time(one, synthetic_routing(one, 160, 1.0, None), hw)
    b = step_time(micro, synthetic_routing(micro, 160, 1.0, None), hw)
    for part in ("compute", "expert_compute", "all_to_all", "all_gather", "exchange_exposed", "tensor_parallel"):
        assert getattr(b, part) == pytest.approx(16 * getattr(a, part), rel=1e-9), part
    assert b.gradient_all_reduce == a.gradient_all_reduce and b.bytes_per_layer == a.bytes_per_layer


def test_exchange_bytes_follow_the_compute_dtype_by_hand():
    """pangu_sigma_128n moves its expert path in float16: the slowest rank's padded forward (dispatch + combine)
    sends 160 slots x 1 expert x 640 columns (5120 / tp 8) x 2 B x 2 to each of its 15 expert-group peers on other
    nodes, and gathers 2 x 16 x 160 rows of 640 columns to its 7 tensor-parallel peers; float32 doubles both."""
    from locmoe_ms.config import load_config
    from locmoe_ms.planning.step_model import rank_exchange_bytes

    half = load_config(ROOT / "model_configs" / "pangu_sigma_128n.yaml")
    full = load_config(ROOT / "model_configs" / "pangu_sigma_128n.yaml", ["model.compute_dtype=float32"])
    assert half.model.compute_dtype == "float16" and capacity_of(half) == 160
    fill = np.full((16, 16), 160.0)
    a2a, ag = rank_exchange_bytes(half, fill, 127)
    assert a2a.tolist() == [2 * 160 * 640 * 2, 0, 15 * 2 * 160 * 640 * 2] and a2a[2] == 6_144_000
    assert ag.tolist() == [0, 7 * 2 * 16 * 160 * 640 * 2, 0] and ag[1] == 45_875_200
    a2a32, ag32 = rank_exchange_bytes(full, fill, 127)
    assert a2a32.tolist() == (2 * a2a).tolist() and ag32.tolist() == (2 * ag).tolist()
