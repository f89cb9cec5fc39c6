"""The HTTP server around the app: uvicorn with limits on what a connection may cost before the app runs.

uvicorn's httptools protocol has no bound on header size or count and no read timeout: a header
sent at 1 byte/s, a 200 MB header or a million headers each hold a connection (and memory)
forever, and a body sent at 1 byte/s holds its request as long as the client likes. It also
accepts what RFC 9112 says a server must refuse (two ``Host`` headers, a transfer coding it does
not implement), which lets a proxy and this server read one request differently. The protocol
here adds those checks to uvicorn's, in its parser callbacks: no work per request beyond a timer.
"""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from livt.serving.settings import ServeSettings

MAX_HEADER_BYTES = 64 * 1024  # the request line and every header, together
MAX_HEADERS = 100

_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class RequestRefusedError(Exception):
    """Raised from a parser callback: httptools stops and uvicorn answers 400 with this message."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with header limits, RFC 9112's refusals and read timeouts."""

    read_timeout_s = 10.0  # set per server by ``uvicorn_config``

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._refusal: str | None = None
        self._header_bytes = 0
        self._host_seen = False
        self._read_timer: asyncio.TimerHandle | None = None
        # From the connection's start: a client that sends nothing at all is timed out too.
        self._arm("the request's headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._host_seen = False
        if self._read_timer is None:
            self._arm("the request's headers")

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        if len(self.headers) >= MAX_HEADERS:
            self._refuse(f"more than {MAX_HEADERS} headers")
        if name.lower() == b"host":
            if self._host_seen:
                self._refuse("more than one Host header")
            self._host_seen = True
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        for name, value in self.headers:
            # The one coding implemented; anything else (gzip, chunked) would be read as something else.
            if name == b"transfer-encoding" and value.strip().lower() != b"chunked":
                self._refuse(f"unsupported Transfer-Encoding {value[:40].decode('latin-1')!r}")
        self._disarm()
        self._arm("the request's body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        super().send_400_response(self._refusal or msg)

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(f"request line and headers larger than {MAX_HEADER_BYTES} bytes")

    def _refuse(self, reason: str) -> None:
        self._refusal = f"Invalid HTTP request: {reason}."
        raise RequestRefusedError(reason)

    def _arm(self, what: str) -> None:
        self._read_timer = self.loop.call_later(self.read_timeout_s, self._timed_out, what)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _timed_out(self, what: str) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            message = f"{what} did not arrive within {self.read_timeout_s:g} s".encode()
            self.transport.write(_TIMEOUT_RESPONSE % (len(message), message))
        # The app, if it runs, sees the client gone (http.disconnect) and stops reading.
        self.transport.close()


def uvicorn_config(app: object, settings: ServeSettings) -> uvicorn.Config:
    """The uvicorn configuration ``livt-serve`` runs ``app`` under."""
    protocol = type(
        "LivtHttpProtocol", (GuardedHttpToolsProtocol,), {"read_timeout_s": settings.read_timeout_s}
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        access_log=settings.access_log,
        log_level=settings.log_level,
        log_config=None,  # keep the root logger's format for uvicorn's lines too
        # A stop waits this long for requests in flight, then cancels them: under Docker's 10 s.
        timeout_graceful_shutdown=settings.graceful_timeout_s,
    )
