"""The collector against the servers carriers really run, from Debian's packages: OpenSSH's sshd
(three host key types, public-key log-in, internal-sftp) and vsftpd (plain FTP, and explicit TLS
with vsftpd's defaults: TLS required for the log-in and the data, the data connection reusing the
control connection's TLS session). The Python servers in tests/peers/servers.py stand in for
them elsewhere; these tests hold the collector to the real ones."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncssh
import pytest

from cdrflow.runtime import Runtime
from services.collector.credentials import Credentials
from services.collector.errors import TlsMismatchError
from services.collector.remote import Endpoint, FtpRemote
from services.collector.rules import parse_rule
from services.collector.sources import SourceSpec, save_source
from tests.integration.test_collector import _source, arrived, cdrflow, csettings, poll, runtime  # noqa: F401
from tests.peers.servers import self_signed_cert
from tests.peers.system_servers import fingerprint, host_keys, openssh_server, vsftpd_server

CDR = "cli,dialled,start,duration\n441632960001,441632960999,2026-10-01T09:00:00,60\n"
ALGORITHMS = {"ed25519": "ssh-ed25519", "ecdsa": "ecdsa-sha2-nistp256", "rsa": "ssh-rsa"}


def add(runtime: Runtime, name: str, protocol: str, port: int, username: str, credentials: Credentials,
        rule: str, remote_dir: str = ".", **kw) -> None:
    spec = SourceSpec(name=name, carrier="gamma", protocol=protocol, host="127.0.0.1", port=port, username=username,
                      credentials=credentials, rules=[parse_rule(rule)], remote_dir=remote_dir, poll_interval=1, **kw)
    with runtime.database.transaction() as session:
        save_source(session, spec, runtime.settings.secret_key)


def test_openssh_sshd_offers_three_host_keys_is_pinned_by_the_ed25519_fingerprint_and_collects(
        csettings, runtime, tmp_path):  # noqa: F811
    keys = host_keys(tmp_path / "keys")
    shown_by_ssh_keygen = {kind: fingerprint(path.with_suffix(".pub")) for kind, path in keys.items()}
    client = asyncssh.generate_private_key("ssh-ed25519")
    files = tmp_path / "outgoing"
    files.mkdir()
    (files / "GAMMA_D_20261001.csv").write_text(CDR)
    slow = csettings.model_copy(update={"collector_timeout": 20.0})  # a handshake per key type
    with openssh_server(tmp_path, keys, client.export_public_key().decode()) as port:
        add(runtime, "gamma-sshd", "sftp", port, "root",
            Credentials(private_key=client.export_private_key().decode()), "*_D_*.csv=cdr,daily,outbound",
            remote_dir=str(files))
        shown = cdrflow(slow, "sources", "trust", "gamma-sshd", input="n\n")
        for kind, algorithm in ALGORITHMS.items():
            assert f"presents {algorithm} key {shown_by_ssh_keygen[kind]}" in shown.stdout, shown.stdout + shown.stderr

        trusted = cdrflow(slow, "sources", "trust", "gamma-sshd", "--fingerprint", shown_by_ssh_keygen["ed25519"])
        assert trusted.returncode == 0, trusted.stderr
        pinned = asyncssh.import_public_key(_source(runtime, "gamma-sshd").host_key)
        assert pinned.get_fingerprint("sha256") == shown_by_ssh_keygen["ed25519"]

        first = poll(runtime, "gamma-sshd")
        assert first.error is None, first.error
        assert [f["remote_path"] for f in first.fetched] == [str(files / "GAMMA_D_20261001.csv")]
        assert poll(runtime, "gamma-sshd").fetched == []  # collected once
    arrived(runtime, 1)


def _outgoing(tmp_path: Path) -> Path:
    root = tmp_path / "ftproot"
    (root / "daily").mkdir(parents=True)
    (root / "daily" / "gamma-20261001.csv").write_text(CDR)
    root.chmod(0o755)  # vsftpd refuses an anonymous root the anonymous user could write to
    return root


ANONYMOUS = Credentials(password="billing@reseller.example")


def test_vsftpd_plain_ftp_is_collected_once(runtime, tmp_path):  # noqa: F811
    with vsftpd_server(tmp_path, _outgoing(tmp_path)) as port:
        add(runtime, "gamma-vsftpd", "ftp", port, "anonymous", ANONYMOUS, "daily/*.csv=cdr,daily,outbound")
        first = poll(runtime, "gamma-vsftpd")
        assert first.error is None, first.error
        assert [f["remote_path"] for f in first.fetched] == ["daily/gamma-20261001.csv"]
        assert poll(runtime, "gamma-vsftpd").fetched == []
    arrived(runtime, 1)


def test_vsftpd_with_its_tls_defaults_is_collected_over_ftps_and_refuses_plain_ftp_clearly(
        runtime, tmp_path):  # noqa: F811
    cert = self_signed_cert(tmp_path)
    with vsftpd_server(tmp_path, _outgoing(tmp_path), cert=cert) as port:
        add(runtime, "gamma-vsftpd-tls", "ftps", port, "anonymous", ANONYMOUS, "daily/*.csv=cdr,daily,outbound",
            tls_ca=cert[0].read_text())
        collected = poll(runtime, "gamma-vsftpd-tls")
        assert collected.error is None, collected.error  # the data connection reuses the TLS session
        assert [f["remote_path"] for f in collected.fetched] == ["daily/gamma-20261001.csv"]

        plain = Endpoint("gamma-vsftpd-plain", "ftp", "127.0.0.1", port, "anonymous", ANONYMOUS, timeout=5)
        with pytest.raises(TlsMismatchError, match=r"requires TLS .*: use ftps for this source"):
            asyncio.run(FtpRemote.open(plain))
    arrived(runtime, 1)
