"""Expert parallelism with real processes: msrun on CPU with the `cpu` communicator (4 workers = 2 nodes x 2 devices).

Each msrun run is bounded by a timeout and msrun's own cluster timeout, so a failure never hangs the suite.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from locmoe_ms.ckpt import io
from locmoe_ms.moe.routers import balanced_table
from locmoe_ms.planning.flops import capacity_of
from locmoe_ms.planning.step_model import cluster_exchange_bytes
from tests.conftest import free_port
from tests.parallel import moe_layer_worker as worker

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "moe_layer_worker.py"
TIMEOUT = 420
# The worker's constants: 128 tokens of hidden 16, 4 experts, ids below 64, hash seed 1234.
TOKENS, HIDDEN, EXPERTS, VOCAB, HASH_SEED = 128, 16, 4, 64, 1234


MSRUN = "import sys; from mindspore.parallel.cluster.run import main; sys.argv[0] = 'msrun'; sys.exit(main())"


def msrun(workers: int, log_dir: Path, script: Path, *args, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", MSRUN, f"--worker_num={workers}",
               f"--local_worker_num={workers}", f"--master_port={free_port()}", f"--log_dir={log_dir}",
               "--join=True", "--cluster_time_out=120", str(script), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=log_dir.parent)


def _worker_logs(log_dir: Path) -> str:
    return "\n".join(p.read_text()[-1500:] for p in sorted(log_dir.glob("worker_*.log")))


def _layer_results(tmp_path_factory, mp: int, ep: int, cases: str):
    """Per rank and case: the rank's expert-parallel layer against the single-process layer on the same batch."""
    out = tmp_path_factory.mktemp(f"layer_tp{mp}_ep{ep}")
    run = msrun(4, out / "log", WORKER, out, mp, ep, cases)
    assert run.returncode == 0, _worker_logs(out / "log")
    return mp, ep, [json.loads((out / f"rank{r}.json").read_text()) for r in range(4)]


@pytest.fixture(scope="module")
def tp2_ep2(tmp_path_factory):
    return _layer_results(tmp_path_factory, 2, 2, "locmoe/plain,locmoe/groupwise,locmoe/overlapped,"
                                                  "locmoe/count_aware,hash/plain,hash/groupwise,hash/count_aware")


@pytest.fixture(scope="module")
def tp1_ep4(tmp_path_factory):
    return _layer_results(tmp_path_factory, 1, 4, "locmoe/plain,locmoe/overlapped,locmoe/count_aware")


@pytest.fixture(params=["tp2_ep2", "tp1_ep4"])
def layer_results(request):
    return request.getfixturevalue(request.param)


def test_expert_parallel_layer_equals_single_process(layer_results):
    """Outputs, loss, gradients (input and every parameter) and statistics match the one-process layer to 1e-5,
    for plain, group-wise, overlapped (chunked) and count-aware exchanges."""
    _, _, ranks = layer_results
    for rank in ranks:
        assert rank["results"], "the worker compared no case"
        for case, result in rank["results"].items():
            where = f"rank {rank['rank']} {case}"
            assert result["output"] < 1e-5, where
            assert abs(result["loss"] - result["ref_loss"]) < 1e-5 * max(1.0, abs(result["ref_loss"])), where
            assert result["grad_x"] < 1e-5, where
            assert set(result["grads"]) >= {"moe.experts.w_in", "moe.experts.w_out", "moe.experts.b_in"}, where
            assert max(result["grads"].values()) < 1e-5, (where, result["grads"])
            assert result["load"] == 0.0 and result["dropped"] == pytest.approx(result["ref_dropped"], abs=1e-6)
            # capacity factor 1.0 on uneven routing really drops tokens, so dropping is part of what matches
            if case.startswith("hash"):
                assert result["ref_dropped"] > 0.0, where


def _hash_fill(ids: np.ndarray, groups: int, capacity: int) -> np.ndarray:
    """[groups, experts] filled slots of the hash router, by hand: each group's counts per expert, capped."""
    table = balanced_table(VOCAB, EXPERTS, HASH_SEED)
    experts = table[ids].reshape(groups, -1)
    counts = np.stack([np.bincount(row, minlength=EXPERTS) for row in experts])
    return np.minimum(counts, capacity)


