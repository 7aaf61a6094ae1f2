#!/usr/bin/env bash
# Entry point of the Ascend image: load the CANN environment when this image has it, then run the command.
set -eo pipefail
SET_ENV=/usr/local/Ascend/ascend-toolkit/set_env.sh
if [[ -f $SET_ENV ]]; then
    # shellcheck source=/dev/null
    source "$SET_ENV"  # it reads unset variables (LD_LIBRARY_PATH, ...), hence no `set -u` before it
fi
set -u
exec "$@"
