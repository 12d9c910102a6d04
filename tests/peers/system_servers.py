"""The real third-party servers carriers run: OpenSSH's sshd and vsftpd, from Debian's packages
(installed by scripts/peer-deps.sh), each started here on 127.0.0.1 with a configuration of its
own in a temporary folder, and stopped when the test is done."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cdrflow.localkafka import free_port

SSHD = Path("/usr/sbin/sshd")
VSFTPD = Path("/usr/sbin/vsftpd")
START_TIMEOUT_S = 10.0
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")
"""What ``ssh-keygen -A`` makes for a Debian sshd: a server presents all three."""


def _installed(program: Path) -> None:
    if not program.exists():
        raise AssertionError(f"{program} is missing: run scripts/peer-deps.sh (Debian's openssh-server and "
                             "vsftpd, which scripts/setup.sh installs)")


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the server did not listen on 127.0.0.1:{port} within {START_TIMEOUT_S:.0f} s")


@contextmanager
def _running(command: list[str], port: int, log: Path) -> Iterator[int]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, log)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def host_keys(directory: Path) -> dict[str, Path]:
    """A host key of each type sshd offers by default, made by ssh-keygen (private key paths)."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = {}
    for kind in HOST_KEY_TYPES:
        path = directory / f"ssh_host_{kind}_key"
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
        keys[kind] = path
    return keys


def fingerprint(public_key: Path) -> str:
    """The SHA256 fingerprint as ``ssh-keygen -l`` (and ``ssh`` on first contact) shows it."""
    return subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)], check=True,
                          capture_output=True, text=True).stdout.split()[1]


@contextmanager
def openssh_server(directory: Path, keys: dict[str, Path], authorized_key: str) -> Iterator[int]:
    """OpenSSH's sshd on 127.0.0.1, SFTP by its internal-sftp, public-key log-in as this machine's
    ``root`` with ``authorized_key`` (the only account a throw-away sshd can use without adding
    one to the machine). Yields its port."""
    _installed(SSHD)
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege-separation directory
    authorized = directory / "authorized_keys"
    authorized.write_text(authorized_key.strip() + "\n")
    authorized.chmod(0o600)
    port = free_port()
    config = directory / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", *(f"HostKey {path}" for path in keys.values()),
        f"PidFile {directory / 'sshd.pid'}", f"AuthorizedKeysFile {authorized}", "StrictModes no",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "Subsystem sftp internal-sftp", ""]))
    with _running([str(SSHD), "-D", "-e", "-f", str(config)], port, directory / "sshd.log") as running:
        yield running


@contextmanager
def vsftpd_server(directory: Path, root: Path, *, cert: tuple[Path, Path] | None = None) -> Iterator[int]:
    """vsftpd on 127.0.0.1 serving ``root`` read-only to the anonymous user (vsftpd's local users
    would need accounts on this machine). With ``cert``, explicit TLS is required for the log-in
    and every transfer, and the data connection must reuse the control connection's TLS session:
    vsftpd's defaults. Yields its port."""
    _installed(VSFTPD)
    port = free_port()
    passive = free_port()
    lines = ["listen=YES", "listen_address=127.0.0.1", f"listen_port={port}", "background=NO",
             "anonymous_enable=YES", "no_anon_password=YES", f"anon_root={root}", "local_enable=NO",
             "write_enable=NO", "pasv_enable=YES", "pasv_address=127.0.0.1", f"pasv_min_port={passive}",
             f"pasv_max_port={passive + 20}", "seccomp_sandbox=NO", "secure_chroot_dir=/var/run/vsftpd/empty",
             f"vsftpd_log_file={directory / 'vsftpd.log'}"]
    if cert:
        lines += ["ssl_enable=YES", "allow_anon_ssl=YES", "force_anon_logins_ssl=YES", "force_anon_data_ssl=YES",
                  f"rsa_cert_file={cert[0]}", f"rsa_private_key_file={cert[1]}"]
    config = directory / "vsftpd.conf"
    config.write_text("\n".join(lines) + "\n")
    with _running([str(VSFTPD), str(config)], port, directory / "vsftpd.out") as running:
        yield running
