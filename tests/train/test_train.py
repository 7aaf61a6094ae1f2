"""locmoe-train / locmoe-eval on the real corpus (Wikipedia intros, GPT-2 BPE), run as real processes."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "model_configs" / "tiny_cpu.yaml")
# A small model on the real corpus so that every router trains in seconds.
SMALL = ["--set", "model.hidden_size=64", "--set", "model.ffn_hidden_size=128", "--set", "model.seq_length=32",
         "--set", "train.eval_batches=2", "--set", "train.log_every=5", "--set", "data.max_documents=1500",
         "--set", "train.warmup_steps=5", "--set", "train.learning_rate=0.003", "--set", "train.batch_size=8"]
TIMEOUT = 600


def _cli(name, *args, timeout=TIMEOUT):
    code = f"import sys; from locmoe_ms.cli import {name}; sys.exit({name}(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def _train(out, *extra, timeout=TIMEOUT):
    return _cli("train_main", "--config", CONFIG, *SMALL, "--output-dir", str(out), *extra, timeout=timeout)


def _metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("router", ["locmoe", "switch", "hash", "rre"])
def test_loss_falls_over_30_steps_for_each_router(tmp_path, router):
    run = _train(tmp_path, "--router", router, "--max-steps", "30", "--set", "train.eval_every=30",
                 "--set", "train.save_every=30")
    assert run.returncode == 0, run.stderr[-2000:]
    losses = [m["lm_loss"] for m in _metrics(tmp_path)]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 1.0, (router, first, last)


@pytest.fixture(scope="module")
def four_steps(tmp_path_factory):
    """4 steps, validated at steps 2 and 4, saved at step 4: (output directory, the run's process)."""
    out = tmp_path_factory.mktemp("four_steps")
    run = _train(out, "--max-steps", "4", "--set", "train.eval_every=2", "--set", "train.save_every=4")
    assert run.returncode == 0, run.stderr[-2000:]
    return out, run


def test_metrics_jsonl_schema(four_steps):
    tmp_path, run = four_steps
    records = _metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert {"step", "loss", "lm_loss", "aux_loss", "locality_loss", "lr", "tokens_per_s", "moe_layers",
                "loss_scale", "skipped"} <= set(r)
        assert (r["loss_scale"], r["skipped"]) == (1.0, False)  # train.loss_scale none
        assert r["loss"] == pytest.approx(r["lm_loss"] + r["aux_loss"] + r["locality_loss"], rel=1e-5)
        assert len(r["moe_layers"]) == 2
        for layer in r["moe_layers"]:
            assert len(layer["tokens_per_expert"]) == 8 and sum(layer["tokens_per_expert"]) == 8 * 32
            assert isinstance(layer["dropped_share"], float) and isinstance(layer["local_share"], float)
            assert layer["bytes_sent"] == {"same_device": 0, "intra_node": 0, "inter_node": 0}  # one process
    assert "valid_ppl" in records[1] and "valid_ppl" in records[3] and "valid_ppl" not in records[0]
    assert "step 4/4" in run.stderr and "tok/s" in run.stderr and "ETA" in run.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["valid_ppl"] == pytest.approx(records[3]["valid_ppl"])
    import mindspore
    import numpy
    assert summary["device"] == "CPU"
    assert (summary["machine"]["cores"], summary["machine"]["mindspore"], summary["machine"]["numpy"]) == \
        (os.cpu_count(), mindspore.__version__, numpy.__version__)


SCALING = ["--set", "train.loss_scale=dynamic", "--set", "train.loss_scale_window=2",
           "--set", "train.inject_overflow_steps=[3,7,10]"]
DOMAINS = ["--set", "data.corpus=wiki_en+peoples_daily", "--set", "data.node_domains=[0, 1]"]


def test_killed_run_resumes_with_identical_losses(tmp_path):
    """SIGKILL after the step-8 checkpoint, then --resume: every step's loss, loss scale (dynamic, three injected
    overflows: the scaler's state is in the checkpoint), skipped step and learning rate, and each domain's
    validation perplexity (domain-sharded data: every domain's stream position is in it) equals the unbroken run's."""
    steps = ["--max-steps", "12", "--set", "train.save_every=4", "--set", "train.eval_every=12", *SCALING, *DOMAINS]
    straight = _train(tmp_path / "straight", *steps)
    assert straight.returncode == 0, straight.stderr[-2000:]

    out = tmp_path / "killed"
    code = "import sys; from locmoe_ms.cli import train_main; sys.exit(train_main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "--config", CONFIG, *SMALL, "--output-dir", str(out), *steps],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + TIMEOUT
    while not (out / "checkpoints" / "step_00000008.ckpt").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    resumed = _train(out, *steps, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    a, b = _metrics(tmp_path / "straight"), _metrics(out)
    assert [r["step"] for r in b] == list(range(1, 13))
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) <= 1e-6, (x["step"], x["loss"], y["loss"])
        assert (x["loss_scale"], x["skipped"], x["lr"]) == (y["loss_scale"], y["skipped"], y["lr"]), x["step"]
    assert [r["step"] for r in a if r["skipped"]] == [3, 7, 10]
    assert len({r["loss_scale"] for r in a}) > 1  # the scale moved: window 2 doubles it, each overflow halves it
    assert set(a[-1]["valid_ppl_by_domain"]) == {"wiki_en", "peoples_daily"}
    assert a[-1]["valid_ppl_by_domain"] == b[-1]["valid_ppl_by_domain"]


def test_eval_reproduces_the_perplexity_logged_at_save_time(four_steps, tmp_path):
    run_dir = four_steps[0]
    logged = _metrics(run_dir)[-1]["valid_ppl"]
    saved = str(run_dir / "checkpoints" / "step_00000004.ckpt")
    ev = _cli("eval_main", "--config", CONFIG, *SMALL, "--checkpoint", saved, "--json")
    assert ev.returncode == 0, ev.stderr[-2000:]
    result = json.loads(ev.stdout.strip().splitlines()[-1])
    assert result["valid_ppl"] == pytest.approx(logged, rel=1e-6)
    assert result["valid_ppl_at_save"] == pytest.approx(logged, rel=1e-6)
    # --init-from starts a new run from those weights: with a vanishing learning rate its first validation equals
    # the checkpoint's; a fresh start is far from it
    start = _train(tmp_path / "again", "--init-from", saved, "--max-steps", "1", "--set", "train.eval_every=1",
                   "--set", "train.warmup_steps=0", "--set", "train.learning_rate=1.0e-12",
                   "--set", "train.min_learning_rate=0")
    assert start.returncode == 0, start.stderr[-2000:]
    assert _metrics(tmp_path / "again")[0]["valid_ppl"] == pytest.approx(logged, rel=1e-5)
    # the same checkpoint under another router is another model: refused, naming the key and both values
    other = _cli("eval_main", "--config", CONFIG, *SMALL, "--set", "moe_config.router=hash", "--checkpoint", saved)
    _assert_one_line_error(other, "step_00000004.ckpt", "moe_config.router: saved 'locmoe', now 'hash'")


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    """2 steps saved at step 2, started with --resume in an empty directory: (output directory, the process)."""
    out = tmp_path_factory.mktemp("two_steps") / "run"
    run = _train(out, "--max-steps", "2", "--set", "train.eval_every=2", "--set", "train.save_every=2", "--resume")
    assert run.returncode == 0, run.stderr[-2000:]
    return out, run


def _copy(two_steps, tmp_path) -> Path:
    """A copy of the two-step run to change or resume."""
    shutil.copytree(two_steps[0], tmp_path / "run")
    return tmp_path / "run"


def test_resume_without_a_checkpoint_says_so_and_starts_at_step_1(two_steps):
    out, run = two_steps
    assert f"warning: --resume: no checkpoint in {out / 'checkpoints'}; starting at step 1" in run.stderr
    assert [r["step"] for r in _metrics(out)] == [1, 2]


def _assert_one_line_error(run, *parts):
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def test_bad_data_path(tmp_path):
    run = _train(tmp_path / "out", "--max-steps", "2", "--set", "data.corpus=files",
                 "--set", f"data.paths=[{tmp_path / 'missing.txt'}]")
    _assert_one_line_error(run, "missing.txt", "file not found")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    run = _train(tmp_path / "out", "--max-steps", "2", "--set", "data.corpus=files", "--set", f"data.paths=[{empty}]")
    _assert_one_line_error(run, "empty.jsonl", "no text")


def test_bad_checkpoint(tmp_path):
    ckpt = tmp_path / "step_00000001.ckpt"
    ckpt.write_bytes(b"\x00garbage" * 100)
    _assert_one_line_error(_cli("eval_main", "--config", CONFIG, "--checkpoint", str(ckpt)), str(ckpt), "corrupted")
    _assert_one_line_error(_cli("eval_main", "--config", CONFIG, "--checkpoint", str(tmp_path / "nope.ckpt")),
                           "nope.ckpt", "not found")


def test_truncated_checkpoint_is_refused_on_resume(two_steps, tmp_path):
    run_dir = _copy(two_steps, tmp_path)
    ckpt = run_dir / "checkpoints" / "step_00000002.ckpt"
    data = ckpt.read_bytes()
    os.chmod(ckpt, 0o600)
    ckpt.write_bytes(data[: len(data) // 2])
    before = (run_dir / "metrics.jsonl").read_text()
    _assert_one_line_error(_train(run_dir, "--max-steps", "4", "--resume"), "step_00000002.ckpt", "corrupted")
    assert (run_dir / "metrics.jsonl").read_text() == before, "a refused resume must not touch the run"


@pytest.mark.parametrize("args,parts", [
    (["--set", "model.hidden_size=-1"], ["model.hidden_size = -1", ">= 1"]),
    (["--set", "nodot=1"], ["--set 'nodot=1'", "section.key"]),
    (["--set", "model.hidden_size"], ["expected section.key=value"]),
    (["--router", "gshard"], ["--router", "invalid choice"]),
    (["--max-steps", "zero"], ["--max-steps", "invalid int value"]),
    (["--set", "model.compute_dtype=float16"], ["model.compute_dtype = 'float16'", "on CPU",
                                                "--set model.compute_dtype=float32"]),
    (["--set", "train.device_target=ascend"], ["train.device_target = 'ascend'", "cannot use Ascend"]),
    (["--set", "train.device_target=npu"], ["train.device_target = 'npu'", "one of auto, cpu, ascend"]),
    (["--set", "train.inject_overflow_steps=[3]"], ["train.inject_overflow_steps = [3]", "train.loss_scale"]),
])
def test_bad_overrides_and_flags(tmp_path, args, parts):
    _assert_one_line_error(_train(tmp_path, *args), *parts)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_existing_run_is_not_overwritten_without_resume(two_steps, tmp_path):
    run_dir = _copy(two_steps, tmp_path)
    before = (run_dir / "metrics.jsonl").read_text()
    _assert_one_line_error(_train(run_dir, "--max-steps", "2"), "--resume")
    assert (run_dir / "metrics.jsonl").read_text() == before
