"""scripts/run_cluster_train.sh makes the job's rank table at launch: 1, 2 and 4 servers simulated as background
processes over one shared temporary directory (each with its own hccn.conf and server IP, all --dry-run), a missing
server timing out with one line, files of an earlier launch of the same job never taken, bad arguments, a config
that does not describe the merged table (one line, nothing started), and one launch that really starts its ranks (a
stand-in for the training process)."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.test_rank_tables import hccn_conf
from tests.scripts.test_scripts import ASCEND, FAKE_PYTHON, parse_dry_run, tiny_config, tree

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "scripts" / "run_cluster_train.sh"
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHON": sys.executable,
       "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin{os.pathsep}/bin"}  # no hccn_tool


def config_for(tmp_path, servers, devices):
    """The job's config, tmp_path/cfg-{servers}x{devices}.yaml: a small valid config of servers x devices, which the
    launch checks against the merged table."""
    path = tmp_path / f"cfg-{servers}x{devices}.yaml"
    return path if path.exists() else tiny_config(path, servers, devices)


def device_ip(net, server, device):
    return f"{net}.{server}.{device}"


def expected_table(servers, devices, net="192.98"):
    """The merged table written out independently: servers in index order, ranks 0..N-1, the hccn.conf IPs."""
    return {"version": "1.0", "server_count": str(servers), "server_list": [
        {"server_id": f"10.0.0.{s}",
         "device": [{"device_id": str(d), "device_ip": device_ip(net, s, d), "rank_id": str(s * devices + d)}
                    for d in range(devices)],
         "host_nic_ip": "reserve"} for s in range(servers)], "status": "completed"}


@pytest.fixture
def cluster(tmp_path):
    """Starts simulated servers (`start`), all sharing tmp_path/tables and by default the config of servers x
    devices (config_for); kills any left running at the end."""
    (tmp_path / "tables").mkdir()
    procs = []

    def start(index, servers, devices, job="job1", net="192.98", timeout=30, dry_run=True, env=None, config=None):
        conf = tmp_path / f"hccn-{net}-{index}.conf"
        conf.write_text(hccn_conf([device_ip(net, index, d) for d in range(devices)]))
        cwd = tmp_path / f"server{index}-{job}-{len(procs)}"  # the server's own working directory
        cwd.mkdir()
        args = [config or config_for(tmp_path, servers, devices), "--servers", servers, "--server-index", index,
                "--table-dir", tmp_path / "tables", "--job-id", job, "--devices", devices, "--server-ip",
                f"10.0.0.{index}", "--hccn-conf", conf, "--timeout", timeout, *(["--dry-run"] if dry_run else []),
                "--", "--max-steps", "3"]
        proc = subprocess.Popen(["bash", str(LAUNCHER), *map(str, args)], cwd=cwd, env={**ENV, **(env or {})},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.cwd = cwd
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def finish(proc, timeout=30):
    """(exit code, stdout, stderr) of a started server, failing the test if it runs past `timeout`."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"server still running after {timeout} s: {proc.args}")
    return proc.returncode, out, err


def check_servers(procs, tmp_path, servers, devices, job="job1", net="192.98"):
    """Every server exits 0 with only its own rank lines, all from the one merged table of the expected content."""
    table_path = tmp_path / "tables" / job / (f"hccl_{servers}s_{servers * devices}p.json" if servers > 1 else
                                              f"hccl_{devices}p_{''.join(map(str, range(devices)))}_10.0.0.0.json")
    for index, proc in enumerate(procs):
        code, out, err = finish(proc)
        assert (code, err) == (0, ""), err
        ranks = parse_dry_run(out)
        assert list(ranks) == [index * devices + d for d in range(devices)]
        for rank, entry in ranks.items():
            rank_dir = str(proc.cwd / f"train_parallel{rank}")
            entry["env"].pop("PYTHONPATH")
            assert entry["env"] == {"RANK_TABLE_FILE": str(table_path), "RANK_SIZE": str(servers * devices),
                                    "RANK_ID": str(rank), "DEVICE_ID": str(rank - index * devices)}
            assert entry["cmd"] == [sys.executable, "-m", "locmoe_ms.cli", "--config",
                                    str(config_for(tmp_path, servers, devices)), "--max-steps", "3", "--output-dir",
                                    rank_dir, *ASCEND]
        assert tree(proc.cwd) == []  # a dry run writes in the table directory only
    assert json.loads(table_path.read_text()) == expected_table(servers, devices, net)


@pytest.mark.parametrize("servers, devices", [(1, 2), (2, 8), (4, 2)])
def test_servers_share_one_merged_table(tmp_path, cluster, servers, devices):
    """Started last to first, so the parts arrive out of index order; the table still lists servers by index."""
    procs = [cluster(index, servers, devices) for index in reversed(range(servers))][::-1]
    check_servers(procs, tmp_path, servers, devices)
    receipt = json.loads((tmp_path / "tables" / "job1" / "merged.json").read_text())
    assert sorted(receipt["parts"]) == [str(i) for i in range(servers)]


