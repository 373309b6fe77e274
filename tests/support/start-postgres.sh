#!/usr/bin/env bash
# Start (or reuse) a throwaway PostgreSQL cluster for the store tests and print its URL.
#
#   export CALLGATE_TEST_POSTGRES_URL="$(tests/support/start-postgres.sh)"
#   cargo test --lib store
#   tests/support/start-postgres.sh stop
#
# Idempotent: a cluster already initialised is reused, one already running is left running.
# Only the URL goes to stdout; progress goes to stderr. Safe under `set -e`.
# The test user has CREATEDB: each PostgreSQL test creates and drops its own database.
#
# Settings (environment, all optional):
#   PGTEST_DIR      data directory           (default /tmp/callgate-pgtest)
#   PGTEST_PORT     TCP port on 127.0.0.1    (default 55432)
#   PGTEST_SOCKDIR  unix socket directory    (default /tmp)
#   PGTEST_USER / PGTEST_PASSWORD / PGTEST_DB  (default callgate_test / callgate-test-pw / callgate_test)
#   PG_BIN          PostgreSQL bin directory (default: newest /usr/lib/postgresql/*/bin;
#                   installed with apt-get if there is none and we are root)
set -euo pipefail

DIR="${PGTEST_DIR:-/tmp/callgate-pgtest}"
PORT="${PGTEST_PORT:-55432}"
SOCKDIR="${PGTEST_SOCKDIR:-/tmp}"
DB_USER="${PGTEST_USER:-callgate_test}"
DB_PASSWORD="${PGTEST_PASSWORD:-callgate-test-pw}"
DB_NAME="${PGTEST_DB:-callgate_test}"
LOG="${DIR}.log"

log() { echo "start-postgres: $*" >&2; }

find_bin() {
    if [[ -n "${PG_BIN:-}" ]]; then echo "$PG_BIN"; return; fi
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

BIN="$(find_bin || true)"
if [[ -z "$BIN" || ! -x "$BIN/initdb" ]]; then
    if [[ "$(id -u)" -ne 0 ]]; then
        log "no PostgreSQL binaries found and not root; install postgresql or set PG_BIN"
        exit 1
    fi
    log "installing postgresql with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    BIN="$(find_bin)"
fi

# Run a PostgreSQL tool as the cluster owner: `postgres` when we are root (initdb refuses
# root), else ourselves.
if [[ "$(id -u)" -eq 0 ]]; then
    as_owner() { runuser -u postgres -- "$@"; }
    OWNER=postgres
else
    as_owner() { "$@"; }
    OWNER="$(id -un)"
fi

if [[ "${1:-start}" == "stop" ]]; then
    if [[ -f "$DIR/postmaster.pid" ]]; then
        as_owner "$BIN/pg_ctl" -D "$DIR" -m fast -w stop >&2
    else
        log "not running ($DIR)"
    fi
    exit 0
fi

if [[ ! -f "$DIR/PG_VERSION" ]]; then
    log "initdb $DIR"
    mkdir -p "$DIR"
    chown "$OWNER" "$DIR"
    chmod 700 "$DIR"
    # Local socket: trust (setup only). TCP: password required, as in production.
    as_owner "$BIN/initdb" -D "$DIR" --username=postgres --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --no-instructions >&2
fi

if as_owner "$BIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; then
    log "already running ($DIR)"
else
    touch "$LOG"
    chown "$OWNER" "$LOG"
    log "starting on 127.0.0.1:$PORT (log $LOG)"
    as_owner "$BIN/pg_ctl" -D "$DIR" -l "$LOG" -w -t 60 \
        -o "-p $PORT -k $SOCKDIR -c listen_addresses=127.0.0.1" start >&2
fi

psql_admin() {
    as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKDIR" -p "$PORT" -U postgres -d postgres "$@"
}

# Quote for SQL: identifiers with "", literals with ''.
ident="\"${DB_USER//\"/\"\"}\""
literal="'${DB_PASSWORD//\'/\'\'}'"
if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '${DB_USER//\'/\'\'}'")" == "1" ]]; then
    psql_admin -c "ALTER ROLE $ident WITH LOGIN CREATEDB PASSWORD $literal" >&2
else
    psql_admin -c "CREATE ROLE $ident WITH LOGIN CREATEDB PASSWORD $literal" >&2
fi
if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '${DB_NAME//\'/\'\'}'")" != "1" ]]; then
    psql_admin -c "CREATE DATABASE \"${DB_NAME//\"/\"\"}\" OWNER $ident" >&2
fi

echo "postgres://${DB_USER}:${DB_PASSWORD}@127.0.0.1:${PORT}/${DB_NAME}"
