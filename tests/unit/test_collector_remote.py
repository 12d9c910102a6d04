"""The collector's protocol boundary without a network: TLS contexts, error translation, timestamps."""

from __future__ import annotations

import ssl

import asyncssh
import pytest

from services.collector.credentials import Credentials
from services.collector.errors import HostKeyError, SourceLoginError, SourceTimeoutError, SourceUnreachableError
from services.collector.remote import Endpoint, _mdtm_seconds, _ssh_error, _tls_context

ENDPOINT = Endpoint("gamma-sftp", "sftp", "sftp.gamma.example", 22, "reseller42",
                    Credentials(password="hunter2", private_key="-----BEGIN KEY-----", passphrase="open sesame"),
                    host_key="ssh-ed25519 AAAA", tls_ca="-----BEGIN CERTIFICATE-----")


def test_an_endpoint_never_shows_its_credentials_or_ca_in_repr():
    text = repr(ENDPOINT)
    assert "reseller42" in text
    for secret in ("hunter2", "BEGIN KEY", "open sesame", "BEGIN CERTIFICATE"):
        assert secret not in text


def test_ftps_verifies_chain_and_host_name_unless_the_source_opts_out():
    verified = _tls_context(True)
    assert (verified.verify_mode, verified.check_hostname) == (ssl.CERT_REQUIRED, True)
    opted_out = _tls_context(False)
    assert (opted_out.verify_mode, opted_out.check_hostname) == (ssl.CERT_NONE, False)


def test_a_ca_that_is_not_a_certificate_is_refused_when_the_context_is_built():
    with pytest.raises(ssl.SSLError):
        _tls_context(True, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")


@pytest.mark.parametrize("stamp, seconds", [("20261001123000", 1790857800), ("20261001123000.123", 1790857800)])
def test_mdtm_stamps_are_utc(stamp, seconds):
    assert _mdtm_seconds(stamp) == seconds


@pytest.mark.parametrize("exc, error_type, says", [
    (asyncssh.HostKeyNotVerifiable("no match"), HostKeyError, "cdrflow sources trust gamma-sftp"),
    (asyncssh.PermissionDenied("denied"), SourceLoginError, "login as 'reseller42' refused"),
    (asyncssh.KeyEncryptionError("bad passphrase"), SourceLoginError, "wrong passphrase"),
    (TimeoutError(), SourceTimeoutError, "did not answer within 30s"),
    (ConnectionRefusedError(111, "Connection refused"), SourceUnreachableError, "can't reach sftp.gamma.example:22"),
])
def test_ssh_failures_become_a_named_error_saying_what_to_do(exc, error_type, says):
    error = _ssh_error(ENDPOINT, exc, "log in")
    assert type(error) is error_type
    assert str(error).startswith("source gamma-sftp: ") and says in str(error)
    assert "hunter2" not in str(error) and "open sesame" not in str(error)
