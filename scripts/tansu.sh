#!/usr/bin/env bash
# Local Kafka-protocol broker for `make run`, the tests and the benchmarks: tansu 0.6.0 with
# sqlite storage (see ../shared/TEST-INFRA.md for what it does and does not support).
#
#   scripts/tansu.sh install            build tansu into the cache if it is missing; print its path
#   scripts/tansu.sh start DIR [PORT]   start it in the background with data in DIR (PORT: free one)
#                                       and wait until it accepts connections; prints the port
#   scripts/tansu.sh run DIR PORT       run it in the foreground (exec), for harnesses that own the PID
#   scripts/tansu.sh stop DIR           stop the broker started with DIR (by its PID file)
#
# HERALD_CACHE (default ~/.cache/herald) holds the build.
set -euo pipefail

VERSION=0.6.0
CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
ROOT="$CACHE/tansu-$VERSION"
BIN="$ROOT/bin/tansu"

log() { echo "tansu.sh: $*" >&2; }

install() {
  if [[ -x "$BIN" ]]; then echo "$BIN"; return; fi
  mkdir -p "$ROOT"
  log "building tansu $VERSION into $ROOT (once per machine; about 10 minutes on 2 cores)"
  local started=$SECONDS
  cargo install "tansu@$VERSION" --locked --features libsql --root "$ROOT" >&2
  log "tansu built in $((SECONDS - started)) s"
  echo "$BIN"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

exec_broker() { # DIR PORT
  local dir=$1 port=$2
  mkdir -p "$dir"
  cd "$dir"
  local cmd=("$BIN" broker
    --listener-url "tcp://127.0.0.1:$port"
    --advertised-listener-url "tcp://127.0.0.1:$port"
    --storage-engine "sqlite://tansu.db")
  exec "${cmd[@]}"
}

case "${1:-}" in
  install) install ;;
  run)
    [[ $# -eq 3 ]] || { log "usage: $0 run DIR PORT"; exit 2; }
    install >/dev/null
    exec_broker "$2" "$3"
    ;;
  start)
    [[ $# -ge 2 ]] || { log "usage: $0 start DIR [PORT]"; exit 2; }
    install >/dev/null
    dir=$(mkdir -p "$2" && cd "$2" && pwd)
    port=${3:-$(free_port)}
    if [[ -f "$dir/tansu.pid" ]] && kill -0 "$(cat "$dir/tansu.pid")" 2>/dev/null; then
      log "already running (pid $(cat "$dir/tansu.pid")) for $dir"; cat "$dir/tansu.port"; exit 0
    fi
    if port_open "$port"; then log "port $port is already in use"; exit 1; fi
    # Its own session: a Ctrl-C meant for `make run` must not stop the broker before the
    # components have finished their graceful stop; the caller stops it with `stop`.
    setsid "$0" run "$dir" "$port" >"$dir/tansu.log" 2>&1 &
    echo $! >"$dir/tansu.pid"
    echo "$port" >"$dir/tansu.port"
    for _ in $(seq 1 300); do
      if port_open "$port"; then log "listening on 127.0.0.1:$port (pid $(cat "$dir/tansu.pid"), log $dir/tansu.log)"; echo "$port"; exit 0; fi
      if ! kill -0 "$(cat "$dir/tansu.pid")" 2>/dev/null; then log "exited; see $dir/tansu.log"; tail -20 "$dir/tansu.log" >&2; exit 1; fi
      sleep 0.1
    done
    log "not listening after 30 s; see $dir/tansu.log"; exit 1
    ;;
  stop)
    [[ $# -eq 2 ]] || { log "usage: $0 stop DIR"; exit 2; }
    pidfile="$2/tansu.pid"
    [[ -f "$pidfile" ]] || exit 0
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      log "stopped pid $pid"
    fi
    rm -f "$pidfile"
    ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
