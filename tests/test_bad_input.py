"""Bad input to every entry point: one line on stderr naming the key or file and the value, exit code 2, no
traceback, and nothing created, changed or removed (the working directory and the inputs are snapshotted).

Each case runs with its cwd in WORK (a directory holding a plain file `afile` and directories named like output
files); the inputs it reads live in INPUTS, made once per module. Both trees must be the same afterwards, directory
mtimes included, so even a temporary file created and removed again is caught.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TRAIN = [PY, "-c", "import sys; from locmoe_ms.cli import train_main; sys.exit(train_main(sys.argv[1:]))"]
EVAL = [PY, "-c", "import sys; from locmoe_ms.cli import eval_main; sys.exit(eval_main(sys.argv[1:]))"]
CHECK = [PY, "-m", "locmoe_ms", "check-config"]
MISSING_CONFIG = "données/配置.yaml"  # relative to WORK, which has no such directory
MISSING_CKPT = "données/检查点.ckpt"
MISSING_TABLE = "données/表.json"


def tool(name: str) -> list[str]:
    return [PY, str(ROOT / "tools" / name)]


def script(name: str) -> list[str]:
    return ["bash", str(ROOT / "scripts" / name)]


CONFIG = {
    "model": {"hidden_size": 32, "num_heads": 2, "ffn_hidden_size": 64, "vocab_size": 300, "seq_length": 16,
              "num_layers": 2, "sparse_layers": [1]},
    "moe_config": {"expert_num": 4, "router": "locmoe"},
    "parallel_config": {"nodes": 1, "devices_per_node": 2, "data_parallel": 2, "expert_parallel": 2},
    "train": {"batch_size": 4, "warmup_steps": 0, "max_steps": 2},
    "data": {"corpus": "files", "paths": ["corpus.txt"], "tokenizer": "byte"},
}


def _checkpoint(directory: Path, **model) -> Path:
    """A step-1 checkpoint of tests.conftest.small_config, saved as locmoe-train saves it."""
    from locmoe_ms.train import checkpoint
    from locmoe_ms.job import build_training
    from tests.conftest import small_config

    cfg = small_config(model=model) if model else small_config()
    training = build_training(cfg)
    meta = {"config_json": json.dumps(cfg.to_dict()), "data_epoch": 0, "data_index": 0}
    return checkpoint.save(training.step, directory, 1, meta, keep=1)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """(INPUTS, WORK): the inputs the cases read, and the directory they run in."""
    from locmoe_ms.cluster.rank_table import server_table

    inputs = tmp_path_factory.mktemp("inputs")
    raw = dict(CONFIG, data=dict(CONFIG["data"], paths=[str(inputs / "corpus.txt")]))
    (inputs / "cfg.yaml").write_text(yaml.safe_dump(raw))
    (inputs / "section_scalar.yaml").write_text("model: 5\n")
    (inputs / "corpus.txt").write_text(("hello world. " * 50 + "\n\n") * 40)
    (inputs / "hccn.conf").write_text("address_0=192.168.100.101\naddress_1=192.168.101.101\n")
    table = server_table("10.0.0.1", {0: "192.168.100.101", 1: "192.168.101.101"})
    (inputs / "rt2.json").write_text(json.dumps(table, indent=4))
    other = server_table("10.0.0.2", {0: "192.168.110.101", 1: "192.168.111.101"})
    (inputs / "rt2b.json").write_text(json.dumps(other, indent=4))
    for name in ("empty.ckpt", "empty.json", "empty.conf", "empty.txt"):
        (inputs / name).write_text("")
    for name in ("adir", "dir.ckpt", "corpdir"):
        (inputs / name).mkdir()
    _checkpoint(inputs / "sparse")
    _checkpoint(inputs / "dense", sparse_layers=[])
    work = tmp_path_factory.mktemp("work")
    (work / "afile").write_text("a plain file in the way\n")
    for name in ("outdir.safetensors", "outdir.ckpt"):
        (work / name).mkdir()
    return inputs, work


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under the roots: relative path -> (size, mtime in ns)."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            stat = path.lstat()
            found[f"{root.name}/{path.relative_to(root)}"] = (stat.st_size, stat.st_mtime_ns)
    return found


SPARSE = "{in}/sparse/step_00000001.ckpt"
DENSE = "{in}/dense/step_00000001.ckpt"
CFG = "{in}/cfg.yaml"
RT2 = "{in}/rt2.json"
HCCN = ["--server_ip", "10.0.0.1", "--hccn_conf", "{in}/hccn.conf"]
CLUSTER = [CFG, "--servers", "1", "--server-index", "0", "--table-dir", "{in}/adir", "--job-id", "j", "--devices",
           "2", "--dry-run"]

# id: (command, expected substrings of the one stderr line (compared in lower case), extra environment)
CASES = {
    # ---- locmoe-train (the last four start MindSpore before they fail)
    "train max-steps 0": (TRAIN + ["--config", CFG, "--max-steps", "0"], ["train.max_steps = 0", ">= 1"]),
    "train max-steps float": (TRAIN + ["--config", CFG, "--max-steps", "1.5"], ["--max-steps", "'1.5'"]),
    "train max-steps string": (TRAIN + ["--config", CFG, "--max-steps", "ten"], ["--max-steps", "'ten'"]),
    "train batch size negative": (TRAIN + ["--config", CFG, "--set", "train.batch_size=-4"],
                                  ["train.batch_size = -4", ">= 1"]),
    "train batch size string": (TRAIN + ["--config", CFG, "--set", "train.batch_size=two"],
                                ["train.batch_size = 'two'", "integer"]),
    "train expert parallel 0": (TRAIN + ["--config", CFG, "--set", "parallel_config.expert_parallel=0"],
                                ["parallel_config.expert_parallel = 0", ">= 1"]),
    "train config is a directory": (TRAIN + ["--config", "{in}/adir"], ["adir", "is a directory", "config file"]),
    "train config missing unicode": (TRAIN + ["--config", MISSING_CONFIG], [MISSING_CONFIG, "not found"]),
    "train output dir is a file": (TRAIN + ["--config", CFG, "--output-dir", "afile"],
                                   ["--output-dir afile", "is a file"]),
    "train output dir under a file unicode": (TRAIN + ["--config", CFG, "--output-dir", "afile/résultats/运行"],
                                              ["--output-dir afile/résultats/运行", "afile is a file"]),
    "train output dir that cannot be made": (TRAIN + ["--config", CFG, "--output-dir", "/proc/locmoe_out"],
                                             ["--output-dir /proc/locmoe_out", "nothing can be created under /proc"]),
    "train init-from directory": (TRAIN + ["--config", CFG, "--init-from", "{in}/adir"],
                                  ["--init-from", "adir", "is a directory"]),
    "train init-from empty checkpoint": (TRAIN + ["--config", CFG, "--init-from", "{in}/empty.ckpt", "--output-dir",
                                                  "run"], ["empty.ckpt", "empty"]),
    "train empty corpus file": (TRAIN + ["--config", CFG, "--set", "data.paths=[{in}/empty.txt]", "--output-dir",
                                         "run"], ["data.paths", "empty.txt", "no text"]),
    "train corpus is a directory": (TRAIN + ["--config", CFG, "--set", "data.paths=[{in}/corpdir]", "--output-dir",
                                             "run"], ["data.paths", "corpdir", "is a directory"]),
    "train mindrecord dir is a file": (TRAIN + ["--config", CFG, "--set", "data.corpus=mindrecord", "--set",
                                                "data.paths=[{in}/corpus.txt]", "--output-dir", "run"],
                                       ["data.paths", "corpus.txt", "is a file", "mindrecord directory"]),
    # ---- locmoe-eval
    "eval checkpoint is a directory": (EVAL + ["--config", CFG, "--checkpoint", "{in}/dir.ckpt"],
                                       ["--checkpoint", "dir.ckpt", "is a directory"]),
    "eval checkpoint missing unicode": (EVAL + ["--config", CFG, "--checkpoint", MISSING_CKPT],
                                        [f"--checkpoint {MISSING_CKPT}", "not found"]),
    "eval empty checkpoint": (EVAL + ["--config", CFG, "--checkpoint", "{in}/empty.ckpt"], ["empty.ckpt", "empty"]),
    "eval float for int": (EVAL + ["--config", CFG, "--checkpoint", SPARSE, "--set", "model.hidden_size=32.0"],
                           ["model.hidden_size = 32.0", "integer"]),
    # ---- locmoe-check-config
    "check rank table is a directory": (CHECK + [CFG, "--rank-table", "{in}/adir"],
                                        ["--rank-table", "adir", "is a directory"]),
    "check empty rank table": (CHECK + [CFG, "--rank-table", "{in}/empty.json"], ["empty.json", "empty"]),
    "check rank table missing unicode": (CHECK + [CFG, "--rank-table", MISSING_TABLE],
                                         [f"--rank-table {MISSING_TABLE}", "not found"]),
    "check 2-device table for 4 devices": (CHECK + [CFG, "--rank-table", RT2, "--set", "parallel_config.nodes=2",
                                                    "--set", "parallel_config.data_parallel=4"],
                                           ["rt2.json", "nodes = 2", "devices_per_node = 2"]),
    "check section not a mapping": (CHECK + ["{in}/section_scalar.yaml"], ["model = 5", "mapping"]),
    "check float for int": (CHECK + [CFG, "--set", "model.num_layers=2.5"], ["model.num_layers = 2.5", "integer"]),
    "check config missing unicode": (CHECK + [MISSING_CONFIG], [MISSING_CONFIG, "not found"]),
    "check config is a directory": (CHECK + ["{in}/adir"], ["adir", "is a directory"]),
    "check set without value": (CHECK + [CFG, "--set", "train.max_steps"], ["--set 'train.max_steps'", "="]),
    # ---- capacity_bound.py
    "capacity experts 0": (tool("capacity_bound.py") + ["--delta", "0.03", "--hidden", "5120", "--experts", "0"],
                           ["--experts = 0", "positive integer"]),
    "capacity experts negative": (tool("capacity_bound.py") + ["--delta", "0.03", "--hidden", "64", "--experts",
                                                               "-3"], ["--experts = -3", "positive integer"]),
    "capacity hidden float": (tool("capacity_bound.py") + ["--delta", "0.03", "--hidden", "51.5", "--experts", "16"],
                              ["--hidden", "'51.5'"]),
    "capacity delta string": (tool("capacity_bound.py") + ["--delta", "abc", "--hidden", "64", "--experts", "16"],
                              ["--delta", "'abc'"]),
    "capacity hidden 1": (tool("capacity_bound.py") + ["--delta", "0.03", "--hidden", "1", "--experts", "16"],
                          ["--hidden = 1", ">= 2"]),
    # ---- convert_ckpt.py
    "inspect directory": (tool("convert_ckpt.py") + ["inspect", "{in}/dir.ckpt"], ["dir.ckpt", "is a directory"]),
    "inspect empty checkpoint": (tool("convert_ckpt.py") + ["inspect", "{in}/empty.ckpt"], ["empty.ckpt", "empty"]),
    "inspect missing unicode": (tool("convert_ckpt.py") + ["inspect", MISSING_CKPT], [MISSING_CKPT, "not found"]),
    "format output under a file": (tool("convert_ckpt.py") + ["format", SPARSE, "--to", "safetensors", "--output",
                                                              "afile/x.safetensors"],
                                   ["--output afile/x.safetensors", "afile is a file"]),
    "format output is a directory": (tool("convert_ckpt.py") + ["format", SPARSE, "--to", "safetensors", "--output",
                                                                "outdir.safetensors"],
                                     ["--output outdir.safetensors", "is a directory"]),
    "merge output under a file": (tool("convert_ckpt.py") + ["merge", SPARSE, SPARSE, "--output", "afile/m.ckpt"],
                                  ["--output afile/m.ckpt", "afile is a file"]),
    "merge output that cannot be made": (tool("convert_ckpt.py") + ["merge", SPARSE, SPARSE, "--output",
                                                                    "/proc/locmoe/m.ckpt"],
                                         ["--output /proc/locmoe/m.ckpt", "nothing can be created under /proc"]),
    "merge input missing unicode": (tool("convert_ckpt.py") + ["merge", SPARSE, "données/rank_1", "--output",
                                                               "m.ckpt"], ["données/rank_1", "not found"]),
    "merge step string": (tool("convert_ckpt.py") + ["merge", SPARSE, SPARSE, "--output", "m.ckpt", "--step", "x"],
                          ["--step", "'x'"]),
    "split expert parallel 0": (tool("convert_ckpt.py") + ["split", SPARSE, "--expert-parallel", "0", "--output",
                                                           "shards"], ["--expert-parallel 0", ">= 1"]),
    "split world 0": (tool("convert_ckpt.py") + ["split", SPARSE, "--expert-parallel", "2", "--world", "0",
                                                 "--output", "shards"], ["--world 0", ">= 1"]),
    "split expert parallel float": (tool("convert_ckpt.py") + ["split", SPARSE, "--expert-parallel", "2.5",
                                                               "--output", "shards"],
                                    ["--expert-parallel", "'2.5'"]),
    "split output is a file": (tool("convert_ckpt.py") + ["split", SPARSE, "--expert-parallel", "2", "--output",
                                                          "afile"], ["--output afile", "is a file"]),
    "split output under a file unicode": (tool("convert_ckpt.py") + ["split", SPARSE, "--expert-parallel", "2",
                                                                     "--output", "afile/分片"],
                                          ["--output afile/分片", "afile is a file"]),
    "upcycle experts 0": (tool("convert_ckpt.py") + ["upcycle", DENSE, "--experts", "0", "--router", "hash",
                                                     "--output", "u.ckpt"], ["expert_num = 0", ">= 1"]),
    "upcycle output under a file": (tool("convert_ckpt.py") + ["upcycle", DENSE, "--experts", "4", "--router",
                                                               "hash", "--output", "afile/u.ckpt"],
                                    ["--output afile/u.ckpt", "afile is a file"]),
    "upcycle sparse layers string": (tool("convert_ckpt.py") + ["upcycle", DENSE, "--experts", "4", "--router",
                                                                "hash", "--sparse-layers", "a,b", "--output",
                                                                "u.ckpt"], ["--sparse-layers", "'a,b'"]),
    "reroute output is a directory": (tool("convert_ckpt.py") + ["reroute", SPARSE, "--router", "hash", "--output",
                                                                 "outdir.ckpt"],
                                      ["--output outdir.ckpt", "is a directory"]),
    "reroute input is a directory": (tool("convert_ckpt.py") + ["reroute", "{in}/dir.ckpt", "--router", "hash",
                                                                "--output", "r.ckpt"],
                                     ["dir.ckpt", "is a directory"]),
    # ---- compare_routers.py
    "compare steps 0": (tool("compare_routers.py") + ["--config", CFG, "--steps", "0"], ["--steps 0", ">= 1"]),
    "compare output dir under a file": (tool("compare_routers.py") + ["--config", CFG, "--output-dir", "afile/sub"],
                                        ["--output-dir afile/sub", "afile is a file"]),
    "compare json is a directory": (tool("compare_routers.py") + ["--config", CFG, "--json", "{in}/adir"],
                                    ["--json", "adir", "is a directory"]),
    # ---- experiments.py and report.py
    "experiments unknown arm": (tool("experiments.py") + ["--suite", "capacity", "--config", CFG, "--arms",
                                                          "locmoe-cf9"],
                                ["--arms locmoe-cf9", "suite capacity has arms locmoe-cf0.5"]),
    "experiments bad seeds": (tool("experiments.py") + ["--suite", "routers", "--config", CFG, "--seeds", "0,x"],
                              ["--seeds 0,x", "integers >= 0"]),
    "experiments steps 0": (tool("experiments.py") + ["--suite", "health", "--config", CFG, "--steps", "0"],
                            ["--steps 0", ">= 1"]),
    "experiments bad override": (tool("experiments.py") + ["--suite", "routers", "--config", CFG, "--set",
                                                           "train.batch_size=-4"], ["train.batch_size = -4", ">= 1"]),
    "experiments output under a file": (tool("experiments.py") + ["--suite", "routers", "--config", CFG,
                                                                  "--output-dir", "afile/sub"],
                                        ["--output-dir afile/sub", "afile is a file"]),
    "experiments output that cannot be made": (tool("experiments.py") + ["--suite", "routers", "--config", CFG,
                                                                         "--output-dir", "/proc/locmoe_runs"],
                                               ["--output-dir /proc/locmoe_runs", "nothing can be created under"]),
    "report holds no run": (tool("report.py") + ["{in}/adir", "--output", "rep"], ["adir", "holds no run"]),
    "report missing directory": (tool("report.py") + ["données/runs", "--output", "rep"],
                                 ["données/runs", "no such directory"]),
    # ---- preprocess_data.py
    "preprocess output is a file": (tool("preprocess_data.py") + ["--config", CFG, "--output", "afile"],
                                    ["--output afile", "is a file"]),
    "preprocess output under a file unicode": (tool("preprocess_data.py") + ["--config", CFG, "--output",
                                                                             "afile/données"],
                                               ["--output afile/données", "afile is a file"]),
    "preprocess empty corpus": (tool("preprocess_data.py") + ["--config", CFG, "--set", "data.paths=[{in}/empty.txt]",
                                                              "--output", "packed"],
                                ["data.paths", "empty.txt", "no text"]),
    "preprocess corpus is a directory": (tool("preprocess_data.py") + ["--config", CFG, "--set",
                                                                       "data.paths=[{in}/corpdir]", "--output",
                                                                       "packed"],
                                         ["data.paths", "corpdir", "is a directory"]),
    "preprocess corpus missing unicode": (tool("preprocess_data.py") + ["--config", CFG, "--set",
                                                                        "data.paths=[données/语料.txt]", "--output",
                                                                        "packed"],
                                          ["data.paths", "données/语料.txt", "not found"]),
    # ---- hccl_tools.py
    "hccl zero devices": (tool("hccl_tools.py") + HCCN + ["--device_num", "[0,0)"], ["--device_num = '[0,0)'"]),
    "hccl nine devices": (tool("hccl_tools.py") + HCCN + ["--device_num", "[0,9)"], ["--device_num = '[0,9)'"]),
    "hccl empty hccn.conf": (tool("hccl_tools.py") + ["--device_num", "[0,2)", "--server_ip", "10.0.0.1",
                                                      "--hccn_conf", "{in}/empty.conf"],
                             ["empty.conf", "no address_0=ip line"]),
    "hccl hccn.conf is a directory": (tool("hccl_tools.py") + ["--device_num", "[0,2)", "--server_ip", "10.0.0.1",
                                                               "--hccn_conf", "{in}/adir"],
                                      ["--hccn_conf", "adir", "is a directory"]),
    "hccl hccn.conf missing unicode": (tool("hccl_tools.py") + ["--device_num", "[0,2)", "--server_ip", "10.0.0.1",
                                                                "--hccn_conf", "données/hccn.conf"],
                                       ["--hccn_conf", "données/hccn.conf", "no such file"]),
    "hccl output is a file": (tool("hccl_tools.py") + HCCN + ["--device_num", "[0,2)", "--output", "afile"],
                              ["--output", "afile", "is a file"]),
    "hccl output under a file unicode": (tool("hccl_tools.py") + HCCN + ["--device_num", "[0,2)", "--output",
                                                                         "afile/表"],
                                         ["--output afile/表", "afile is a file"]),
    # ---- merge_hccl.py
    "merge_hccl empty table": (tool("merge_hccl.py") + [RT2, "{in}/empty.json"], ["empty.json", "empty"]),
    "merge_hccl table is a directory": (tool("merge_hccl.py") + [RT2, "{in}/adir"], ["adir", "is a directory"]),
    "merge_hccl output under a file": (tool("merge_hccl.py") + [RT2, "{in}/rt2b.json", "--output", "afile/m.json"],
                                       ["--output afile/m.json", "afile is a file"]),
    "merge_hccl missing unicode": (tool("merge_hccl.py") + [RT2, MISSING_TABLE], [MISSING_TABLE, "no such file"]),
    # ---- check_rank_table.py
    "check_rank_table directory": (tool("check_rank_table.py") + ["{in}/adir"], ["adir", "is a directory"]),
    "check_rank_table empty": (tool("check_rank_table.py") + ["{in}/empty.json"], ["empty.json", "empty"]),
    "check_rank_table expect 0": (tool("check_rank_table.py") + [RT2, "--expect-devices", "0"],
                                  ["--expect-devices = 0", "positive"]),
    "check_rank_table expect string": (tool("check_rank_table.py") + [RT2, "--expect-devices", "two"],
                                       ["--expect-devices", "'two'"]),
    "check_rank_table expect float": (tool("check_rank_table.py") + [RT2, "--expect-devices", "1.5"],
                                      ["--expect-devices", "'1.5'"]),
    "check_rank_table 2 devices for 8": (tool("check_rank_table.py") + [RT2, "--expect-devices", "8"],
                                         ["rt2.json", "2 devices, expected 8"]),
    # ---- bench_train.py
    "bench_train steps 0": (tool("bench_train.py") + ["--config", CFG, "--steps", "0"], ["--steps = 0", ">= 1"]),
    "bench_train warmup negative": (tool("bench_train.py") + ["--config", CFG, "--warmup", "-1"],
                                    ["--warmup = -1", ">= 0"]),
    "bench_train steps float": (tool("bench_train.py") + ["--config", CFG, "--steps", "2.5"], ["--steps", "'2.5'"]),
    "bench_train json is a directory": (tool("bench_train.py") + ["--config", CFG, "--json", "{in}/adir"],
                                        ["--json", "adir", "is a directory"]),
    "bench_train json under a file": (tool("bench_train.py") + ["--config", CFG, "--json", "afile/x.json"],
                                      ["--json afile/x.json", "afile is a file"]),
    # ---- bench_moe_layer.py (imports MindSpore first)
    "bench_moe experts 0": (tool("bench_moe_layer.py") + ["--experts", "0"], ["--experts = 0", ">= 1"]),
    "bench_moe warmup negative": (tool("bench_moe_layer.py") + ["--warmup", "-1"], ["--warmup = -1", ">= 0"]),
    "bench_moe json under a file": (tool("bench_moe_layer.py") + ["--json", "afile/x.json"],
                                    ["--json afile/x.json", "afile is a file"]),
    # ---- launchers (--dry-run: nothing would start even if the checks passed)
    "standalone device id 9": (script("run_standalone_train.sh") + [CFG, "--dry-run"], ["device_id = '9'", "0..7"],
                               {"DEVICE_ID": "9"}),
    "standalone device id string": (script("run_standalone_train.sh") + [CFG, "--dry-run"],
                                    ["device_id = 'x'", "0..7"], {"DEVICE_ID": "x"}),
    "standalone config missing unicode": (script("run_standalone_train.sh") + [MISSING_CONFIG, "--dry-run"],
                                          ["config", MISSING_CONFIG, "no such file"]),
    "distribute empty rank table": (script("run_distribute_train.sh") + ["{in}/empty.json", CFG, "--dry-run"],
                                    ["empty.json", "empty"]),
    "distribute local devices 0": (script("run_distribute_train.sh") + [RT2, CFG, "0", "0", "--dry-run"],
                                   ["local_device_num = '0'", "1..8"]),
    "distribute rank start past the table": (script("run_distribute_train.sh") + [RT2, CFG, "5", "--dry-run"],
                                             ["rank_start = 5", "ranks 0..1"]),
    "msrun workers 0": (script("run_msrun_train.sh") + [CFG, "0", "1", "--dry-run"], ["worker_num = '0'", ">= 1"]),
    "msrun workers float": (script("run_msrun_train.sh") + [CFG, "2.5", "1", "--dry-run"], ["worker_num = '2.5'"]),
    "msrun local workers 0": (script("run_msrun_train.sh") + [CFG, "2", "0", "--dry-run"],
                              ["local_worker_num = '0'", "1..8"]),
    "msrun master port 80": (script("run_msrun_train.sh") + [CFG, "2", "2", "127.0.0.1", "80", "--dry-run"],
                             ["master_port = '80'", "1024..65535"]),
    "cpu workers 0": (script("run_cpu_distributed.sh") + ["0", CFG, "--dry-run"], ["workers = '0'", ">= 1"]),
    "cpu workers string": (script("run_cpu_distributed.sh") + ["two", CFG, "--dry-run"], ["workers = 'two'"]),
    "cluster servers 0": (script("run_cluster_train.sh") + CLUSTER + ["--servers", "0"], ["--servers = '0'"]),
    "cluster devices 0": (script("run_cluster_train.sh") + CLUSTER + ["--devices", "0"], ["--devices = '0'", "1..8"]),
    "cluster timeout 0": (script("run_cluster_train.sh") + CLUSTER + ["--timeout", "0"], ["--timeout = '0'"]),
    "cluster table dir missing unicode": (script("run_cluster_train.sh") + CLUSTER + ["--table-dir", "données/表"],
                                          ["--table-dir = 'données/表'", "no such directory"]),
    "cluster empty hccn.conf": (script("run_cluster_train.sh") + CLUSTER + ["--hccn-conf", "{in}/empty.conf"],
                                ["empty.conf", "no address_0=ip line"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(dirs, case):
    inputs, work = dirs
    command, expected, *env = CASES[case]
    argv = [arg.replace("{in}", str(inputs)) for arg in command]
    before = snapshot(inputs, work)
    run = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "GLOG_v": "3", "PYTHON": PY, **(env[0] if env else {})})
    after = snapshot(inputs, work)
    assert "Traceback" not in run.stdout + run.stderr, run.stderr[-3000:]
    assert run.returncode == 2, (run.returncode, run.stderr[-3000:])
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), run.stderr[-3000:]
    missing = [text for text in expected if text.lower() not in lines[0].lower()]
    assert not missing, (missing, lines[0])
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert not changed, changed
