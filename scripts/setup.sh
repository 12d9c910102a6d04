#!/usr/bin/env bash
# Set up a fresh machine for cdrflow: Java + Maven if absent (Debian packages), a virtualenv
# with the pinned Python packages, and the Apache Kafka broker's jars from Maven Central.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    echo "setup: installing Java 17 and Maven (Debian packages)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2 && apt-get install -y openjdk-17-jdk-headless maven >&2
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import cdrflow, services, cdrflow_app" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.cdrflow-installed ]; then
    .venv/bin/pip install -q --upgrade pip >&2
    .venv/bin/pip install -q -e '.[test]' >&2
    touch .venv/.cdrflow-installed
fi

deploy/kafka/fetch.sh .venv/bin/python >&2
scripts/browser-deps.sh  # Debian's chromium, for the console's browser tests
scripts/peer-deps.sh     # Debian's openssh-server and vsftpd, the collector's real test peers
