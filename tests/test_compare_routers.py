"""tools/compare_routers.py: routers trained on equal footing, a side-by-side table; bad input is one line, exit 2."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "compare_routers.py"
SMALL = ["--set", "model.hidden_size=64", "--set", "model.ffn_hidden_size=128", "--set", "model.seq_length=32",
         "--set", "train.eval_batches=2", "--set", "data.max_documents=600", "--set", "train.batch_size=8",
         "--set", "train.warmup_steps=0"]


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_two_routers_side_by_side(tmp_path):
    out = _run("--routers", "hash,locmoe", "--steps", "3", "--output-dir", tmp_path / "cmp", "--json",
               tmp_path / "rows.json", *SMALL)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["router"] for r in rows] == ["hash", "locmoe"]
    lines = out.stdout.splitlines()
    assert lines[1].split()[:3] == ["router", "valid", "ppl"]
    hash_line = lines[2].split()
    assert hash_line[0] == "hash" and hash_line[2] == "1.000" and float(hash_line[1]) == round(rows[0]["valid_ppl"], 1)
    assert rows[0]["dropped"] >= 0 and 1 <= rows[1]["experts_used"] <= 8
    assert all((tmp_path / "cmp" / r / "summary.json").is_file() for r in ("hash", "locmoe"))


def test_bad_router_and_steps_are_one_line(tmp_path):
    for args, part in ((["--routers", "locmoe,gshard"], "--routers locmoe,gshard: each must be one of"),
                       (["--steps", "0"], "--steps 0: must be >= 1"),
                       (["--set", "moe_config.expert_num=0"], "moe_config.expert_num = 0")):
        out = _run(*args, "--output-dir", tmp_path / "never", timeout=120)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode == 2 and len(lines) == 1 and part in lines[0], out.stderr
        assert not (tmp_path / "never").exists()
