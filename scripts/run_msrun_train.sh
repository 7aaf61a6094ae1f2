#!/usr/bin/env bash
# Train on Ascend NPUs (the `hccl` communicator) with msrun, on one server or several (run it on each server).
# The hccl path has never run on Ascend hardware.
#
# usage: scripts/run_msrun_train.sh CONFIG WORKER_NUM LOCAL_WORKER_NUM [MASTER_ADDR] [MASTER_PORT] [NODE_RANK]
#            [--output-dir DIR] [--dry-run] [-- locmoe-train args ...]
#
#   CONFIG            a YAML config; its parallel_config must describe WORKER_NUM devices
#   WORKER_NUM        ranks of the whole job
#   LOCAL_WORKER_NUM  ranks on this server, 1..8; WORKER_NUM must be a multiple of it (as many on every server)
#   MASTER_ADDR       IP of the server with NODE_RANK 0, reachable from all servers (default 127.0.0.1: one server)
#   MASTER_PORT       a free port on that server, 1024..65535 (default 8118)
#   NODE_RANK         this server's index, 0..WORKER_NUM/LOCAL_WORKER_NUM-1 (default 0); its ranks are
#                     NODE_RANK*LOCAL_WORKER_NUM .. +LOCAL_WORKER_NUM-1 on devices 0..LOCAL_WORKER_NUM-1
#   --output-dir DIR  where the ranks write (rank r: DIR/rank_r/) and msrun's logs go (DIR/msrun_log/worker_r.log);
#                     default runs/msrun
#   --dry-run         print the msrun command ("launch: ...") and each local rank's environment, log and command
#                     ("rank R: ..."), start nothing
#   -- args           passed to locmoe-train (--max-steps N, --resume, --set section.key=value, ...)
#
# Checks the config as every rank would (locmoe-check-config, the memory plan included), then runs `--set
# parallel_config.communicator=hccl --set train.device_target=ascend`. Environment: CLUSTER_TIME_OUT
# (seconds for all ranks to join, default 300), PYTHON (default python3, used for checks only: msrun starts the ranks with `python` from PATH).
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

split_flags "$@"
set -- "${REST[@]}"
OPTION_VALUE=runs/msrun
parse_positional --output-dir "$@"
output=$OPTION_VALUE positional=("${POSITIONAL[@]}") extra=("${EXTRA[@]}")
((${#positional[@]} >= 3)) || die "expected CONFIG WORKER_NUM LOCAL_WORKER_NUM (see --help)"
((${#positional[@]} <= 6)) || die "unexpected argument '${positional[6]}' (see --help)"
set -- "${positional[@]}"
need_file CONFIG "$1"
need_int WORKER_NUM "$2" 1
need_int LOCAL_WORKER_NUM "$3" 1 8
config=$(absolute "$1") workers=$2 local_workers=$3 addr=${4:-127.0.0.1} port=${5:-8118} node=${6:-0}
output=$(absolute "$output")
((workers % local_workers == 0)) ||
    die "WORKER_NUM = $workers: must be a multiple of LOCAL_WORKER_NUM = $local_workers (as many ranks per server)"
need_int MASTER_PORT "$port" 1024 65535
need_int NODE_RANK "$node" 0 $((workers / local_workers - 1))
[[ $addr =~ ^[A-Za-z0-9.:-]+$ ]] || die "MASTER_ADDR = '$addr': must be an IP address or host name"
if ((workers > local_workers)) && [[ $addr == 127.* || $addr == localhost ]]; then
    die "MASTER_ADDR = '$addr': a job over $((workers / local_workers)) servers needs the address of the" \
        "server with NODE_RANK 0 that every server can reach"
fi
need_command "$PYTHON" "set PYTHON to the interpreter that has MindSpore"
check_ascend_config "$config" -- "${extra[@]}"

run_msrun "$workers" "$local_workers" "$addr" "$port" "$node" "$output/msrun_log" \
    --config "$config" "${extra[@]}" --output-dir "$output" --set parallel_config.communicator=hccl \
    --set train.device_target=ascend
