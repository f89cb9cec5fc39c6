"""Browser-facing defaults: answer only to this server's own Host names, and never let a browser sniff.

A page on another site can point a name it controls at 127.0.0.1 (DNS rebinding) and then read
this server as same-origin; its requests still carry the attacker's name in ``Host``. Checking that
header against ``--allowed-hosts`` (the loopback names when bound to loopback) closes that door.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

NOSNIFF = (b"x-content-type-options", b"nosniff")
# The demo page loads its script and style from /static and calls the API: nothing inline, nothing
# from elsewhere. blob: is the preview of the dropped image (URL.createObjectURL).
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class BrowserGuardMiddleware:
    """Refuse a Host header not in ``allowed_hosts`` ('*' allows any); add ``nosniff`` to every response."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]):
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed = frozenset(h.lower() for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), NOSNIFF]
            await send(message)

        if not self.any_host:
            header = b""
            for name, value in scope["headers"]:  # a loop: a generator here cost 3 % of the event loop
                if name == b"host":
                    header = value
                    break
            host = host_name(header)
            if host not in self.allowed:
                shown = host or "none"
                response = JSONResponse(
                    {"error": f"Host {shown!r} is not a name this server answers to (see --allowed-hosts)"},
                    status_code=400,
                )
                await response(scope, receive, send_nosniff)
                return
        await self.app(scope, receive, send_nosniff)


def host_name(header: bytes) -> str:
    """The name in a Host header, without the port: ``localhost:8000`` -> ``localhost``, ``[::1]:80`` -> ``::1``."""
    text = header.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else ""
    return text.rpartition(":")[0] if ":" in text else text
