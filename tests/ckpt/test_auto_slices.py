"""Auto-mode checkpoints on real strategy files: the Ascend dry run compiles a job and writes its strategy
checkpoint (as locmoe-train does at the first step); tools/convert_ckpt.py splits, reshards and merges with
MindSpore's transforms, which run on the host; the dry-run child saves and resumes through train/loop.py's own
start and save functions. Expectations are a trained checkpoint's bytes and the compiled layout dict's slices."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor

from locmoe_ms.ckpt import io
from locmoe_ms.config import load_config
from locmoe_ms.model.network import build_model
from locmoe_ms.train import checkpoint
from tests.conftest import MISSING, dryrun, tool_cases

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "convert_ckpt.py"
pytestmark = [pytest.mark.ascend_dryrun,
              pytest.mark.skipif(bool(MISSING), reason=f"building stand-in CANN libraries needs {', '.join(MISSING)}")]

# tiny_cpu on 8 devices: dp 4, mp 2, ep 4, the parallel optimizer on (as the Ascend dry-run tests)
TINY = ["--set", "parallel_config.model_parallel=2", "--set", "parallel_config.data_parallel=4",
        "--set", "parallel_config.expert_parallel=4", "--set", "parallel_config.exchange=groupwise"]
AUTO_8 = ["--devices", "8", "--mode", "auto", *TINY, "--set", "parallel_config.optimizer_shard=true"]
# PanGu-Sigma's clusters (dp, mp 8, ep, 40 heads, 16 experts) with 2 blocks, hidden and FFN 640, sequence 256, a
# 4096-id vocabulary and one micro-batch of 2 sequences per group. At hidden 5120 one sparse block alone holds
# 3.4B parameters (16 experts x 2 x 5120 x 20480), 13 GB in float32, more than these machines hold twice.
PANGU_SETS = ["model.hidden_size=640", "model.ffn_hidden_size=640", "model.num_layers=2", "model.sparse_layers=[1]",
              "model.seq_length=256", "model.vocab_size=4096", "data.vocab_limit=4096", "train.micro_batches=1"]
PANGU_CUT = ["--mode", "auto"] + [a for s in PANGU_SETS for a in ("--set", s)]


def _tool(*args, timeout=600):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _ok(run):
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _refused(run, message: str) -> None:
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and message in lines[0], run.stderr[-2000:]


def _same(a: dict, b: dict, skip=checkpoint.DERIVED) -> None:
    assert set(a) - set(skip) == set(b) - set(skip)
    for name in set(a) - set(skip):
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


def _files(tree: Path) -> dict[str, int]:
    return {str(p.relative_to(tree)): p.stat().st_size for p in tree.rglob("*")} if tree.exists() else {}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """tiny_cpu after 2 real training steps in one process (locmoe-train's loop), moments included."""
    from locmoe_ms.job import train
    root = tmp_path_factory.mktemp("trained")
    cfg = load_config(ROOT / "model_configs" / "tiny_cpu.yaml", ["train.max_steps=2", "train.eval_every=2",
                                                                   "train.save_every=2", "train.eval_batches=1"])
    train(cfg, root / "run")
    return root / "run" / "checkpoints" / "step_00000002.ckpt"


@pytest.fixture(scope="module")
def job(cann_stub, tmp_path_factory, trained) -> dict:
    """Rank 3 of the 8-device auto job, started from the trained weights (--init-from) and saved as locmoe-train
    saves (--save-checkpoint): the job's strategy checkpoint and this rank's slices."""
    tmp = tmp_path_factory.mktemp("job")
    code, out, result = dryrun(cann_stub, tmp, *AUTO_8, "--rank", "3", "--output-dir", str(tmp / "out"),
                               "--init-from", str(trained), "--save-checkpoint")
    assert code == 0 and result["saved"], out[-3000:]
    return {"dir": tmp / "out", "result": result, "strategy": tmp / "out" / "rank_3" / "strategy.ckpt"}


@pytest.fixture(scope="module")
def split8(job, trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("split8") / "run"
    _ok(_tool("split", trained, "--strategy", job["strategy"], "--output", out))
    return out


def test_a_rank_saves_its_own_slices_as_the_compiled_layout_holds_them(job, trained, split8):
    """The dry-run rank's saved file holds every parameter at the compiled (sliced, optimizer-sharded) shape, the
    model weights equal MindSpore's split of the trained checkpoint for that rank bit for bit, and its metadata
    names the job: mode auto, 8 ranks, rank 3, the strategy's digest."""
    saved, meta = io.read(job["result"]["saved"])
    stored = job["result"]["stored_shapes"]
    assert {n: list(a.shape) for n, a in saved.items()} == stored  # every parameter of the train step
    mine, mine_meta = io.read(split8 / "rank_3" / "checkpoints" / "step_00000002.ckpt")
    models = [n for n in saved if io.is_model_parameter(n)]
    _same({n: saved[n] for n in models}, {n: mine[n] for n in models})
    assert {n: a.shape for n, a in mine.items() if n not in checkpoint.DERIVED} == \
        {n: a.shape for n, a in saved.items() if n not in checkpoint.DERIVED}
    digest = checkpoint.strategy_digest(job["strategy"])
    assert (meta["mode"], meta["world_size"], meta["rank"], meta["strategy_digest"]) == ("auto", 8, 3, digest)
    assert (mine_meta["mode"], mine_meta["world_size"], mine_meta["rank"], mine_meta["step"]) == ("auto", 8, 3, 2)
    layouts, sharded = job["result"]["layouts"], job["result"]["opt_shard_groups"]
    moments = [n for n in sharded if n.startswith("adam_m.")]
    assert moments and all(saved[n].shape[0] < layouts[n][2][0] for n in moments)  # split again over their group


def test_split_then_merge_is_bit_identical(split8, trained, tmp_path):
    merged = tmp_path / "merged.ckpt"
    _ok(_tool("merge", *sorted(split8.glob("rank_*")), "--output", merged))
    (full, full_meta), (back, back_meta) = io.read(trained), io.read(merged)
    _same(full, back, skip=())
    assert back_meta == full_meta


def test_resume_loads_this_ranks_slices_and_refuses_another_job(cann_stub, split8, job, tmp_path):
    """--resume compiles, then loads rank 3's split file; a file of rank 2, of a 16-device job, or of a job
    without the parallel optimizer (another strategy) is refused in one line, the directory left as it was."""
    code, out, result = dryrun(cann_stub, tmp_path, *AUTO_8, "--rank", "3", "--output-dir", str(split8), "--resume")
    assert code == 0 and result["resumed"].endswith("rank_3/checkpoints/step_00000002.ckpt"), out[-3000:]
    wrong = tmp_path / "wrong"
    (wrong / "rank_3").mkdir(parents=True)
    (wrong / "rank_3" / "checkpoints").symlink_to(split8 / "rank_2" / "checkpoints")
    code, out, _ = dryrun(cann_stub, tmp_path, *AUTO_8, "--rank", "3", "--output-dir", str(wrong), "--resume")
    assert code == 2 and out.strip().splitlines()[-1].endswith(
        "step_00000002.ckpt: saved by rank 2, read by rank 3 of 8 (auto-parallel); merge, split or reshard it with "
        "tools/convert_ckpt.py"), out[-2000:]
    before = _files(split8)
    code, out, _ = dryrun(cann_stub, tmp_path, *AUTO_8[2:], "--set", "parallel_config.nodes=4", "--set",
                          "parallel_config.data_parallel=8", "--rank", "3", "--output-dir", str(split8), "--resume")
    assert code == 2 and "saved by rank 3 of 8 (auto-parallel), read by rank 3 of 16 (auto-parallel)" in out, out
    code, out, _ = dryrun(cann_stub, tmp_path, *AUTO_8, "--set", "parallel_config.optimizer_shard=false",
                          "--rank", "3", "--output-dir", str(split8), "--resume")
    digest = checkpoint.strategy_digest(job["strategy"])
    assert code == 2 and f"saved under strategy {digest[:12]}, this job's is " in out, out[-2000:]
    assert _files(split8) == before


def test_bad_inputs_one_line_nothing_written(split8, trained, job, tmp_path):
    out = tmp_path / "out"
    ranks = sorted(split8.glob("rank_*"))
    other = tmp_path / "other"  # the same job's slices at another step: a job's files mixed with another's
    for rank in ranks:
        params, meta = io.read(rank / "checkpoints" / "step_00000002.ckpt")
        io.write(other / rank.name / "checkpoints" / "step_00000004.ckpt", params, {**meta, "step": 4})
    mixed = tmp_path / "mixed"  # rank 7 from a job of another strategy
    params, meta = io.read(ranks[7] / "checkpoints" / "step_00000002.ckpt")
    io.write(mixed / "rank_7" / "checkpoints" / "step_00000002.ckpt", params, {**meta, "strategy_digest": "0" * 64})
    foreign = tmp_path / "foreign.ckpt"  # a strategy checkpoint of another model (a MindSpore one of 2 entries)
    ms.save_checkpoint([{"name": "w", "data": Tensor(np.zeros(2, np.float32))}], str(foreign))
    cases = [
        (["merge", *ranks[:-1], "--output", out / "m.ckpt"], "rank 7 of world_size 8 missing"),
        (["merge", *ranks[:4], *sorted(other.glob("rank_*"))[4:], "--output", out / "m.ckpt"],
         "shards from different steps"),
        (["merge", *ranks[:7], mixed / "rank_7", "--output", out / "m.ckpt"],
         "saved under strategy 000000000000, "),
        (["merge", *ranks, "--strategy", foreign, "--output", out / "m.ckpt"], "not a MindSpore strategy checkpoint"),
        (["split", trained, "--strategy", tmp_path / "none.ckpt", "--output", out], "none.ckpt: strategy checkpoint "
                                                                                    "not found"),
        (["split", split8 / "rank_0" / "checkpoints" / "step_00000002.ckpt", "--strategy", job["strategy"],
          "--output", out], "is a per-rank checkpoint (rank 0 of 8); merge it first"),
        (["split", trained, "--strategy", job["strategy"], "--output", split8], "holds checkpoints already"),
        (["reshard", *ranks[1:], "--strategy", job["strategy"], "--output", out], "rank 0 of world_size 8 missing"),
        (["merge", trained, "--output", out / "m.ckpt"], "not a per-rank shard"),
    ]
    before = _files(split8)
    for (_, message), run in zip(cases, tool_cases(TOOL, [args for args, _ in cases])):
        _refused(run, message)
    assert not out.exists()
    assert _files(split8) == before


@pytest.fixture(scope="module")
def pangu_strategies(cann_stub, tmp_path_factory) -> dict:
    """Strategy checkpoints of pangu_sigma_64n (parallel optimizer on) and pangu_sigma_128n (off), cut, rank 0,
    with each compile's layout dict."""
    found = {}
    for name, nodes_batch, shard in (("64n", 16, "true"), ("128n", 32, "false")):
        tmp = tmp_path_factory.mktemp(f"pangu{name}")
        code, out, result = dryrun(cann_stub, tmp, *PANGU_CUT, "--set", f"train.batch_size={nodes_batch}",
                                   "--set", f"parallel_config.optimizer_shard={shard}", "--output-dir",
                                   str(tmp / "out"), config=f"model_configs/pangu_sigma_{name}.yaml", timeout=600)
        assert code == 0, out[-3000:]
        found[name] = {"strategy": tmp / "out" / "rank_0" / "strategy.ckpt", "result": result}
    return found


def test_pangu_64n_slices_reshard_to_128n_and_merge_bit_identical(pangu_strategies, tmp_path):
    """Random weights of pangu_sigma_64n cut as above: split for 64 devices with the parallel optimizer,
    resharded to the 128-device job without it, merged: the original bit for bit. Rank 0's slices at each size have
    the compiled layout dict's shapes."""
    cfg = load_config(ROOT / "model_configs" / "pangu_sigma_64n.yaml", PANGU_SETS + ["train.batch_size=16"])
    ms.set_seed(0)
    net = build_model(cfg)
    rng = np.random.default_rng(1)
    for p in net.get_parameters():
        p.set_data(Tensor(rng.standard_normal(p.shape, dtype=np.float32)))
    full = checkpoint.save(net, tmp_path / "full", 7, {"config_json": json.dumps(cfg.to_dict())}, keep=1)
    del net
    _ok(_tool("split", full, "--strategy", pangu_strategies["64n"]["strategy"], "--output", tmp_path / "j64"))
    _ok(_tool("reshard", *sorted((tmp_path / "j64").glob("rank_*")), "--strategy",
              pangu_strategies["128n"]["strategy"], "--output", tmp_path / "j128"))
    run = _ok(_tool("merge", *sorted((tmp_path / "j128").glob("rank_*")), "--output", tmp_path / "merged.ckpt"))
    assert "peak host memory" in run.stdout
    _same(io.read(full)[0], io.read(tmp_path / "merged.ckpt")[0], skip=())
    for name, job in (("64n", "j64"), ("128n", "j128")):
        stored = pangu_strategies[name]["result"]["stored_shapes"]
        params, meta = io.read(tmp_path / job / "rank_0" / "checkpoints" / "step_00000007.ckpt")
        assert params and {n: list(a.shape) for n, a in params.items()} == {n: stored[n] for n in params}, name
        assert meta["world_size"] == {"64n": 64, "128n": 128}[name]
    assert len(list((tmp_path / "j128").glob("rank_*"))) == 128


def test_a_strategy_of_another_model_or_job_is_refused(pangu_strategies, trained, split8, tmp_path):
    """tiny's trained checkpoint split under PanGu's strategy (another model), and the 8 tiny slices merged under
    the 64-device job's strategy (another job and world size): one line each, nothing written."""
    out = tmp_path / "out"
    _refused(_tool("split", trained, "--strategy", pangu_strategies["64n"]["strategy"], "--output", out),
             "a strategy of another model")
    digest = checkpoint.strategy_digest(pangu_strategies["64n"]["strategy"])
    _refused(_tool("merge", *sorted(split8.glob("rank_*")), "--strategy", pangu_strategies["64n"]["strategy"],
                   "--output", out / "m.ckpt"), f"strategy {digest[:12]}, but the slices were saved under ")
    assert not out.exists()
