#!/usr/bin/env bash
# The Python environment of scripts/read_topic.py (fastavro and confluent-kafka from PyPI, in a
# virtual environment in the cache), for analysts trying it and for the test that runs it.
#
#   scripts/analytics.sh install          install it if missing; print the venv's python
#   scripts/analytics.sh read ARGS…       run read_topic.py with ARGS (see its --help)
set -euo pipefail

CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
VENV="$CACHE/analytics-fastavro-1.13.1"
PYTHON="$VENV/bin/python"
HERE=$(cd "$(dirname "$0")" && pwd)

install() {
  if [[ -x "$PYTHON" && -f "$VENV/.installed" ]]; then echo "$PYTHON"; return; fi
  mkdir -p "$CACHE"
  exec 9>"$VENV.lock"
  flock 9
  if [[ ! -f "$VENV/.installed" ]]; then
    echo "analytics.sh: installing fastavro and confluent-kafka into $VENV (once)" >&2
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "fastavro==1.13.1" "confluent-kafka==2.16.1" >&2
    touch "$VENV/.installed"
  fi
  echo "$PYTHON"
}

case "${1:-}" in
  install) install ;;
  read) shift; python=$(install); exec "$python" "$HERE/read_topic.py" "$@" ;;
  *) echo "usage: $0 install | read ARGS…" >&2; exit 2 ;;
esac
