"""The collector against real FTP and FTPS (pyftpdlib) and SFTP (asyncssh) servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import asyncssh
import orjson
import pytest
from sqlalchemy import select

from cdrflow.bus import Topic, topic_name
from cdrflow.db.models import CollectedFile, Source
from cdrflow.runtime import Runtime
from services.collector.credentials import Credentials, new_secret_key
from services.collector.poll import Collector, PollResult
from services.collector.rules import parse_rule
from services.collector.sources import SourceSpec, pin_host_key, save_source
from tests.integration.conftest import read_topic
from tests.peers.servers import ftp_server, self_signed_cert, sftp_server
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


def test_ftps_verifies_the_certificate_unless_the_source_opts_out(runtime, tmp_path):
    root = carrier_dir(tmp_path)
    with ftp_server(root, cert=self_signed_cert(tmp_path)) as port:
        add_source(runtime, "gamma-ftps", "ftps", port, DAILY_MONTHLY)
        refused = poll(runtime, "gamma-ftps")
        assert refused.fetched == []
        assert "certificate" in refused.error and "--no-verify-tls" in refused.error

        add_source(runtime, "gamma-ftps", "ftps", port, DAILY_MONTHLY, verify_tls=False)
        done = poll(runtime, "gamma-ftps")
        assert done.error is None
        assert sorted(f["period"] for f in done.fetched) == ["daily", "monthly"]
    assert len(arrived(runtime, 2)) == 2


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
