"""tools/experiments.py and tools/report.py on 3-4 step runs: the arms' configs, resuming an interrupted suite,
the report's tables against the runs' own files, and the report without matplotlib."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS, REPORT = ROOT / "tools" / "experiments.py", ROOT / "tools" / "report.py"
SMALL = ["model.hidden_size=64", "model.ffn_hidden_size=128", "model.seq_length=32", "train.eval_batches=2",
         "data.max_documents=600", "train.batch_size=8", "train.warmup_steps=0", "train.save_every=2"]
TIMEOUT = 600


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def _experiments(out, *args, timeout=TIMEOUT):
    return subprocess.run([sys.executable, str(EXPERIMENTS), "--output-dir", str(out), *args, *_sets(SMALL)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def capacity_runs(tmp_path_factory):
    """Two arms of the capacity suite, 3 steps each."""
    out = tmp_path_factory.mktemp("suites")
    run = _experiments(out, "--suite", "capacity", "--arms", "switch-cf0.5,locmoe-cf2.0", "--steps", "3")
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def test_each_arm_trains_its_own_config(capacity_runs):
    suite = capacity_runs / "capacity"
    assert sorted(p.name for p in suite.iterdir()) == ["locmoe-cf2.0-s0", "switch-cf0.5-s0"]
    for name, router, factor in (("switch-cf0.5-s0", "switch", 0.5), ("locmoe-cf2.0-s0", "locmoe", 2.0)):
        config = json.loads((suite / name / "config.json").read_text())
        assert (config["moe_config"]["router"], config["moe_config"]["capacity_factor"]) == (router, factor)
        assert config["train"]["max_steps"] == 3 and config["train"]["eval_every"] == 50  # the suites' common key
        assert config["model"]["hidden_size"] == 64  # --set applies after the arm's overrides
        assert [r["step"] for r in _metrics(suite / name)] == [1, 2, 3]
        assert json.loads((suite / name / "summary.json").read_text())["router"] == router
    # a different setting for an existing run is refused before anything trains
    again = _experiments(capacity_runs, "--suite", "capacity", "--arms", "switch-cf0.5", "--steps", "4")
    assert again.returncode == 2 and "train.max_steps" in again.stderr and again.stderr.count("\n") == 1


def test_report_tables_come_from_the_runs(capacity_runs, tmp_path):
    run = subprocess.run([sys.executable, str(REPORT), str(capacity_runs), "--output", str(tmp_path)],
                         capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    text = (tmp_path / "README.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in text.splitlines()
            if line.startswith("| ") and "-cf" in line}
    for name in ("switch-cf0.5", "locmoe-cf2.0"):
        run_dir = capacity_runs / "capacity" / f"{name}-s0"
        summary, last = json.loads((run_dir / "summary.json").read_text()), _metrics(run_dir)[-1:]
        dropped = sum(layer["dropped_share"] for r in last for layer in r["moe_layers"]) / len(last[0]["moe_layers"])
        router, factor, ppl, shown_dropped = rows[name][:4]
        assert (router, factor) == (name.split("-")[0], name.split("cf")[1].rstrip("0").rstrip(".") or "0")
        assert ppl == f"{summary['valid_ppl']:.1f}" and shown_dropped == f"{dropped:.1%}"
    assert (tmp_path / "capacity.png").stat().st_size > 1000 and "![capacity.png](capacity.png)" in text


def test_report_without_matplotlib_writes_tables_and_says_so(capacity_runs, tmp_path):
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('matplotlib hidden by the test')\n")
    env = {"PYTHONPATH": str(tmp_path / "shadow"), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, str(REPORT), str(capacity_runs / "capacity"), "--output",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    text = (tmp_path / "out" / "README.md").read_text()
    assert "Plots skipped: matplotlib is not installed" in text and "| switch-cf0.5 | switch | 0.5 |" in text
    assert not list((tmp_path / "out").glob("*.png"))


def test_an_interrupted_suite_resumes_where_it_stopped(tmp_path):
    """SIGTERM while the arm trains (after its step-2 checkpoint): the rerun resumes it from step 2 with the losses
    of an unbroken run; a third run finds it done. (Arms not yet started train afresh: the fixture above.)"""
    args = ["--suite", "health", "--arms", "z-loss", "--steps", "4"]
    proc = subprocess.Popen([sys.executable, str(EXPERIMENTS), "--output-dir", str(tmp_path / "cut"), *args,
                             *_sets(SMALL)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "cut" / "health" / "z-loss-s0"
    deadline = time.time() + TIMEOUT
    while not (first / "checkpoints" / "step_00000002.ckpt").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) != 0
    assert not (first / "summary.json").exists()
    resumed = _experiments(tmp_path / "cut", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[1/1] health/z-loss-s0: resuming" in resumed.stderr and "resumed from" in resumed.stderr
    straight = _experiments(tmp_path / "straight", "--suite", "health", "--arms", "z-loss", "--steps", "4")
    assert straight.returncode == 0, straight.stderr[-3000:]
    cut, whole = _metrics(first), _metrics(tmp_path / "straight" / "health" / "z-loss-s0")
    assert [r["step"] for r in cut] == [1, 2, 3, 4]
    assert [r["loss"] for r in cut] == pytest.approx([r["loss"] for r in whole], abs=1e-6)
    done = _experiments(tmp_path / "cut", *args)
    assert done.returncode == 0 and done.stderr.count("done already") == 1


def test_routing_statistics_of_hand_made_records():
    from locmoe_ms.experiments.analysis import all_experts_fed_from, last_step_single_expert, routing_summary

    def record(step, *loads):
        return {"step": step, "moe_layers": [{"tokens_per_expert": list(load), "dropped_share": 0.1 * step,
                                              "local_share": 0.5} for load in loads]}

    records = [record(1, (5, 5, 0), (4, 4, 2)), record(2, (9, 1, 0), (3, 3, 4)), record(3, (3, 3, 4), (1, 1, 8)),
               record(4, (2, 4, 4), (3, 3, 4))]
    assert all_experts_fed_from(records) == 3  # step 2 leaves expert 2 of layer 0 idle
    assert all_experts_fed_from(records[:2]) is None
    assert last_step_single_expert(records) == 3  # 9/10 at step 2, 8/10 at step 3, then at most 4/10
    summary = routing_summary(records)  # last quarter of 4 steps: step 4 alone
    assert summary == pytest.approx({"dropped": 0.4, "local": 0.5, "experts_used": 3.0, "top_share": 0.4})


def test_health_references_are_the_routers_runs_of_its_seeds():
    from locmoe_ms.experiments.analysis import Run
    from locmoe_ms.experiments.report import reference_runs

    def run(suite, arm, seed):
        return Run(suite, arm, seed, Path(f"{suite}/{arm}-s{seed}"), {}, [], None)

    routers = [run("routers", arm, seed) for arm in ("locmoe", "switch", "hash") for seed in (0, 1, 2)]
    health = [run("health", "no-relu", 0), run("health", "no-relu", 1), run("health", "z-loss", 0)]
    refs = reference_runs("health", health, routers + health)
    assert {ref: [r.key for r in runs] for ref, runs in refs.items()} == {
        "routers/locmoe": ["routers/locmoe-s0", "routers/locmoe-s1"],
        "routers/hash": ["routers/hash-s0", "routers/hash-s1"]}
    assert reference_runs("health", health[2:], routers) == {"routers/locmoe": [routers[0]],
                                                              "routers/hash": [routers[6]]}
    assert reference_runs("routers", routers, routers) == {}
