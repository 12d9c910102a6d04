"""The collector against real FTP and FTPS (pyftpdlib) and SFTP (asyncssh) servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from datetime import timedelta

import asyncssh
import orjson
import pytest
from sqlalchemy import select

from cdrflow.bus import Topic, topic_name
from cdrflow.db.models import CollectedFile, Source
from cdrflow.errors import InputError
from cdrflow.localkafka import free_port
from cdrflow_app.orchestrate import settings_env, spawn_service, stop_processes
from cdrflow.runtime import Runtime
from services.collector.credentials import Credentials, new_secret_key
from services.collector.errors import TlsMismatchError
from services.collector.poll import Collector, PollResult, backoff_seconds
from services.collector.remote import Endpoint, FtpRemote
from services.collector.rules import parse_rule
from services.collector.sources import SourceSpec, pin_host_key, save_source
from tests.integration.conftest import read_topic, wait_until
from tests.peers.servers import ftp_server, self_signed_cert, sftp_server, silent_server
from tests.schemas import validate_event

DAILY_MONTHLY = ["daily/*.csv=cdr,daily,outbound", "monthly/*.csv=cdr,monthly,outbound"]


@pytest.fixture
def csettings(settings):
    return settings.model_copy(update={"secret_key": new_secret_key(), "collector_settle_seconds": 0.3,
                                       "collector_timeout": 3.0})


@pytest.fixture
def runtime(csettings):
    rt = Runtime(csettings, "collector")
    yield rt
    rt.database.dispose()
    rt.__dict__.pop("producer", None)  # let librdkafka go before the broker does


def add_source(runtime: Runtime, name: str, protocol: str, port: int, rules: list[str], *,
               credentials: Credentials = Credentials(password="s3cret"), **kw) -> None:
    spec = SourceSpec(name=name, carrier="gamma", protocol=protocol, host="127.0.0.1", port=port,
                      username="carrier", credentials=credentials, rules=[parse_rule(r) for r in rules],
                      poll_interval=1, **kw)
    with runtime.database.transaction() as session:
        save_source(session, spec, runtime.settings.secret_key)


def poll(runtime: Runtime, name: str) -> PollResult:
    return asyncio.run(Collector(runtime).poll(name))


def arrived(runtime: Runtime, count: int) -> list[dict]:
    """Exactly ``count`` file-arrived events (schema-valid), and no more within a short wait."""
    topic = topic_name(runtime.settings.namespace, Topic.FILE_ARRIVED)
    events = [orjson.loads(v) for v in read_topic(runtime.settings.bootstrap, topic, count, timeout=30)]
    assert len(events) == count
    assert len(read_topic(runtime.settings.bootstrap, topic, count + 1, timeout=2)) == count
    for event in events:
        validate_event(event)
    return events


def carrier_dir(tmp_path: Path) -> Path:
    root = tmp_path / "carrier"
    (root / "daily").mkdir(parents=True)
    (root / "monthly").mkdir()
    (root / "daily" / "gamma-20261001.csv").write_text("cli,dialled,start,duration\n441632960001,441632960999,"
                                                        "2026-10-01T09:00:00,60\n")
    (root / "monthly" / "gamma-202610.csv").write_text("cli,dialled,start,duration\n441632960001,441632960998,"
                                                       "2026-10-02T09:00:00,120\n")
    (root / "daily" / "README.txt").write_text("not a CDR: no rule matches it\n")
    return root


def test_ftp_sorts_daily_and_monthly_by_directory_fetches_each_once_and_a_rewrite_again(runtime, tmp_path):
    root = carrier_dir(tmp_path)
    with ftp_server(root) as port:
        add_source(runtime, "gamma-ftp", "ftp", port, DAILY_MONTHLY)
        first = poll(runtime, "gamma-ftp")
        assert first.error is None and len(first.fetched) == 2
        assert poll(runtime, "gamma-ftp").fetched == []  # nothing new

        daily = root / "daily" / "gamma-20261001.csv"
        daily.write_text(daily.read_text() + "441632960001,441632960997,2026-10-01T10:00:00,30\n")
        os.utime(daily, (time.time() + 5, time.time() + 5))
        third = poll(runtime, "gamma-ftp")
        assert [f["remote_path"] for f in third.fetched] == ["daily/gamma-20261001.csv"]

    events = arrived(runtime, 3)
    periods = sorted((e["data"]["original_name"], e["data"]["period"]) for e in events)
    assert periods == sorted([("gamma-20261001.csv", "daily"), ("gamma-20261001.csv", "daily"),
                              ("gamma-202610.csv", "monthly")])
    assert {e["data"]["channel"] for e in events} == {"collector"}
    assert len({e["data"]["fingerprint"] for e in events}) == 3  # the rewrite is new content
    for e in events:
        assert runtime.store.exists(e["data"]["fingerprint"])
        assert e["data"]["details"]["source"] == "gamma-ftp"
    with runtime.database.transaction() as session:
        src = session.get(Source, "gamma-ftp")
        assert (src.state, src.failures, src.collected, src.last_error) == ("ok", 0, 3, None)


def test_ftps_verifies_the_certificate_against_its_ca_unless_the_source_opts_out(runtime, tmp_path):
    root = carrier_dir(tmp_path)
    cert = self_signed_cert(tmp_path)
    with ftp_server(root, cert=cert) as port:
        add_source(runtime, "gamma-ftps", "ftps", port, DAILY_MONTHLY)
        refused = poll(runtime, "gamma-ftps")
        assert refused.fetched == []
        assert "certificate" in refused.error and "--ca-file" in refused.error and "--no-verify-tls" in refused.error

        (tmp_path / "other").mkdir()
        other_cert = self_signed_cert(tmp_path / "other")
        add_source(runtime, "gamma-ftps", "ftps", port, DAILY_MONTHLY, tls_ca=other_cert[0].read_text())
        assert "failed verification" in poll(runtime, "gamma-ftps").error  # some other CA: refused

        add_source(runtime, "gamma-ftps", "ftps", port, DAILY_MONTHLY, tls_ca=cert[0].read_text())
        verified = poll(runtime, "gamma-ftps")
        assert verified.error is None
        assert sorted(f["period"] for f in verified.fetched) == ["daily", "monthly"]

        add_source(runtime, "gamma-ftps-unverified", "ftps", port, DAILY_MONTHLY, verify_tls=False)
        done = poll(runtime, "gamma-ftps-unverified")
        assert done.error is None
        assert sorted(f["period"] for f in done.fetched) == ["daily", "monthly"]
    assert len(arrived(runtime, 4)) == 4


def _pin(runtime: Runtime, name: str, host_key: asyncssh.SSHKey) -> None:
    with runtime.database.transaction() as session:
        pin_host_key(session, name, host_key.export_public_key().decode())


def test_sftp_with_password_and_with_key_sorts_by_name_pattern(runtime, tmp_path):
    root = tmp_path / "sftp"
    root.mkdir()
    (root / "GAMMA_D_20261001.csv").write_text("cli,dialled,start,duration\n441632960001,4401,2026-10-01T09:00:00,6\n")
    (root / "GAMMA_M_202610.csv").write_text("cli,dialled,start,duration\n441632960001,4402,2026-10-01T09:00:00,7\n")
    (root / "GAMMA_SDR_202610.csv").write_text("line rental\n")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    rules = ["*_D_*.csv=cdr,daily,outbound", "*_M_*.csv=cdr,monthly,outbound", "*_SDR_*.csv=sdr,monthly,outbound"]
    with sftp_server(root, host_key, client_key=client_key) as port:
        add_source(runtime, "gamma-sftp-pw", "sftp", port, rules)
        _pin(runtime, "gamma-sftp-pw", host_key)
        with_password = poll(runtime, "gamma-sftp-pw")
        assert with_password.error is None
        assert {f["remote_path"]: (f["kind"], f["period"]) for f in with_password.fetched} == {
            "GAMMA_D_20261001.csv": ("cdr", "daily"), "GAMMA_M_202610.csv": ("cdr", "monthly"),
            "GAMMA_SDR_202610.csv": ("sdr", "monthly")}
        assert poll(runtime, "gamma-sftp-pw").fetched == []

        key_text = client_key.export_private_key(passphrase="open sesame").decode()
        with pytest.raises(InputError, match="the passphrase does not decrypt the private key") as refused:
            add_source(runtime, "gamma-sftp-key", "sftp", port, rules,
                       credentials=Credentials(private_key=key_text, passphrase="open sez me"))
        assert "open se" not in str(refused.value)  # caught when the source is added, not at the first poll

        add_source(runtime, "gamma-sftp-key", "sftp", port, rules, delete_after_collect=True,
                   credentials=Credentials(private_key=key_text, passphrase="open sesame"))
        _pin(runtime, "gamma-sftp-key", host_key)
        with_key = poll(runtime, "gamma-sftp-key")
        assert with_key.error is None and len(with_key.fetched) == 3
        assert list(root.iterdir()) == []  # --delete: collected files are removed from the server

    arrived(runtime, 6)
    with runtime.database.transaction() as session:
        assert len(session.scalars(select(CollectedFile)).all()) == 6


def test_credentials_are_encrypted_at_rest(runtime, tmp_path):
    add_source(runtime, "gamma-secret", "ftp", 21, ["*=cdr,daily,outbound"],
               credentials=Credentials(password="hunter2-very-secret"))
    with runtime.database.transaction() as session:
        src = session.get(Source, "gamma-secret")
        assert b"hunter2" not in src.secret


def cdrflow(settings, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The ``cdrflow`` command as an operator runs it, with ``settings`` in its environment."""
    return subprocess.run([sys.executable, "-m", "cdrflow_app", *args], env=os.environ | settings_env(settings),
                          input=input, capture_output=True, text=True, timeout=timeout)


