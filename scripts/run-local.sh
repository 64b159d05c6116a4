#!/usr/bin/env bash
# `make run`: a local tansu broker plus every Herald component, until Ctrl-C.
# Data lives in ./var (broker in var/tansu, store and recorded deliveries in var/herald).
# HERALD_KAFKA_PORT picks the broker port (default 9092, or a free one if 9092 is taken).
set -euo pipefail
cd "$(dirname "$0")/.."
HERALD_BIN=${HERALD_BIN:?set by the Makefile}
port=${HERALD_KAFKA_PORT:-9092}
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  if [[ -f var/tansu/tansu.pid ]] && kill -0 "$(cat var/tansu/tansu.pid)" 2>/dev/null; then
    scripts/tansu.sh stop var/tansu
  else
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    echo "run-local: port 9092 is busy; using $port for the broker" >&2
  fi
fi
port=$(scripts/tansu.sh start var/tansu "$port")
trap 'scripts/tansu.sh stop var/tansu' EXIT
export HERALD__KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:$port"
# tansu has no Kafka transactions: run the stages at-least-once (their effects are idempotent).
export HERALD__KAFKA__DELIVERY_MODE=${HERALD__KAFKA__DELIVERY_MODE:-at-least-once}
# tansu's group coordinator can wedge a group after rapid restarts: a stage left without
# partitions for 30 s exits and is restarted by `herald run`, which rejoins it.
export HERALD__KAFKA__REJOIN_IF_UNASSIGNED_MS=${HERALD__KAFKA__REJOIN_IF_UNASSIGNED_MS:-30000}
# Ctrl-C reaches every process in the group; a SIGTERM to this script is passed on to herald,
# which stops its components before the EXIT trap stops the broker.
"$HERALD_BIN" run &
herald=$!
trap 'kill -TERM "$herald" 2>/dev/null || true' INT TERM
wait "$herald" || wait "$herald" || true
