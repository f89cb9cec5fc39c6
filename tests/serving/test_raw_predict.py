"""The raw-image fast path answers every request exactly as FastAPI's router does without it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from livt.serving import ServeSettings, create_app
from livt.serving.raw_predict import RawImagePredictMiddleware

from .conftest import image_bytes, running_server

KEY = "s3cret"
PNG = image_bytes((20, 20))

# (headers, query, body): good, broken and refused requests with an image-file body.
CASES = {
    "png": ({"content-type": "image/png"}, {}, PNG),
    "octet-stream, top_k and prior": (
        {"content-type": "application/octet-stream"},
        {"top_k": "2", "prior": "1,2,3,4"},
        PNG,
    ),
    "upper-case media type": ({"content-type": "Image/PNG; charset=x"}, {}, PNG),
    "empty body": ({"content-type": "image/png"}, {}, b""),
    "not an image": ({"content-type": "image/png"}, {}, b"GIF87a broken"),
    "top_k too large": ({"content-type": "image/png"}, {"top_k": "99"}, PNG),
    "unknown query parameter": ({"content-type": "image/png"}, {"topk": "2"}, PNG),
    "bad prior": ({"content-type": "image/png"}, {"prior": "1,2"}, PNG),
    "estimated prior before traffic": ({"content-type": "image/png"}, {"prior": "estimated"}, PNG),
    "over the body limit": ({"content-type": "image/png"}, {}, b"\0" * 5000),
    "no key": ({"content-type": "image/png", "authorization": ""}, {}, PNG),
    "wrong key": ({"content-type": "image/png", "x-api-key": "nope"}, {}, PNG),
}


def _without_fast_path(settings: ServeSettings):
    app = create_app(settings)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not RawImagePredictMiddleware]
    return app


def _predict_requests(url: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"x-api-key": KEY}).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "livt_http_requests_total" and sample.labels["route"] == "/v1/predict"
    )


def _answers(app, authorised: bool) -> dict[str, tuple[int, object, str]]:
    answers = {}
    with running_server(app) as url:
        for name, (headers, query, body) in CASES.items():
            headers = {"authorization": f"Bearer {KEY}", **headers} if authorised else headers
            r = httpx.post(f"{url}/v1/predict", params=query, content=body, headers=headers)
            content = r.json()
            if r.status_code == 200:
                content.pop("timing")
            answers[name] = (r.status_code, content, r.headers.get("x-content-type-options"))
        answers["metrics"] = _predict_requests(url)
    return answers


@pytest.mark.parametrize("authorised", [True, False])
def test_fast_path_answers_as_the_router_does(
    artifact: Path, monkeypatch: pytest.MonkeyPatch, authorised: bool
):
    monkeypatch.setenv("LIVT_API_KEY", KEY)
    settings = ServeSettings(model=artifact, max_body_bytes=4096)
    fast, routed = (
        _answers(create_app(settings), authorised),
        _answers(_without_fast_path(settings), authorised),
    )
    assert fast == routed
    codes = [answer[0] for name, answer in fast.items() if name != "metrics"]
    assert (200 in codes) == authorised and any(400 <= c < 500 for c in codes)
    # Counted under the route's path, but for the body over the limit: refused before any routing.
    assert fast["metrics"] == len(CASES) - 1


def test_fast_path_takes_only_image_bodies_of_its_route(serve: Callable, monkeypatch: pytest.MonkeyPatch):
    calls = []
    original = RawImagePredictMiddleware._matches

    def spy(self, scope):
        matched = original(self, scope)
        if scope["type"] == "http":
            calls.append((scope["method"], scope["path"], matched))
        return matched

    monkeypatch.setattr(RawImagePredictMiddleware, "_matches", spy)
    with serve() as url:
        httpx.post(f"{url}/v1/predict", content=PNG, headers={"content-type": "image/png"})
        httpx.post(f"{url}/v1/predict", files={"files": ("a.png", PNG, "image/png")})
        httpx.post(f"{url}/v1/predict/", content=PNG, headers={"content-type": "image/png"})
        httpx.get(f"{url}/v1/model")
    assert [matched for *_, matched in calls] == [True, False, False, False]
