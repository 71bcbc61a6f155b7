"""A second gRPC listener that serves the health service alone, in plaintext.

Kubernetes' gRPC probes cannot speak TLS (docs/deploy.md), so without this a collector that serves
TLS to agents has no probe port, and the manifests used to run the report port in plaintext.
This listener shares the main server's HealthServicer (the same statuses, set by the health
watch) and registers nothing else: no reports, queries, node keys or reflection cross it, so it
needs no TLS and no loopback rule. Its calls are limited per address like the main port's."""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from rmsfleet.collector.limits import PeerLimits

log = logging.getLogger(__name__)

# Probes are a few calls a minute per pod; a handful of threads is plenty, and a flood of probes
# cannot take workers from the main port.
HEALTH_WORKERS = 4


def start_health_listener(
    address: str, servicer: health.HealthServicer, limits: PeerLimits, options: list[tuple[str, int]]
) -> tuple[grpc.Server, int]:
    """Serve `servicer` alone on `address` (plaintext); returns the started server and its port.
    Raises OSError when the address cannot be bound."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=HEALTH_WORKERS, thread_name_prefix="health"),
        maximum_concurrent_rpcs=64,
        interceptors=[limits],
        options=options,
    )
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"--health-listen {address}: cannot listen (in use, or not an address of this host)")
    server.start()
    log.info("gRPC health service alone, plaintext, on %s (port %d), for probes that cannot speak TLS", address, port)
    return server, port
