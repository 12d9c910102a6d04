"""Upgrading a database with files and calls from before: the oldest file of each content, of each
carrier/name and of each call claims it, so a copy or a call re-sent after the upgrade is still caught."""

from datetime import UTC, datetime

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from cdrflow.db import Database, migrate
from cdrflow.db.models import CallUsageClaim, FileNameClaim, FingerprintClaim
from cdrflow.db.session import MIGRATIONS, make_engine
from services.invoicer.overlap import usage_key

FP = "a" * 64


def upgrade(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = make_engine(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


def test_files_from_before_the_upgrade_get_their_claims_oldest_first(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0004")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO carriers (code, name, file_format) VALUES ('gamma', 'Gamma', 'generic-cdr')"))
        for file_id, received, status in (("f2", "2026-10-02 00:00:00", "held"), ("f1", "2026-10-01 00:00:00", "rated")):
            conn.execute(text(
                "INSERT INTO files (id, fingerprint, carrier, kind, period, direction, original_name, size, channel,"
                " received_at, status, updated_at) VALUES (:id, :fp, 'gamma', 'cdr', 'daily', 'outbound', 'g.csv', 1,"
                " 'upload', :at, :status, :at)"), {"id": file_id, "fp": FP, "at": received, "status": status})
        for file_id in ("f2", "f1"):  # the same call in both files: the older file's claims it
            conn.execute(text(
                "INSERT INTO calls (file_id, row, carrier, direction, cli, dialled, start, duration, answered, status)"
                " VALUES (:f, 2, 'gamma', 'outbound', '441632960001', '441174960123', '2026-10-01 09:15:00.000000',"
                " 125, 1, 'rated')"), {"f": file_id})
    engine.dispose()
    migrate(url)
    database = Database(url)
    with database.transaction() as session:
        assert session.get(FingerprintClaim, FP).file_id == "f1"
        assert session.get(FileNameClaim, ("gamma", "g.csv")).file_id == "f1"
        key = usage_key("gamma", "441632960001", "441174960123", datetime(2026, 10, 1, 9, 15, tzinfo=UTC), 125)
        claim = session.get(CallUsageClaim, key)
        assert (claim.file_id, claim.row) == ("f1", 2)
        assert session.execute(text("SELECT count(*) FROM call_usage_claims")).scalar() == 1
        rows = dict(session.execute(text("SELECT id, content_fingerprint || '/' || coalesce(hold_reason, '-') FROM files")).all())
        assert rows == {"f1": f"{FP}/-", "f2": f"{FP}/duplicate"}
        assert session.execute(text("SELECT hold_same_name FROM carriers")).scalar() == 0
    database.dispose()
