#!/usr/bin/env bash
# Train on Ascend NPUs (the `hccl` communicator) from an HCCL rank table: one process per local device, started in
# the background; then wait for all and report the ranks that failed. Several servers: run it on each server with
# that server's RANK_START. The hccl path has never run on Ascend hardware.
#
# usage: scripts/run_distribute_train.sh RANK_TABLE_FILE CONFIG [RANK_START] [LOCAL_DEVICE_NUM]
#            [--output-root DIR] [--dry-run] [-- locmoe-train args ...]
#
#   RANK_TABLE_FILE    the job's rank table (tools/hccl_tools.py, tools/merge_hccl.py); checked first with
#                      tools/check_rank_table.py
#   CONFIG             a YAML config; its parallel_config must describe the table's devices (nodes servers of
#                      devices_per_node devices each). Checked before anything is listed or started, as every rank
#                      checks it at start-up: locmoe-check-config CONFIG --rank-table RANK_TABLE_FILE with the
#                      --set overrides among the locmoe-train args and the ranks' two --set below
#   RANK_START         the first rank of this server (default 0; the second server of 8-device servers: 8)
#   LOCAL_DEVICE_NUM   ranks to start here, 1..8 (default: the table's devices of this server from RANK_START on);
#                      they must all be devices of one server
#   --output-root DIR  where the rank directories go (default: the current directory)
#   --dry-run          print each rank's environment, directory, log and command ("rank R: ..."), start nothing
#   -- args            passed to locmoe-train (--max-steps N, --resume, --set section.key=value, ...)
#
# Rank RANK_START+i runs in DIR/train_parallel{rank}/ with its output there and its stdout and stderr appended to
# DIR/train_parallel{rank}/log; it gets RANK_TABLE_FILE (absolute), RANK_SIZE (the table's devices), RANK_ID and
# DEVICE_ID (the table's device_id of that rank: i when the server lists devices 0..7), and runs with
# `--set parallel_config.communicator=hccl --set train.device_target=ascend`. Exit code 0 when every rank
# succeeded, 1 when one failed, 2 on bad arguments. Environment: PYTHON (default python3).
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

split_flags "$@"
set -- "${REST[@]}"
OPTION_VALUE=.
parse_positional --output-root "$@"
out_root=$OPTION_VALUE positional=("${POSITIONAL[@]}") extra=("${EXTRA[@]}")
((${#positional[@]} >= 2)) || die "expected RANK_TABLE_FILE CONFIG (see --help)"
((${#positional[@]} <= 4)) || die "unexpected argument '${positional[4]}' (see --help)"
set -- "${positional[@]}"
start=${3:-0} count=${4:-}
need_int RANK_START "$start" 0
[[ -z $count ]] || need_int LOCAL_DEVICE_NUM "$count" 1 8
need_file CONFIG "$2"
need_command "$PYTHON" "set PYTHON to the interpreter that has MindSpore"
"$PYTHON" "$ROOT/tools/check_rank_table.py" "$1" >/dev/null || exit 2  # its problems: one line each
check_ascend_config "$2" --rank-table "$1" -- "${extra[@]}"  # and that the config describes the table
table=$(absolute "$1") config=$(absolute "$2") out_root=$(absolute "$out_root")

# The table's size, then "rank device_id" for each rank to start here.
plan=$("$PYTHON" - "$table" "$start" "$count" <<'EOF'
import itertools, json, sys

path, start, count = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, encoding="utf-8") as f:
    servers = json.load(f)["server_list"]
ranks = [(int(d["rank_id"]), s["server_id"], d["device_id"]) for s in servers for d in s["device"]]  # rank order
if start >= len(ranks):
    print(f"error: RANK_START = {start}: {path} has ranks 0..{len(ranks) - 1}", file=sys.stderr)
    sys.exit(2)
here = list(itertools.takewhile(lambda rank: rank[1] == ranks[start][1], ranks[start:]))
if count and int(count) > len(here):
    print(f"error: LOCAL_DEVICE_NUM = {count}: server {here[0][1]} of {path} has {len(here)} devices from rank "
          f"{start} on (ranks {start}..{here[-1][0]})", file=sys.stderr)
    sys.exit(2)
print(len(ranks))
for rank, _, device in here[:int(count or len(here))]:
    print(rank, device)
EOF
) || exit 2
{ read -r size; mapfile -t local_ranks; } <<<"$plan"

pids=() names=() logs=()
stop() {  # Ctrl-C or kill: background ranks ignore SIGINT, so end them here
    kill "${pids[@]}" 2>/dev/null || true
    exit 130
}
trap stop INT TERM
for line in "${local_ranks[@]}"; do
    read -r rank device <<<"$line"
    dir=$out_root/train_parallel$rank
    RANK_ENV=("PYTHONPATH=$PYTHONPATH" "RANK_TABLE_FILE=$table" "RANK_SIZE=$size" "RANK_ID=$rank" "DEVICE_ID=$device")
    CMD=("$PYTHON" -m locmoe_ms.cli --config "$config" "${extra[@]}" --output-dir "$dir"
         --set parallel_config.communicator=hccl --set train.device_target=ascend)
    if ((DRY_RUN)); then
        show_rank "$rank" "$dir" "$dir/log"
        continue
    fi
    mkdir -p "$dir"
    echo "=== $(date '+%F %T') rank $rank of $size starts" >>"$dir/log"
    (cd "$dir" && exec env "${RANK_ENV[@]}" "${CMD[@]}") >>"$dir/log" 2>&1 &
    pids+=($!) names+=("$rank") logs+=("$dir/log")
    echo "rank $rank: started on device $device, pid $!, log $dir/log"
done
((DRY_RUN)) && exit 0

failed=0
for i in "${!pids[@]}"; do
    if wait "${pids[i]}"; then
        echo "rank ${names[i]}: done"
    else
        echo "rank ${names[i]}: failed with exit code $?, log ${logs[i]}" >&2
        failed=$((failed + 1))
    fi
done
if ((failed)); then
    echo "$failed of ${#pids[@]} ranks failed" >&2
    exit 1
fi
echo "all ${#pids[@]} ranks done"
