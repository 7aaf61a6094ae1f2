#!/usr/bin/env bash
# Train in one process, in the foreground: on CPU, or on one Ascend NPU.
#
# usage: scripts/run_standalone_train.sh CONFIG [locmoe-train args ...] [--dry-run]
#
#   CONFIG     a YAML config, such as model_configs/tiny_cpu.yaml
#   args       passed to locmoe-train: --router R, --max-steps N, --output-dir DIR (default runs/default),
#              --resume, --set section.key=value
#   --dry-run  print the rank's environment and command (one "rank 0: ..." line), start nothing
#
# Exports RANK_SIZE=1, RANK_ID=0 and DEVICE_ID (the NPU to use: $DEVICE_ID if set, else 0). Progress goes to the
# terminal; metrics and checkpoints to --output-dir. Environment: PYTHON (default python3).
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"

split_flags "$@"
set -- "${REST[@]}"
require_config_first "$@"
need_file CONFIG "$1"
config=$(absolute "$1")
shift
device=${DEVICE_ID:-0}
need_int DEVICE_ID "$device" 0 7
need_command "$PYTHON" "set PYTHON to the interpreter that has MindSpore"

RANK_ENV=("PYTHONPATH=$PYTHONPATH" RANK_SIZE=1 RANK_ID=0 "DEVICE_ID=$device")
CMD=("$PYTHON" -m locmoe_ms.cli --config "$config" "$@")
if ((DRY_RUN)); then
    show_rank 0 "$PWD" -
    exit 0
fi
export RANK_SIZE=1 RANK_ID=0 DEVICE_ID=$device
exec "${CMD[@]}"