def test_byte_counters_equal_hand_computed_values(tp2_ep2):
    """tp2_ep2 on 2 nodes x 2 devices: rank r exchanges with the rank of the same TP index on the other node.
    Plain sends the padded payload; group-wise sends 1/t of it across nodes plus the All-Gather inside the node;
    count-aware (group-wise here) counts the filled slots only. The cluster model's bytes (planning/step_model.py)
    equal the counters for all three."""
    mp, ep, ranks = tp2_ep2
    per = EXPERTS // ep
    for rank in ranks:
        r = rank["rank"]
        plain, groupwise, counted = (rank["results"][f"hash/{k}"] for k in ("plain", "groupwise", "count_aware"))
        capacity = plain["capacity"]
        row = HIDDEN * 4
        padded = 2 * per * capacity * row                       # dispatch + combine, per destination
        assert plain["bytes"] == [padded, 0, padded]
        assert groupwise["bytes"] == [padded / 2, 2 * ep * per * capacity * row / 2, padded / 2]
        assert groupwise["bytes"][2] * mp == plain["bytes"][2]  # group-wise: 1/t of plain's inter-node bytes
        fill = _hash_fill(np.array(plain["ids"]), 2, capacity)
        group, block = r // mp, (r // mp) % ep
        other_group, other_block = 1 - group, 1 - block
        mine = slice(block * per, (block + 1) * per)
        theirs = slice(other_block * per, (other_block + 1) * per)
        same = fill[group, mine].sum() * 2                      # my tokens to my experts, and back
        cross = fill[group, theirs].sum() + fill[other_group, mine].sum()
        gathered = fill[:, mine].sum() + fill[group].sum()      # slices received for my experts, and returned
        assert counted["bytes"] == [same * row / mp, gathered * row / mp, cross * row / mp], r
        assert counted["bytes"][2] < plain["bytes"][2]
        # tools/cluster_model.py's bytes for the worker's config and these fills: the counters, every kind
        for key in ("plain", "groupwise", "count_aware"):
            cfg = worker.config("hash", mp, ep, *worker.EXCHANGES[key])
            assert capacity_of(cfg) == capacity
            assert cluster_exchange_bytes(cfg, fill)[r].tolist() == rank["results"][f"hash/{key}"]["bytes"], (r, key)


def test_a_dead_worker_fails_the_job_within_the_timeout(tmp_path):
    """Rank 1 exits before the first collective: msrun must exit non-zero instead of waiting forever."""
    run = msrun(4, tmp_path / "log", WORKER, tmp_path, 1, 4, "locmoe/plain", 1, timeout=240)
    assert run.returncode != 0
    assert "Error code: 3" in run.stdout + run.stderr + _worker_logs(tmp_path / "log")


# The training runs below: the router health options (GrAP without ReLU, the z-loss, bias balancing: sums over the
# global batch) and 2 micro-batches of 4 sequences a step are on, so that one pair of runs checks all of them on 4
# ranks. Jitter is left out: each rank draws noise for its own tokens.
HEALTH = ", grap_relu: false, z_loss_factor: 0.01, bias_balance_rate: 0.01}"
TRAIN_CONFIG = """\
model: {hidden_size: 32, num_heads: 2, ffn_hidden_size: 64, vocab_size: 257, seq_length: 32, num_layers: 2,
        sparse_layers: [1]}
moe_config: {expert_num: 4, router: locmoe, capacity_factor: 1.0, locality_loss_factor: 0.1""" + HEALTH + """
parallel_config: {nodes: 4, devices_per_node: 1, data_parallel: 4, model_parallel: 1, expert_parallel: 2}
train: {batch_size: 8, micro_batches: 2, warmup_steps: 0, max_steps: 4, log_every: 1, eval_every: 4, eval_batches: 2,
        save_every: 4, learning_rate: 0.003, loss_scale: dynamic, loss_scale_window: 1, inject_overflow_steps: [2]}
data: {corpus: wiki_en, tokenizer: byte, max_documents: 300}
"""