def test_a_file_still_being_written_waits_and_a_touched_file_with_the_same_bytes_is_not_announced_again(
        runtime, tmp_path):
    root = carrier_dir(tmp_path)
    growing = root / "daily" / "gamma-20261002.csv"
    growing.write_text("cli,dialled,start,duration\n")
    stop = threading.Event()

    def keep_writing() -> None:
        n = 0
        while not stop.is_set():
            with growing.open("a") as fh:
                fh.write(f"441632960001,441632960999,2026-10-02T09:{n // 60 % 60:02d}:{n % 60:02d},60\n")
            n += 1
            time.sleep(0.05)

    writer = threading.Thread(target=keep_writing, daemon=True)
    try:
        with ftp_server(root) as port:
            add_source(runtime, "gamma-ftp", "ftp", port, DAILY_MONTHLY)
            writer.start()
            first = poll(runtime, "gamma-ftp")
            stop.set()
            writer.join()
            assert first.error is None
            assert first.waiting == ["daily/gamma-20261002.csv"]
            assert sorted(f["remote_path"] for f in first.fetched) == ["daily/gamma-20261001.csv",
                                                                      "monthly/gamma-202610.csv"]
            second = poll(runtime, "gamma-ftp")
            assert [(f["remote_path"], f["size"]) for f in second.fetched] == [
                ("daily/gamma-20261002.csv", growing.stat().st_size)]

            os.utime(growing, (time.time() + 10, time.time() + 10))  # touched: new mtime, same bytes
            touched = poll(runtime, "gamma-ftp")
            assert (touched.fetched, touched.unchanged) == ([], ["daily/gamma-20261002.csv"])
            assert poll(runtime, "gamma-ftp").unchanged == []  # its new mtime is remembered
    finally:
        stop.set()
    events = arrived(runtime, 3)
    complete = next(e for e in events if e["data"]["original_name"] == "gamma-20261002.csv")
    assert complete["data"]["fingerprint"] == hashlib.sha256(growing.read_bytes()).hexdigest()


