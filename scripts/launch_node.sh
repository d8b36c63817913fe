#!/usr/bin/env bash
# Start this node's share of a multi-node run: `accelerate launch` with the node settings filled in, a rendezvous
# deadline, and - on every node but node 0 - a reachability check of node 0 first, so that a node that cannot reach
# node 0 stops with a message that says so instead of waiting torch's default 600 s inside the rendezvous.
#
#   NODES=2 NODE_RANK=0 MAIN_IP=10.0.0.1 scripts/launch_node.sh --config_file configs/accelerate/fsdp2.yaml \
#       train_lcd.py --config configs/lcd_sd21_768.yaml            # on node 0
#   NODES=2 NODE_RANK=1 MAIN_IP=10.0.0.1 scripts/launch_node.sh ...same arguments...   # on node 1
#
# Environment: NODES, NODE_RANK, MAIN_IP (required); MAIN_PORT (29500), PROCS_PER_NODE (GPUs seen here, else 1),
# RDZV_TIMEOUT (300 s: how long any node waits for the others), PYTHON (.venv/bin/python if present, else python3).
# Everything after the variables is passed to `accelerate launch` as is (launcher options, then the script and its
# arguments). A CPU rehearsal on one machine: run two of these with MAIN_IP=127.0.0.1 and
# `--multi_gpu --mixed_precision no --dynamo_backend no` (tests/engine/test_multinode.py does).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
die() { echo "launch_node.sh: $*" >&2; exit 2; }
[ -n "${NODES:-}" ] && [ -n "${NODE_RANK:-}" ] && [ -n "${MAIN_IP:-}" ] \
  || die "set NODES (number of nodes), NODE_RANK (0..NODES-1, 0 on the main node) and MAIN_IP (node 0's address)"
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "NODES=$NODES: expected a positive integer"
[[ "$NODE_RANK" =~ ^[0-9]+$ ]] && [ "$NODE_RANK" -lt "$NODES" ] \
  || die "NODE_RANK=$NODE_RANK: expected 0..$((NODES - 1)) (NODES=$NODES)"
PORT="${MAIN_PORT:-29500}"
TIMEOUT="${RDZV_TIMEOUT:-300}"
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "RDZV_TIMEOUT=$TIMEOUT: expected whole seconds > 0"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
PROCS="${PROCS_PER_NODE:-$("$PY" -c 'import torch; print(max(torch.cuda.device_count(), 1))')}"

if [ "$NODE_RANK" != 0 ]; then
  # Node 0's launcher opens MAIN_IP:PORT when it starts; wait for it up to the rendezvous deadline.
  "$PY" - "$MAIN_IP" "$PORT" "$TIMEOUT" "$NODE_RANK" <<'EOF' || exit 2
import socket, sys, time
host, port, timeout, rank = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
deadline, last = time.monotonic() + timeout, "no attempt"
while time.monotonic() < deadline:
    try:
        socket.create_connection((host, port), timeout=min(5.0, timeout)).close()
        sys.exit(0)
    except OSError as e:
        last = f"{type(e).__name__}: {e}"
        time.sleep(1.0)
sys.exit(f"launch_node.sh: node {rank} could not reach node 0 at {host}:{port} within {timeout:g} s "
         f"(last error: {last}). Check that node 0 is started with the same MAIN_IP/MAIN_PORT, that {host} is its "
         f"address on the network the nodes share, and that port {port} is open between them (firewall, security "
         f"group); raise RDZV_TIMEOUT if node 0 starts later.")
EOF
fi

exec "$PY" -m accelerate.commands.launch --num_machines "$NODES" --num_processes "$((NODES * PROCS))" \
  --machine_rank "$NODE_RANK" --main_process_ip "$MAIN_IP" --main_process_port "$PORT" \
  --rdzv_conf "timeout=$TIMEOUT" "$@"
