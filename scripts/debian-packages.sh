#!/usr/bin/env bash
# Install Debian packages for the project's tests: `scripts/debian-packages.sh WHAT PACKAGE...`
# (WHAT says why, in the log). Through sudo unless root. Debian's policy-rc.d convention (exit
# 101) keeps the packages' scripts from starting or enabling their daemons, so an install opens
# no port: the tests start what they need on 127.0.0.1 themselves.
set -euo pipefail

what=$1
shift
echo "debian-packages: installing $* (Debian packages) for $what" >&2
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
    trap '$SUDO rm -f "$POLICY"' EXIT
fi
$SUDO apt-get update >&2
$SUDO apt-get install -y --no-install-recommends "$@" >&2
