"""HCCL rank tables: hccl_tools.py builds one exactly as Ascend expects, merge_hccl.py joins them,
check_rank_table.py finds every problem; bad input is one stderr line, exit code 2 and no file written."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from locmoe_ms.cluster.rank_table import host_ip, is_ipv4, parse_device_range, parse_hccn_tool_output

TOOLS = Path(__file__).resolve().parents[2] / "tools"
PYTHON_BIN = str(Path(sys.executable).parent)  # the only PATH entry: no hccn_tool, so hccn.conf is read
NIC_IPS = ["192.168.100.101", "192.168.101.101", "192.168.102.101", "192.168.103.101",
           "192.168.100.100", "192.168.101.100", "192.168.102.100", "192.168.103.100"]
OTHER_IPS = [ip.replace("192.168.", "172.16.") for ip in NIC_IPS]
SERVER = "10.155.111.140"
DELETE = object()

# The file hccl_tools.py must write for all 8 devices of server 10.155.111.140, to the byte.
EXPECTED_8P = """{
    "version": "1.0",
    "server_count": "1",
    "server_list": [
        {
            "server_id": "10.155.111.140",
            "device": [
                {
                    "device_id": "0",
                    "device_ip": "192.168.100.101",
                    "rank_id": "0"
                },
                {
                    "device_id": "1",
                    "device_ip": "192.168.101.101",
                    "rank_id": "1"
                },
                {
                    "device_id": "2",
                    "device_ip": "192.168.102.101",
                    "rank_id": "2"
                },
                {
                    "device_id": "3",
                    "device_ip": "192.168.103.101",
                    "rank_id": "3"
                },
                {
                    "device_id": "4",
                    "device_ip": "192.168.100.100",
                    "rank_id": "4"
                },
                {
                    "device_id": "5",
                    "device_ip": "192.168.101.100",
                    "rank_id": "5"
                },
                {
                    "device_id": "6",
                    "device_ip": "192.168.102.100",
                    "rank_id": "6"
                },
                {
                    "device_id": "7",
                    "device_ip": "192.168.103.100",
                    "rank_id": "7"
                }
            ],
            "host_nic_ip": "reserve"
        }
    ],
    "status": "completed"
}
"""


def hccn_conf(ips=NIC_IPS, extra=()):
    """An /etc/hccn.conf as hccn_tool writes it: address, netmask, netdetect, gateway and more per device."""
    lines = []
    for device, ip in enumerate(ips):
        subnet = ip.rsplit(".", 1)[0]
        lines += [f"address_{device}={ip}", f"netmask_{device}=255.255.255.0", f"netdetect_{device}={subnet}.1",
                  f"gateway_{device}={subnet}.1", f"send_arp_status_{device}=1", f"tls_enable_{device}=0"]
    return "\n".join([*lines, *extra]) + "\n"


def table(server=SERVER, ips=NIC_IPS, devices=range(8)):
    """The expected single-server table, written out by hand."""
    return {"version": "1.0", "server_count": "1", "server_list": [{
        "server_id": server,
        "device": [{"device_id": str(d), "device_ip": ips[d], "rank_id": str(rank)} for rank, d in enumerate(devices)],
        "host_nic_ip": "reserve"}], "status": "completed"}


def run(tool, *args, cwd, path=PYTHON_BIN):
    return subprocess.run([sys.executable, str(TOOLS / tool), *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env={**os.environ, "PATH": path})


def write(path, content):
    path.write_text(content if isinstance(content, str) else json.dumps(content, indent=4))
    return path


def all_strings(value):
    if isinstance(value, dict):
        return all(isinstance(k, str) and all_strings(v) for k, v in value.items())
    if isinstance(value, list):
        return all(all_strings(v) for v in value)
    return isinstance(value, str)


def changed(mutations):
    """A copy of the good 8-device table with (key path, new value or DELETE) applied."""
    result = table()
    for keys, value in mutations:
        parent = result
        for key in keys[:-1]:
            parent = parent[key]
        if value is DELETE:
            del parent[keys[-1]]
        else:
            parent[keys[-1]] = value
    return result


def rank(i):
    return ("server_list", 0, "device", i, "rank_id")


@pytest.fixture
def conf(tmp_path):
    return write(tmp_path / "hccn.conf", hccn_conf())


def test_python_bin_has_no_hccn_tool():
    assert shutil.which("hccn_tool", path=PYTHON_BIN) is None


def test_eight_devices_from_hccn_conf_is_exactly_the_ascend_table(tmp_path, conf):
    out = run("hccl_tools.py", "--device_num", "[0,8)", "--server_ip", SERVER, "--hccn_conf", conf,
              "--output", tmp_path / "out", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    written = list((tmp_path / "out").iterdir())
    assert [p.name for p in written] == ["hccl_8p_01234567_10.155.111.140.json"]
    text = written[0].read_text()
    data = json.loads(text)
    assert data == json.loads(EXPECTED_8P) == table() and text == EXPECTED_8P
    assert list(data) == ["version", "server_count", "server_list", "status"]
    assert list(data["server_list"][0]) == ["server_id", "device", "host_nic_ip"]
    assert all(list(d) == ["device_id", "device_ip", "rank_id"] for d in data["server_list"][0]["device"])
    assert all_strings(data)


def test_sub_range_with_visible_devices(tmp_path, conf):
    out = run("hccl_tools.py", "--device_num", "[ 2 , 6 )", "--visible_devices", "1,2,3,4,5", "--server_ip",
              "10.0.0.7", "--hccn_conf", conf, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "hccl_4p_2345_10.0.0.7.json").read_text())
    assert data == table("10.0.0.7", devices=range(2, 6))
    assert [d["rank_id"] for d in data["server_list"][0]["device"]] == ["0", "1", "2", "3"]


def test_hccn_tool_on_path_gives_the_ips(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = write(bin_dir / "hccn_tool", f"#!{sys.executable}\nimport sys\n"
                 "print(f'ipaddr:10.20.0.{int(sys.argv[2]) + 1}\\nnetmask:255.255.255.0')\n")
    fake.chmod(0o755)
    out = run("hccl_tools.py", "--device_num", "[4,8)", "--server_ip", SERVER, cwd=tmp_path,
              path=f"{bin_dir}{os.pathsep}{PYTHON_BIN}")
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "hccl_4p_4567_10.155.111.140.json").read_text())
    assert [d["device_ip"] for d in data["server_list"][0]["device"]] == [f"10.20.0.{d}" for d in range(5, 9)]


def test_merge_two_servers_renumbers_ranks(tmp_path):
    a = write(tmp_path / "a.json", table())
    b = write(tmp_path / "b.json", table("10.155.111.141", OTHER_IPS))
    out = run("merge_hccl.py", a, b, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "hccl_2s_16p.json").read_text())
    assert data["server_count"] == "2" and list(data) == ["version", "server_count", "server_list", "status"]
    assert [s["server_id"] for s in data["server_list"]] == [SERVER, "10.155.111.141"]
    devices = [d for s in data["server_list"] for d in s["device"]]
    assert [d["rank_id"] for d in devices] == [str(r) for r in range(16)]
    assert [d["device_ip"] for d in devices] == NIC_IPS + OTHER_IPS and all_strings(data)
    (tmp_path / "merged").mkdir()
    assert run("merge_hccl.py", a, b, "--output", "merged", cwd=tmp_path).returncode == 0
    assert run("merge_hccl.py", a, b, "--output", "cluster.json", cwd=tmp_path).returncode == 0
    assert json.loads((tmp_path / "merged" / "hccl_2s_16p.json").read_text()) == data
    assert json.loads((tmp_path / "cluster.json").read_text()) == data
    assert run("check_rank_table.py", "cluster.json", "--expect-devices", "16", cwd=tmp_path).returncode == 0


def test_check_good_table_prints_ok(tmp_path):
    write(tmp_path / "t.json", table())
    out = run("check_rank_table.py", "t.json", "--expect-devices", "8", cwd=tmp_path)
    assert (out.returncode, out.stdout, out.stderr) == (0, "ok: t.json: 1 servers, 8 devices\n", "")


def test_check_reports_each_problem_on_its_own_line(tmp_path):
    write(tmp_path / "t.json", changed([(("version",), "2.0"), (("status",), "pending")]))
    out = run("check_rank_table.py", "t.json", cwd=tmp_path)
    lines = out.stderr.splitlines()
    assert out.returncode == 2 and out.stdout == "" and len(lines) == 2, out.stderr
    assert lines[0].startswith('error: t.json: version = "2.0"') and lines[1].startswith('error: t.json: status')


# case: tool, arguments ({tmp}: the test's directory), files written first, texts the one stderr line must hold
CONF = {"h.conf": hccn_conf()}
BAD_INPUTS = {
    "hccn.conf missing": ("hccl_tools.py", ["--hccn_conf", "{tmp}/nowhere.conf"], {}, ["--hccn_conf", "nowhere.conf"]),
    "hccn.conf bad line": ("hccl_tools.py", [], {"h.conf": hccn_conf(extra=["this is no setting"])},
                           ["h.conf:49", "'this is no setting'", "key=value"]),
    "hccn.conf bad IP": ("hccl_tools.py", [], {"h.conf": hccn_conf(NIC_IPS[:3] + ["192.168.103.300"] + NIC_IPS[4:])},
                         ["h.conf:19", "address_3", "192.168.103.300", "IPv4"]),
    "hccn.conf duplicate IP": ("hccl_tools.py", [], {"h.conf": hccn_conf(NIC_IPS[:7] + NIC_IPS[:1])},
                               ["h.conf:43", "192.168.100.101", "h.conf:1"]),
    "hccn.conf lacks a device": ("hccl_tools.py", [], {"h.conf": hccn_conf(NIC_IPS[:5])}, ["h.conf", "address_5"]),
    "range past 8": ("hccl_tools.py", ["--device_num", "[0,9)"], CONF, ["--device_num", "[0,9)"]),
    "range reversed": ("hccl_tools.py", ["--device_num", "[5,3)"], CONF, ["--device_num", "[5,3)"]),
    "range as a-b": ("hccl_tools.py", ["--device_num", "0-8"], CONF, ["--device_num", "'0-8'"]),
    "range of letters": ("hccl_tools.py", ["--device_num", "[a,b)"], CONF, ["--device_num", "[a,b)"]),
    "device not visible": ("hccl_tools.py", ["--visible_devices", "0,1,2,3"], CONF,
                           ["--visible_devices", "0,1,2,3", "device 4"]),
    "visible not ids": ("hccl_tools.py", ["--visible_devices", "0,1,x"], CONF, ["--visible_devices", "0,1,x"]),
    "bad server_ip": ("hccl_tools.py", ["--server_ip", "10.155.111"], CONF, ["--server_ip", "10.155.111"]),
    "non-string value": ("check_rank_table.py", ["t.json"], {"t.json": changed([(rank(3), 3)])},
                         ["t.json", "server_list[0].device[3].rank_id = 3", "string"]),
    "rank gap": ("check_rank_table.py", ["t.json"], {"t.json": changed([(rank(i), str(i + 1)) for i in range(3, 8)])},
                 ["t.json", 'device[3].rank_id = "4"', 'expected "3"']),
    "duplicate rank": ("check_rank_table.py", ["t.json"], {"t.json": changed([(rank(3), "2")])},
                       ["t.json", 'device[3].rank_id = "2" repeats server_list[0].device[2]']),
    "wrong server_count": ("check_rank_table.py", ["t.json"], {"t.json": changed([(("server_count",), "2")])},
                           ["t.json", 'server_count = "2"', "1 servers"]),
    "empty file": ("check_rank_table.py", ["t.json"], {"t.json": ""}, ["t.json", "empty"]),
    "not JSON": ("check_rank_table.py", ["t.json"], {"t.json": json.dumps(table())[:-5]},
                 ["t.json", "not valid JSON"]),
    "missing key": ("check_rank_table.py", ["t.json"], {"t.json": changed([(("status",), DELETE)])},
                    ["t.json", "missing key 'status'"]),
    "duplicate device ip": ("check_rank_table.py", ["t.json"], {"t.json": changed([(
        ("server_list", 0, "device", 7, "device_ip"), NIC_IPS[0])])}, ["t.json", '"192.168.100.101" repeats']),
    "bad version": ("check_rank_table.py", ["t.json"], {"t.json": changed([(("version",), "1.1")])},
                    ["t.json", 'version = "1.1"', '"1.0"']),
    "bad status": ("check_rank_table.py", ["t.json"], {"t.json": changed([(("status",), "done")])},
                   ["t.json", 'status = "done"', '"completed"']),
    "too few devices": ("check_rank_table.py", ["t.json", "--expect-devices", "16"], {"t.json": table()},
                        ["t.json", "8 devices, expected 16"]),
    "merge duplicate server": ("merge_hccl.py", ["a.json", "b.json"],
                               {"a.json": table(), "b.json": table(ips=OTHER_IPS)},
                               ["b.json", f"server_id {SERVER}", "a.json"]),
    "merge duplicate device ip": ("merge_hccl.py", ["a.json", "b.json"],
                                  {"a.json": table(), "b.json": table("10.0.0.2")},
                                  ["b.json", f"device_ip {NIC_IPS[0]}", "a.json"]),
    "merge one input": ("merge_hccl.py", ["a.json"], {"a.json": table()}, ["a.json", "at least 2"]),
    "merge invalid input": ("merge_hccl.py", ["a.json", "t.json"],
                            {"a.json": table(), "t.json": changed([(rank(0), "1")])}, ["t.json", 'rank_id = "1"']),
    "merge over an input": ("merge_hccl.py", ["a.json", "b.json", "--output", "b.json"],
                            {"a.json": table(), "b.json": table("10.0.0.2", OTHER_IPS)}, ["--output", "b.json"]),
}
HCCL_FLAGS = ["--server_ip", SERVER, "--hccn_conf", "{tmp}/h.conf", "--output", "{tmp}/out"]


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, case):
    tool, args, files, expected = BAD_INPUTS[case]
    for name, content in files.items():
        write(tmp_path / name, content)
    if tool == "hccl_tools.py":
        args = HCCL_FLAGS + args  # a later flag wins
    before = sorted(p.name for p in tmp_path.iterdir())
    out = run(tool, *[arg.replace("{tmp}", str(tmp_path)) for arg in args], cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert all(text in lines[0] for text in expected), (expected, lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_hccn_tool_output_parser():
    assert parse_hccn_tool_output("ipaddr:192.168.100.101\nnetmask:255.255.255.0\n") == "192.168.100.101"
    assert parse_hccn_tool_output("netmask:255.255.255.0\n") is None


def test_range_parser_and_host_ip():
    assert parse_device_range("[ 4 , 8 )") == [4, 5, 6, 7] and parse_device_range("[0,1)") == [0]
    assert is_ipv4(host_ip()) and not is_ipv4("1.2.3") and not is_ipv4(1)
