#!/usr/bin/env bash
# Runs a command with CLINICBRIDGE_TEST_DATABASE_URL pointing at PostgreSQL.
# If the variable is already set it is used as is; otherwise a throwaway
# cluster is created in a temporary directory, started on a free port, and
# removed afterwards.
set -euo pipefail

if [ -n "${CLINICBRIDGE_TEST_DATABASE_URL:-}" ]; then
  exec "$@"
fi

initdb=$(compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -n 1 || true)
[ -n "$initdb" ] || { echo "PostgreSQL server not found; run scripts/install-system-deps.sh" >&2; exit 1; }
bindir=$(dirname "$initdb")
dir=$(mktemp -d /tmp/clinicbridge-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

as_owner=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$dir"
  as_owner=(runuser -u postgres --)
fi

cleanup() {
  "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

"${as_owner[@]}" "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
"${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >/dev/null

export CLINICBRIDGE_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:$port/postgres"
echo "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on port $port" >&2
"$@"
