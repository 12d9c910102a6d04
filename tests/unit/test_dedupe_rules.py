"""The duplicate rules (pure) and the content fingerprint: what is held, and why."""

import bz2
import gzip
import io
import zipfile

import pytest

from cdrflow_app.demo import SAMPLES
from cdrflow.errors import BadFileError
from services.dedupe.decision import DUPLICATE, SAME_NAME, Accepted, Held, decide
from services.dedupe.fingerprint import content_fingerprint

CSV = (SAMPLES / "gamma-cdr-20261001.csv").read_bytes()


def zipped(data: bytes, member: str = "gamma-cdr-20261001.csv") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, data)
    return buf.getvalue()


def fingerprint(data: bytes) -> str:
    return content_fingerprint(io.BytesIO(data), "f.csv")


def test_new_content_is_accepted():
    assert decide([]) == Accepted()


def test_content_seen_before_is_held_with_every_earlier_file_oldest_first():
    held = decide(["a", "b"])
    assert held == Held(("a", "b"), DUPLICATE)
    assert held.reason == "Potential Duplicate: same content as 2 earlier file(s)"


def test_same_name_with_new_content_is_accepted_when_the_carrier_rule_is_off():
    assert decide([], ["a"], hold_same_name=False) == Accepted()


def test_same_name_with_new_content_is_held_as_same_name_when_the_carrier_rule_is_on():
    held = decide([], ["a"], hold_same_name=True)
    assert held == Held(("a",), SAME_NAME)
    assert held.reason.startswith("same name:")


def test_same_content_is_reported_as_a_duplicate_even_when_the_name_repeats_too():
    assert decide(["a"], ["b"], hold_same_name=True) == Held(("a",), DUPLICATE)


@pytest.mark.parametrize("pack", [gzip.compress, bz2.compress, zipped], ids=["gzip", "bzip2", "zip"])
def test_a_compressed_file_has_the_fingerprint_of_its_plain_content(pack):
    packed = pack(CSV)
    assert packed != CSV
    assert fingerprint(packed) == fingerprint(CSV)


def test_the_content_fingerprint_of_a_plain_file_is_the_sha256_of_its_bytes():
    import hashlib

    assert fingerprint(CSV) == hashlib.sha256(CSV).hexdigest()


def test_one_changed_byte_changes_the_fingerprint():
    assert fingerprint(gzip.compress(CSV.replace(b"125", b"126", 1))) != fingerprint(CSV)


def test_a_truncated_gzip_is_a_bad_file_not_a_silent_fingerprint():
    with pytest.raises(BadFileError, match="damaged or truncated"):
        fingerprint(gzip.compress(CSV)[:40])
