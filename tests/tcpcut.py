"""A loopback TCP proxy for transfer tests and benchmarks (importable: ``from tcpcut import CutProxy``).

It sits in front of a real server (moto's S3 server, a local HTTP server), counts the bytes the
server sends to clients, can cut every open connection once after a number of those bytes (a
broken network in the middle of a download), and can drop ``Range`` request headers (a server
that refuses ranged requests), and can cap each connection's downstream rate (a store whose single
connection is slower than the network: S3 suggests ~85-90 MB/s per connection). Requests are plain HTTP/1.1 on loopback; the proxy edits only the
header block of requests without bodies (GET/HEAD), which is all a download sends.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from types import TracebackType

_RANGE = re.compile(rb"\r\nRange:[^\r\n]*", re.IGNORECASE)


class CutProxy:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        cut_after: int | None = None,
        strip_range: bool = False,
        rate_per_connection: float | None = None,
    ) -> None:
        self.rate = rate_per_connection  # bytes/s
        self.target = (host, port)
        self.cut_after = cut_after
        self.strip_range = strip_range
        self.downstream = 0  # bytes server -> clients
        self.requests = 0
        self.range_requests = 0
        self.cuts = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> CutProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stopped.set()
        self._listener.close()
        self._cut_all()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            threading.Thread(target=self._pump_up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(upstream, client), daemon=True).start()

    def _pump_up(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    self.requests += data.count(b" HTTP/1.1\r\n")
                    self.range_requests += len(_RANGE.findall(data))
                if self.strip_range:
                    data = _RANGE.sub(b"", data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close(src, dst)

    def _pump_down(self, src: socket.socket, dst: socket.socket) -> None:
        t0, sent = time.monotonic(), 0
        try:
            while data := src.recv(262144):
                if self.rate:
                    sent += len(data)
                    ahead = sent / self.rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
                cut = False
                with self._lock:
                    if self.cut_after is not None and self.downstream + len(data) >= self.cut_after:
                        data = data[: max(0, self.cut_after - self.downstream)]
                        self.cut_after = None  # once
                        cut = True
                    self.downstream += len(data)
                dst.sendall(data)
                if cut:
                    self.cuts += 1
                    self._cut_all()
                    return
        except OSError:
            pass
        finally:
            self._close(src, dst)

    def _close(self, a: socket.socket, b: socket.socket) -> None:
        with self._lock:
            if a in self._conns:
                self.active -= 1
            for s in (a, b):
                self._conns.discard(s)
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _cut_all(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
