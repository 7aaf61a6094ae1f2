#!/usr/bin/env bash
# Train on Ascend NPUs (the `hccl` communicator) on one server or several, making the job's rank table on the way:
# run it on every server with that server's index. Each server writes its own rank table into a directory all
# servers share (TABLE_DIR/JOB_ID/), server 0 merges them in server-index order and checks the result, and then
# every server starts its ranks from the merged table with scripts/run_distribute_train.sh. The hccl path has never
# run on Ascend hardware.
#
# usage: scripts/run_cluster_train.sh CONFIG --servers N --server-index I --table-dir DIR --job-id ID
#            [--devices D] [--server-ip IP] [--hccn-conf FILE] [--timeout S] [--output-root DIR] [--dry-run]
#            [-- locmoe-train args ...]
#
#   CONFIG             a YAML config; its parallel_config must describe N*D devices (nodes N, devices_per_node
#                      D), checked against the merged table before any rank is listed or started
#   --servers N        servers in the job, 1..9999; the same on every server
#   --server-index I   this server's index, 0..N-1; its ranks are I*D .. I*D+D-1 and server 0 merges the tables
#   --table-dir DIR    an existing directory that every server sees at this path (NFS); the files go to DIR/ID/
#   --job-id ID        names this job, the same on every server: 1-64 letters, digits, '.', '_', '-'; files left in
#                      DIR/ID/ by an earlier launch are never used, so an id may be reused once its job has ended
#   --devices D        NPUs per server, devices 0..D-1, 1..8 (default 8)
#   --server-ip IP     this server's IPv4 in the table (default: the address of its outward route)
#   --hccn-conf FILE   the device IPs, address_N=IP lines (default: hccn_tool if on PATH, else /etc/hccn.conf)
#   --timeout S        seconds each server waits for the others (default 600)
#   --output-root DIR  where the rank directories go (default: the current directory)
#   --dry-run          make the rank table all the same (it writes in DIR/ID/ only), then print each local rank's
#                      environment, directory, log and command ("rank R: ...") and start nothing
#   -- args            passed to locmoe-train (--max-steps N, --resume, --set section.key=value, ...)
#
# Servers may start in any order; the exchange reports its progress on stderr. The ranks are started as
# scripts/run_distribute_train.sh does, from the merged table DIR/ID/hccl_{N}s_{N*D}p.json (one server:
# hccl_{D}p_{device ids}_{IP}.json): rank I*D+d on device d in train_parallel{rank}/ with RANK_TABLE_FILE,
# RANK_SIZE, RANK_ID and DEVICE_ID, each with `--set parallel_config.communicator=hccl --set
# train.device_target=ascend`. Exit code 0 when every rank succeeded, 1 when one failed, 2 on bad arguments or
# input, a server still missing after the timeout (one line naming it) or a failed merge. Environment: PYTHON
# (default python3).
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

split_flags "$@"
set -- "${REST[@]}"
require_config_first "$@"
config=$1
shift
servers='' index='' table_dir='' job_id='' devices=8 timeout=600 out_root=. exchange=() extra=()
while (($#)); do
    case $1 in
        --) shift; extra=("$@"); break ;;
        --servers | --servers=*) servers=$(option_value "$@") ;;
        --server-index | --server-index=*) index=$(option_value "$@") ;;
        --table-dir | --table-dir=*) table_dir=$(option_value "$@") ;;
        --job-id | --job-id=*) job_id=$(option_value "$@") ;;
        --devices | --devices=*) devices=$(option_value "$@") ;;
        --timeout | --timeout=*) timeout=$(option_value "$@") ;;
        --output-root | --output-root=*) out_root=$(option_value "$@") ;;
        --server-ip | --server-ip=* | --hccn-conf | --hccn-conf=*) exchange+=("${1%%=*}" "$(option_value "$@")") ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) die "unexpected argument '$1' (see --help)" ;;
    esac
    [[ $1 == *=* ]] || shift
    shift
done
[[ -n $servers ]] || die "--servers: missing; it is required (see --help)"
[[ -n $index ]] || die "--server-index: missing; it is required (see --help)"
[[ -n $table_dir ]] || die "--table-dir: missing; it is required (see --help)"
[[ -n $job_id ]] || die "--job-id: missing; it is required (see --help)"
need_file CONFIG "$config"
need_int --servers "$servers" 1 9999
need_int --server-index "$index" 0 $((servers - 1))
need_int --devices "$devices" 1 8
need_int --timeout "$timeout" 1 86400
[[ $job_id =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] ||
    die "--job-id = '$job_id': must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
[[ ! -e $table_dir || -d $table_dir ]] || die "--table-dir = '$table_dir': is a file; expected a directory"
[[ -d $table_dir ]] ||
    die "--table-dir = '$table_dir': no such directory (it must exist and be shared by all servers, such as NFS)"
for ((i = 0; i < ${#exchange[@]}; i += 2)); do
    [[ ${exchange[i]} != --hccn-conf ]] || need_file --hccn-conf "${exchange[i + 1]}"
done
need_command "$PYTHON" "set PYTHON to the interpreter that has MindSpore"

quiet=()
((DRY_RUN)) && quiet=(--quiet)  # the listing stays "rank R: ..." lines
table=$("$PYTHON" -m locmoe_ms.cluster.table_exchange --job-id "$job_id" --servers "$servers" \
        --server-index "$index" --table-dir "$table_dir" --devices "$devices" --timeout "$timeout" \
        "${exchange[@]}" "${quiet[@]}") || exit $?

flags=(--output-root "$out_root")
((DRY_RUN)) && flags+=(--dry-run)
exec bash "$ROOT/scripts/run_distribute_train.sh" "$table" "$config" $((index * devices)) "$devices" "${flags[@]}" \
    -- "${extra[@]}"
