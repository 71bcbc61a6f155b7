"""A TCP proxy on loopback that an end-to-end test can cut (connections refused, open ones
closed) and restore, or, for gRPC, make swallow the calls going one way: a database or a
collector going away without the process under test knowing (tests/e2e/test_faults.py,
tests/e2e/test_replica_failover_e2e.py)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from processes import free_port

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frames that carry a call (HEADERS, DATA, CONTINUATION): the ones `swallow` drops. SETTINGS,
# PING, WINDOW_UPDATE and the rest pass, so the connection itself stays up.
CALL_FRAMES = {0x0, 0x1, 0x9}


class _Frames:
    """Cuts one direction of an HTTP/2 connection into frames, to drop the calls' frames."""

    def __init__(self, client_side: bool) -> None:
        self.buffer = b""
        self.preface = len(HTTP2_PREFACE) if client_side else 0

    def feed(self, data: bytes, drop_calls: bool) -> tuple[bytes, int]:
        """(bytes to forward, bytes dropped)."""
        self.buffer += data
        out = b""
        dropped = 0
        if self.preface:
            take = self.buffer[: self.preface]
            out += take
            self.buffer = self.buffer[len(take) :]
            self.preface -= len(take)
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[0:3], "big")
            if len(self.buffer) < 9 + length:
                break
            frame, self.buffer = self.buffer[: 9 + length], self.buffer[9 + length :]
            stream = int.from_bytes(frame[5:9], "big") & 0x7FFFFFFF
            if drop_calls and stream != 0 and frame[3] in CALL_FRAMES:
                dropped += len(frame)
            else:
                out += frame
        return out, dropped


class TcpProxy:
    """Forwards 127.0.0.1:port to a target. `cut()` closes every connection and stops listening
    (connections are refused); `restore()` listens again on the same port.

    For gRPC (`http2=True`), `swallow("requests")` or `swallow("answers")` drops the frames of
    calls going one way while the connection stays up, so a call hangs with its request (or its
    answer) lost; `reset()` closes every connection and forwards normally again."""

    def __init__(self, target: tuple[str, int], *, http2: bool = False) -> None:
        self.target = target
        self.http2 = http2
        self.port = free_port()
        self.swallowing: str | None = None
        self.swallowed = {"requests": 0, "answers": 0}
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if listener is not self._listener:  # accepted as the proxy was cut
                client.close()
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        ends = {client: (upstream, "requests", _Frames(True)), upstream: (client, "answers", _Frames(False))}
        try:
            while True:
                readable, _, _ = select.select(list(ends), [], [], 0.5)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    target, direction, frames = ends[source]
                    if self.http2:
                        data, dropped = frames.feed(data, self.swallowing == direction)
                        if dropped:
                            with self._lock:
                                self.swallowed[direction] += dropped
                    if data:
                        target.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for end in (client, upstream):
                self._close(end)

    def _close(self, end: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(end)
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
        end.close()

    def _close_all(self) -> None:
        with self._lock:
            ends = list(self._sockets)
        for end in ends:
            self._close(end)

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # Wakes the thread blocked in accept(); close() alone would leave the socket listening
            # until that accept() returns.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self._close_all()

    @property
    def connections(self) -> int:
        """Connections forwarded now (each counts its two ends once)."""
        with self._lock:
            return len(self._sockets) // 2

    def swallow(self, direction: str) -> None:
        assert self.http2 and direction in ("requests", "answers")
        with self._lock:
            self.swallowed = {"requests": 0, "answers": 0}
        self.swallowing = direction

    def reset(self) -> None:
        self.swallowing = None
        self._close_all()

    def close(self) -> None:
        self.cut()
