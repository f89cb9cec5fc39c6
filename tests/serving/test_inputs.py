"""Client values that used to reach a 500 or be read wrongly (issue 10): each is a 4xx now."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from .conftest import image_bytes

PNG = image_bytes((24, 24), "PNG")
VALUES = 3 * 16 * 16
BIG_INT = "1" + "0" * 400  # a JSON number that no float64 holds


def _infer(url: str, body: bytes | dict, **headers: str | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/v2/models/livt/infer", content=content, headers=headers, timeout=30)


def _tensor(data: str = "[" + ", ".join(["0.5"] * VALUES) + "]", **extra: str) -> bytes:
    """A v2 JSON body with ``data`` spliced in as raw JSON text (so it can hold what json.dumps won't)."""
    fields = "".join(f', "{k}": {v}' for k, v in extra.items())
    return (
        '{"inputs": [{"name": "input", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": '
        f"{data}}}]{fields}}}"
    ).encode()


def _assert_client_error(res: httpx.Response, status: int, needle: str) -> None:
    assert res.status_code == status, res.text
    assert needle in res.json()["error"], res.text


def test_data_url_without_a_comma_is_400(server: str):
    res = httpx.post(f"{server}/v1/predict", json={"images": ["data:abc"]})
    _assert_client_error(res, 400, "images[0]")
    ok = f"data:image/png;base64,{base64.b64encode(PNG).decode()}"
    assert httpx.post(f"{server}/v1/predict", json={"images": [ok]}).status_code == 200


@pytest.mark.parametrize("number", ["1e400", BIG_INT, "-1e400"])
def test_overflowing_numbers_in_v2_data_are_400(server: str, number: str):
    values = ["0.5"] * VALUES
    values[7] = number
    _assert_client_error(_infer(server, _tensor("[" + ", ".join(values) + "]")), 400, "data")


@pytest.mark.parametrize("number", ["1e400", BIG_INT])
def test_overflowing_numbers_in_a_v2_prior_are_400(server: str, number: str):
    body = _tensor(parameters=f'{{"prior": [1, 1, 1, {number}]}}')
    _assert_client_error(_infer(server, body), 400, "prior")


@pytest.mark.parametrize("value", ["²", "١٢", "-5", "+5", "0x10", "", "9" * 5000])
def test_inference_header_length_must_be_ascii_digits(server: str, value: str):
    body = _tensor()
    res = _infer(server, body, **{"Inference-Header-Content-Length": value.encode()})
    _assert_client_error(res, 400, "Inference-Header-Content-Length")
    res = _infer(server, body, **{"Inference-Header-Content-Length": str(len(body))})
    assert res.status_code == 200, res.text


def test_values_past_float32_are_the_clients_fault(server: str):
    # 3.4e38 is a float32, but the model's arithmetic overflows on it: the client sent it, so 400.
    values = ["3.4e38"] * VALUES
    _assert_client_error(_infer(server, _tensor("[" + ", ".join(values) + "]")), 400, "outside")
    values = ["3.5e38"] + ["0.5"] * (VALUES - 1)  # over float32's range: not an FP32 value at all
    _assert_client_error(_infer(server, _tensor("[" + ", ".join(values) + "]")), 400, "data")


@pytest.mark.parametrize("value", ['"1.5"', "true", "false", "null", '{"a": 1}'])
def test_v2_data_must_be_numbers(server: str, value: str):
    values = ["0.5"] * VALUES
    values[3] = value
    _assert_client_error(_infer(server, _tensor("[" + ", ".join(values) + "]")), 400, "data")


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("parameters", '{"binary_data_output": "false"}'),
        ("parameters", '{"binary_data_output": 1}'),
        ("outputs", '[{"name": "logits", "parameters": {"binary_data": "no"}}]'),
        ("outputs", '[{"name": "logits", "parameters": {"classification": "2"}}]'),
        ("outputs", '[{"name": "logits", "parameters": {"classification": true}}]'),
    ],
)
def test_v2_flags_and_counts_are_strictly_typed(server: str, where: str, value: str):
    _assert_client_error(_infer(server, _tensor(**{where: value})), 400, "invalid request")


