#!/usr/bin/env bash
# promtool (from Debian's `prometheus` package, unpacked into ~/.cache/herald/tools without
# installing the server): `scripts/promtool.sh check rules FILE`. If neither promtool on PATH
# nor the package can be had, says so and exits 3 (the caller reports the check as skipped).
set -euo pipefail
TOOLS="${HOME}/.cache/herald/tools"
BIN="${TOOLS}/promtool/usr/bin/promtool"
if command -v promtool >/dev/null 2>&1; then
    exec promtool "$@"
fi
if [ ! -x "$BIN" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
        echo "promtool: not installed and Debian's prometheus package cannot be downloaded" >&2
        exit 3
    fi
    mkdir -p "${TOOLS}/promtool"
    dpkg -x "$work"/prometheus_*.deb "$work/x"
    install -D -m 0755 "$work/x/usr/bin/promtool" "$BIN"
fi
exec "$BIN" "$@"
