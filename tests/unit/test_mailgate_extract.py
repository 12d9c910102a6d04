"""Finding the billing files in a mail message (services/mailgate/extract.py): pure, bytes in."""

from __future__ import annotations

import base64
import gzip
import io
import quopri
import struct
import zipfile
from email.message import EmailMessage

import pytest

from services.mailgate.extract import Limits, MessageRefused, extract

LIMITS = Limits(max_files=10, max_unpacked=1_000_000)
CDR = b"cli,dialled,start,duration,cost\n+441632960001,01174960123,2026-10-01T09:15:00,125,0.0030\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def message(body: str = "Please find attached.") -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "billing@gamma.example", "gamma.cdrs@cdr.example.net", "CDRs"
    m.set_content(body)
    return m


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def names(raw: bytes, limits: Limits = LIMITS) -> list[str]:
    return [f.name for f in extract(raw, limits).files]


def test_a_plain_attachment_is_a_file_and_the_body_is_not():
    m = message()
    m.add_attachment(CDR, maintype="text", subtype="csv", filename="gamma-20261001.csv")
    found = extract(m.as_bytes(), LIMITS)
    assert [(f.name, f.data) for f in found.files] == [("gamma-20261001.csv", CDR)]
    assert found.ignored == []


def test_the_members_of_a_zip_attachment_are_files_and_say_where_they_came_from():
    m = message()
    m.add_attachment(zipped({"daily/a.csv": CDR, "b.csv": CDR + b"x", "empty/": b""}), maintype="application",
                     subtype="zip", filename="october.zip")
    files = extract(m.as_bytes(), LIMITS).files
    assert [(f.name, f.container, f.position) for f in files] == [
        ("a.csv", "october.zip", "2/daily/a.csv"), ("b.csv", "october.zip", "2/b.csv")]


def test_a_gzip_attachment_is_unpacked_under_its_name_without_gz():
    m = message()
    m.add_attachment(gzip.compress(CDR), maintype="application", subtype="gzip", filename="gamma-20261001.csv.gz")
    files = extract(m.as_bytes(), LIMITS).files
    assert [(f.name, f.data) for f in files] == [("gamma-20261001.csv", CDR)]


def test_a_zip_inside_a_zip_is_opened_too():
    m = message()
    m.add_attachment(zipped({"inner.zip": zipped({"deep.csv": CDR})}), maintype="application", subtype="zip",
                     filename="outer.zip")
    assert names(m.as_bytes()) == ["deep.csv"]


def test_the_attachments_of_a_forwarded_message_are_files():
    inner = message("Original from the carrier")
    inner.add_attachment(CDR, maintype="text", subtype="csv", filename="forwarded.csv")
    outer = message("FYI, forwarding")
    outer.add_attachment(inner)  # message/rfc822
    found = extract(outer.as_bytes(), LIMITS)
    assert [f.name for f in found.files] == ["forwarded.csv"]


def forwarded_as(encoding: str, inner: EmailMessage) -> bytes:
    """A message forwarding ``inner`` as a message/rfc822 part in ``encoding``, as mail programs and
    command-line senders write it (EmailMessage itself only writes 7bit/8bit ones)."""
    raw = inner.as_bytes()
    body = {"base64": base64.encodebytes, "quoted-printable": quopri.encodestring, "8bit": lambda b: b}[encoding](raw)
    return (b"From: ops@reseller.example\r\nTo: gamma.cdrs@cdr.example.net\r\nSubject: Fwd: CDRs\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"FWD\"\r\n\r\n"
            b"--FWD\r\nContent-Type: text/plain\r\n\r\nForwarding the carrier's mail.\r\n"
            b"--FWD\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: " + encoding.encode()
            + b"\r\nContent-Disposition: attachment; filename=\"Fwd CDRs.eml\"\r\n\r\n" + body + b"\r\n--FWD--\r\n")


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable", "8bit"])
def test_a_forwarded_message_is_opened_whatever_its_transfer_encoding(encoding):
    inner = message("Original from the carrier")
    inner.add_attachment(CDR, maintype="text", subtype="csv", filename="forwarded.csv")
    [found] = extract(forwarded_as(encoding, inner), LIMITS).files
    assert (found.name, found.data) == ("forwarded.csv", CDR)


def test_a_forwarded_message_whose_base64_is_damaged_says_so():
    inner = message()
    inner.add_attachment(CDR, maintype="text", subtype="csv", filename="forwarded.csv")
    raw = forwarded_as("base64", inner).replace(b"\r\n--FWD--", b"*!\r\n--FWD--")
    with pytest.raises(MessageRefused, match=r"forwarded message Fwd CDRs.eml can't be opened: its base64"):
        extract(raw, LIMITS)


