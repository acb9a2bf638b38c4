#!/usr/bin/env bash
# A private PostgreSQL server for the cluster tests and `pnpm demo:cluster`.
#
#   scripts/pg.sh start DIR   initdb into DIR/data as a non-root user, start the server on a free
#                             port of 127.0.0.1 (socket in DIR), print the port on stdout.
#   scripts/pg.sh stop DIR    stop that server (immediate shutdown) and remove DIR, whatever state
#                             it is in. Idempotent.
#   scripts/pg.sh available   exit 0 when the PostgreSQL binaries are installed.
#
# The binaries are looked for in $PG_BIN if set, else /usr/lib/postgresql/*/bin, else PATH.
#
# PostgreSQL refuses to run as root, so as root the server runs as `postgres` (or `nobody`).
# A failed start stops what it started and removes DIR before exiting non-zero.
set -euo pipefail

find_bin() {
  # PG_BIN, when set, is the only place looked at (also a way to see the tests skip without PostgreSQL).
  if [ -n "${PG_BIN:-}" ]; then
    if [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ]; then echo "$PG_BIN"; return 0; fi
    return 1
  fi
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
  return 1
}

as_user() {
  if [ "$(id -u)" = "0" ]; then
    local user=postgres
    id -u postgres >/dev/null 2>&1 || user=nobody
    runuser -u "$user" -- "$@"
  else
    "$@"
  fi
}

free_port() {
  local node="${NODE:-node}"
  "$node" -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

stop() {
  local dir="$1"
  local bin
  bin="$(find_bin || true)"
  if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
    as_user "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
  fi
  # Should pg_ctl have failed, the postmaster recorded in our own data directory is ours to end.
  if [ -f "$dir/data/postmaster.pid" ]; then
    local pid
    pid="$(head -n 1 "$dir/data/postmaster.pid" || true)"
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$dir/data"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$dir"
}

start() {
  local dir="$1"
  local bin
  bin="$(find_bin)" || { echo "PostgreSQL binaries not found (apt-get install -y postgresql)" >&2; exit 2; }
  mkdir -p "$dir/data"
  trap 'stop "$dir"' ERR
  if [ "$(id -u)" = "0" ]; then
    local user=postgres
    id -u postgres >/dev/null 2>&1 || user=nobody
    chown -R "$user" "$dir"
    chmod 700 "$dir"
  fi
  as_user "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1
  local port attempt
  for attempt in 1 2 3 4 5; do
    port="$(free_port)"
    if as_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null; then
      trap - ERR
      echo "$port"
      return 0
    fi
  done
  cat "$dir/server.log" >&2 || true
  stop "$dir"
  exit 1
}

case "${1:-}" in
  start) start "${2:?directory}" ;;
  stop) stop "${2:?directory}" ;;
  available) find_bin >/dev/null ;;
  *) echo "usage: $0 start|stop DIR | available" >&2; exit 64 ;;
esac
