#!/usr/bin/env bash
# Train on all GPUs of this machine: one process per GPU under torchrun.
#
#   scripts/run_single_node.sh CONFIG [--key=value ...]
#   NGPU=4 scripts/run_single_node.sh config/reasoning_owt.py --init_from=auto
#
# Arguments go to train.py unchanged. NGPU: processes to start (default: the GPUs that
# `nvidia-smi -L` lists). Paths (config, data/, out_dir) are relative to the current directory,
# as with python train.py: run it from the repository root.
set -euo pipefail

if [[ $# -eq 0 || $1 == -h || $1 == --help ]]; then
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
    exit $(( $# == 0 ? 2 : 0 ))
fi

if [[ -z ${NGPU:-} ]]; then
    if ! command -v nvidia-smi >/dev/null; then
        echo "error: nvidia-smi not found: set NGPU to the number of processes to start" >&2
        exit 2
    fi
    NGPU=$(nvidia-smi -L | wc -l)
fi
if ! [[ $NGPU =~ ^[1-9][0-9]*$ ]]; then
    echo "error: NGPU=$NGPU: need a positive number of processes (no GPU found?)" >&2
    exit 2
fi

exec torchrun --standalone --nproc_per_node="$NGPU" "$(dirname "$0")/../train.py" "$@"
