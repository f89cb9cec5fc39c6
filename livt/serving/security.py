"""Browser-facing defaults: answer only to this server's own Host names, and never let a browser sniff.

A page on another site can point a name it controls at 127.0.0.1 (DNS rebinding) and then read
this server as same-origin; its requests still carry the attacker's name in ``Host``. Checking that
header against ``--allowed-hosts`` (the loopback names when bound to loopback) closes that door.

A page on another site can also simply POST to the server (a form or ``fetch`` with ``no-cors``
needs no CORS consent): it cannot read the answer, but the images count into the traffic's prior
window, so any page a user visits could skew ``prior=estimated`` for everyone. Browsers say where
a request comes from (``Sec-Fetch-Site``, ``Origin``); a state-changing request from another site is
refused (403) unless its origin is in ``--allowed-origins``. Refused rather than just kept out of
the window: the server offers no CORS, so no page elsewhere has a use for the answer, and a
refusal also spares the decoding. Clients that are not browsers send neither header.
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


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Sec-Fetch-Site values of a request the user made on this site, or typed / bookmarked ("none").
_OWN_SITE = frozenset({b"same-origin", b"none"})


class BrowserGuardMiddleware:
    """Refuse a Host not in ``allowed_hosts`` ('*' allows any) and cross-site POSTs; add ``nosniff``."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str], allowed_origins: list[str] = ()):
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed = frozenset(h.lower() for h in allowed_hosts)
        self.origins = frozenset(o.encode() for o in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), NOSNIFF]
            await send(message)

        header, origin, fetch_site = b"", None, None
        for name, value in scope["headers"]:  # a loop: a generator here cost 3 % of the event loop
            if name == b"host":
                header = value
            elif name == b"origin":
                origin = value
            elif name == b"sec-fetch-site":
                fetch_site = value
        if scope["method"] not in _SAFE_METHODS and self._cross_site(header, origin, fetch_site):
            response = JSONResponse(
                {"error": "cross-site request refused: this page's origin is not in --allowed-origins"},
                status_code=403,
            )
            await response(scope, receive, send_nosniff)
            return
        if not self.any_host:
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

    def _cross_site(self, host: bytes, origin: bytes | None, fetch_site: bytes | None) -> bool:
        if origin is not None:
            origin = origin.lower().rstrip(b"/")
            if origin in self.origins:
                return False
            # The page's own origin: scheme://host[:port], the host as this request names it.
            return origin.partition(b"://")[2] != host.lower()
        return fetch_site is not None and fetch_site.lower() not in _OWN_SITE


def host_name(header: bytes) -> str:
    """The name in a Host header, without the port: ``localhost:8000`` -> ``localhost``, ``[::1]:80`` -> ``::1``."""
    text = header.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else ""
    return text.rpartition(":")[0] if ":" in text else text
