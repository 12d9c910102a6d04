#!/usr/bin/env bash
# The real servers the collector's tests talk to besides the Python ones: OpenSSH's sshd and
# vsftpd, from Debian's packages. The tests start each on 127.0.0.1 with a configuration of their
# own (tests/peers/system_servers.py) and stop it; nothing here starts or enables the packages' services.
# Idempotent: a second run only checks.
set -euo pipefail

if [ -x /usr/sbin/sshd ] && [ -x /usr/sbin/vsftpd ]; then
    exit 0
fi
echo "peer-deps: installing openssh-server and vsftpd (Debian packages) as the collector's test peers" >&2
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
# Debian's policy-rc.d convention: exit 101 tells the packages' scripts not to start (or, under
# systemd, enable-and-start) their daemons, so installing the test peers opens no port.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
    trap '$SUDO rm -f "$POLICY"' EXIT
fi
$SUDO apt-get update >&2
$SUDO apt-get install -y --no-install-recommends openssh-server vsftpd >&2
