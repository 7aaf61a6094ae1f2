"""tools/measure_delta.py: the routed cosine against a NumPy reference, and the tool on a trained run."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.reference import grap_weight_reference

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from measure_delta import routed_cosines  # noqa: E402

TRAIN = [sys.executable, "-c", "import sys; from locmoe_ms.cli import train_main; sys.exit(train_main(sys.argv[1:]))"]
SMALL = ["--set", "model.hidden_size=64", "--set", "model.ffn_hidden_size=128", "--set", "model.seq_length=32",
         "--set", "train.eval_batches=2", "--set", "data.max_documents=600", "--set", "train.batch_size=8"]


def test_routed_cosine_equals_the_definition():
    rng = np.random.default_rng(0)
    x, index = rng.normal(0, 1, (50, 24)), rng.integers(0, 6, 50)
    w = grap_weight_reference(6, 24)
    expected = [w[e] @ t / (np.linalg.norm(w[e]) * np.linalg.norm(t)) for t, e in zip(x, index)]
    np.testing.assert_allclose(routed_cosines(x, index, 6), expected, rtol=1e-12)


def test_tool_reads_every_validation_token_of_each_sparse_layer(tmp_path):
    for router in ("locmoe", "hash"):
        run = subprocess.run([*TRAIN, "--config", str(ROOT / "model_configs" / "tiny_cpu.yaml"), *SMALL, "--router",
                              router, "--max-steps", "2", "--output-dir", str(tmp_path / router)],
                             capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert run.returncode == 0, run.stderr[-2000:]
    tool = [sys.executable, str(ROOT / "tools" / "measure_delta.py")]
    out = subprocess.run([*tool, str(tmp_path / "locmoe"), "--batches", "2", "--json"], capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["layer"] for r in rows] == [1, 3]
    assert all(r["tokens"] == 2 * 8 * 32 for r in rows)  # 2 batches of 8 sequences of 32 tokens
    # 8 * 32 tokens over 8 token groups, capacity factor 1.25 over 8 experts: ceil(1.25 * 32 / 8) = 5, min_capacity 4
    assert all(r["capacity_used"] == 5 for r in rows)
    assert all(r["q1"] <= r["median"] <= r["q3"] for r in rows)
    bad = subprocess.run([*tool, str(tmp_path / "hash")], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "router 'hash'" in bad.stderr
