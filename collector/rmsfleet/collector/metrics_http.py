"""The /metrics HTTP server: plaintext, or TLS with the gRPC port's files (docs/security.md).

prometheus_client's own server wraps its listening socket in TLS, so the handshake runs in the
accepting loop: one client that connects and sends nothing stops /metrics for every scraper. Here
each connection gets a timeout and its handshake runs in that connection's own thread, TLS 1.2 is
the oldest version offered, client certificates are required when --tls-client-ca is set, and the
certificate files are re-read when they change (checked at each new connection), like gRPC's."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from rmsfleet.collector.tls import TlsFileError, TlsFiles, describe_certificate, load_material

log = logging.getLogger(__name__)

# A scraper sends its request at once; a connection silent for this long is closed.
CONNECTION_TIMEOUT = 10.0


def _stamp(files: TlsFiles) -> tuple[tuple[int, int, int], ...]:
    paths = [files.cert, files.key] + ([files.client_ca] if files.client_ca else [])
    return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in (p.stat() for p in paths))


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A TLS server context from the files (checked by tls.load_material first: one line naming
    the file on a bad one). Raises TlsFileError."""
    load_material(files)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key)
    if files.client_ca is not None:
        context.load_verify_locations(cafile=files.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class ReloadingContext:
    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._stamp = _stamp(files)
        self._context = server_context(files)

    def current(self) -> ssl.SSLContext:
        with self._lock:
            try:
                stamp = _stamp(self.files)
                if stamp != self._stamp:
                    self._context = server_context(self.files)
                    self._stamp = stamp
                    log.info("TLS files changed: /metrics now serves %s", describe_certificate(self.files.cert))
            except (OSError, TlsFileError, ssl.SSLError) as exc:
                log.error("TLS files changed but cannot be used for /metrics, keeping the current certificate: %s", exc)
            return self._context


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (one line per scrape every 30 s per Prometheus)."""


class MetricsServer(ThreadingWSGIServer):
    tls: ReloadingContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = self.socket.accept()
        connection.settimeout(CONNECTION_TIMEOUT)
        if self.tls is not None:
            # The handshake waits for the connection's own thread (finish_request).
            connection = self.tls.current().wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return connection, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):
                return  # a failed or silent handshake: this connection only
        super().finish_request(request, client_address)


def start_metrics_server(
    host: str, port: int, registry: CollectorRegistry, tls: TlsFiles | None
) -> tuple[MetricsServer, int]:
    """Serve /metrics on host:port in a daemon thread; returns the server and its bound port.
    Raises OSError when the address cannot be bound, TlsFileError for a bad TLS file."""

    class Server(MetricsServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host, port, make_wsgi_app(registry), Server, handler_class=_QuietHandler)
    if tls is not None:
        server.tls = ReloadingContext(tls)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server, server.server_port
