"""A flaky HTTP proxy in front of the moto S3 server, for fault tests: on 127.0.0.1, bounded, stops itself.

While the fault window is open (the first `fault_requests` requests, and at most `fault_seconds`), each request is,
by a seeded draw: answered `503 SlowDown` with S3's XML error body; dropped (the connection closed after the
request was read, before any answer); cut short (the upstream answer's headers and half its body, then the
connection closed: a GET sees an incomplete read); or forwarded. After the window every request is forwarded.
Whatever the window, the first two PUTs of each key containing one of `fail_puts_to` are answered 503 SlowDown
and dropped, so those writes (metadata parts, summary.json) are certain to need their retries. PUTs to keys
containing one of `delay_puts_to` are forwarded `delay_s` late (a slow store). Counts of what it did are kept by
fault and by HTTP method.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>proxy</RequestId></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FlakyS3Proxy:
    def __init__(self, upstream: str, *, fault_requests: int = 300, fault_seconds: float = 60.0,
                 p_slowdown: float = 0.2, p_drop: float = 0.1, p_truncate: float = 0.05, seed: int = 0,
                 fail_puts_to: tuple[str, ...] = (), delay_puts_to: tuple[str, ...] = (), delay_s: float = 0.0,
                 lifetime_s: float = 600.0) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.fault_requests, self.fault_seconds = fault_requests, fault_seconds
        self.p = (p_slowdown, p_drop, p_truncate)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.faults: Counter = Counter()  # (fault, method) -> count
        self.fail_puts_to = fail_puts_to
        self.delay_puts_to, self.delay_s = delay_puts_to, delay_s
        self.puts: Counter = Counter()  # path -> PUTs seen, for the keys in fail_puts_to
        self.forced: list[tuple[str, str]] = []  # (fault, path) forced on those keys
        self.seen: list[tuple[str, str]] = []  # (method, path) of every request
        self.started = time.monotonic()
        self.lifetime_s = lifetime_s
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._draw(self.command, self.path)
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault == "slowdown":
                    self.send_response(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                if self.command == "PUT" and any(p in self.path for p in proxy.delay_puts_to):
                    time.sleep(proxy.delay_s)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST")
                                     else None, headers=headers)
                    resp = upstream.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                    self.send_header("Content-Length", length or "0")
                    self.end_headers()
                    if self.command == "HEAD":
                        return
                    if fault == "truncate" and len(data) > 1:
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._stopped = threading.Event()
        self._timer = threading.Timer(lifetime_s, self.stop)  # never outlives a stuck test
        self._timer.daemon = True

    def _draw(self, method: str, path: str) -> str | None:
        with self.lock:
            self.requests += 1
            self.seen.append((method, path))
            if method == "PUT" and any(p in path for p in self.fail_puts_to):
                key = path.split("?")[0]
                self.puts[key] += 1
                if self.puts[key] <= 2:
                    fault = "slowdown" if self.puts[key] == 1 else "drop"
                    self.forced.append((fault, key))
                    self.faults[(fault, method)] += 1
                    return fault
            open_window = self.requests <= self.fault_requests and time.monotonic() - self.started < self.fault_seconds
            if not open_window:
                return None
            x = self.rng.random()
            slowdown, drop, truncate = self.p
            fault = ("slowdown" if x < slowdown else "drop" if x < slowdown + drop
                     else "truncate" if x < slowdown + drop + truncate and method == "GET" else None)
            if fault:
                self.faults[(fault, method)] += 1
            return fault

    def count(self, fault: str, method: str | None = None) -> int:
        return sum(n for (f, m), n in self.faults.items() if f == fault and method in (None, m))

    def __enter__(self) -> FlakyS3Proxy:
        self.started = time.monotonic()
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.server.shutdown()
        self.server.server_close()

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        self.stop()