def test_binary_data_output_false_means_json(server: str):
    res = _infer(server, _tensor(parameters='{"binary_data_output": false}'))
    assert res.status_code == 200 and res.headers["content-type"] == "application/json", res.text


def test_huge_prior_values_are_normalised_not_flattened(server: str):
    # Their sum overflows float64: the prior must still favour the first two classes.
    prior = [1e308, 1e308, 1, 1]
    balanced = httpx.post(
        f"{server}/v1/predict", json={"images": [base64.b64encode(PNG).decode()], "prior": "balanced"}
    ).json()
    res = httpx.post(
        f"{server}/v1/predict", json={"images": [base64.b64encode(PNG).decode()], "prior": prior}
    )
    assert res.status_code == 200, res.text
    assert {c["index"] for c in res.json()["predictions"][0]["top_k"][:2]} == {0, 1}
    assert res.json() != balanced


@pytest.mark.parametrize("body", ["multipart", "json", "raw"])
@pytest.mark.parametrize(
    "query", ["top_k=0", "top_k=1000", "top_k=x", "top_k=", "prior=", "prior=nope", "colour=red"]
)
def test_query_parameters_follow_one_rule_whatever_the_body(server: str, body: str, query: str):
    url = f"{server}/v1/predict?{query}"
    if body == "multipart":
        res = httpx.post(url, files=[("files", ("a.png", PNG))])
    elif body == "json":
        res = httpx.post(url, json={"images": [base64.b64encode(PNG).decode()]})
    else:
        res = httpx.post(url, content=PNG, headers={"content-type": "image/png"})
    assert res.status_code == 400, res.text


@pytest.mark.parametrize("body", ["multipart", "json", "raw"])
def test_query_options_apply_to_every_body(server: str, body: str):
    url = f"{server}/v1/predict?top_k=2&prior=balanced"
    if body == "multipart":
        res = httpx.post(url, files=[("files", ("a.png", PNG))])
    elif body == "json":
        res = httpx.post(url, json={"images": [base64.b64encode(PNG).decode()]})
    else:
        res = httpx.post(url, content=PNG, headers={"content-type": "image/png"})
    assert res.status_code == 200, res.text
    assert len(res.json()["predictions"][0]["top_k"]) == 2 and res.json()["prior"] == "balanced"


def test_an_option_given_twice_is_400(server: str):
    res = httpx.post(f"{server}/v1/predict?top_k=2", files=[("files", ("a.png", PNG))], data={"top_k": "3"})
    _assert_client_error(res, 400, "top_k")
    res = httpx.post(
        f"{server}/v1/predict?top_k=2", json={"images": [base64.b64encode(PNG).decode()], "top_k": 3}
    )
    _assert_client_error(res, 400, "top_k")


def test_multipart_fields_are_checked(server: str):
    files = [("files", ("a.png", PNG))]
    _assert_client_error(
        httpx.post(f"{server}/v1/predict", files=files, data={"colour": "red"}), 400, "colour"
    )
    _assert_client_error(httpx.post(f"{server}/v1/predict", files=files, data={"top_k": "0"}), 400, "top_k")
    res = httpx.post(f"{server}/v1/predict", files=[("files", (f"{i}.png", PNG)) for i in range(33)])
    _assert_client_error(res, 413, "the limit is 32")
    images = [base64.b64encode(PNG).decode()] * 33
    _assert_client_error(httpx.post(f"{server}/v1/predict", json={"images": images}), 413, "the limit is 32")


def test_v2_data_may_nest_as_the_shape(server: str):
    flat = [round(0.001 * i, 3) for i in range(VALUES)]
    nested = [[[flat[(c * 16 + y) * 16 : (c * 16 + y) * 16 + 16] for y in range(16)] for c in range(3)]]
    answers = [_infer(server, _tensor(json.dumps(data))).json()["outputs"] for data in (flat, nested)]
    assert answers[0] == answers[1]
    ragged = [flat[: VALUES // 2], [*flat[VALUES // 2 :], 0.5]]
    _assert_client_error(_infer(server, _tensor(json.dumps(ragged))), 400, "different lengths")
