"""The collector's TLS: server credentials from PEM files, optionally requiring client
certificates (mTLS), reloaded when the files change so certificates rotate without a restart.

The files are checked with the standard library's `ssl` before gRPC sees them, so a bad file is
one clear line at start ("--tls-key: the key does not match the certificate") instead of every
handshake failing later."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509

from rmsfleet.collector.file_stamp import FileStamp, file_stamp

log = logging.getLogger(__name__)


class TlsFileError(ValueError):
    """A TLS file that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) if self.client_ca is None else (self.cert, self.key, self.client_ca)


@dataclass(frozen=True, slots=True)
class _Material:
    stamp: FileStamp
    cert: bytes
    key: bytes
    client_ca: bytes | None


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsFileError(f"{flag} {path}: cannot read: {exc.strerror or exc}") from None


def load_material(files: TlsFiles) -> _Material:
    """Read and check the files. Raises TlsFileError."""
    try:
        stamp = file_stamp(*files.paths)
    except OSError as exc:
        raise TlsFileError(f"{exc.filename}: cannot read: {exc.strerror or exc}") from None
    cert = _read(files.cert, "--tls-cert")
    key = _read(files.key, "--tls-key")
    client_ca = _read(files.client_ca, "--tls-client-ca") if files.client_ca else None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as exc:
        raise TlsFileError(
            f"--tls-cert {files.cert} / --tls-key {files.key}: not a PEM certificate chain with its matching "
            f"private key ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise TlsFileError(f"--tls-cert {files.cert}: cannot read: {exc.strerror or exc}") from None
    if files.client_ca is not None:
        try:
            context.load_verify_locations(cafile=files.client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise TlsFileError(
                f"--tls-client-ca {files.client_ca}: not PEM CA certificates ({getattr(exc, 'reason', None) or exc})"
            ) from None
    return _Material(stamp, cert, key, client_ca)


def describe_certificate(path: Path) -> str:
    """`certificate FILE: subject CN=..., issued by CN=..., valid until ...` for the start-up log,
    so an operator whose agents fail certificate verification can see which CA they must trust.
    Describes the first certificate of the chain; says less when the file cannot be decoded."""
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return f"certificate {path}"
    alt_names: list[str] = []
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        alt_names = [f"DNS:{n}" for n in names.get_values_for_type(x509.DNSName)]
        alt_names += [f"IP:{ip}" for ip in names.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    alt = ", ".join(alt_names)
    return (
        f"certificate {path}: subject {certificate.subject.rfc4514_string() or '?'}"
        f"{f' ({alt})' if alt else ''}, issued by {certificate.issuer.rfc4514_string() or '?'}, "
        f"valid until {certificate.not_valid_after_utc.isoformat()}"
    )


class ReloadingServerCredentials:
    """gRPC server credentials whose certificate is re-read when its files change. gRPC asks the
    fetcher at each new connection; the files are re-read only when a file's mtime, size or inode
    changed, and a new set that fails the checks is logged and ignored (the old one stays)."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._material = load_material(files)

    def _configuration(self, material: _Material) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(material.key, material.cert)], material.client_ca)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                if file_stamp(*self.files.paths) == self._material.stamp:
                    return None
                fresh = load_material(self.files)
            except (OSError, TlsFileError) as exc:
                log.error("TLS files changed but cannot be used, keeping the current certificate: %s", exc)
                return None
            self._material = fresh
        log.info("TLS files changed: now serving %s", describe_certificate(self.files.cert))
        return self._configuration(fresh)

    def credentials(self) -> grpc.ServerCredentials:
        # gRPC's fetcher may return None ("no change"); the stubs' type says otherwise.
        fetch: Callable[[], grpc.ServerCertificateConfiguration] = self._fetch  # type: ignore[assignment]
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(self._material), fetch, require_client_authentication=self.files.mutual
        )
