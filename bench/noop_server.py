"""A do-nothing InventoryService: the baseline the collector is measured against.

`Report` answers an empty ReportResponse and does nothing else; everything else a real gRPC
server does per call (HTTP/2, request parsing into the generated message, handler dispatch,
response serialisation) still happens, so the gap between this server and the collector is what
the collector's own work costs.

Two flavours, because which one is faster per call depends on the grpcio release:
  --kind threadpool   grpc.server() on a ThreadPoolExecutor (the collector's model)
  --kind aio          grpc.aio.server() on one asyncio loop

Prints `READY <port>` on stdout once it accepts calls and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from concurrent import futures
from types import FrameType

import grpc
from grpc import aio

from rmsfleet.v1 import inventory_pb2, inventory_pb2_grpc

_EMPTY = inventory_pb2.ReportResponse()


class NoopInventory(inventory_pb2_grpc.InventoryServiceServicer):
    def Report(
        self, request: inventory_pb2.ReportRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.ReportResponse:
        return _EMPTY

    def Enroll(
        self, request: inventory_pb2.EnrollRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.EnrollResponse:
        return inventory_pb2.EnrollResponse()


class AsyncNoopInventory(inventory_pb2_grpc.InventoryServiceServicer):
    async def Report(
        self, request: inventory_pb2.ReportRequest, context: aio.ServicerContext[object, object]
    ) -> inventory_pb2.ReportResponse:
        return _EMPTY

    async def Enroll(
        self, request: inventory_pb2.EnrollRequest, context: aio.ServicerContext[object, object]
    ) -> inventory_pb2.EnrollResponse:
        return inventory_pb2.EnrollResponse()


def _announce(port: int) -> None:
    print(f"READY {port}", flush=True)


def serve_threadpool(listen: str, workers: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), maximum_concurrent_rpcs=None)
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(NoopInventory(), server)
    port = server.add_insecure_port(listen)
    server.start()
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _announce(port)
    stop.wait()
    server.stop(1.0).wait()


async def _serve_aio(listen: str) -> None:
    server = aio.server()
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(AsyncNoopInventory(), server)
    port = server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    _announce(port)
    await stop.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["threadpool", "aio"], default="threadpool")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT; port 0 picks a free one")
    parser.add_argument("--workers", type=int, default=16, help="thread-pool size (threadpool only)")
    args = parser.parse_args(argv)
    if args.kind == "threadpool":
        serve_threadpool(args.listen, args.workers)
    else:
        asyncio.run(_serve_aio(args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
