#!/usr/bin/env bash
# `make run`: a local broker plus every Herald component, until Ctrl-C.
# Data lives in ./var (broker in var/<broker>, store and recorded deliveries in var/herald).
# HERALD_BROKER picks the broker (noida-db, the default, or tansu; docs/BROKERS.md);
# HERALD_KAFKA_PORT the port (default 9092, or a free one if 9092 is taken).
set -euo pipefail
cd "$(dirname "$0")/.."
HERALD_BIN=${HERALD_BIN:?set by the Makefile}
broker=$(scripts/broker.sh name)
data=$PWD/var/$broker
port=${HERALD_KAFKA_PORT:-9092}
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  pidfile=$(ls "$data"/*.pid 2>/dev/null | head -1 || true)
  if [[ -n "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    scripts/broker.sh stop "$data"
  else
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    echo "run-local: port 9092 is busy; using $port for the broker" >&2
  fi
fi
port=$(scripts/broker.sh start "$data" "$port")
trap 'scripts/broker.sh stop "$data"' EXIT
export HERALD__KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:$port"
case "$broker" in
  noida-db)
    # Transactions: the stages run exactly-once, as in production. noida-db saves its state
    # about once a second (and when stopped): the ingress and query service hold what they
    # produced for 3 s, to produce it again should the broker lose it in a crash.
    export HERALD__KAFKA__UNSAVED_ACK_WINDOW_MS=${HERALD__KAFKA__UNSAVED_ACK_WINDOW_MS:-3000}
    # It keeps every record in memory: let topics forget what is older than a day.
    export HERALD__KAFKA__TOPIC_RETENTION_MS=${HERALD__KAFKA__TOPIC_RETENTION_MS:-86400000}
    # It answers an empty fetch at once, so an idle consumer would spin: idle stages pause
    # their partitions 100 ms at a time (kafka.idle_pause_ms).
    export HERALD__KAFKA__IDLE_PAUSE_MS=${HERALD__KAFKA__IDLE_PAUSE_MS:-100}
    ;;
  tansu)
    # No Kafka transactions: run the stages at-least-once (their effects are idempotent).
    export HERALD__KAFKA__DELIVERY_MODE=${HERALD__KAFKA__DELIVERY_MODE:-at-least-once}
    # tansu's group coordinator can wedge a group after rapid restarts: a stage left without
    # partitions for 30 s exits and is restarted by `herald run`, which rejoins it.
    export HERALD__KAFKA__REJOIN_IF_UNASSIGNED_MS=${HERALD__KAFKA__REJOIN_IF_UNASSIGNED_MS:-30000}
    # Producers not idempotent: tansu stops serving at a restart if a producer raised its epoch
    # while it was down (docs/BROKERS.md); duplicates are absorbed by the stages.
    export HERALD__KAFKA__IDEMPOTENCE=${HERALD__KAFKA__IDEMPOTENCE:-false}
    ;;
esac
# Ctrl-C reaches every process in the group; a SIGTERM to this script is passed on to herald,
# which stops its components before the EXIT trap stops the broker.
"$HERALD_BIN" run &
herald=$!
trap 'kill -TERM "$herald" 2>/dev/null || true' INT TERM
wait "$herald" || wait "$herald" || true