def _train_one_process(config: Path, out: Path, *extra: str) -> None:
    run = subprocess.run([sys.executable, "-m", "locmoe_ms.cli", "--config", str(config), "--output-dir", str(out),
                          *extra], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


def _train_four_ranks(config: Path, out: Path, log: Path, *extra: str) -> None:
    run = msrun(4, log, ROOT / "locmoe_ms" / "cli.py", "--config", config, "--output-dir", out,
                "--set", "parallel_config.communicator=cpu", *extra)
    assert run.returncode == 0, _worker_logs(log)


def _convert(*args) -> None:
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "convert_ckpt.py"), *map(str, args)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def training_runs(tmp_path_factory):
    """The same 4 steps in one process and on 4 msrun ranks (data parallel 4, expert parallel 2, TRAIN_CONFIG)."""
    tmp = tmp_path_factory.mktemp("training")
    config = tmp / "tiny.yaml"
    config.write_text(TRAIN_CONFIG)
    _train_one_process(config, tmp / "one")
    _train_four_ranks(config, tmp / "four", tmp / "log")
    return tmp, config


def test_data_and_expert_parallel_training_equals_one_process(training_runs):
    """4 ranks on 4 nodes (data parallel 4, expert parallel 2: every expert block on two ranks, every exchange
    across nodes) train 4 steps of 2 micro-batches, with the router health options, with the same per-step
    losses (the z-loss is in aux_loss), statistics and validation perplexity as one process on the same global batches. Rank 0
    alone injects an overflow at step 2 (after the gradient reduction): every rank skips that step, as one
    process does, and the dynamic scale (window 1) doubles, halves and doubles on every rank alike."""
    tmp, _ = training_runs
    expected = _records(tmp / "one" / "metrics.jsonl")
    assert [(e["skipped"], e["loss_scale"]) for e in expected] == \
        [(False, 65536.0), (True, 131072.0), (False, 65536.0), (False, 131072.0)]
    for rank in range(4):
        got = _records(tmp / "four" / f"rank_{rank}" / "metrics.jsonl")
        assert [g["step"] for g in got] == [1, 2, 3, 4]
        assert [(g["skipped"], g["loss_scale"]) for g in got] == [(e["skipped"], e["loss_scale"]) for e in expected]
        for g, e in zip(got, expected):
            for key in ("loss", "lm_loss", "aux_loss", "locality_loss"):
                assert g[key] == pytest.approx(e[key], rel=1e-5, abs=1e-6), (rank, g["step"], key)
            for gl, el in zip(g["moe_layers"], e["moe_layers"]):
                assert gl["tokens_per_expert"] == el["tokens_per_expert"]
                assert gl["dropped_share"] == pytest.approx(el["dropped_share"], abs=1e-6)
                assert gl["local_share"] == pytest.approx(el["local_share"], abs=1e-6)
                # 4 nodes of one device: expert groups {0, 1} and {2, 3} span two nodes each, so every byte
                # a rank sends to another rank crosses nodes
                assert gl["bytes_sent"]["inter_node"] > 0 and gl["bytes_sent"]["intra_node"] == 0
        assert got[-1]["valid_ppl"] == pytest.approx(expected[-1]["valid_ppl"], rel=1e-5)
        assert (tmp / "four" / f"rank_{rank}" / "checkpoints" / "step_00000004.ckpt").is_file()


BIAS = "network.blocks.1.moe.router.balance_bias"


