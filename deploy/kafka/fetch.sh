#!/usr/bin/env bash
# Fetch the local Kafka broker's jars (Maven Central) into cdrflow's libs dir and
# print that dir. CI runs it before the tests so the first broker start does not
# pay for the download; it is a no-op when the jars are already there.
#
# Usage: deploy/kafka/fetch.sh [PYTHON]   (default: python3; pass the venv's python)
# Honours CDRFLOW_KAFKA_LIBS (see cdrflow.localkafka.libs_dir).
set -euo pipefail

python="${1:-python3}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

cd "$repo"  # so cdrflow imports from this checkout even if it is not installed
exec "$python" -c 'from cdrflow.localkafka import ensure_installed; print(ensure_installed())'
