#!/usr/bin/env bash
# The tests on a fresh machine: set up, start a private PostgreSQL (installing Debian's
# package if absent), then run unit and integration tests. The integration tests start the
# project's own Kafka broker. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

pg_dir=$(mktemp -d /tmp/cdrflow-test-pg.XXXXXX)
chmod 755 "$pg_dir"
stop_pg() { deploy/postgres/ensure-postgres.sh stop "$pg_dir/pg" >/dev/null 2>&1 || true; rm -rf "$pg_dir"; }
trap stop_pg EXIT
pg_port=$(.venv/bin/python -c 'from cdrflow.localkafka import free_port; print(free_port())')
CDRFLOW_TEST_DATABASE_URL=$(deploy/postgres/ensure-postgres.sh start "$pg_dir/pg" "$pg_port" | tail -n 1)
export CDRFLOW_TEST_DATABASE_URL

status=0
.venv/bin/pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$status"
