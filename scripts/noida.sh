#!/usr/bin/env bash
# Local Kafka-protocol broker with transactions: noida-db 0.2.3 from PyPI (one binary inside the
# wheel), installed into a virtual environment in the cache. See ../shared/TEST-INFRA.md and
# docs/BROKERS.md for what it does and does not do (it runs Kafka transactions; it keeps records in
# memory and writes them to disk only when it stops cleanly).
#
#   scripts/noida.sh install            install it into the cache if missing; print the binary's path
#   scripts/noida.sh start DIR [PORT]   start it in the background with data in DIR (PORT: free one)
#                                       and wait until it accepts connections; prints the port
#   scripts/noida.sh run DIR PORT       run it in the foreground (exec), for harnesses that own the PID
#   scripts/noida.sh stop DIR           stop the broker started with DIR (SIGTERM: it saves its state)
#
# HERALD_CACHE (default ~/.cache/herald) holds the virtual environment.
set -euo pipefail

VERSION=0.2.3
CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
VENV="$CACHE/noida-db-$VERSION"
# The wheel's `bin/noida-db` is a Python wrapper that runs this binary as its child; the scripts
# run the binary itself, so that a signal (or a test's SIGKILL) reaches the broker.
BIN="$VENV/lib/noida-db"

log() { echo "noida.sh: $*" >&2; }

install() {
  if [[ -x "$BIN" && -f "$VENV/.installed" ]]; then echo "$BIN"; return; fi
  local started=$SECONDS
  log "installing noida-db $VERSION into $VENV (once per machine; seconds)"
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "noida-db==$VERSION" >&2
  local binary
  binary=$(echo "$VENV"/lib/python3*/site-packages/noida_db/noida-db)
  [[ -f "$binary" ]] || { log "the wheel holds no noida-db binary at $binary"; exit 1; }
  chmod 755 "$binary"
  ln -sf "$binary" "$BIN"
  touch "$VENV/.installed"
  log "noida-db installed in $((SECONDS - started)) s"
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
  exec "$BIN" start --only kafka --kafka-port "$port" --data-dir "$dir"
}

case "${1:-}" in
  install) install ;;
  run)
    [[ $# -eq 3 ]] || { log "usage: $0 run DIR PORT"; exit 2; }
    install >/dev/null
    dir=$(mkdir -p "$2" && cd "$2" && pwd)
    exec_broker "$dir" "$3"
    ;;
  start)
    [[ $# -ge 2 ]] || { log "usage: $0 start DIR [PORT]"; exit 2; }
    install >/dev/null
    dir=$(mkdir -p "$2" && cd "$2" && pwd)
    port=${3:-$(free_port)}
    if [[ -f "$dir/noida.pid" ]] && kill -0 "$(cat "$dir/noida.pid")" 2>/dev/null; then
      log "already running (pid $(cat "$dir/noida.pid")) for $dir"; cat "$dir/noida.port"; exit 0
    fi
    if port_open "$port"; then log "port $port is already in use"; exit 1; fi
    # Its own session: a Ctrl-C meant for `make run` must not stop the broker before the
    # components have finished their graceful stop; the caller stops it with `stop`.
    setsid "$0" run "$dir" "$port" >"$dir/noida.log" 2>&1 &
    echo $! >"$dir/noida.pid"
    echo "$port" >"$dir/noida.port"
    for _ in $(seq 1 300); do
      if port_open "$port"; then log "listening on 127.0.0.1:$port (pid $(cat "$dir/noida.pid"), log $dir/noida.log)"; echo "$port"; exit 0; fi
      if ! kill -0 "$(cat "$dir/noida.pid")" 2>/dev/null; then log "exited; see $dir/noida.log"; tail -20 "$dir/noida.log" >&2; exit 1; fi
      sleep 0.1
    done
    log "not listening after 30 s; see $dir/noida.log"; exit 1
    ;;
  stop)
    [[ $# -eq 2 ]] || { log "usage: $0 stop DIR"; exit 2; }
    pidfile="$2/noida.pid"
    [[ -f "$pidfile" ]] || exit 0
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
      # SIGTERM: it writes its state before exiting; give that time.
      for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      log "stopped pid $pid"
    fi
    rm -f "$pidfile"
    ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
