#!/usr/bin/env bash
# The local Kafka-protocol broker for `make run` and `make bench`, whichever it is:
# HERALD_BROKER=noida-db (the default: Kafka transactions, installs in seconds) or tansu
# (durable on SQLite, no transactions, a ~10-minute build). docs/BROKERS.md says why.
#
#   scripts/broker.sh name               the chosen broker's name
#   scripts/broker.sh install            install it if missing
#   scripts/broker.sh start DIR [PORT]   start it in the background (see scripts/<broker>.sh)
#   scripts/broker.sh stop DIR           stop it
set -euo pipefail
cd "$(dirname "$0")"
broker=${HERALD_BROKER:-noida-db}
case "$broker" in
  noida-db) script=./noida.sh ;;
  tansu) script=./tansu.sh ;;
  *) echo "broker.sh: HERALD_BROKER=$broker: expected noida-db or tansu" >&2; exit 2 ;;
esac
case "${1:-}" in
  name) echo "$broker" ;;
  install) "$script" install >/dev/null ;;
  start|stop) exec "$script" "$@" ;;
  *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
