#!/usr/bin/env bash
# The real servers the collector's tests talk to besides the Python ones: OpenSSH's sshd and
# vsftpd, from Debian's packages. The tests start each on 127.0.0.1 with a configuration of their
# own (tests/peers/system_servers.py) and stop it; nothing here starts or enables the packages' services.
# Idempotent: a second run only checks.
set -euo pipefail

if [ -x /usr/sbin/sshd ] && [ -x /usr/sbin/vsftpd ]; then
    exit 0
fi
"$(dirname "$0")/debian-packages.sh" "the collector's test peers" openssh-server vsftpd
