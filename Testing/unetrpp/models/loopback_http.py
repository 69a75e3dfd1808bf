"""A real HTTP server on 127.0.0.1 for download tests: Range, dropped connections, stalls, 404, web
pages instead of files, Google Drive's confirmation form, and use as an HTTP proxy.

Each route is a :class:`Route`; the server records every request (path and headers) so tests can
assert what the client sent (a ``Range`` header on resume, an absolute URL through a proxy).
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field


@dataclass
class Route:
    """How the server answers one path.

    Attributes:
        body: bytes of the file (or of the page for ``html`` routes).
        kind: ``file`` (Range-aware), ``ignore_range`` (always 200 with the whole body), ``html``
            (text/html page), ``disguised_html`` (an HTML body labelled application/octet-stream),
            ``status`` (answer ``status`` with no body), ``stall`` (send ``cut_after`` bytes, then nothing),
            ``drive`` (an HTML form leading to ``form_target`` with hidden fields).
        cut_after: for ``file``: close the connection after this many body bytes...
        cut_times: ...on the first ``cut_times`` requests only.
        chunk_delay: seconds slept between 64 KiB chunks (keeps a download running for concurrency tests).
        validators: send a strong ``ETag`` (from the body's hash) and ``Last-Modified`` with ``file``
            bodies, and honour ``If-Range`` (a validator that no longer matches gets the whole body, 200).
        honour_if_range: False serves ``Range`` whatever ``If-Range`` says (a non-conforming server).
        hold: the first ``hold_times`` requests wait for this event, then answer ``hold_status``.
        pause: a full body stops after its first 64 KiB until this event is set (a download in progress).
    """

    body: bytes = b""
    kind: str = "file"
    status: int = 200
    cut_after: int | None = None
    cut_times: int = 0
    chunk_delay: float = 0.0
    form_target: str = ""
    validators: bool = True
    honour_if_range: bool = True
    hold: threading.Event | None = None
    hold_times: int = 0
    hold_status: int = 404
    pause: threading.Event | None = None
    served_full: int = 0
    requests: int = 0

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class LoopbackServer:
    """``with LoopbackServer() as server: server.add("/a.model", Route(body=b"..."))``."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[RecordedRequest] = []
        self.stop = threading.Event()
        handler = _make_handler(self)
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url(path)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if urllib.parse.urlsplit(r.path).path == path]

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _make_handler(server: LoopbackServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            server.requests.append(RecordedRequest(self.path, dict(self.headers.items())))
            # Through a proxy the request line carries the absolute URL.
            path = urllib.parse.urlsplit(self.path).path
            route = server.routes.get(path)
            if route is None:
                self._reply(404, b"not found", "text/plain")
                return
            route.requests += 1
            kind = route.kind
            if route.hold is not None and route.hold_times > 0:
                route.hold_times -= 1
                route.hold.wait(60)
                self._reply(route.hold_status, b"", "text/plain")
            elif kind == "status":
                self._reply(route.status, b"", "text/plain")
            elif kind == "html":
                self._reply(200, route.body, "text/html; charset=utf-8")
            elif kind == "disguised_html":
                self._reply(200, route.body, "application/octet-stream")
            elif kind == "drive":
                self._drive(route)
            elif kind == "stall":
                self._stall(route)
            elif kind == "ignore_range":
                self._send_body(route, 200, route.body, len(route.body))
            else:
                self._file(route)

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _file(self, route: Route) -> None:
            body = route.body
            match = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
            if_range = self.headers.get("If-Range")
            if match and if_range and route.validators and route.honour_if_range and if_range != route.etag:
                match = None  # RFC 9110: a validator that does not match means "send the whole file"
            if match:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._send_body(route, 206, body[start:], len(body), start)
            else:
                self._send_body(route, 200, body, len(body))

        def _send_body(self, route: Route, status: int, data: bytes, total: int, start: int = 0) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            if route.validators and route.kind == "file":
                self.send_header("ETag", route.etag)
                self.send_header("Last-Modified", "Tue, 01 Dec 2026 10:00:00 GMT")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
            self.end_headers()
            cut = route.cut_after if (route.cut_after is not None and route.cut_times > 0) else None
            if cut is not None:
                route.cut_times -= 1
                self.wfile.write(data[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # the client sees the body end early
                return
            for offset in range(0, len(data), 65536):
                if server.stop.is_set():
                    return
                self.wfile.write(data[offset : offset + 65536])
                if offset == 0 and route.pause is not None:
                    self.wfile.flush()
                    route.pause.wait(60)
                if route.chunk_delay:
                    time.sleep(route.chunk_delay)
            if status == 200:
                route.served_full += 1

        def _stall(self, route: Route) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body[: route.cut_after or 0])
            self.wfile.flush()
            server.stop.wait(10)
            self.close_connection = True

        def _drive(self, route: Route) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            page = (
                "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
                "<p>This file is too large for Google Drive to scan for viruses.</p>"
                f'<form id="download-form" action="{route.form_target}" method="get">'
                '<input type="submit" value="Download anyway"/>'
                f'<input type="hidden" name="id" value="{query.get("id", ["x"])[0]}">'
                '<input type="hidden" name="export" value="download">'
                '<input type="hidden" name="confirm" value="t">'
                '<input type="hidden" name="uuid" value="0f1e2d3c"></form></body></html>'
            ).encode()
            self._reply(200, page, "text/html; charset=utf-8")

    return Handler