def test_merged_rank_checkpoints_evaluate_to_the_logged_validation_perplexity(training_runs):
    tmp, config = training_runs
    merged = tmp / "merged.ckpt"
    _convert("merge", *(tmp / "four" / f"rank_{r}" for r in range(4)), "--output", merged)
    run = subprocess.run([sys.executable, "-c", "import sys; from locmoe_ms.cli import eval_main; "
                          "sys.exit(eval_main(sys.argv[1:]))", "--config", str(config), "--checkpoint", str(merged),
                          "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    logged = _records(tmp / "four" / "rank_0" / "metrics.jsonl")[-1]["valid_ppl"]
    assert json.loads(run.stdout.strip().splitlines()[-1])["valid_ppl"] == pytest.approx(logged, rel=1e-5)
    # bias balancing: after 4 steps every rank holds one process's balance_bias (the merge checks the replicas
    # are bit-identical)
    merged_params, _ = io.read(merged)
    one, _ = io.read(tmp / "one" / "checkpoints" / "step_00000004.ckpt")
    assert BIAS in one and np.abs(one[BIAS]).max() > 0  # the rule moved it
    np.testing.assert_array_equal(merged_params[BIAS], one[BIAS])


def test_split_checkpoint_resumes_at_another_world_size(training_runs):
    """The one-process checkpoint of step 4, split for 4 ranks, resumes under msrun with the losses of the
    one-process run resumed from the same checkpoint."""
    tmp, config = training_runs
    shutil.copytree(tmp / "one", tmp / "one_resumed")
    _train_one_process(config, tmp / "one_resumed", "--resume", "--max-steps", "6")
    _convert("split", tmp / "one" / "checkpoints" / "step_00000004.ckpt", "--expert-parallel", 2, "--world", 4,
             "--output", tmp / "split")
    _train_four_ranks(config, tmp / "split", tmp / "split_log", "--resume", "--max-steps", "6")
    expected = [r for r in _records(tmp / "one_resumed" / "metrics.jsonl") if r["step"] > 4]
    assert [r["step"] for r in expected] == [5, 6]
    for rank in range(4):
        got = _records(tmp / "split" / f"rank_{rank}" / "metrics.jsonl")
        assert [g["step"] for g in got] == [5, 6]
        for g, e in zip(got, expected):
            assert g["loss"] == pytest.approx(e["loss"], rel=1e-5), (rank, g["step"])


def test_init_from_a_checkpoint_starts_every_rank_from_its_balance_bias(training_runs):
    """--init-from the one-process checkpoint of step 4: every rank starts from its balance_bias too (not only from
    the trained weights), so one more step on 4 ranks ends where one process's does."""
    tmp, config = training_runs
    start = tmp / "one" / "checkpoints" / "step_00000004.ckpt"
    _train_one_process(config, tmp / "one_more", "--init-from", str(start), "--max-steps", "1")
    _train_four_ranks(config, tmp / "four_more", tmp / "log_more", "--init-from", start, "--max-steps", 1)
    _convert("merge", *(tmp / "four_more" / f"rank_{r}" for r in range(4)), "--output", tmp / "more.ckpt")
    after, _ = io.read(tmp / "more.ckpt")
    want, _ = io.read(tmp / "one_more" / "checkpoints" / "step_00000001.ckpt")
    one, _ = io.read(start)
    assert 0 < np.abs(want[BIAS] - one[BIAS]).max() <= 2 * 0.01 + 1e-7  # one step (2 micro-batches, rate 0.01)
    np.testing.assert_array_equal(after[BIAS], want[BIAS])


def test_micro_batches_in_one_process_train_as_one_batch(tmp_path):
    """train.micro_batches 2 (two micro-batches of 4 sequences a step) logs the losses, tokens per expert and
    validation perplexity of the same steps taken as one batch of 8 (hash routing and a capacity that drops
    nothing: nothing couples the micro-batches), the injected overflow skipping one update. On 4 ranks the
    micro-batches are those of the training runs above."""
    micro = TRAIN_CONFIG.replace("router: locmoe, capacity_factor: 1.0", "router: hash, capacity_factor: 8.0") \
        .replace(HEALTH, "}")  # hash has no learned gate for them to act on
    (tmp_path / "micro.yaml").write_text(micro)
    (tmp_path / "whole.yaml").write_text(micro.replace("micro_batches: 2,", "micro_batches: 1,"))
    _train_one_process(tmp_path / "micro.yaml", tmp_path / "one")
    _train_one_process(tmp_path / "whole.yaml", tmp_path / "whole")
    one, whole = _records(tmp_path / "one" / "metrics.jsonl"), _records(tmp_path / "whole" / "metrics.jsonl")
    assert [r["skipped"] for r in one] == [r["skipped"] for r in whole] == [False, True, False, False]
    for o, w in zip(one, whole):
        assert o["loss"] == pytest.approx(w["loss"], rel=1e-5), o["step"]
        assert [m["tokens_per_expert"] for m in o["moe_layers"]] == [m["tokens_per_expert"] for m in w["moe_layers"]]
    assert one[-1]["valid_ppl"] == pytest.approx(whole[-1]["valid_ppl"], rel=1e-5)
