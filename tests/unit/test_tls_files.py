"""The collector's TLS files (collector/tls.py): checked at start with one line naming the file,
described in the start-up log, and re-read when they change (a bad new set is ignored)."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest
from pki import Pki, make_pki

from rmsfleet.collector.tls import (
    ReloadingServerCredentials,
    TlsFileError,
    TlsFiles,
    describe_certificate,
    load_material,
)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def test_a_certificate_with_its_key_and_a_client_ca_load(pki: Pki) -> None:
    material = load_material(TlsFiles(pki.server.cert, pki.server.key, pki.ca.cert))
    assert material.cert == pki.server.cert.read_bytes()
    assert material.client_ca == pki.ca.cert.read_bytes()


def test_a_key_of_another_certificate_is_one_line_naming_both_files(pki: Pki) -> None:
    with pytest.raises(TlsFileError) as refused:
        load_material(TlsFiles(pki.server.cert, pki.client.key))
    message = str(refused.value)
    assert "\n" not in message
    assert f"--tls-cert {pki.server.cert} / --tls-key {pki.client.key}" in message
    assert "matching private key" in message


def test_a_missing_file_is_named(pki: Pki, tmp_path: Path) -> None:
    absent = tmp_path / "absent.pem"
    with pytest.raises(TlsFileError, match=f"{absent}: cannot read"):
        load_material(TlsFiles(absent, pki.server.key))


def test_a_client_ca_that_is_not_pem_is_named(pki: Pki, tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsFileError, match=f"--tls-client-ca {junk}: not PEM CA certificates"):
        load_material(TlsFiles(pki.server.cert, pki.server.key, junk))


def test_the_log_line_names_subject_alternative_names_issuer_and_expiry(pki: Pki) -> None:
    described = describe_certificate(pki.server.cert)
    assert described.startswith(f"certificate {pki.server.cert}: subject CN=collector")
    assert "(DNS:localhost, IP:127.0.0.1)" in described
    assert "issued by CN=rmsfleet fleet test CA" in described
    expiry = described.rsplit("valid until ", 1)[1]
    assert expiry[:4].isdigit() and expiry.endswith("+00:00")


def test_a_file_that_is_no_certificate_is_described_by_its_name_only(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("junk")
    assert describe_certificate(junk) == f"certificate {junk}"
    assert describe_certificate(tmp_path / "absent.pem") == f"certificate {tmp_path / 'absent.pem'}"


def _fetch(credentials: ReloadingServerCredentials) -> grpc.ServerCertificateConfiguration | None:
    return credentials._fetch()


def _replace(target: Path, source: Path) -> None:
    """Write `source` over `target` the way certificate tools do: a new file renamed over."""
    fresh = target.with_suffix(".new")
    shutil.copyfile(source, fresh)
    fresh.replace(target)


def test_changed_files_are_served_and_a_broken_change_keeps_the_old_set(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tmp_path / "served.pem", tmp_path / "served.key"
    shutil.copyfile(pki.server.cert, cert)
    shutil.copyfile(pki.server.key, key)
    reloading = ReloadingServerCredentials(TlsFiles(cert, key))
    assert _fetch(reloading) is None, "unchanged files: gRPC keeps what it has"

    renewed = pki.ca.issue("collector-renewed", server=True)
    _replace(cert, renewed.cert)
    _replace(key, renewed.key)
    assert _fetch(reloading) is not None
    assert reloading._material.cert == renewed.cert.read_bytes()
    assert _fetch(reloading) is None

    # Half a renewal: a new certificate with the old key. It is refused, the renewed set stays.
    _replace(cert, pki.server.cert)
    with caplog.at_level("ERROR"):
        assert _fetch(reloading) is None
    assert reloading._material.cert == renewed.cert.read_bytes()
    assert "keeping the current certificate" in caplog.text
