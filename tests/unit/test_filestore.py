import hashlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdrflow.errors import BadFileError, FileStoreError
from cdrflow.filestore import TEMP_MAX_AGE_S, FileStore


def test_stored_file_reads_back_byte_for_byte(tmp_path):
    store = FileStore(tmp_path)
    data = bytes(range(256)) * 5000
    stored = store.put_stream(io.BytesIO(data))
    assert stored.fingerprint == hashlib.sha256(data).hexdigest()
    assert stored.size == len(data)
    assert store.read_bytes(stored.fingerprint) == data


def test_same_content_has_the_same_address(tmp_path):
    store = FileStore(tmp_path)
    assert store.put_bytes(b"a,b\n").fingerprint == store.put_bytes(b"a,b\n").fingerprint


def test_empty_file_is_refused_and_leaves_nothing(tmp_path):
    store = FileStore(tmp_path)
    with pytest.raises(BadFileError, match="empty"):
        store.put_bytes(b"")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_failure_mid_stream_leaves_no_partial_file(tmp_path):
    store = FileStore(tmp_path)

    def chunks():
        yield b"first chunk"
        raise ConnectionError("peer went away")

    with pytest.raises(ConnectionError):
        store.put_chunks(chunks())
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_path_traversal_fingerprint_is_refused(tmp_path):
    with pytest.raises(FileStoreError, match="not a SHA-256"):
        FileStore(tmp_path).path_of("../../etc/passwd")


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def temp_file(store: FileStore, pid: int, age_s: float = 0) -> Path:
    path = store.root / "tmp" / f"incoming-{pid}-abc123_x"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half an upload")
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def test_a_temp_file_is_named_after_its_writers_pid(tmp_path):
    store = FileStore(tmp_path)
    names = []

    def chunks():
        yield b"first chunk"
        names.extend(p.name for p in (tmp_path / "tmp").iterdir())
        yield b"second chunk"

    store.put_chunks(chunks())
    [name] = names
    assert name.startswith(f"incoming-{os.getpid()}-")


def test_sweep_removes_a_temp_file_whose_writer_is_dead(tmp_path):
    store = FileStore(tmp_path)
    orphan = temp_file(store, dead_pid())
    assert store.sweep_temporary() == 1
    assert not orphan.exists()


def test_sweep_keeps_a_temp_file_of_a_live_writer(tmp_path):
    store = FileStore(tmp_path)
    live = temp_file(store, os.getpid())
    assert store.sweep_temporary() == 0
    assert live.read_bytes() == b"half an upload"


def test_sweep_mid_upload_leaves_the_upload_to_finish(tmp_path):
    store = FileStore(tmp_path)
    swept = []

    def chunks():
        yield b"first chunk,"
        swept.append(store.sweep_temporary())
        yield b"second chunk"

    stored = store.put_chunks(chunks())
    assert swept == [0]
    assert store.read_bytes(stored.fingerprint) == b"first chunk,second chunk"


def test_sweep_removes_a_temp_file_older_than_a_day_even_if_its_pid_is_running(tmp_path):
    store = FileStore(tmp_path)
    old = temp_file(store, os.getpid(), age_s=TEMP_MAX_AGE_S + 60)
    recent = temp_file(store, 1)
    assert store.sweep_temporary() == 1
    assert not old.exists() and recent.exists()


def test_sweep_removes_only_stale_temp_files_named_without_a_pid(tmp_path):
    store = FileStore(tmp_path)
    (tmp_path / "tmp").mkdir()
    legacy_recent, legacy_old = tmp_path / "tmp" / "incoming-k2j4h1x9", tmp_path / "tmp" / "incoming-q8w7e6r5"
    for path in (legacy_recent, legacy_old):
        path.write_bytes(b"x")
    then = time.time() - 2 * TEMP_MAX_AGE_S
    os.utime(legacy_old, (then, then))
    assert store.sweep_temporary() == 1
    assert legacy_recent.exists() and not legacy_old.exists()


def test_sweep_of_a_store_never_written_removes_nothing(tmp_path):
    assert FileStore(tmp_path / "new").sweep_temporary() == 0


def test_a_service_sweeps_its_file_store_at_start(tmp_path):
    from cdrflow.runtime import Runtime
    from cdrflow.settings import Settings

    settings = Settings(data_dir=tmp_path)
    orphan = temp_file(FileStore(settings.file_store_dir), dead_pid())
    Runtime(settings, "admin").database.dispose()
    assert not orphan.exists()


def test_put_many_stores_each_content_at_its_address_in_order(tmp_path):
    store = FileStore(tmp_path)
    contents = [b"header\n", b"a,b\n1,2\n", b"header\n", b"x" * 100_000]  # a repeat among them
    stored = store.put_many(contents)
    assert [s.fingerprint for s in stored] == [hashlib.sha256(c).hexdigest() for c in contents]
    assert [store.path_of(s.fingerprint).read_bytes() for s in stored] == contents
    assert list((tmp_path / "tmp").iterdir()) == []  # no temporary file left behind


def test_put_many_with_an_empty_content_stores_none_of_them(tmp_path):
    store = FileStore(tmp_path)
    with pytest.raises(BadFileError, match="empty"):
        store.put_many([b"one", b"", b"three"])
    assert not store.path_of(hashlib.sha256(b"one").hexdigest()).exists()
    assert list((tmp_path / "tmp").iterdir()) == []