def test_an_attachment_whose_base64_is_damaged_says_so_rather_than_taking_half_a_file():
    m = message()
    m.add_attachment(CDR, maintype="text", subtype="csv", filename="cdrs.csv")
    raw = m.as_bytes().replace(b"\n\n--", b"@@\n\n--")
    with pytest.raises(MessageRefused, match=r"attachment cdrs.csv can't be opened: its base64 encoding is damaged"):
        extract(raw, LIMITS)


def test_a_text_attachment_that_mentions_message_rfc822_is_taken_byte_for_byte():
    text = b"Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nnot a header block\n"
    m = message()
    m.add_attachment(text, maintype="text", subtype="plain", filename="notes.txt", cte="8bit")
    assert [f.data for f in extract(m.as_bytes(), LIMITS).files] == [text]


def test_a_forwarded_eml_attachment_is_opened_like_a_forwarded_message():
    inner = message()
    inner.add_attachment(CDR, maintype="text", subtype="csv", filename="in-eml.csv")
    outer = message()
    outer.add_attachment(inner.as_bytes(), maintype="application", subtype="octet-stream", filename="Fwd.eml")
    assert names(outer.as_bytes()) == ["in-eml.csv"]


def test_signature_images_and_inline_graphics_are_ignored_with_a_reason():
    m = message()
    m.add_alternative("<p>Regards<img src='cid:logo1'></p>", subtype="html")
    html = m.get_payload()[1]
    html.add_related(PNG, maintype="image", subtype="png", cid="<logo1>", filename="logo.png")
    m.add_attachment(PNG, maintype="image", subtype="png", filename="linkedin.png")
    m.add_attachment(b"BEGIN:VCARD\r\nEND:VCARD\r\n", maintype="text", subtype="vcard", filename="me.vcf")
    m.add_attachment(CDR, maintype="text", subtype="csv", filename="real.csv")
    found = extract(m.as_bytes(), LIMITS)
    assert [f.name for f in found.files] == ["real.csv"]
    ignored = {p.name: p.reason for p in found.ignored}
    assert set(ignored) == {"logo.png", "linkedin.png", "me.vcf"}
    assert "image" in ignored["linkedin.png"] and "not a billing file" in ignored["linkedin.png"]


def test_an_inline_part_referenced_by_content_id_is_ignored_even_if_it_is_not_an_image():
    m = message()
    m.add_attachment(b"<svg/>", maintype="application", subtype="octet-stream", filename="sig.bin",
                     disposition="inline", cid="<sig@x>")
    m.add_attachment(CDR, maintype="text", subtype="csv", filename="real.csv")
    found = extract(m.as_bytes(), LIMITS)
    assert [f.name for f in found.files] == ["real.csv"]
    assert "Content-ID" in found.ignored[0].reason


def test_an_image_inside_a_zip_is_not_taken_either():
    m = message()
    m.add_attachment(zipped({"a.csv": CDR}), maintype="application", subtype="zip", filename="a.zip")
    m.add_attachment(PNG, maintype="application", subtype="octet-stream", filename="image001.png")
    assert names(m.as_bytes()) == ["a.csv"]


def test_an_empty_attachment_is_ignored_not_taken():
    m = message()
    m.add_attachment(b"", maintype="text", subtype="csv", filename="empty.csv")
    found = extract(m.as_bytes(), LIMITS)
    assert found.files == [] and "empty" in found.ignored[0].reason


def test_a_zip_bomb_is_refused_naming_the_attachment_and_the_limit():
    m = message()
    m.add_attachment(zipped({"bomb.csv": b"0" * 5_000_000}), maintype="application", subtype="zip",
                     filename="bomb.zip")
    with pytest.raises(MessageRefused, match=r"bomb\.zip unpacks to more than 1000000 bytes \(a zip bomb\?\)") as exc:
        extract(m.as_bytes(), LIMITS)
    assert exc.value.code == 552


def test_a_zip_member_that_lies_about_its_size_is_still_stopped():
    archive = bytearray(zipped({"lie.csv": b"0" * 5_000_000}))
    # Rewrite the declared uncompressed size (local header and central directory) to 10 bytes.
    local = archive.find(b"PK\x03\x04")
    archive[local + 22:local + 26] = struct.pack("<I", 10)
    central = archive.find(b"PK\x01\x02")
    archive[central + 24:central + 28] = struct.pack("<I", 10)
    m = message()
    m.add_attachment(bytes(archive), maintype="application", subtype="zip", filename="lie.zip")
    with pytest.raises(MessageRefused, match=r"lie\.zip"):
        extract(m.as_bytes(), LIMITS)


