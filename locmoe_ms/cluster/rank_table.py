"""HCCL rank tables (version "1.0") for Ascend 910 servers: build one per server, merge them, check any.

A table names every device of the job with its server, its NIC IP and its rank; HCCL reads it before the first
collective, and a wrong one fails late and obscurely, so everything here is checked up front. Every value in the
table is a string, as Ascend expects. Plain Python only: the tools run on hosts without MindSpore.
"""
from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from locmoe_ms.errors import UserInputError
from locmoe_ms.paths import output_dir, output_file

VERSION = "1.0"
STATUS = "completed"
HOST_NIC_IP = "reserve"
DEVICES_PER_SERVER = 8
TOP_KEYS = ("version", "server_count", "server_list", "status")
DEFAULT_HCCN_CONF = "/etc/hccn.conf"
HCCN_TOOL = "hccn_tool"

RANGE = re.compile(r"\s*\[\s*([0-9]+)\s*,\s*([0-9]+)\s*\)\s*")
CONF_LINE = re.compile(r"\s*([A-Za-z_][\w.-]*)\s*=\s*(.*?)\s*")
ADDRESS_KEY = re.compile(r"address_([0-9]+)")
IPADDR_LINE = re.compile(r"^\s*ipaddr\s*:\s*(\S*)\s*$", re.MULTILINE)
DIGITS = re.compile(r"[0-9]+")
MISSING = object()

IpSource = dict[int, tuple[str, str]]  # device id -> (IP, where it was read, for messages)


# ---------------------------------------------------------------- values


def is_ipv4(value: object) -> bool:
    """True for a dotted-quad IPv4 string such as "192.168.100.101"."""
    if not isinstance(value, str):
        return False
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def check_ipv4(value: str, name: str) -> str:
    """`value` if it is an IPv4 address, else a UserInputError naming `name` and the value."""
    if not is_ipv4(value):
        raise UserInputError(f"{name} = {value!r}: must be an IPv4 address such as 192.168.100.101")
    return value


