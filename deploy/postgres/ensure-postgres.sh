#!/usr/bin/env bash
# Run a private, throw-away PostgreSQL cluster for cdrflow's tests, CI and demo.
#
#   ensure-postgres.sh start DATA_DIR PORT   -> last (only) stdout line is the URL:
#                                               postgresql+psycopg://cdrflow@127.0.0.1:PORT/cdrflow
#   ensure-postgres.sh stop  DATA_DIR
#
# Idempotent: start on a running cluster just prints its URL; stop on a stopped
# one does nothing. Progress goes to stderr so `url=$(... start ...)` works.
#
# Why a private cluster and not Debian's system service: tests need a known port,
# a known role and freedom to create/drop databases, without touching whatever
# the machine's own PostgreSQL holds. Installs Debian's `postgresql` package only
# when no initdb exists (needs root). As root, the cluster runs as the `postgres`
# OS user (PostgreSQL refuses to run as root); otherwise as the calling user.
#
# Test-grade settings, NOT for data you care about:
#   - trust authentication, on 127.0.0.1 and the unix socket (inside DATA_DIR) only;
#   - fsync/full_page_writes/synchronous_commit off: fast, but an OS crash can
#     corrupt the cluster (just delete DATA_DIR and start again).
# The role `cdrflow` is a superuser so tests can create and drop databases.
set -euo pipefail

die() { echo "ensure-postgres: $*" >&2; exit 1; }
say() { echo "ensure-postgres: $*" >&2; }
usage() { die "usage: $0 start DATA_DIR PORT | $0 stop DATA_DIR"; }

[[ $# -ge 2 ]] || usage
action=$1
datadir=$(realpath -m -- "$2")
port=${3:-}

# Run a command as the cluster's owner (from / so no "cannot chdir" noise).
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# The PostgreSQL bin dir: the cluster's own major version if it exists, else the newest.
pg_bindir() {
    if [[ -f $datadir/PG_VERSION && -x /usr/lib/postgresql/$(cat "$datadir/PG_VERSION")/bin/initdb ]]; then
        echo "/usr/lib/postgresql/$(cat "$datadir/PG_VERSION")/bin"
        return
    fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n $d && -x $d/initdb ]] && echo "$d"
}

is_running() { [[ -f $datadir/PG_VERSION ]] && as_owner "$bin/pg_ctl" -D "$datadir" status >/dev/null 2>&1; }

running_port() { sed -n 4p "$datadir/postmaster.pid"; }  # 4th line of postmaster.pid

url() { echo "postgresql+psycopg://cdrflow@127.0.0.1:$1/cdrflow"; }

sql() { as_owner "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$datadir" -p "$1" -U postgres -d postgres -tAc "$2"; }

install_postgres() {
    [[ $(id -u) -eq 0 ]] || die "PostgreSQL is not installed; run as root or: apt-get install postgresql"
    say "installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update && apt-get install -y postgresql; } >&2
}

start() {
    [[ $port =~ ^[0-9]+$ ]] || usage
    bin=$(pg_bindir) || true
    if [[ -z $bin ]]; then
        install_postgres
        bin=$(pg_bindir) || die "postgresql installed but no initdb under /usr/lib/postgresql/*/bin"
    fi

    mkdir -p "$datadir"
    # One start at a time per cluster (parallel CI jobs sharing a dir).
    exec 9>"$(dirname "$datadir")/.$(basename "$datadir").lock"
    flock 9

    if is_running; then
        local actual
        actual=$(running_port)
        [[ $actual == "$port" ]] || say "already running on port $actual (not $port); using it"
        url "$actual"
        return
    fi

    if [[ ! -f $datadir/PG_VERSION ]]; then
        [[ -z $(ls -A "$datadir") ]] || die "$datadir is not empty and not a PostgreSQL cluster"
        if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$datadir"; fi
        chmod 700 "$datadir"
        as_owner test -w "$datadir" \
            || die "the postgres OS user cannot write $datadir (check the parent directories' permissions)"
        say "initdb $datadir"
        as_owner "$bin/initdb" -D "$datadir" -U postgres -E UTF8 --no-locale -A trust >&2
        cat >"$datadir/pg_hba.conf" <<'HBA'
# cdrflow test cluster: trust, but only on the private socket and 127.0.0.1.
local   all   all                  trust
host    all   all   127.0.0.1/32   trust
HBA
        echo "include_if_exists = 'cdrflow.conf'" >>"$datadir/postgresql.conf"
    fi

    # Rewritten at every start so the PORT argument always wins.
    cat >"$datadir/cdrflow.conf" <<CONF
# Written by deploy/postgres/ensure-postgres.sh at each start.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$datadir'
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
    if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$datadir/cdrflow.conf" "$datadir/pg_hba.conf"; fi

    say "starting PostgreSQL on 127.0.0.1:$port"
    # 9>&-: the server must not inherit (and so hold forever) our start lock.
    if ! as_owner "$bin/pg_ctl" -D "$datadir" -l "$datadir/server.log" -w -t 60 start >&2 9>&-; then
        tail -n 20 "$datadir/server.log" >&2 || true
        die "PostgreSQL failed to start (log: $datadir/server.log)"
    fi

    if [[ -z $(sql "$port" "SELECT 1 FROM pg_roles WHERE rolname = 'cdrflow'") ]]; then
        sql "$port" "CREATE ROLE cdrflow LOGIN SUPERUSER"
    fi
    if [[ -z $(sql "$port" "SELECT 1 FROM pg_database WHERE datname = 'cdrflow'") ]]; then
        sql "$port" "CREATE DATABASE cdrflow OWNER cdrflow"
    fi
    url "$port"
}

stop() {
    bin=$(pg_bindir) || true
    if [[ -z $bin ]] || ! is_running; then
        say "not running ($datadir)"
        return
    fi
    as_owner "$bin/pg_ctl" -D "$datadir" -m fast -w -t 60 stop >&2
}

case $action in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
