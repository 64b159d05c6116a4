#!/usr/bin/env bash
# A real SMTP server for the e-mail connector's tests: aiosmtpd 1.4.6 from PyPI, installed into a
# virtual environment in the cache, running scripts/smtp_server.py (STARTTLS or implicit TLS,
# AUTH PLAIN/LOGIN required, every accepted message saved; see that file for its addresses that
# answer 550, 451 and 554). The test writes the certificate it should present.
#
#   scripts/smtp.sh install          install it into the cache if missing; print the venv's python
#   scripts/smtp.sh run DIR PORT     run the server in the foreground (exec), for harnesses that own
#                                    the PID: TLS from DIR/cert.pem and DIR/key.pem, messages
#                                    appended to DIR/messages.jsonl, listening on 127.0.0.1:PORT
#
# The server's settings come from the environment: HERALD_SMTP_USER and HERALD_SMTP_PASSWORD (the
# one account it accepts; default herald / secret), HERALD_SMTP_TLS (starttls, the default, or
# implicit). HERALD_CACHE (default ~/.cache/herald) holds the virtual environment.
set -euo pipefail

VERSION=1.4.6
CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
VENV="$CACHE/aiosmtpd-$VERSION"
PYTHON="$VENV/bin/python"
HERE=$(cd "$(dirname "$0")" && pwd)

log() { echo "smtp.sh: $*" >&2; }

install() {
  if [[ -x "$PYTHON" && -f "$VENV/.installed" ]]; then echo "$PYTHON"; return; fi
  mkdir -p "$CACHE"
  # Tests start servers in parallel processes: one installs, the others wait for it.
  exec 9>"$CACHE/aiosmtpd-$VERSION.lock"
  flock 9
  if [[ -x "$PYTHON" && -f "$VENV/.installed" ]]; then echo "$PYTHON"; return; fi
  local started=$SECONDS
  log "installing aiosmtpd $VERSION into $VENV (once per machine; seconds)"
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "aiosmtpd==$VERSION" >&2
  touch "$VENV/.installed"
  log "aiosmtpd installed in $((SECONDS - started)) s"
  echo "$PYTHON"
}

case "${1:-}" in
  install) install ;;
  run)
    [[ $# -eq 3 ]] || { log "usage: $0 run DIR PORT"; exit 2; }
    install >/dev/null
    dir=$(mkdir -p "$2" && cd "$2" && pwd)
    exec "$PYTHON" "$HERE/smtp_server.py" "$dir" "$3"
    ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
