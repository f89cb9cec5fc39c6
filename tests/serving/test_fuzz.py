"""Fuzzing the API on a live server: no client input gets a 5xx, and the server is ready after.

Two fuzzers, a few seconds each: schemathesis generates requests from the OpenAPI document and
runs every check on the answers (tests/serving/schemathesis.toml says which statuses a rule the
schema cannot state may add); hypothesis sends what no schema describes: any text as a query
parameter, form field or header, any JSON where numbers, strings and booleans swap places, any
bytes as a body.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from .conftest import image_bytes

CONFIG = Path(__file__).with_name("schemathesis.toml")
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)
PNG = image_bytes((20, 20))


@pytest.fixture(scope="module")
def fuzz_server(serve) -> Iterator[str]:
    """A server of its own, so the fuzzing's load and limits touch no other test's."""
    with serve() as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(fuzz_server: str):
    return schemathesis.openapi.from_url(
        f"{fuzz_server}/openapi.json", config=schemathesis.Config.from_path(CONFIG)
    )


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_every_check(api_schema, mode: str) -> None:
    """Valid requests by the schema and invalid ones, each operation in turn, every check on each answer."""
    generation_mode = schemathesis.GenerationMode(mode)
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @settings(FUZZ, max_examples=10)
        @given(case=operation.as_strategy(generation_mode=generation_mode))
        def check(case) -> None:
            case.call_and_validate()

        try:
            check()
        except Unsatisfiable:
            assert mode == "negative", operation.label  # nothing to get wrong in, e.g., GET /v2


# --- what no schema describes -------------------------------------------------------------------

TEXT = st.text(max_size=40) | st.sampled_from(
    ["", "²", "١٢", "1e400", "-1", "0", "5", "1" * 500, "[1, 2", "true"]
)
NUMBERS = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.sampled_from([3.4e38, -3.4e38, 3.5e38, 1e308, 5e-324])
)
JSON_LEAF = NUMBERS | st.booleans() | st.none() | TEXT
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)
# What h11 lets a client send as a header value: no control characters, no surrounding whitespace.
HEADER_TEXT = TEXT.map(str.strip).filter(lambda t: not any(ord(c) < 32 or ord(c) == 127 for c in t))
OPTION_NAMES = st.sampled_from(["top_k", "prior", "images", "files", "binary_data_output"]) | TEXT


def _dumps(value: object) -> bytes:
    # json.dumps writes inf and nan as Infinity and NaN, as some clients do.
    return json.dumps(value).encode()


@st.composite
def predict_requests(draw) -> dict:
    """A /v1/predict request: any query, and a JSON, multipart or raw body built from hostile values."""
    query = draw(st.lists(st.tuples(OPTION_NAMES, TEXT), max_size=3))
    kind = draw(st.sampled_from(["json", "multipart", "raw", "other"]))
    if kind == "json":
        images = st.lists(
            st.sampled_from(["data:abc", "data:,", "data:x;base64,***", "***", "aGVsbG8="]) | TEXT
        )
        options = {"top_k": st.integers(1, 5) | JSON_VALUE, "prior": st.just("train") | JSON_VALUE}
        body = draw(st.fixed_dictionaries({"images": images}, optional=options) | JSON_VALUE)
        return {"params": query, "content": _dumps(body), "headers": {"content-type": "application/json"}}
    if kind == "multipart":
        fields = draw(st.lists(st.tuples(OPTION_NAMES, TEXT), max_size=3))
        files = [("files", ("a.png", draw(st.sampled_from([PNG, b"", b"GIF89a", PNG[:30]]))))] * draw(
            st.integers(0, 3)
        )
        return {"params": query, "data": dict(fields), "files": files or None}
    content_type = "image/png" if kind == "raw" else draw(HEADER_TEXT)
    payload = draw(st.sampled_from([PNG, PNG[:40]]) | st.binary(max_size=64))
    return {
        "params": query,
        "content": payload,
        "headers": {"content-type": content_type.encode("utf-8", "replace")},
    }


@st.composite
def infer_requests(draw) -> dict:
    """A v2 infer request: a plausible tensor with hostile values swapped in, and any header length."""
    data = draw(st.lists(JSON_LEAF, min_size=1, max_size=4))
    tensor = {
        "name": "input",
        "shape": draw(st.sampled_from([[1, 3, 16, 16], [0, 3, 16, 16], [1, 3]]) | JSON_VALUE),
        "datatype": draw(st.sampled_from(["FP32", "BYTES"]) | TEXT),
        "data": data * (768 // len(data)),
    }
    body = {
        "inputs": draw(st.sampled_from([[tensor], [tensor, tensor], []]) | JSON_VALUE),
        "parameters": draw(
            st.fixed_dictionaries({}, optional={"prior": JSON_VALUE, "binary_data_output": JSON_VALUE})
        ),
        "outputs": draw(
            st.lists(
                st.fixed_dictionaries({"name": st.sampled_from(["logits", "x"]), "parameters": JSON_VALUE}),
                max_size=2,
            )
        ),
    }
    content = _dumps(body) + draw(st.binary(max_size=16))
    headers = {"content-type": "application/json"}
    if draw(st.booleans()):
        headers["Inference-Header-Content-Length"] = draw(HEADER_TEXT).encode("utf-8", "replace")
    return {"content": content, "headers": headers}


@pytest.fixture(scope="module")
def client(fuzz_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_server, timeout=30) as session:
        yield session


def _no_server_error(res: httpx.Response) -> None:
    assert res.status_code < 500, (
        f"{res.status_code} for {res.request.method} {res.request.url}: {res.text[:500]}"
    )
    assert "error" in res.json() or res.status_code == 200


@FUZZ
@given(request=predict_requests())
def test_predict_takes_any_input_without_a_server_error(client: httpx.Client, request: dict) -> None:
    _no_server_error(client.post("/v1/predict", **request))


@FUZZ
@given(request=infer_requests())
def test_infer_takes_any_input_without_a_server_error(client: httpx.Client, request: dict) -> None:
    _no_server_error(client.post("/v2/models/livt/infer", **request))


def test_the_server_is_ready_after_the_fuzzing(fuzz_server: str) -> None:
    assert httpx.get(f"{fuzz_server}/v2/health/ready").json() == {"ready": True}
    res = httpx.post(f"{fuzz_server}/v1/predict", content=PNG, headers={"content-type": "image/png"})
    assert res.status_code == 200, res.text
