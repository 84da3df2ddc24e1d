#!/usr/bin/env bash
# Installs what the tests need from Debian when it is missing: a PostgreSQL
# server and Chromium (for the admin UI browser tests); with BENCH=1 also wrk.
# Safe to run again.
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# Benchmarks (make bench) drive the server with wrk.
if [ -n "${BENCH:-}" ] && ! command -v wrk >/dev/null; then missing+=(wrk); fi
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing ${missing[*]} ..." >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
