#!/usr/bin/env bash
# The browser the console's end-to-end tests drive: Debian's chromium (Playwright is told its
# path, /usr/bin/chromium, and never downloads a browser of its own). Installed with apt-get
# when absent; idempotent: a second run only checks.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi
echo "browser-deps: installing chromium (Debian package) for the console's browser tests" >&2
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update >&2
$SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core >&2
if [ ! -x "$CHROMIUM" ]; then
    echo "browser-deps: chromium installed but $CHROMIUM is missing" >&2
    exit 1
fi
