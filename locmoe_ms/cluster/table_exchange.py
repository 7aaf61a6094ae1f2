"""The job's rank table made at launch: every server writes its part to a shared directory, server 0 merges them.

All files are in TABLE_DIR/JOB_ID/ (a directory every server sees, such as an NFS mount), each written whole (a
temporary file and a rename), so a reader never sees half a file:

  round.json           server 0's fresh random round id for this launch; it replaces the one of an earlier launch
  server_I.json        server I's one-server table (hccn_tool or hccn.conf), with the round it answers and a fresh
                       random token of its own
  merged.json          server 0's receipt: the round, the token of every part it merged, the merged table's file
                       name and sha256, or the error that stopped the merge
  hccl_{S}s_{N}p.json  the merged table: servers in server-index order, rank_id 0..N-1 (checked before it is written)

Nothing left by an earlier launch is taken, whatever the order in which servers start: server 0 merges only parts
that answer its round, and server I (I > 0) accepts only a receipt that lists the token it drew at this launch. The
job id keeps jobs that share TABLE_DIR apart; two launches of one job id at the same time are not supported.

Command line (scripts/run_cluster_train.sh runs it on every server): prints the merged table's path on stdout,
progress on stderr unless --quiet; bad input, a server missing after --timeout, or a failed merge: one line on
stderr and exit code 2.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from locmoe_ms.cluster.rank_table import (DEVICES_PER_SERVER, local_table, merge_tables, table_file_name,
                                          table_problems, write_table)
from locmoe_ms.errors import ArgumentParser, UserInputError, exits_on_bad_input

JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ROUND_FILE = "round.json"
RECEIPT_FILE = "merged.json"
POLL_SECONDS = 0.2
DEFAULT_TIMEOUT = 600
MAX_TIMEOUT = 86400


@dataclass
class Server:
    """This launcher's place in the job: the job, its size, this server's index and the shared directory."""

    job_id: str
    servers: int
    index: int
    devices: int
    directory: Path  # TABLE_DIR/JOB_ID
    timeout: float
    quiet: bool = False
    token: str = field(default_factory=lambda: secrets.token_hex(8))  # fresh at every launch

    @property
    def name(self) -> str:
        return f"job {self.job_id}, server {self.index} of {self.servers}"

    def part(self, index: int) -> Path:
        return self.directory / f"server_{index}.json"

    def say(self, message: str) -> None:
        """A progress line on stderr (stdout carries the table's path)."""
        if not self.quiet:
            print(f"{self.name}: {message}", file=sys.stderr, flush=True)


def read_json(path: Path) -> dict | None:
    """A JSON object file, or None if it is absent, unreadable or not an object (it may not be written yet)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _stamp() -> dict:
    """Who wrote a file, for messages."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _writer(data: dict) -> str:
    return f"host {data.get('host')}, pid {data.get('pid')}"


def _servers_text(indices: list[int]) -> str:
    return f"server{'s' if len(indices) > 1 else ''} {', '.join(map(str, indices))}"


def _current_round(me: Server) -> tuple[dict | None, str | None]:
    """(round.json as read, its round id if it is server 0's round of a job of this size, else None)."""
    data = read_json(me.directory / ROUND_FILE)
    if (data is None or data.get("job_id") != me.job_id or not isinstance(data.get("round"), str)
            or (data.get("servers"), data.get("devices")) != (me.servers, me.devices)):
        return data, None
    return data, data["round"]


def _answer(me: Server, index: int, round_id: str) -> dict | None:
    """server_{index}.json if it answers round_id, else None."""
    data = read_json(me.part(index))
    if (data is None or data.get("job_id") != me.job_id or data.get("round") != round_id
            or data.get("server_index") != index or not isinstance(data.get("token"), str)):
        return None
    return data


def _write_part(me: Server, round_id: str, table: dict) -> None:
    write_table({"job_id": me.job_id, "round": round_id, "server_index": me.index, "token": me.token,
                 **_stamp(), "table": table}, me.part(me.index))


def _receipt_for_me(me: Server, round_id: str) -> dict | None:
    """merged.json if server 0 wrote it for this round from the part this launcher wrote, else None."""
    data = read_json(me.directory / RECEIPT_FILE)
    if data is None or data.get("job_id") != me.job_id or data.get("round") != round_id:
        return None
    parts = data.get("parts")
    return data if isinstance(parts, dict) and parts.get(str(me.index)) == me.token else None


# ---------------------------------------------------------------- server 0


def _merge(me: Server, parts: dict[int, dict]) -> dict:
    """The parts in server-index order -> one checked table; a UserInputError naming the file if one is bad."""
    inputs = []
    for index in range(me.servers):
        table, path = parts[index]["table"], me.part(index)
        problems = table_problems(table, me.devices)
        if not problems and len(table["server_list"]) != 1:
            problems = [f"has {len(table['server_list'])} servers; a part is one server"]
        if problems:
            raise UserInputError(f"{path}: {'; '.join(problems)}")
        inputs.append((path, table))
    merged = merge_tables(inputs)
    problems = table_problems(merged, me.servers * me.devices)
    if problems:
        raise UserInputError(f"the merged rank table: {'; '.join(problems)}")
    return merged


def _lead(me: Server, table: dict) -> Path:
    """Server 0: open a round, wait for every part that answers it, merge, write the table and the receipt."""
    round_path = me.directory / ROUND_FILE
    (me.directory / RECEIPT_FILE).unlink(missing_ok=True)  # an earlier launch's; nobody would take it anyway
    opening = {"job_id": me.job_id, "round": me.token, "servers": me.servers, "devices": me.devices, **_stamp()}
    write_table(opening, round_path)
    _write_part(me, me.token, table)
    parts = {0: {"table": table, "token": me.token}}
    deadline = time.monotonic() + me.timeout
    me.say(f"waiting up to {me.timeout:g} s for the rank tables of the other servers in {me.directory}")
    while True:
        current = read_json(round_path)
        if current is None:
            write_table(opening, round_path)
        elif current.get("round") != me.token:
            raise UserInputError(f"{me.name}: {round_path} was replaced by another launcher ({_writer(current)}): "
                                 f"give --server-index 0 to one server only")
        for index in range(1, me.servers):
            part = parts.get(index) or _answer(me, index, me.token)
            if part is not None:
                parts[index] = part
        missing = [index for index in range(me.servers) if index not in parts]
        if not missing:
            break
        if time.monotonic() >= deadline:
            raise UserInputError(f"{me.name}: timed out after {me.timeout:g} s; no rank table yet from "
                                 f"{_servers_text(missing)} in {me.directory} (start the launcher there with that "
                                 f"--server-index and the same --job-id, --servers, --devices and --table-dir)")
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))
    receipt = {"job_id": me.job_id, "round": me.token, **_stamp(),
               "parts": {str(index): parts[index]["token"] for index in range(me.servers)}}
    try:
        merged = _merge(me, parts)
    except UserInputError as err:
        write_table({**receipt, "error": str(err)}, me.directory / RECEIPT_FILE)  # the others stop waiting
        raise UserInputError(f"{me.name}: {err}") from None
    path = me.directory / table_file_name(merged)
    write_table(merged, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    write_table({**receipt, "table": path.name, "sha256": digest}, me.directory / RECEIPT_FILE)
    me.say(f"wrote {path}: {me.servers} x {me.devices} devices")
    return path


# ---------------------------------------------------------------- servers 1..N-1


def _table_of(me: Server, receipt: dict) -> Path | None:
    """The merged table a receipt names, if the file is the one it describes (else None: keep waiting)."""
    if "error" in receipt:
        raise UserInputError(f"{me.name}: server 0 could not merge the rank tables: {receipt['error']}")
    name = receipt.get("table")
    if not isinstance(name, str) or Path(name).name != name:
        return None
    path = me.directory / name
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != receipt.get("sha256"):
        return None
    problems = table_problems(json.loads(data), me.servers * me.devices)
    if problems:
        raise UserInputError(f"{path}: {'; '.join(problems)}")
    return path


def _follow_timeout(me: Server, seen: dict | None, round_id: str | None) -> str:
    head = (f"{me.name}: timed out after {me.timeout:g} s waiting for server 0 to merge the rank tables in "
            f"{me.directory}")
    if seen is None:
        return f"{head}; server 0 has not started this job (no {ROUND_FILE} there)"
    if round_id is None:
        return (f"{head}; its {ROUND_FILE} is for {seen.get('servers')} servers x {seen.get('devices')} devices, "
                f"this server has --servers {me.servers} --devices {me.devices}")
    missing = [index for index in range(me.servers) if index != me.index and _answer(me, index, round_id) is None]
    if missing:
        return f"{head}; no rank table yet from {_servers_text(missing)}"
    return f"{head}; every server's rank table is there, but server 0 has not merged them (is it still running?)"


def _follow(me: Server, table: dict) -> Path:
    """Server I > 0: answer server 0's current round with this server's part, then wait for the receipt."""
    path = me.part(me.index)
    answered = None  # the round this launcher's part answers
    deadline = time.monotonic() + me.timeout
    me.say(f"waiting up to {me.timeout:g} s for server 0 to merge the rank tables in {me.directory}")
    while True:
        seen, round_id = _current_round(me)
        if round_id is not None:
            part = _answer(me, me.index, round_id)
            if part is not None and part["token"] != me.token and answered == round_id:
                raise UserInputError(f"{me.name}: {path} was replaced by another launcher ({_writer(part)}): give "
                                     f"--server-index {me.index} to one server only")
            if part is None or part["token"] != me.token:
                _write_part(me, round_id, table)
                answered = round_id
            receipt = _receipt_for_me(me, round_id)
            merged = _table_of(me, receipt) if receipt is not None else None
            if merged is not None:
                me.say(f"using {merged}")
                return merged
        if time.monotonic() >= deadline:
            raise UserInputError(_follow_timeout(me, seen, round_id))
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))


