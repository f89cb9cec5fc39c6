"""``POST /v1/predict`` with an image file as its body, answered without FastAPI's router.

That body is the fastest way to send one image, and the one a high-rate client uses. Profiled at 32
concurrent clients on 2 cores, FastAPI's layers between the middleware and the endpoint (its
exception and exit-stack middleware, route matching, dependency solving) took about a third of the
event loop's time per request, as much as decoding, batching and answering together. This
middleware calls the same endpoint function, with the same dependencies and the same error
mapping, directly; every other request, and every other body of this one, takes the router. It is
the innermost middleware, so the body limit, the Host check and the metrics wrap it as they wrap
the router.
"""

from __future__ import annotations

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from livt.serving.dependencies import get_state, require_api_key
from livt.serving.errors import exception_response
from livt.serving.routers.predict import predict
from livt.serving.uploads import is_image_file, media_type


class RawImagePredictMiddleware:
    """Answer ``POST {route.path}`` with an image-file body by calling ``predict``; pass the rest on."""

    def __init__(self, app: ASGIApp, route: APIRoute):
        self.app = app
        self.route = route  # set into the scope, so the metrics count these requests under its path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._matches(scope):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        request = Request(scope, receive)
        try:
            # The router's order: its dependency (the key) before the route's (the state).
            await require_api_key(request)
            response = await predict(request, await get_state(request))
        except Exception as exc:
            response = exception_response(exc)
        await response(scope, receive, send)

    def _matches(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path != self.route.path:
            return False
        for name, value in scope["headers"]:
            if name == b"content-type":
                return is_image_file(media_type(value.decode("latin-1")))
        return False
