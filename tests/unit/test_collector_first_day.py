"""An operator's first day with the collector (issue 12): the secret key it needs is the one the
sources were saved with; a private key that can't be read is refused at ``sources add``; and
``collect --now`` after the collector service took the files says so, against a real FTP server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncssh
import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from cdrflow_app.cli import main
from services.collector.commands import collect_summary
from cdrflow.db import migrate
from cdrflow.db.models import CollectedFile, Source
from cdrflow.errors import InputError
from cdrflow.reference import add_carrier
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.collector.credentials import Credentials, new_secret_key
from services.collector.errors import SecretKeyError
from services.collector.poll import Collector, PollResult
from services.collector.remote import Endpoint, connect
from services.collector.rules import parse_rule
from services.collector.service import check_secret_key, serve
from services.collector.sources import EarlierCollection, SourceSpec, save_source
from tests.peers.servers import ftp_server

KEY = new_secret_key()
LONDON = ZoneInfo("Europe/London")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, secret_key=KEY, collector_settle_seconds=0, collector_timeout=3.0)


@pytest.fixture
def runtime(settings: Settings):
    migrate(settings.effective_database_url)
    rt = Runtime(settings, "collector")
    with rt.database.transaction() as session:
        add_carrier(session, "gamma", "Gamma Telecom", "gamma")
    yield rt
    rt.database.dispose()


def spec(name: str, credentials: Credentials = Credentials(password="s3cret"), protocol: str = "ftp",
         port: int = 21) -> SourceSpec:
    return SourceSpec(name=name, carrier="gamma", protocol=protocol, host="127.0.0.1", port=port,
                      username="carrier", credentials=credentials, rules=[parse_rule("*.csv=cdr,daily,outbound")],
                      poll_interval=300)


def add(runtime: Runtime, source: SourceSpec, secret_key: str | None = KEY) -> None:
    with runtime.database.transaction() as session:
        save_source(session, source, secret_key)


def with_key(runtime: Runtime, secret_key: str | None) -> Runtime:
    """The same data directory as ``runtime``, seen by a collector started with ``secret_key``."""
    return Runtime(runtime.settings.model_copy(update={"secret_key": secret_key}), "collector")


@pytest.fixture
def cli(tmp_path, monkeypatch, runtime):
    monkeypatch.setenv("CDRFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CDRFLOW_SECRET_KEY", KEY)
    monkeypatch.setenv("CDRFLOW_COLLECTOR_SETTLE_SECONDS", "0")
    monkeypatch.delenv("CDRFLOW_DATABASE_URL", raising=False)
    runner = CliRunner()
    return lambda *args, input=None: runner.invoke(main, [str(a) for a in args], input=input)


# --- the secret key: the one the sources were saved with -------------------------------------------


def test_a_collector_started_without_the_key_while_sources_are_saved_refuses_to_start_asking_for_the_same_key(
        runtime):
    add(runtime, spec("gamma-ftp"))
    add(runtime, spec("gamma-backup"))
    keyless = with_key(runtime, None)
    with capture_logs() as logs, pytest.raises(SecretKeyError) as refused:
        serve(keyless)
    message = str(refused.value)
    assert message.startswith("CDRFLOW_SECRET_KEY is not set, but 2 source(s) (gamma-backup, gamma-ftp) have")
    assert "to the same key the sources were saved with" in message
    assert "a new key from 'cdrflow sources keygen' can't decrypt them" in message
    assert "'export CDRFLOW_SECRET_KEY=<that key>' where the collector, 'cdrflow up' or 'cdrflow collect' runs" \
        in message
    assert [entry["error"] for entry in logs if entry["event"] == "collector_not_started"] == [message]
    keyless.database.dispose()


def test_a_collector_without_the_key_and_without_sources_starts(runtime):
    keyless = with_key(runtime, None)
    check_secret_key(keyless)  # nothing saved: nothing to decrypt, the collector idles until sources exist
    keyless.database.dispose()


def test_a_wrong_key_names_each_source_it_cannot_decrypt_at_start_up_and_in_the_source_status(runtime):
    add(runtime, spec("gamma-ftp"))
    other_key = new_secret_key()
    add(runtime, spec("gamma-new"), secret_key=other_key)  # saved under another key by mistake
    wrong = with_key(runtime, other_key)
    with capture_logs() as logs:
        check_secret_key(wrong)  # some sources may still be readable: it starts, and says which are not
    unreadable = [entry for entry in logs if entry["event"] == "source_credentials_unreadable"]
    assert [entry["source"] for entry in unreadable] == ["gamma-ftp"]
    assert unreadable[0]["error"].startswith("source gamma-ftp: its saved password or key can't be decrypted "
                                             "with this CDRFLOW_SECRET_KEY, which is not the key it was saved with")

    result = asyncio.run(Collector(wrong).poll("gamma-ftp"))
    assert result.error == unreadable[0]["error"]
    assert "to the same key the sources were saved with" in result.error
    with wrong.database.transaction() as session:
        src = session.get(Source, "gamma-ftp")
        assert (src.state, src.failures, src.last_error) == ("failing", 1, result.error)
    wrong.database.dispose()


def test_a_poll_without_the_key_names_the_source_and_asks_for_the_key_it_was_saved_with(runtime):
    add(runtime, spec("gamma-ftp"))
    keyless = with_key(runtime, None)
    result = asyncio.run(Collector(keyless).poll("gamma-ftp"))
    assert result.error.startswith("source gamma-ftp: CDRFLOW_SECRET_KEY is not set, but its password or key is "
                                   "saved encrypted")
    assert "can't decrypt them" in result.error and "keygen' can't" in result.error
    keyless.database.dispose()


def test_sources_add_warns_when_other_sources_were_saved_with_another_key(cli, runtime):
    add(runtime, spec("gamma-old"), secret_key=new_secret_key())
    added = cli("sources", "add", "gamma-ftp", "--carrier", "gamma", "--protocol", "ftp", "--host", "127.0.0.1",
                "--username", "carrier", "--password", "s3cret")
    assert added.exit_code == 0, added.output
    assert "source gamma-ftp saved" in added.stdout
    assert "WARNING: source(s) gamma-old were saved with another CDRFLOW_SECRET_KEY" in added.stderr


# --- a private key that can't be read is refused when the source is added ---------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Key files as an operator has them (made once: an RSA key takes a while to generate)."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    rsa = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    files = {"encrypted": key.export_private_key(passphrase="open sesame"),
             "pem-encrypted": rsa.export_private_key("pkcs1-pem", passphrase="open sesame"),
             "plain": key.export_private_key(), "public": key.export_public_key(), "binary": b"\x00\xff\xfe" * 40}
    directory = tmp_path_factory.mktemp("keys")
    paths = {}
    for name, data in files.items():
        paths[name] = directory / f"{name}.key"
        paths[name].write_bytes(data)
    return paths


def sftp_add(cli, key_file: Path, passphrase: str | None = None):
    args = ["sources", "add", "gamma-sftp", "--carrier", "gamma", "--protocol", "sftp", "--host", "127.0.0.1",
            "--username", "carrier", "--key-file", key_file]
    if passphrase is not None:
        return cli(*args, "--ask-passphrase", input=f"{passphrase}\n")
    return cli(*args)


@pytest.mark.parametrize("key, passphrase, says", [
    ("encrypted", "open sez me", "the passphrase does not decrypt the private key (Incorrect passphrase)"),
    ("pem-encrypted", "open sez me", "the passphrase does not decrypt the private key"),
    ("encrypted", None, "the private key is encrypted with a passphrase: add the source again with "
                        "--ask-passphrase"),
    ("public", None, "this is a public key: give the private key file, the one without .pub"),
    ("binary", None, "is not a text file: give the SFTP private key in OpenSSH"),
])
def test_sources_add_refuses_a_key_it_cannot_read_saying_why(cli, keys, runtime, key, passphrase, says):
    refused = sftp_add(cli, keys[key], passphrase)
    assert refused.exit_code == 1
    assert says in refused.output
    assert "open se" not in refused.output.replace("key passphrase:", "")
    with runtime.database.transaction() as session:
        assert session.get(Source, "gamma-sftp") is None  # nothing saved: no first poll to find it


@pytest.mark.parametrize("key, passphrase", [("encrypted", "open sesame"), ("pem-encrypted", "open sesame"),
                                             ("plain", None)])
def test_sources_add_takes_a_key_it_can_read(cli, keys, runtime, key, passphrase):
    added = sftp_add(cli, keys[key], passphrase)
    assert added.exit_code == 0, added.output
    assert "source gamma-sftp saved" in added.output
    with runtime.database.transaction() as session:
        assert session.get(Source, "gamma-sftp") is not None


def test_save_source_refuses_a_malformed_key_for_every_caller_of_the_library(runtime):
    with pytest.raises(InputError, match=r"source gamma-sftp: the key file is not a private key that can be read"):
        add(runtime, spec("gamma-sftp", Credentials(private_key="-----BEGIN OPENSSH PRIVATE KEY-----\nnope\n"),
                          protocol="sftp", port=22))


# --- collect --now after the collector service took the files ----------------------------------------


def test_collect_now_after_the_service_collected_the_files_says_so_with_when(cli, runtime, tmp_path):
    root = tmp_path / "carrier"
    root.mkdir()
    for name in ("GAMMA_D_20261001.csv", "GAMMA_D_20261002.csv"):
        (root / name).write_text("cli,dialled,start,duration\n441632960001,4401,2026-10-01T09:00:00,6\n")
    collected_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    with ftp_server(root) as port:
        added = cli("sources", "add", "gamma-ftp", "--carrier", "gamma", "--protocol", "ftp", "--host", "127.0.0.1",
                    "--port", port, "--username", "carrier", "--password", "s3cret")
        assert added.exit_code == 0, added.output

        async def listing():  # what the collector service saw and remembered when it took the files
            remote = await connect(Endpoint("gamma-ftp", "ftp", "127.0.0.1", port, "carrier",
                                            Credentials(password="s3cret"), timeout=3.0))
            try:
                return await remote.list_files(".")
            finally:
                await remote.close()

        with runtime.database.transaction() as session:
            for i, entry in enumerate(asyncio.run(listing())):
                session.add(CollectedFile(source="gamma-ftp", path=entry.path, size=entry.size, mtime=entry.mtime,
                                          fingerprint=f"{i}" * 64, file_id=f"file-{i}",
                                          collected_at=collected_at - timedelta(minutes=1 - i)))
        now = cli("collect", "gamma-ftp", "--now")
    assert now.exit_code == 0, now.output
    at = collected_at.astimezone(LONDON)
    assert f"gamma-ftp: 0 new file(s); 2 file(s) on the server were already collected from this source, the last " \
           f"at {at:%H:%M}" in now.stdout or f"the last at {at:%Y-%m-%d %H:%M}" in now.stdout
    assert "(the collector service polls it every 300s; a poll fetches only new or changed files)" in now.stdout
    assert "see 'cdrflow files --carrier gamma' and 'cdrflow sources status'" in now.stdout
    assert "0 file(s) collected" not in now.stdout


def test_collect_now_says_when_no_file_on_the_server_matches_the_rules():
    result = PollResult("gamma-ftp", listed=0)
    assert collect_summary("gamma-ftp", "gamma", 300, result, EarlierCollection(0, None), LONDON) == (
        "gamma-ftp: 0 file(s) collected: no file on the server matches the source's rules (see 'cdrflow sources "
        "list' for its directory and rules)")


def test_the_time_of_an_earlier_collection_is_the_operators_clock_with_the_date_when_not_today():
    result = PollResult("gamma-ftp", listed=3, already_collected=["a.csv", "b.csv", "c.csv"])
    last = datetime(2026, 10, 1, 13, 5, tzinfo=UTC)  # 14:05 in London (BST)
    today = collect_summary("gamma-ftp", "gamma", 60, result, EarlierCollection(3, last), LONDON,
                            now=datetime(2026, 10, 1, 20, 0, tzinfo=UTC))
    assert "3 file(s) on the server were already collected from this source, the last at 14:05 " in today
    earlier = collect_summary("gamma-ftp", "gamma", 60, result, EarlierCollection(3, last), LONDON,
                              now=datetime(2026, 10, 3, 9, 0, tzinfo=UTC))
    assert "the last at 2026-10-01 14:05 " in earlier


def test_collect_now_that_fetched_files_still_says_how_many():
    result = PollResult("gamma-ftp", fetched=[{"file_id": "f1"}, {"file_id": "f2"}], listed=2)
    assert collect_summary("gamma-ftp", "gamma", 300, result, EarlierCollection(0, None), LONDON) == \
        "gamma-ftp: 2 file(s) collected"


def test_a_database_away_at_start_up_skips_the_key_check_rather_than_stopping_the_collector(tmp_path):
    away = Runtime(Settings(data_dir=tmp_path, database_url="postgresql+psycopg://cdrflow@127.0.0.1:9/cdrflow"),
                   "collector")
    with capture_logs() as logs:
        check_secret_key(away)  # the service then waits for the database, as it does for polls
    assert [entry["event"] for entry in logs] == ["secret_key_check_skipped"]
    away.database.dispose()
