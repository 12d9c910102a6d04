#!/usr/bin/env bash
# The browser the console's end-to-end tests drive: Debian's chromium (Playwright is told its
# path, /usr/bin/chromium, and never downloads a browser of its own). Installed with apt-get
# when absent; idempotent: a second run only checks.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi
"$(dirname "$0")/debian-packages.sh" "the console's browser tests" chromium fonts-dejavu-core
if [ ! -x "$CHROMIUM" ]; then
    echo "browser-deps: chromium installed but $CHROMIUM is missing" >&2
    exit 1
fi
