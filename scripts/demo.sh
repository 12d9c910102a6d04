#!/usr/bin/env bash
# The main job on a fresh machine: set up, then run the whole pipeline (local Kafka broker,
# SQLite, every service as its own process) over the sample carrier files.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/cdrflow demo