def test_a_collector_killed_mid_download_leaves_no_partial_file_and_the_restart_fetches_it_once(
        csettings, runtime, tmp_path):
    root = tmp_path / "carrier"
    root.mkdir()
    big = root / "GAMMA_D_20261003.csv"
    big.write_bytes(b"cli,dialled,start,duration\n" + b"".join(
        b"441632960001,441632960999,2026-10-03T%02d:%02d:%02d,60\n" % (i // 3600 % 24, i // 60 % 60, i % 60)
        for i in range(20_000)))  # about 1 MB: 4 s at the server's 256 kB/s
    fingerprint = hashlib.sha256(big.read_bytes()).hexdigest()
    parts = csettings.data_dir / "collector" / "tmp"
    command = [sys.executable, "-m", "cdrflow_app", "collect", "gamma-slow", "--now"]
    with ftp_server(root, bytes_per_second=256 * 1024) as port:
        add_source(runtime, "gamma-slow", "ftp", port, ["*_D_*.csv=cdr,daily,outbound"])
        collector = subprocess.Popen(command, env=os.environ | settings_env(csettings),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until("a download under way", lambda: any(p.stat().st_size > 64 * 1024 for p in parts.glob("*.part")),
                       timeout=60)
        finally:
            os.kill(collector.pid, signal.SIGKILL)
            collector.wait(10)
        assert [p for p in parts.glob("*.part") if p.stat().st_size < big.stat().st_size]  # it died mid-file
        assert not runtime.store.exists(fingerprint)
        with runtime.database.transaction() as session:
            assert session.scalars(select(CollectedFile)).all() == []
        assert read_topic(runtime.settings.bootstrap, topic_name(runtime.settings.namespace, Topic.FILE_ARRIVED),
                          1, timeout=3) == []

        restart = cdrflow(csettings, "collect", "gamma-slow", "--now")
        assert restart.returncode == 0, restart.stderr
        assert "GAMMA_D_20261003.csv" in restart.stdout and "gamma-slow: 1 file(s) collected" in restart.stdout
        assert list(parts.glob("*.part")) == []  # the dead process's partial download is gone
        again = cdrflow(csettings, "collect", "gamma-slow", "--now")
        assert ("gamma-slow: 0 new file(s); 1 file(s) on the server were already collected from this source"
                in again.stdout)

    (event,) = arrived(runtime, 1)
    assert (event["data"]["fingerprint"], event["data"]["size"]) == (fingerprint, big.stat().st_size)
    assert runtime.store.path_of(fingerprint).read_bytes() == big.read_bytes()


def _source(runtime: Runtime, name: str) -> Source:
    with runtime.database.transaction() as session:
        src = session.get(Source, name)
        session.expunge(src)
        return src


WRONG_PASSWORD = "wrong-pw-7f3a91"


def test_broken_sources_get_a_clear_error_with_backoff_while_the_others_keep_collecting(csettings, runtime, tmp_path):
    settings = csettings.model_copy(update={"log_level": "DEBUG"})  # not even debug logs may carry a secret
    good_root = carrier_dir(tmp_path)
    sftp_root = tmp_path / "sftp"
    sftp_root.mkdir()
    (sftp_root / "GAMMA_D_20261001.csv").write_text("cli,dialled,start,duration\n")
    host_key, impostor = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    broken = ["b-wrong-password", "c-wrong-host-key", "d-unreachable", "e-silent"]
    with ftp_server(good_root) as good, sftp_server(sftp_root, host_key) as sftp_port, silent_server() as silent:
        add_source(runtime, "a-good", "ftp", good, DAILY_MONTHLY)
        add_source(runtime, "b-wrong-password", "ftp", good, DAILY_MONTHLY,
                   credentials=Credentials(password=WRONG_PASSWORD))
        add_source(runtime, "c-wrong-host-key", "sftp", sftp_port, ["*=cdr,daily,outbound"])
        _pin(runtime, "c-wrong-host-key", impostor)
        add_source(runtime, "d-unreachable", "ftp", free_port(), DAILY_MONTHLY)
        add_source(runtime, "e-silent", "ftp", silent, DAILY_MONTHLY)
        service = spawn_service("collector", settings, log_dir=str(tmp_path))
        try:
            wait_until("the good source's files", lambda: _source(runtime, "a-good").collected == 2, timeout=60)
            (good_root / "monthly" / "gamma-202611.csv").write_text("cli,dialled,start,duration\n")
            wait_until("a new file on the good source", lambda: _source(runtime, "a-good").collected == 3, timeout=60)
            wait_until("each broken source failing again and again",
                       lambda: all(_source(runtime, n).failures >= 3 for n in broken), timeout=90)
            status = cdrflow(settings, "sources", "status")
        finally:
            stop_processes({"collector": service})
    log = (tmp_path / "collector.log").read_text()
    assert service.returncode == 0, log[-3000:]

    good_source = _source(runtime, "a-good")
    assert (good_source.state, good_source.failures, good_source.last_error) == ("ok", 0, None)
    for name in broken:
        src = _source(runtime, name)
        assert src.state == "failing" and src.collected == 0
        assert src.next_poll_at - src.last_poll_at == timedelta(  # the interval, doubled per failure
            seconds=backoff_seconds(src.poll_interval, src.failures, settings.collector_max_backoff))
    lines = {line.split()[0]: line for line in status.stdout.replace("\n" + " " * 16 + " error:", " error:")
             .splitlines()}
    assert "login as 'carrier' refused by 127.0.0.1" in lines["b-wrong-password"]
    assert "check username and password" in lines["b-wrong-password"]
    assert "not the pinned one" in lines["c-wrong-host-key"]
    assert "cdrflow sources trust c-wrong-host-key" in lines["c-wrong-host-key"]
    assert "can't reach 127.0.0.1:" in lines["d-unreachable"]
    assert "did not answer within 3s" in lines["e-silent"]
    assert all(" failing " in lines[n] for n in broken) and " ok " in lines["a-good"]
    for secret in (WRONG_PASSWORD, "s3cret"):
        assert secret not in log and secret not in status.stdout
    assert '"event": "file_collected"' in log or '"event":"file_collected"' in log.replace(" ", "")


def test_sources_trust_shows_the_host_key_fingerprint_and_pins_it(csettings, runtime, tmp_path):
    root = tmp_path / "sftp"
    root.mkdir()
    (root / "GAMMA_D_20261001.csv").write_text("cli,dialled,start,duration\n441632960001,4401,2026-10-01T09:00:00,6\n")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    fingerprint = host_key.get_fingerprint("sha256")
    with sftp_server(root, host_key) as port:
        add_source(runtime, "gamma-sftp", "sftp", port, ["*_D_*.csv=cdr,daily,outbound"])
        unpinned = poll(runtime, "gamma-sftp")
        assert "no host key is pinned" in unpinned.error and "cdrflow sources trust gamma-sftp" in unpinned.error

        other = cdrflow(csettings, "sources", "trust", "gamma-sftp", "--fingerprint", "SHA256:somebody-else")
        assert other.returncode == 1
        assert fingerprint in other.stdout and "not pinned" in other.stderr
        declined = cdrflow(csettings, "sources", "trust", "gamma-sftp", input="n\n")
        assert declined.returncode == 1 and _source(runtime, "gamma-sftp").host_key is None

        trusted = cdrflow(csettings, "sources", "trust", "gamma-sftp", input="y\n")
        assert trusted.returncode == 0, trusted.stderr
        assert f"127.0.0.1:{port} presents ssh-ed25519 key {fingerprint}" in trusted.stdout
        assert "host key pinned for source gamma-sftp" in trusted.stdout
        assert asyncssh.import_public_key(_source(runtime, "gamma-sftp").host_key).get_fingerprint("sha256") \
            == fingerprint
        collected = cdrflow(csettings, "collect", "gamma-sftp", "--now")
        assert collected.returncode == 0 and "gamma-sftp: 1 file(s) collected" in collected.stdout
    arrived(runtime, 1)


def test_a_server_with_several_host_key_types_is_pinned_by_the_carriers_ed25519_fingerprint(csettings, runtime,
                                                                                          tmp_path):
    """As OpenSSH's sshd: RSA, ECDSA and Ed25519 keys. `sources trust` shows each; the Ed25519
    fingerprint (what `ssh` shows by default), or any other, pins that key; a re-keyed server's
    mismatch error names the fingerprints it presents."""
    root = tmp_path / "sftp"
    root.mkdir()
    (root / "GAMMA_D_20261001.csv").write_text("cli,dialled,start,duration\n441632960001,4401,2026-10-01T09:00:00,6\n")
    keys = [asyncssh.generate_private_key(alg) for alg in ("ssh-rsa", "ecdsa-sha2-nistp256", "ssh-ed25519")]
    rsa, ecdsa, ed25519 = (k.get_fingerprint("sha256") for k in keys)
    csettings = csettings.model_copy(update={"collector_timeout": 20.0})  # a handshake per key type
    with sftp_server(root, keys) as port:
        add_source(runtime, "gamma-sftp", "sftp", port, ["*_D_*.csv=cdr,daily,outbound"])
        shown = cdrflow(csettings, "sources", "trust", "gamma-sftp", input="n\n")
        for algorithm, fingerprint in (("ssh-ed25519", ed25519), ("ecdsa-sha2-nistp256", ecdsa), ("ssh-rsa", rsa)):
            assert f"presents {algorithm} key {fingerprint}" in shown.stdout, shown.stdout
        assert shown.stdout.index(ed25519) < shown.stdout.index(rsa)  # ssh's default first

        for fingerprint in (rsa, ed25519.removeprefix("SHA256:")):  # pinned by any one of them
            trusted = cdrflow(csettings, "sources", "trust", "gamma-sftp", "--fingerprint", fingerprint)
            assert trusted.returncode == 0, trusted.stderr
            pinned = _source(runtime, "gamma-sftp").host_key
            assert asyncssh.import_public_key(pinned).get_fingerprint("sha256").endswith(fingerprint)
            assert poll(runtime, "gamma-sftp").error is None
    arrived(runtime, 1)

    impostors = [asyncssh.generate_private_key("ssh-ed25519")]
    with sftp_server(root, impostors) as other_port:
        _move_source(runtime, "gamma-sftp", other_port)
        failed = poll(runtime, "gamma-sftp")
    assert "not the pinned one" in failed.error
    assert f"it presents ssh-ed25519 {impostors[0].get_fingerprint('sha256')}" in failed.error


def _move_source(runtime, name: str, port: int) -> None:
    with runtime.database.transaction() as session:
        session.get(Source, name).port = port


def _ftp_endpoint(protocol: str, port: int) -> Endpoint:
    return Endpoint(f"gamma-{protocol}", protocol, "127.0.0.1", port, "carrier", Credentials(password="s3cret"),
                    verify_tls=False, timeout=5)


def test_an_ftps_source_on_a_server_without_tls_says_the_server_does_not_offer_tls(tmp_path):
    """Not "check username and password": the login was never tried (real pyftpdlib server)."""
    with ftp_server(carrier_dir(tmp_path)) as port:
        with pytest.raises(TlsMismatchError, match=r"127\.0\.0\.1 does not offer TLS \(it answered AUTH TLS with") as err:
            asyncio.run(FtpRemote.open(_ftp_endpoint("ftps", port)))
    assert "password" not in str(err.value)


def test_a_plain_ftp_source_on_a_server_requiring_tls_says_use_ftps(tmp_path):
    with ftp_server(carrier_dir(tmp_path), cert=self_signed_cert(tmp_path)) as port:
        with pytest.raises(TlsMismatchError, match=r"127\.0\.0\.1 requires TLS .*: use ftps for this source"):
            asyncio.run(FtpRemote.open(_ftp_endpoint("ftp", port)))
