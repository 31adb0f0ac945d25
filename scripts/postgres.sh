#!/usr/bin/env bash
# Starts a throw-away PostgreSQL on a free loopback port and prints its URL.
# Usage: eval "$(scripts/postgres.sh start)"   ->  exports TEST_POSTGRES_URL, VERTEILT_PG_DATA
#        scripts/postgres.sh stop DATA_DIR
set -euo pipefail

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

as_pg() {
  # PostgreSQL refuses to run as root: run it as the postgres user then.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-start}" in
  start)
    if [ -z "$(pg_bin)" ]; then
      echo "installing PostgreSQL (apt-get)" >&2
      SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
      $SUDO apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
    fi
    BIN=$(pg_bin)
    DATA=$(mktemp -d /tmp/verteilt-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres "$DATA"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_pg "$BIN/initdb" -D "$DATA/db" -U postgres -A trust -E UTF8 --no-sync >"$DATA.initdb.log" 2>&1 \
      || { cat "$DATA.initdb.log" >&2; exit 1; }
    as_pg "$BIN/pg_ctl" -D "$DATA/db" -l "$DATA/db/server.log" -w -t 60 \
      -o "-h 127.0.0.1 -p $PORT -k $DATA -F -c max_connections=300 -c shared_buffers=128MB" start >&2
    echo "export TEST_POSTGRES_URL='postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable'"
    echo "export VERTEILT_PG_DATA='$DATA'"
    ;;
  stop)
    DATA="${2:?data dir}"
    as_pg "$(pg_bin)/pg_ctl" -D "$DATA/db" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$DATA" "$DATA.initdb.log"
    ;;
esac
