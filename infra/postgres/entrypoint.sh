#!/bin/sh
# Start PostgreSQL as the `postgres` account; on the first start (empty $PGDATA) create the
# cluster with POSTGRES_USER/POSTGRES_PASSWORD and run /docker-entrypoint-initdb.d/*.sql.
set -eu
[ "${1:-}" = "postgres" ] && shift
: "${POSTGRES_USER:?set POSTGRES_USER}" "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pw="$(mktemp)"
  printf '%s' "$POSTGRES_PASSWORD" > "$pw"
  chown postgres "$pw"
  as_pg initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pw" -E UTF8 --auth-local=trust \
    --auth-host=scram-sha-256 --no-instructions >/dev/null
  rm -f "$pw"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  # init scripts against a server that listens on its socket only
  as_pg pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$f" ] || continue
    echo "running $f"
    as_pg psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d postgres -f "$f"
  done
  as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
# exec: postgres is PID 1 and gets the stop signal (compose sends SIGINT: fast shutdown)
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c listen_addresses='*' "$@"