def test_missing_servers_time_out_with_one_line(cluster):
    """4 servers without server 2, and a job whose server 0 never starts: every waiting server gives up after its
    --timeout, on one line naming the server it waited for."""
    present = {index: cluster(index, 4, 2, timeout=3) for index in (0, 1, 3)}
    alone = cluster(1, 2, 2, job="job2", timeout=3)
    started = time.monotonic()
    results = {index: finish(proc) for index, proc in present.items()}
    code, out, err = finish(alone)
    assert time.monotonic() - started < 15
    assert (code, out) == (2, "") and err.count("\n") == 1, err
    assert err.startswith("error: job job2, server 1 of 2: timed out after 3 s waiting for server 0") and \
        "server 0 has not started this job" in err, err
    for index, (code, out, err) in results.items():
        assert (code, out) == (2, "") and err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith(f"error: job job1, server {index} of 4: timed out after 3 s"), err
        assert re.search(r"no rank table yet from server 2\b(?!,)", err), err  # server 2 only


def test_an_earlier_launch_of_the_job_is_never_taken(tmp_path, cluster):
    """The same job id three times, each with other device IPs: a server started while the earlier launch's files
    are all there (round, parts, receipt, merged table) waits for this launch's server 0 or server 1."""
    check_servers([cluster(index, 2, 2, net="192.97") for index in (0, 1)], tmp_path, 2, 2, net="192.97")
    # server 1 first: the earlier receipt and table are there, and its own earlier part
    late = cluster(1, 2, 2, net="192.98")
    time.sleep(1.5)
    assert late.poll() is None, finish(late)
    check_servers([cluster(0, 2, 2, net="192.98"), late], tmp_path, 2, 2, net="192.98")
    # server 0 first: server 1's part of the earlier launch is there
    early = cluster(0, 2, 2, net="192.96")
    time.sleep(1.5)
    assert early.poll() is None, finish(early)
    check_servers([early, cluster(1, 2, 2, net="192.96")], tmp_path, 2, 2, net="192.96")


# case: arguments ("GOOD": a valid 2-server set with --dry-run; a later flag wins; {d}: the test's directory), texts
# the one stderr line must hold
BAD_ARGUMENTS = {
    "no config": ([], ["missing CONFIG"]),
    "option first": (["GOOD"], ["expected CONFIG first", "'--servers'"]),
    "missing config": (["nowhere.yaml", "GOOD"], ["CONFIG = 'nowhere.yaml': no such file"]),
    "no servers": (["cfg.yaml", "--server-index", "0", "--table-dir", "{d}", "--job-id", "j"],
                   ["--servers: missing"]),
    "no job id": (["cfg.yaml", "--servers", "1", "--server-index", "0", "--table-dir", "{d}"],
                  ["--job-id: missing"]),
    "no table dir": (["cfg.yaml", "--servers", "1", "--server-index", "0", "--job-id", "j"],
                     ["--table-dir: missing"]),
    "zero servers": (["cfg.yaml", "GOOD", "--servers", "0"], ["--servers = '0': must be an integer 1..9999"]),
    "index past the servers": (["cfg.yaml", "GOOD", "--server-index", "2"],
                               ["--server-index = '2': must be an integer 0..1"]),
    "nine devices": (["cfg.yaml", "GOOD", "--devices=9"], ["--devices = '9': must be an integer 1..8"]),
    "timeout with a unit": (["cfg.yaml", "GOOD", "--timeout", "3s"], ["--timeout = '3s'"]),
    "job id with a slash": (["cfg.yaml", "GOOD", "--job-id", "a/b"], ["--job-id = 'a/b'", "letters, digits"]),
    "table dir missing": (["cfg.yaml", "GOOD", "--table-dir", "{d}/nowhere"],
                          ["--table-dir = '", "nowhere': no such directory"]),
    "table dir is a file": (["cfg.yaml", "GOOD", "--table-dir", "{d}/ok.conf"],
                            ["--table-dir = '", "ok.conf': is a file; expected a directory"]),
    "hccn.conf is a directory": (["cfg.yaml", "GOOD", "--hccn-conf", "{d}"],
                                 ["--hccn-conf = '", "': is a directory; expected a file"]),
    "hccn.conf missing": (["cfg.yaml", "GOOD", "--hccn-conf", "{d}/nowhere.conf"],
                          ["--hccn-conf = '", "nowhere.conf': no such file"]),
    "hccn.conf lacks a device": (["cfg.yaml", "GOOD", "--hccn-conf", "{d}/short.conf"],
                                 ["short.conf", "no address_1=IP line"]),
    "bad server ip": (["cfg.yaml", "GOOD", "--server-ip", "10.0.0"], ["--server-ip = '10.0.0'", "IPv4"]),
    "unknown option": (["cfg.yaml", "GOOD", "--bogus"], ["unknown option '--bogus'"]),
    "stray argument": (["cfg.yaml", "GOOD", "extra"], ["unexpected argument 'extra'"]),
    "option without value": (["cfg.yaml", "GOOD", "--servers"], ["--servers: needs a value"]),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, case):
    """Nothing written: not even the job's directory in --table-dir."""
    args, expected = BAD_ARGUMENTS[case]
    tiny_config(tmp_path / "cfg.yaml", 2, 2)  # GOOD's 2 servers x 2 devices
    (tmp_path / "ok.conf").write_text(hccn_conf([device_ip("192.98", 0, d) for d in range(2)]))
    (tmp_path / "short.conf").write_text(hccn_conf([device_ip("192.98", 0, 0)]))
    good = ["--servers", "2", "--server-index", "0", "--table-dir", "{d}", "--job-id", "j", "--devices", "2",
            "--server-ip", "10.0.0.0", "--hccn-conf", "{d}/ok.conf", "--timeout", "1", "--dry-run"]
    argv = [arg.format(d=tmp_path) for item in args for arg in (good if item == "GOOD" else [item])]
    before = tree(tmp_path)
    out = subprocess.run(["bash", str(LAUNCHER), *argv], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                         timeout=30)
    lines = out.stderr.splitlines()
    assert out.returncode == 2 and out.stdout == "" and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and all(text in lines[0] for text in expected), (expected, lines[0])
    assert tree(tmp_path) == before


