import hashlib
import io

import pytest

from cdrflow.errors import BadFileError, FileStoreError
from cdrflow.filestore import FileStore


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
