"""An attacker that opens gRPC calls and never sends their message: raw HTTP/2 (the `h2` package)
from its own loopback address (127.0.0.2, so the collector sees another client than the tests'
real agents on 127.0.0.1). Each call sends its HEADERS frame without END_STREAM and then nothing;
the connection stays up (SETTINGS and PINGs are answered) until `close`."""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import h2.config
import h2.connection
import h2.events

REPORT = "/rmsfleet.v1.InventoryService/Report"


class StalledStreams:
    def __init__(self, address: str, *, connections: int, streams_each: int, source: str = "127.0.0.2") -> None:
        host, port = address.rsplit(":", 1)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.reset_streams = 0
        self._links: list[tuple[socket.socket, h2.connection.H2Connection]] = []
        self._readers: list[threading.Thread] = []
        for _ in range(connections):
            sock = socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))
            conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            for _stream in range(streams_each):
                conn.send_headers(
                    conn.get_next_available_stream_id(),
                    [
                        (":method", "POST"),
                        (":scheme", "http"),
                        (":path", REPORT),
                        (":authority", address),
                        ("content-type", "application/grpc"),
                        ("te", "trailers"),
                        ("grpc-timeout", "3600S"),
                    ],
                    end_stream=False,
                )
            sock.sendall(conn.data_to_send())
            reader = threading.Thread(target=self._read, args=(sock, conn), daemon=True)
            reader.start()
            self._links.append((sock, conn))
            self._readers.append(reader)

    def _read(self, sock: socket.socket, conn: h2.connection.H2Connection) -> None:
        sock.settimeout(0.5)
        while not self._closing.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            with self._lock:
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.StreamReset | h2.events.StreamEnded):
                        self.reset_streams += 1
                pending = conn.data_to_send()
            if pending:
                try:
                    sock.sendall(pending)
                except OSError:
                    return

    def close(self) -> None:
        self._closing.set()
        for sock, _conn in self._links:
            sock.close()
        for reader in self._readers:
            reader.join(5)

    def __enter__(self) -> StalledStreams:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
