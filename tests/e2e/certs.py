"""A collector process that serves TLS, with the throwaway PKI of tests/pki.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
from pki import Pki, make_pki
from processes import Collector, start_collector

__all__ = ["Pki", "make_pki", "start_tls_collector", "tls_args"]


def tls_args(pki: Pki, *, mutual: bool = False) -> list[str]:
    args = ["--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)]
    if mutual:
        args += ["--tls-client-ca", str(pki.ca.cert)]
    return args


def start_tls_collector(
    tmp: Path, db_url: str, pki: Pki, extra: Sequence[str] = (), *, mutual: bool = False, name: str = "collector"
) -> Collector:
    """`rmsfleet-collector serve` with TLS (and client certificates when `mutual`), waited for
    with a TLS health check."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert.read_bytes(),
        private_key=pki.client.key.read_bytes() if mutual else None,
        certificate_chain=pki.client.cert.read_bytes() if mutual else None,
    )
    return start_collector(
        tmp,
        db_url,
        [*tls_args(pki, mutual=mutual), *extra],
        name=name,
        credentials=credentials,
        # gRPC's own log (handshake failures) at its default verbosity, whatever the caller's.
        unset_env=("GRPC_VERBOSITY",),
    )
