#!/usr/bin/env bash
# Train with several processes on this machine's CPU (the `cpu` communicator), started by msrun: a local test of
# data and expert parallelism across real processes.
#
# usage: scripts/run_cpu_distributed.sh WORKERS CONFIG [locmoe-train args ...] [--dry-run]
#
#   WORKERS    number of processes (ranks), >= 1
#   CONFIG     a YAML config; its parallel_config must describe WORKERS devices
#   args       passed to locmoe-train (--max-steps N, --set section.key=value, ...); --output-dir DIR (default
#              runs/cpu_distributed) is where rank r writes (DIR/rank_r/) and msrun's logs go (DIR/msrun_log/)
#   --dry-run  print the msrun command ("launch: ...") and each rank's environment, log and command
#              ("rank R: ..."), start nothing
#
# Runs `--set parallel_config.communicator=cpu`. Environment: MASTER_PORT (default: a free port),
# CLUSTER_TIME_OUT (seconds for all ranks to join, default 300), PYTHON (default python3, used for checks only:
# msrun starts the ranks with `python` from PATH).
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

split_flags "$@"
set -- "${REST[@]}"
(($# >= 2)) || die "expected WORKERS CONFIG (see --help)"
need_int WORKERS "$1" 1
need_file CONFIG "$2"
workers=$1
config=$(absolute "$2")
shift 2

# Take --output-dir out of the passed arguments: the script needs it for the logs and passes it last.
output=runs/cpu_distributed
args=()
while (($#)); do
    case $1 in
        --output-dir | --output-dir=*)
            output=$(option_value "$@")
            [[ $1 == *=* ]] || shift ;;
        *) args+=("$1") ;;
    esac
    shift
done
output=$(absolute "$output")
need_command "$PYTHON" "set PYTHON to the interpreter that has MindSpore"
port=${MASTER_PORT:-$(free_port)}
need_int MASTER_PORT "$port" 1024 65535

run_msrun "$workers" "$workers" 127.0.0.1 "$port" 0 "$output/msrun_log" \
    --config "$config" "${args[@]}" --output-dir "$output" --set parallel_config.communicator=cpu
