#!/usr/bin/env bash
# Train on several nodes: run this on every node with the same settings except NODE_RANK.
#
#   MASTER_ADDR=node0 MASTER_PORT=29500 NNODES=2 NODE_RANK=0 NPROC_PER_NODE=8 RUN_ID=run1 \
#       scripts/run_multi_node.sh CONFIG [--key=value ...]
#
# Required: MASTER_ADDR, MASTER_PORT  the rendezvous (c10d) endpoint: one of the nodes (it hosts
#                                     the store), and a free port there that all nodes reach
#           NNODES, NODE_RANK         the number of nodes, and this node's index 0..NNODES-1
#           NPROC_PER_NODE            processes (GPUs) on each node
#           RUN_ID                    a name shared by the nodes of one job, new for every job
# Optional: MAX_RESTARTS              restarts of the whole group after a worker fails (default 0);
#                                     with restarts, pass --init_from=auto so they resume
# Arguments go to train.py unchanged. Paths (config, data/, out_dir) are relative to the current
# directory, as with python train.py: run it from the repository root on every node.
# Set NCCL_SOCKET_IFNAME etc. as your cluster needs.
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
if [[ $# -eq 0 || $1 == -h || $1 == --help ]]; then
    usage
    exit $(( $# == 0 ? 2 : 0 ))
fi

missing=()
for var in MASTER_ADDR MASTER_PORT NNODES NODE_RANK NPROC_PER_NODE RUN_ID; do
    [[ -n ${!var:-} ]] || missing+=("$var")
done
if (( ${#missing[@]} )); then
    echo "error: set ${missing[*]} (see the usage below)" >&2
    usage >&2
    exit 2
fi
for var in MASTER_PORT NNODES NODE_RANK NPROC_PER_NODE; do
    if ! [[ ${!var} =~ ^[0-9]+$ ]]; then
        echo "error: $var=${!var} is not a number" >&2
        exit 2
    fi
done
if (( NODE_RANK >= NNODES )); then
    echo "error: NODE_RANK=$NODE_RANK must be below NNODES=$NNODES" >&2
    exit 2
fi

exec torchrun \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --nproc_per_node="$NPROC_PER_NODE" \
    --rdzv_backend=c10d \
    --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" \
    --rdzv_id="$RUN_ID" \
    --max-restarts="${MAX_RESTARTS:-0}" \
    "$(dirname "$0")/../train.py" "$@"
