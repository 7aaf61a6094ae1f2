"""tools/compare_routers.py: routers trained on equal footing, a side-by-side table; bad input is one line, exit 2."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "compare_routers.py"
SMALL = ["--set", "model.hidden_size=64", "--set", "model.ffn_hidden_size=128", "--set", "model.seq_length=32",
         "--set", "train.eval_batches=2", "--set", "data.max_documents=600", "--set", "train.batch_size=8",
         "--set", "train.warmup_steps=0"]


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_two_routers_side_by_side(tmp_path):
    out = _run("--routers", "hash,locmoe", "--steps", "4", "--output-dir", tmp_path / "cmp", "--json",
               tmp_path / "rows.json", *SMALL)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["router"] for r in rows] == ["hash", "locmoe"]
    lines = out.stdout.splitlines()
    assert lines[1].split()[:3] == ["router", "valid", "ppl"]
    runs = {}
    for router in ("hash", "locmoe"):  # each row against that router's own run, counted here independently
        summary = json.loads((tmp_path / "cmp" / router / "summary.json").read_text())
        metrics = [json.loads(line) for line in (tmp_path / "cmp" / router / "metrics.jsonl").read_text().splitlines()]
        last = metrics[-1:]  # 4 steps: the last quarter is the last step
        layers = [layer for record in last for layer in record["moe_layers"]]
        runs[router] = {"ppl": summary["valid_ppl"], "unigram": summary["unigram_valid_ppl"],
                        "dropped": sum(layer["dropped_share"] for layer in layers) / len(layers),
                        "used": sum(sum(n > 0 for n in layer["tokens_per_expert"]) for layer in layers) / len(layers)}
    hash_ppl = runs["hash"]["ppl"]
    for line, row in zip(lines[2:4], rows):
        run = runs[row["router"]]
        cells = line.split()
        assert cells[0] == row["router"] and float(cells[1]) == round(run["ppl"], 1)
        assert float(cells[2]) == round(run["ppl"] / hash_ppl, 3)  # ratio to the first router's perplexity
        assert float(cells[3]) == round(run["ppl"] / run["unigram"], 3)
        assert row["dropped"] == pytest.approx(run["dropped"]) and row["experts_used"] == pytest.approx(run["used"])
    assert float(lines[3].split()[2]) != 1.0  # locmoe's ratio is not the reference's own
    assert lines[4].startswith("machine: ") and f"MindSpore {rows[0]['machine']['mindspore']}" in lines[4]


def test_bad_router_and_steps_are_one_line(tmp_path):
    for args, part in ((["--routers", "locmoe,gshard"], "--routers locmoe,gshard: each must be one of"),
                       (["--steps", "0"], "--steps 0: must be >= 1"),
                       (["--set", "moe_config.expert_num=0"], "moe_config.expert_num = 0")):
        out = _run(*args, "--output-dir", tmp_path / "never", timeout=120)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode == 2 and len(lines) == 1 and part in lines[0], out.stderr
        assert not (tmp_path / "never").exists()
