"""A TCP proxy that delays every byte by a fixed time each way: a database across a LAN or a
region, measured rather than simulated (benchmarks/workers.py). Bandwidth is not limited: each
chunk is forwarded `one_way_s` after it arrived, in order."""

from __future__ import annotations

import queue
import socket
import threading
import time
from contextlib import suppress
from types import TracebackType


class DelayProxy:
    """Listens on 127.0.0.1:`port` and forwards to `target` with `rtt_ms` / 2 of delay each
    way, while the `with` block runs."""

    def __init__(self, target: tuple[str, int], rtt_ms: float) -> None:
        self.target, self.one_way_s = target, rtt_ms / 2000
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._closed = threading.Event()

    def __enter__(self) -> DelayProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._closed.set()
        self.server.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pipe(client, upstream)
            self._pipe(upstream, client)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        due: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def read() -> None:
            while True:
                try:
                    data = source.recv(65536)
                except OSError:
                    data = b""
                due.put((time.monotonic() + self.one_way_s, data))
                if not data:
                    return

        def write() -> None:
            while True:
                at, data = due.get()
                if (wait := at - time.monotonic()) > 0:
                    time.sleep(wait)
                if not data:
                    with suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    return
                try:
                    sink.sendall(data)
                except OSError:
                    return

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()

