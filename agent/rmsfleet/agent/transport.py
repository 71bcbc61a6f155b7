"""The agent's gRPC links to collectors: one channel per collector address, plaintext or TLS
(docs/security.md), a deadline on every call, calls that a stop request cancels, and failures
turned into a status code name plus a sentence an operator can act on."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from rmsfleet.agent.config import SenderConfig, TlsConfig
from rmsfleet.agent.enrollment import EnrollCredential
from rmsfleet.v1 import inventory_pb2, inventory_pb2_grpc

# How often a waiting call looks at the stop event: the bound on how long SIGTERM waits for an
# RPC in flight.
_POLL_SECONDS = 0.05


class TransportError(Exception):
    """A link cannot be set up (an unreadable TLS file); the message is one line."""


class Stopped(Exception):
    """The agent was asked to stop while a call was in flight; the call was cancelled."""


@dataclass(frozen=True, slots=True)
class RpcFailure(Exception):
    """A failed call: the gRPC status code name and the collector's (or gRPC's) details."""

    code: str
    details: str

    def __str__(self) -> str:
        return f"{self.code}: {self.details}"


class Link(Protocol):
    """What the run loop needs from a collector connection (a fake in unit tests)."""

    address: str

    def report(self, request: inventory_pb2.ReportRequest, stop: threading.Event) -> inventory_pb2.ReportResponse: ...

    def enroll(self, host_id: str, credential: EnrollCredential, stop: threading.Event) -> str: ...

    def explain(self, failure: RpcFailure) -> str: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _TlsMaterial:
    root_certificates: bytes | None
    private_key: bytes | None
    certificate_chain: bytes | None


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TransportError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None


def read_tls_material(tls: TlsConfig) -> _TlsMaterial:
    """Read the TLS files once (at start: an unreadable file is a configuration error), checking
    with the standard library that the client certificate and key are PEM and belong together."""
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(tls.cert_file, tls.key_file)
        except ssl.SSLError as exc:
            raise TransportError(
                f"tls cert_file {tls.cert_file} / key_file {tls.key_file}: not a PEM certificate with its "
                f"matching private key ({exc.reason or exc})"
            ) from None
        except OSError as exc:
            raise TransportError(f"tls cert_file {tls.cert_file}: cannot read: {exc.strerror or exc}") from None
    if tls.ca_file is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=tls.ca_file)
        except ssl.SSLError as exc:
            raise TransportError(f"tls ca_file {tls.ca_file}: not PEM CA certificates ({exc.reason or exc})") from None
        except OSError as exc:
            raise TransportError(f"tls ca_file {tls.ca_file}: cannot read: {exc.strerror or exc}") from None
    return _TlsMaterial(
        root_certificates=_read(tls.ca_file, "tls ca_file"),
        private_key=_read(tls.key_file, "tls key_file"),
        certificate_chain=_read(tls.cert_file, "tls cert_file"),
    )


class GrpcLink:
    """One collector address. The channel connects lazily and reconnects by itself; its reconnect
    backoff is bounded by the sender's, so a collector that comes back is found by the next
    retry instead of after gRPC's own backoff (up to two minutes by default)."""

    def __init__(self, address: str, tls: TlsConfig, sender: SenderConfig, material: _TlsMaterial | None) -> None:
        self.address = address
        self.tls = tls
        self.plaintext = tls.plaintext_to(address)
        self._deadline = sender.rpc_deadline_seconds
        options: list[tuple[str, Any]] = [
            ("grpc.initial_reconnect_backoff_ms", max(100, int(sender.initial_backoff * 1000))),
            ("grpc.min_reconnect_backoff_ms", max(100, int(sender.initial_backoff * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(100, int(sender.max_backoff * 1000))),
        ]
        if self.plaintext:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            material = material or _TlsMaterial(None, None, None)
            credentials = grpc.ssl_channel_credentials(
                root_certificates=material.root_certificates,
                private_key=material.private_key,
                certificate_chain=material.certificate_chain,
            )
            self._channel = grpc.secure_channel(address, credentials, options=options)
        self._stub = inventory_pb2_grpc.InventoryServiceStub(self._channel)

    @property
    def transport(self) -> str:
        return "plaintext" if self.plaintext else "TLS"

    def report(self, request: inventory_pb2.ReportRequest, stop: threading.Event) -> inventory_pb2.ReportResponse:
        response: inventory_pb2.ReportResponse = self._call(self._stub.Report.future, request, stop)
        return response

    def enroll(self, host_id: str, credential: EnrollCredential, stop: threading.Event) -> str:
        """A node key for `host_id`: with the enrollment secret in the request, or with a scanner
        token as `authorization: Bearer TOKEN` metadata and no secret (docs/security.md). Only
        Enroll carries the token; reports go under each host's own node key."""
        request = inventory_pb2.EnrollRequest(host_id=host_id, enroll_secret=credential.secret)
        token = credential.token
        metadata = None if token is None else (("authorization", f"Bearer {token}"),)
        response: inventory_pb2.EnrollResponse = self._call(self._stub.Enroll.future, request, stop, metadata)
        if not response.node_key:
            raise RpcFailure("INTERNAL", "the collector answered the enrollment without a node key")
        return response.node_key

    def _call(
        self,
        start: Callable[..., Any],
        request: Any,
        stop: threading.Event,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> Any:
        future = start(request, timeout=self._deadline, metadata=metadata)
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        while not done.wait(_POLL_SECONDS):
            if stop.is_set():
                future.cancel()
                raise Stopped()
        try:
            return future.result()
        except grpc.FutureCancelledError:
            raise Stopped() from None
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = (exc.details() if hasattr(exc, "details") else None) or str(code)
            raise RpcFailure(code.name, details) from None

    def explain(self, failure: RpcFailure) -> str:
        """The failure in words, with what TLS problem it most likely is when the details show
        one (gRPC reports handshake failures as UNAVAILABLE with OpenSSL's reason inside)."""
        details = failure.details
        text = f"{failure.code}: {details}"
        ca = str(self.tls.ca_file) if self.tls.ca_file else "the system's root CAs"
        if "CERTIFICATE_VERIFY_FAILED" in details:
            return (
                f"the collector's TLS certificate is not trusted: it is not signed by a CA in {ca} "
                f"(tls ca_file / --tls-ca), or it has expired ({text})"
            )
        if any(sign in details for sign in ("Hostname Verification", "not in peer certificate", "Peer name")):
            host = self.address.rsplit(":", 1)[0]
            return f"the collector's TLS certificate does not name {host}: connect by a name it lists ({text})"
        if "WRONG_VERSION_NUMBER" in details or "Tls handshake failed" in details or "Ssl handshake failed" in details:
            return f"the TLS handshake with the collector failed: does it serve TLS on this port? ({text})"
        if failure.code == "UNAVAILABLE" and ("Socket closed" in details or "Connection reset" in details):
            if self.plaintext:
                hint = "if the collector serves TLS, give its CA with --tls-ca"
            elif self.tls.cert_file is None:
                hint = (
                    "if the collector requires client certificates (mutual TLS), give one with --tls-cert and --tls-key"
                )
            else:
                hint = "if the collector requires client certificates, it may not trust the CA that signed --tls-cert"
            return f"the collector closed the connection ({text}); {hint}"
        return text

    def close(self) -> None:
        self._channel.close()


def open_links(collectors: tuple[str, ...], tls: TlsConfig, sender: SenderConfig) -> list[GrpcLink]:
    """One link per collector address. Raises TransportError for an unreadable TLS file."""
    needs_tls = any(not tls.plaintext_to(address) for address in collectors)
    material = read_tls_material(tls) if needs_tls else None
    return [GrpcLink(address, tls, sender, material) for address in collectors]