def repeats(items: Iterable[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(value, where) pairs -> (value, where first seen, where seen again) for every repeated value."""
    first: dict[str, str] = {}
    found = []
    for value, where in items:
        if value in first:
            found.append((value, first[value], where))
        else:
            first[value] = where
    return found


def _show(value: object) -> str:
    """A value as JSON on one short line, for messages."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- hccl_tools: flags and device IPs


def parse_device_range(text: str) -> list[int]:
    """--device_num "[a,b)" -> [a, ..., b-1]; 0 <= a < b <= 8."""
    match = RANGE.fullmatch(text)
    if not match or not 0 <= int(match[1]) < int(match[2]) <= DEVICES_PER_SERVER:
        raise UserInputError(f"--device_num = {text!r}: must be a half-open range [a,b) of device ids with "
                             f"0 <= a < b <= {DEVICES_PER_SERVER}, such as [0,8) or [4,8)")
    return list(range(int(match[1]), int(match[2])))


def select_devices(device_range: str, visible: str | None) -> list[int]:
    """The devices of --device_num, each of which must be listed in --visible_devices (default: all 8)."""
    devices = parse_device_range(device_range)
    if visible is None:
        return devices
    items = [item.strip() for item in visible.split(",")]
    if not all(DIGITS.fullmatch(item) and int(item) < DEVICES_PER_SERVER for item in items):
        raise UserInputError(f"--visible_devices = {visible!r}: must be a comma-separated list of device ids "
                             f"0-{DEVICES_PER_SERVER - 1}, such as 0,1,2,3")
    hidden = [d for d in devices if d not in {int(item) for item in items}]
    if hidden:
        raise UserInputError(f"--visible_devices = {visible!r}: lacks device {hidden[0]}, which --device_num "
                             f"{device_range!r} includes; every device of the range must be visible")
    return devices


def host_ip() -> str:
    """This machine's outward IPv4 (the source address of a UDP route; nothing is sent), else 127.0.0.1."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("10.255.255.255", 1))
            address = sock.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    return address if is_ipv4(address) and address != "0.0.0.0" else "127.0.0.1"


def parse_hccn_tool_output(text: str) -> str | None:
    """The address of an `hccn_tool -i N -ip -g` output ("ipaddr:X.X.X.X" line), or None if there is none."""
    match = IPADDR_LINE.search(text)
    return match[1] if match else None


def _hccn_tool_ips(tool: str, devices: list[int]) -> IpSource:
    """Ask hccn_tool for each device's NIC IP."""
    found = {}
    for device in devices:
        where = f"{HCCN_TOOL} -i {device} -ip -g"
        try:
            run = subprocess.run([tool, "-i", str(device), "-ip", "-g"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise UserInputError(f"{where}: could not run ({err}); give the IPs with --hccn_conf PATH") from None
        address = parse_hccn_tool_output(run.stdout)
        if address is None:
            raise UserInputError(f"{where}: exit code {run.returncode} and no 'ipaddr:' line: device {device} "
                                 f"has no NIC IP configured")
        found[device] = (check_ipv4(address, f"{where}: ipaddr"), where)
    return found


def parse_hccn_conf(path: Path, note: str = "") -> IpSource:
    """address_N=IP lines of an hccn.conf; every non-blank, non-comment line must be key=value."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserInputError(f"--hccn_conf = '{path}'{note}: no such file; it must list each device's NIC IP as "
                             f"address_N=IP") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserInputError(f"--hccn_conf = '{path}': cannot read it as text ({err})") from None
    found: IpSource = {}
    for number, line in enumerate(lines, 1):
        where = f"{path}:{number}"
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = CONF_LINE.fullmatch(line)
        if not match:
            raise UserInputError(f"{where}: {line.strip()!r}: must be a key=value line such as "
                                 f"address_0=192.168.100.101")
        address = ADDRESS_KEY.fullmatch(match[1])
        if address:
            device = int(address[1])
            if device in found:
                raise UserInputError(f"{where}: {match[1]} is set again (first on {found[device][1]}): each device "
                                     f"has one address line")
            found[device] = (check_ipv4(match[2], f"{where}: {match[1]}"), where)
    return found


def device_ips(devices: list[int], hccn_conf: str | None) -> dict[int, str]:
    """NIC IP per device: from --hccn_conf if given, else hccn_tool if on PATH, else /etc/hccn.conf."""
    tool = None if hccn_conf else shutil.which(HCCN_TOOL)
    if tool:
        found = _hccn_tool_ips(tool, devices)
    else:
        note = "" if hccn_conf else f" (the default; {HCCN_TOOL} is not on PATH either)"
        found = parse_hccn_conf(Path(hccn_conf or DEFAULT_HCCN_CONF), note)
    repeated = repeats(found.values())
    if repeated:
        ip, first, again = repeated[0]
        raise UserInputError(f"{again}: IP {ip} is also given on {first}: every device needs its own IP")
    for device in devices:
        if device not in found:
            raise UserInputError(f"{hccn_conf or DEFAULT_HCCN_CONF}: no address_{device}=IP line; the table needs "
                                 f"the IP of each of its devices {', '.join(map(str, devices))}")
    return {device: found[device][0] for device in devices}


# ---------------------------------------------------------------- building, merging, writing


def assemble_table(servers: list[dict]) -> dict:
    """Server entries -> a table, rank_id renumbered "0".."N-1" in server then device order."""
    ranks = itertools.count()
    server_list = [{**server, "device": [{**device, "rank_id": str(next(ranks))} for device in server["device"]]}
                   for server in servers]
    return {"version": VERSION, "server_count": str(len(server_list)), "server_list": server_list, "status": STATUS}


def server_table(server_ip: str, ips: dict[int, str]) -> dict:
    """The table of one server: its devices in id order with their NIC IPs."""
    devices = [{"device_id": str(device), "device_ip": ip} for device, ip in sorted(ips.items())]
    return assemble_table([{"server_id": server_ip, "device": devices, "host_nic_ip": HOST_NIC_IP}])


def local_table(devices: list[int], server_ip: str | None, hccn_conf: str | None, ip_option: str) -> dict:
    """This server's table: `server_ip` (checked; default host_ip()) and the NIC IPs of `devices` (device_ips)."""
    address = host_ip() if server_ip is None else check_ipv4(server_ip, ip_option)
    return server_table(address, device_ips(devices, hccn_conf))


def table_file_name(table: dict) -> str:
    """hccl_8p_01234567_10.155.111.140.json for one server, hccl_2s_16p.json for several."""
    servers, devices = table_size(table)
    if servers > 1:
        return f"hccl_{servers}s_{devices}p.json"
    server = table["server_list"][0]
    ids = "".join(device["device_id"] for device in server["device"])
    return f"hccl_{devices}p_{ids}_{server['server_id']}.json"


def merge_tables(tables: list[tuple[Path, dict]]) -> dict:
    """Checked (path, table) pairs -> one cluster table; a server or device IP in two inputs is an error."""
    servers = [(path, server) for path, table in tables for server in table["server_list"]]
    checks = (("server_id", [(server["server_id"], str(path)) for path, server in servers]),
              ("device_ip", [(device["device_ip"], str(path)) for path, server in servers
                             for device in server["device"]]))
    for key, items in checks:
        repeated = repeats(items)
        if repeated:
            value, first, again = repeated[0]
            raise UserInputError(f"{again}: {key} {value} is also in {first}: each must appear in one input only")
    return assemble_table([server for _, server in servers])


def output_path(output: str | None, name: str, file_allowed: bool) -> Path:
    """Where --output puts `name`: inside a directory (default: the current one), or at a file path if allowed."""
    if output is None:
        return Path(name)
    target = Path(output)
    if target.is_dir() or output.endswith(("/", os.sep)) or not file_allowed:
        return output_dir(target, "--output") / name
    return output_file(target, "--output")


def write_table(table: dict, path: Path, inputs: Iterable[Path] = ()) -> None:
    """Write JSON indented 4 via a temporary file in the target directory and a rename; never over an input."""
    for source in inputs:
        if path.exists() and source.exists() and os.path.samefile(path, source):
            raise UserInputError(f"--output = '{path}': is the input {source}; choose another output path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(json.dumps(table, indent=4) + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise UserInputError(f"--output = '{path}': cannot write it ({err.strerror or err})") from None


# ---------------------------------------------------------------- checking


def _lookup(obj: dict, key: str, where: str, problems: list[str]) -> tuple[str, object]:
    """(path of obj[key] for messages, its value); the value is MISSING, with the problem appended, if absent."""
    value = obj.get(key, MISSING)
    if value is MISSING:
        problems.append(f"{where or 'top level'}: missing key {key!r}")
    return (f"{where}.{key}" if where else key), value


def _field(obj: dict, key: str, where: str, ok: Callable[[str], object], allowed: str,
           problems: list[str]) -> str | None:
    """obj[key] if it is a string that passes `ok`; else None, with the problem appended."""
    name, value = _lookup(obj, key, where, problems)
    if isinstance(value, str) and ok(value):
        return value
    if isinstance(value, str):
        problems.append(f"{name} = {_show(value)}: must be {allowed}")
    elif value is not MISSING:
        problems.append(f"{name} = {_show(value)}: must be a string ({allowed})")
    return None


def _non_empty_list(obj: dict, key: str, where: str, what: str, problems: list[str]) -> list:
    """obj[key] if it is a non-empty list; else [], with the problem appended."""
    name, value = _lookup(obj, key, where, problems)
    if isinstance(value, list) and value:
        return value
    if value is not MISSING:
        problems.append(f"{name} = {_show(value)}: must be a non-empty list of {what}")
    return []


def _is_device_id(value: str) -> bool:
    return bool(DIGITS.fullmatch(value)) and int(value) < DEVICES_PER_SERVER


def _devices(server: dict, where: str, problems: list[str]) -> list[tuple[str, dict]]:
    """Check one server entry and its devices; its devices that are objects, with their paths."""
    _field(server, "server_id", where, is_ipv4, "an IPv4 address", problems)
    _field(server, "host_nic_ip", where, lambda _: True, 'such as "reserve"', problems)
    entries = list(enumerate(_non_empty_list(server, "device", where, "devices", problems)))
    problems.extend(f"{where}.device[{i}] = {_show(device)}: must be an object with keys device_id, device_ip, "
                    f"rank_id" for i, device in entries if not isinstance(device, dict))
    devices = [(f"{where}.device[{i}]", device) for i, device in entries if isinstance(device, dict)]
    ids = [(_field(device, "device_id", path, _is_device_id, f'a device id "0".."{DEVICES_PER_SERVER - 1}"',
                   problems), path) for path, device in devices]
    for path, device in devices:
        _field(device, "device_ip", path, is_ipv4, "an IPv4 address", problems)
        _field(device, "rank_id", path, DIGITS.fullmatch, 'a rank such as "0"', problems)
    for value, first, again in repeats((value, path) for value, path in ids if value is not None):
        problems.append(f"{again}.device_id = {_show(value)} repeats {first}: device ids are unique in a server")
    return devices


def _across_servers(servers: list[tuple[str, dict]], devices: list[tuple[str, dict]], problems: list[str]) -> None:
    """Server ids and device IPs unique in the table; rank ids "0".."N-1" in server then device order."""
    ids = [(server["server_id"], path) for path, server in servers if is_ipv4(server.get("server_id"))]
    for value, first, again in repeats(ids):
        problems.append(f"{again}.server_id = {_show(value)} repeats {first}: each server appears once")
    ips = [(device["device_ip"], path) for path, device in devices if is_ipv4(device.get("device_ip"))]
    for value, first, again in repeats(ips):
        problems.append(f"{again}.device_ip = {_show(value)} repeats {first}: device IPs are unique in a table")
    ranks = [(device.get("rank_id"), path) for path, device in devices]
    if not all(isinstance(rank, str) and DIGITS.fullmatch(rank) for rank, _ in ranks):
        return  # already reported
    duplicated = repeats(ranks)
    for value, first, again in duplicated:
        problems.append(f"{again}.rank_id = {_show(value)} repeats {first}: rank ids are unique")
    misplaced = [(index, rank, path) for index, (rank, path) in enumerate(ranks) if rank != str(index)]
    if misplaced and not duplicated:
        index, rank, path = misplaced[0]
        problems.append(f"{path}.rank_id = {_show(rank)}: expected \"{index}\"; rank ids must run "
                        f"0..{len(ranks) - 1} in server then device order")


def table_problems(table: object, expect_devices: int | None = None) -> list[str]:
    """Every problem of a parsed rank table, one line each; [] when HCCL can use it."""
    if not isinstance(table, dict):
        return [f"top level = {_show(table)}: must be an object with keys {', '.join(TOP_KEYS)}"]
    problems = [f"top level: unexpected key {key!r}; the keys are {', '.join(TOP_KEYS)}"
                for key in table if key not in TOP_KEYS]
    _field(table, "version", "", lambda value: value == VERSION, f'"{VERSION}"', problems)
    _field(table, "status", "", lambda value: value == STATUS, f'"{STATUS}"', problems)
    count = _field(table, "server_count", "", DIGITS.fullmatch, 'a count such as "1"', problems)
    entries = list(enumerate(_non_empty_list(table, "server_list", "", "servers", problems)))
    problems.extend(f"server_list[{i}] = {_show(server)}: must be an object with keys server_id, device, "
                    f"host_nic_ip" for i, server in entries if not isinstance(server, dict))
    servers = [(f"server_list[{i}]", server) for i, server in entries if isinstance(server, dict)]
    devices = [device for where, server in servers for device in _devices(server, where, problems)]
    _across_servers(servers, devices, problems)
    if count is not None and entries and int(count) != len(entries):
        problems.append(f"server_count = {_show(count)}: server_list has {len(entries)} servers")
    if expect_devices is not None and len(devices) != expect_devices:
        problems.append(f"has {len(devices)} devices, expected {expect_devices}")
    return problems


def _read_and_check(path: Path, expect_devices: int | None) -> tuple[object, list[str]]:
    """(parsed table, its problems) of a file; a missing, empty or non-JSON file is one problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, ["no such file"]
    except (OSError, UnicodeDecodeError) as err:
        return None, [f"cannot read it as text ({err})"]
    if not text.strip():
        return None, ["file is empty; must be a JSON rank table"]
    try:
        table = json.loads(text)
    except json.JSONDecodeError as err:
        return None, [f"not valid JSON ({err.msg}, line {err.lineno} column {err.colno})"]
    return table, table_problems(table, expect_devices)


def check_rank_table(path: str | Path, expect_devices: int | None = None) -> list[str]:
    """Problems of a rank table file, each one line starting with the file name; [] when it is valid."""
    return [f"{path}: {problem}" for problem in _read_and_check(Path(path), expect_devices)[1]]


def load_rank_table(path: str | Path) -> dict:
    """A valid rank table, or one UserInputError line naming the file and its problems."""
    table, problems = _read_and_check(Path(path), None)
    if problems:
        raise UserInputError(f"{path}: {'; '.join(problems)} (see check_rank_table.py)")
    return table  # type: ignore[return-value]


def table_size(table: dict) -> tuple[int, int]:
    """(servers, devices) of a valid table."""
    return len(table["server_list"]), sum(len(server["device"]) for server in table["server_list"])