# ---------------------------------------------------------------- entry points


def exchange(me: Server, table: dict) -> Path:
    """Share this server's one-server table and return the path of the job's merged, checked table."""
    try:
        me.directory.mkdir(exist_ok=True)
    except OSError as err:
        raise UserInputError(f"--table-dir = '{me.directory.parent}': cannot create {me.directory.name}/ in it "
                             f"({err.strerror or err})") from None
    if not os.access(me.directory, os.W_OK):
        raise UserInputError(f"--table-dir = '{me.directory.parent}': cannot write in {me.directory}")
    try:
        return _lead(me, table) if me.index == 0 else _follow(me, table)
    except OSError as err:  # the shared directory failed under us (NFS gone, permissions changed)
        raise UserInputError(f"{me.name}: {err}") from None


def _bounded(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise UserInputError(f"{name} = {value}: must be an integer {low}..{high}")
    return value


@exits_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="table_exchange", description=__doc__.split("\n\n")[0])
    parser.add_argument("--job-id", required=True, help="the same on every server of the job, such as run7")
    parser.add_argument("--servers", type=int, required=True, help="servers in the job")
    parser.add_argument("--server-index", type=int, required=True, help="this server's index, 0..servers-1; "
                        "its ranks are index*devices .. (index+1)*devices-1")
    parser.add_argument("--table-dir", required=True, help="an existing directory that every server shares")
    parser.add_argument("--devices", type=int, default=DEVICES_PER_SERVER, help="devices per server, 0..D-1 "
                        f"(default {DEVICES_PER_SERVER})")
    parser.add_argument("--server-ip", help="this server's IPv4 in the table (default: its outward address)")
    parser.add_argument("--hccn-conf", help="the device IPs as address_N=IP lines (default: as hccl_tools.py)")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help=f"seconds to wait for the other "
                        f"servers (default {DEFAULT_TIMEOUT})")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if not JOB_ID.fullmatch(args.job_id):
        raise UserInputError(f"--job-id = {args.job_id!r}: must be 1-64 letters, digits, '.', '_' or '-', "
                             f"starting with a letter or digit")
    servers = _bounded("--servers", args.servers, 1, 9999)
    me = Server(args.job_id, servers, _bounded("--server-index", args.server_index, 0, servers - 1),
                _bounded("--devices", args.devices, 1, DEVICES_PER_SERVER), Path(args.table_dir) / args.job_id,
                _bounded("--timeout", args.timeout, 1, MAX_TIMEOUT), args.quiet)
    if not Path(args.table_dir).is_dir():
        raise UserInputError(f"--table-dir = '{args.table_dir}': no such directory (it must exist and be shared "
                             f"by all servers, such as an NFS mount)")
    if args.hccn_conf is not None and not Path(args.hccn_conf).is_file():
        raise UserInputError(f"--hccn-conf = '{args.hccn_conf}': no such file")
    table = local_table(list(range(me.devices)), args.server_ip, args.hccn_conf, "--server-ip")
    try:
        print(exchange(me, table))
    except KeyboardInterrupt:
        print(f"error: {me.name}: interrupted while waiting for the rank tables", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