def stand_in(tmp_path):
    """The environment that makes the ranks a stand-in training process recording its start, and the records."""
    bin_dir, records = tmp_path / "bin", tmp_path / "records"
    bin_dir.mkdir()
    records.mkdir()
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "python").chmod(0o755)
    return {"PYTHON": str(bin_dir / "python"), "RECORDS": str(records)}, records


def test_launch_starts_the_ranks_from_the_merged_table(tmp_path, cluster):
    """Without --dry-run: progress on stderr, then run_distribute_train.sh starts each rank (a stand-in that
    records its environment and arguments) from the merged table with the ascend device target."""
    env, records = stand_in(tmp_path)
    proc = cluster(0, 1, 2, dry_run=False, env=env)
    code, out, err = finish(proc)
    table = tmp_path / "tables" / "job1" / "hccl_2p_01_10.0.0.0.json"
    assert code == 0, err
    assert err.splitlines()[-1] == f"job job1, server 0 of 1: wrote {table}: 1 x 2 devices"
    assert out.splitlines()[-1] == "all 2 ranks done"
    assert json.loads(table.read_text()) == expected_table(1, 2)
    for rank in (0, 1):
        record = json.loads((records / f"rank_{rank}.json").read_text())
        assert record["argv"] == ["--config", str(config_for(tmp_path, 1, 2)), "--max-steps", "3", "--output-dir",
                                  str(proc.cwd / f"train_parallel{rank}"), *ASCEND]
        assert {k: record["env"][k] for k in ("RANK_TABLE_FILE", "RANK_SIZE", "RANK_ID", "DEVICE_ID")} == {
            "RANK_TABLE_FILE": str(table), "RANK_SIZE": "2", "RANK_ID": str(rank), "DEVICE_ID": str(rank)}


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_config_of_another_topology_stops_with_one_line(tmp_path, cluster, dry_run):
    """One server of 2 devices with a config of 2 nodes x 1 device: the table is made, then run_distribute_train.sh
    stops on one line naming the merged table and what the config asks for, exit 2, no rank listed or started.
    A launch (no --dry-run) reports the exchange's progress on stderr before that line, as it always does."""
    env, records = stand_in(tmp_path)
    proc = cluster(0, 1, 2, dry_run=dry_run, config=tiny_config(tmp_path / "other.yaml", 2, 1),
                   env=env)
    code, out, err = finish(proc)
    table = tmp_path / "tables" / "job1" / "hccl_2p_01_10.0.0.0.json"
    lines = err.splitlines()
    assert (code, out) == (2, "") and lines and "Traceback" not in err, err
    assert lines[-1] == (f"error: RANK_TABLE_FILE {table}: 1 servers with [2] devices each; parallel_config asks "
                         "for nodes = 2 with devices_per_node = 1"), err
    if dry_run:
        assert len(lines) == 1, err
    else:
        assert all(line.startswith("job job1, server 0 of 1: ") for line in lines[:-1]), err
    assert json.loads(table.read_text()) == expected_table(1, 2)
    assert tree(proc.cwd) == [] and list(records.iterdir()) == []
