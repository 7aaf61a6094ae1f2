# Shared by the launch scripts (sourced, not run): argument checks, paths, the --dry-run listing.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)  # the checkout these scripts belong to
PYTHON=${PYTHON:-python3}                               # the interpreter that has MindSpore
CLUSTER_TIME_OUT=${CLUSTER_TIME_OUT:-300}               # msrun: seconds to wait for all workers to join
DRY_RUN=0
# Ranks import locmoe_ms from this checkout, installed or not (CANN's set_env.sh entries stay after it); once, when
# one script runs another.
[[ ${PYTHONPATH:-} == "$ROOT" || ${PYTHONPATH:-} == "$ROOT:"* ]] || export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# One line on stderr, exit code 2 (bad input).
die() {
    printf 'error: %s\n' "$*" >&2
    exit 2
}

# The script's leading comment block, without the '#'.
usage() {
    sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"
}

# Sets DRY_RUN and the array REST (the arguments without --dry-run); --help/-h prints the usage and exits 0.
# Everything from "--" on is kept as it is.
split_flags() {
    REST=()
    while (($#)); do
        case $1 in
            --) REST+=("$@"); break ;;
            --dry-run) DRY_RUN=1 ;;
            -h | --help) usage; exit 0 ;;
            *) REST+=("$1") ;;
        esac
        shift
    done
}

# require_config_first ARGS...: the first argument is the CONFIG path, not missing and not an option.
require_config_first() {
    (($#)) || die "missing CONFIG (see --help)"
    [[ $1 != -* ]] || die "expected CONFIG first, got the option '$1' (see --help)"
}

# need_int NAME VALUE MIN [MAX]: VALUE is a decimal integer (no sign, no leading zero) in MIN..MAX.
need_int() {
    local name=$1 value=$2 min=$3 max=${4:-999999999} range=">= $3"
    [[ $# -lt 4 ]] || range="$min..$max"
    if [[ ! $value =~ ^(0|[1-9][0-9]{0,8})$ ]] || ((value < min || value > max)); then
        die "$name = '$value': must be an integer $range (see --help)"
    fi
}

# need_file NAME PATH: PATH is an existing file.
need_file() {
    [[ ! -d $2 ]] || die "$1 = '$2': is a directory; expected a file"
    [[ -f $2 ]] || die "$1 = '$2': no such file"
}

# need_command NAME: NAME is on PATH.
need_command() {
    command -v "$1" >/dev/null || die "$1: not found on PATH${2:+; $2}"
}

# An absolute path without resolving symlinks; the path need not exist.
absolute() {
    realpath -ms -- "$1"
}

# The value of an option given as "--opt VALUE" or "--opt=VALUE"; $1 the option, $2 the next argument.
option_value() {
    case $1 in
        *=*) printf '%s\n' "${1#*=}" ;;
        *) [[ $# -ge 2 && -n $2 && $2 != -* ]] || die "${1}: needs a value (see --help)"
           printf '%s\n' "$2" ;;
    esac
}

# Parse "POSITIONAL... [OPTION VALUE] [-- EXTRA...]" with one value option (such as --output-dir): sets OPTION_VALUE
# (unchanged if the option is absent), POSITIONAL and EXTRA (the arguments after "--", for locmoe-train).
# shellcheck disable=SC2034  # the results are read by the sourcing script
parse_positional() {
    local option=$1
    shift
    POSITIONAL=() EXTRA=()
    while (($#)); do
        case $1 in
            --) shift; EXTRA=("$@"); return ;;
            "$option" | "$option"=*)
                OPTION_VALUE=$(option_value "$@")
                [[ $1 == *=* ]] || shift ;;
            -*) die "unknown option '$1' (see --help)" ;;
            *) POSITIONAL+=("$1") ;;
        esac
        shift
    done
}

# A free TCP port on this machine (the kernel's choice for port 0).
free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --dry-run: "rank R: NAME=VALUE ... cwd=DIR log=FILE cmd: COMMAND" from the arrays RANK_ENV and CMD; every
# word is shell-quoted (printf %q), so a line splits back into words with shlex.split.
show_rank() {
    printf 'rank %s:' "$1"
    printf ' %q' "${RANK_ENV[@]}"
    printf ' cwd=%q log=%q cmd:' "$2" "$3"
    printf ' %q' "${CMD[@]}"
    printf '\n'
}

# --dry-run: "launch: cwd=DIR cmd: COMMAND" for a launcher (msrun) that starts the ranks.
show_launch() {
    printf 'launch: cwd=%q cmd:' "$PWD"
    printf ' %q' "$@"
    printf '\n'
}

# What every Ascend rank checks at start-up, checked here before any rank starts: CONFIG with the ranks' overrides
# (the --set options among the locmoe-train arguments ARGS, then the two the launchers give last), the memory plan
# included (train.device_target ascend). FLAGS (--rank-table FILE) go to locmoe-check-config as well.
# usage: check_ascend_config CONFIG [FLAGS ...] -- [ARGS ...]; a problem is one line and exit 2.
check_ascend_config() {
    local config=$1 flags=() sets=() i
    shift
    while (($#)) && [[ $1 != -- ]]; do flags+=("$1"); shift; done
    (($#)) && shift
    local args=("$@")
    for ((i = 0; i < ${#args[@]}; i++)); do
        case ${args[i]} in
            --set) sets+=("${args[@]:i:2}"); i=$((i + 1)) ;;  # "--set" alone: check-config's one line says so
            --set=*) sets+=("${args[i]}") ;;
        esac
    done
    "$PYTHON" -m locmoe_ms check-config "$config" --quiet "${flags[@]}" "${sets[@]}" \
        --set parallel_config.communicator=hccl --set train.device_target=ascend || exit 2
}

# run_msrun WORKER_NUM LOCAL_WORKER_NUM MASTER_ADDR MASTER_PORT NODE_RANK LOG_DIR TRAIN_ARGS...: msrun starts this
# node's ranks, each `python locmoe_ms/cli.py TRAIN_ARGS` (msrun runs a script path with `python` from PATH), and
# waits for all of them. --dry-run lists the msrun command and each rank with the environment msrun gives it:
# rank id NODE_RANK * LOCAL_WORKER_NUM + i, DEVICE_ID i, the log LOG_DIR/worker_{rank id}.log.
run_msrun() {
    local workers=$1 local_workers=$2 addr=$3 port=$4 node=$5 log_dir=$6 i rank
    shift 6
    need_command msrun "it comes with MindSpore"
    local msrun=(msrun --worker_num "$workers" --local_worker_num "$local_workers" --master_addr "$addr"
                 --master_port "$port" --node_rank "$node" --log_dir "$log_dir" --join True
                 --cluster_time_out "$CLUSTER_TIME_OUT" "$ROOT/locmoe_ms/cli.py" "$@")
    if ((DRY_RUN)); then
        show_launch "${msrun[@]}"
        CMD=(python "$ROOT/locmoe_ms/cli.py" "$@")
        for ((i = 0; i < local_workers; i++)); do
            rank=$((node * local_workers + i))
            RANK_ENV=("PYTHONPATH=$PYTHONPATH" "RANK_SIZE=$workers" "RANK_ID=$rank" "DEVICE_ID=$i"
                      "MS_SCHED_HOST=$addr" "MS_SCHED_PORT=$port")
            show_rank "$rank" "$PWD" "$log_dir/worker_$rank.log"
        done
        exit 0
    fi
    echo "msrun: $local_workers of $workers ranks on this node, logs in $log_dir/ (worker_RANK.log, scheduler.log)" >&2
    exec "${msrun[@]}"
}