def test_a_gzip_bomb_is_refused():
    m = message()
    m.add_attachment(gzip.compress(b"0" * 5_000_000), maintype="application", subtype="gzip", filename="b.csv.gz")
    with pytest.raises(MessageRefused, match="a zip bomb"):
        extract(m.as_bytes(), LIMITS)


def test_the_unpacked_limit_counts_all_attachments_of_the_message_together():
    m = message()
    for i in range(3):
        m.add_attachment(gzip.compress(b"1" * 400_000), maintype="application", subtype="gzip",
                         filename=f"part{i}.csv.gz")
    with pytest.raises(MessageRefused, match="part2.csv.gz unpacks to more than"):
        extract(m.as_bytes(), LIMITS)


def test_more_files_than_the_limit_refuse_the_message_saying_what_to_do():
    m = message()
    m.add_attachment(zipped({f"{i}.csv": CDR for i in range(11)}), maintype="application", subtype="zip",
                     filename="many.zip")
    with pytest.raises(MessageRefused, match=r"more than 10 billing files in one message: refused; send them in "
                                             r"several messages"):
        extract(m.as_bytes(), LIMITS)


def test_a_damaged_zip_refuses_the_whole_message():
    m = message()
    m.add_attachment(b"PK\x03\x04 not really a zip", maintype="application", subtype="zip", filename="bad.zip")
    with pytest.raises(MessageRefused, match=r"attachment bad\.zip can't be unpacked .* send an undamaged copy"):
        extract(m.as_bytes(), LIMITS)


def test_a_password_protected_zip_member_is_refused_with_the_reason():
    archive = bytearray(zipped({"secret.csv": CDR}))
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = archive.find(signature) + flag_offset
        archive[at] |= 0x1
    m = message()
    m.add_attachment(bytes(archive), maintype="application", subtype="zip", filename="locked.zip")
    with pytest.raises(MessageRefused, match="password-protected"):
        extract(m.as_bytes(), LIMITS)


def test_forwarding_nested_too_deep_is_refused():
    inner = message()
    inner.add_attachment(CDR, maintype="text", subtype="csv", filename="x.csv")
    for _ in range(5):
        outer = message()
        outer.add_attachment(inner)
        inner = outer
    with pytest.raises(MessageRefused, match="forwarded more than 4 deep"):
        extract(inner.as_bytes(), LIMITS)


def test_positions_are_stable_so_a_repeat_extraction_names_the_same_files():
    m = message()
    m.add_attachment(zipped({"a.csv": CDR, "b.csv": CDR}), maintype="application", subtype="zip", filename="z.zip")
    m.add_attachment(CDR, maintype="text", subtype="csv", filename="c.csv")
    raw = m.as_bytes()
    first = [(f.position, f.data) for f in extract(raw, LIMITS).files]
    assert first == [(f.position, f.data) for f in extract(raw, LIMITS).files]
    assert len({p for p, _ in first}) == 3


def test_checking_without_keeping_finds_the_same_files_and_sizes_but_holds_no_bytes():
    m = message()
    m.add_attachment(zipped({"a.csv": CDR, "inner.zip": zipped({"b.csv": CDR * 3})}), maintype="application",
                     subtype="zip", filename="z.zip")
    m.add_attachment(gzip.compress(CDR * 2), maintype="application", subtype="gzip", filename="c.csv.gz")
    kept, checked = extract(m.as_bytes(), LIMITS), extract(m.as_bytes(), LIMITS, keep=False)
    assert [(f.name, f.position, f.size) for f in checked.files] == \
        [(f.name, f.position, f.size) for f in kept.files] == \
        [("a.csv", "2/a.csv", len(CDR)), ("b.csv", "2/inner.zip/b.csv", 3 * len(CDR)),
         ("c.csv", "3/c.csv", 2 * len(CDR))]
    assert all(f.data == b"" for f in checked.files)
    assert [f.data for f in kept.files] == [CDR, CDR * 3, CDR * 2]


def test_a_zip_bomb_is_refused_when_only_checking_too():
    m = message()
    m.add_attachment(zipped({"bomb.csv": b"0" * 5_000_000}), maintype="application", subtype="zip",
                     filename="bomb.zip")
    with pytest.raises(MessageRefused, match="a zip bomb"):
        extract(m.as_bytes(), LIMITS, keep=False)


def test_outlooks_tnef_wrapping_is_refused_asking_for_plain_attachments():
    m = message()
    m.add_attachment(b"\x78\x9f\x3e\x22rest", maintype="application", subtype="ms-tnef", filename="winmail.dat")
    with pytest.raises(MessageRefused, match="winmail.dat is Outlook's TNEF .* send the files as plain attachments"):
        extract(m.as_bytes(), LIMITS)
