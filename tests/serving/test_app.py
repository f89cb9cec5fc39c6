"""The whole app on a live server: limits, errors, API key, concurrency, docs, and no torch."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np

from livt.artifact import sha256_file
from livt.inference.artifact import parse_metadata
from livt.inference.backends import open_backend
from livt.inference.model import ServedModel

from .conftest import image_bytes, metric_value

PNG = image_bytes((24, 24), "PNG")


def _post(url: str, files: list[bytes] | None = None, **kwargs) -> httpx.Response:
    uploads = [("files", (f"f{i}.png", data)) for i, data in enumerate(files or [PNG])]
    return httpx.post(f"{url}/v1/predict", files=uploads, timeout=30, **kwargs)


class SlowBackend:
    """The real ONNX Runtime backend, made slow: the only way to make a tiny model miss a deadline."""

    def __init__(self, artifact: Path, delay_s: float):
        self.inner = open_backend(artifact)
        self.platform, self.metadata_json, self.input_shape = (
            "slow",
            self.inner.metadata_json,
            self.inner.input_shape,
        )
        self.engine, self.precision = self.inner.engine, self.inner.precision
        self.delay_s = delay_s

    def run(self, batch: np.ndarray):
        time.sleep(self.delay_s)
        return self.inner.run(batch)


def _slow_model(artifact: Path, delay_s: float) -> ServedModel:
    backend = SlowBackend(artifact, delay_s)
    return ServedModel(backend, parse_metadata(backend.metadata_json, artifact, sha256_file(artifact)))


def test_200_concurrent_requests_succeed_in_batches(server: str):
    async def run() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            files = [("files", ("a.png", PNG))]
            responses = await asyncio.gather(
                *(client.post(f"{server}/v1/predict", files=files) for _ in range(200))
            )
        return [r.status_code for r in responses]

    assert asyncio.run(run()) == [200] * 200
    batches = metric_value(server, "livt_batch_size_count")
    images = metric_value(server, "livt_batch_size_sum")
    assert images > batches, "no batch held more than one image"
    assert metric_value(server, "livt_http_requests_total", route="/v1/predict", status="200") >= 200
    assert metric_value(server, "livt_http_request_duration_seconds_count", route="/v1/predict") >= 200
    assert metric_value(server, "livt_queue_seconds_count") >= 200
    assert metric_value(server, "livt_inference_seconds_count") == batches


def test_pixel_cap_is_413(serve):
    with serve(max_image_pixels=500) as url:
        res = _post(url)
        assert res.status_code == 413 and "576 pixels" in res.json()["error"]
        res = httpx.post(f"{url}/v1/predict", content=PNG, headers={"content-type": "image/png"})
        assert res.status_code == 413 and "576 pixels" in res.json()["error"]
    # Over the event loop's decoding cap (64 x 64) as well: the worker thread reports the real limit.
    with serve(max_image_pixels=5000) as url:
        res = _post(url, [image_bytes((80, 80))])
        assert res.status_code == 413 and "6400 pixels" in res.json()["error"]
        assert "limit of 5000" in res.json()["error"]


def test_deadline_is_504_and_full_queue_is_503(serve, artifact: Path):
    with serve(loaded=_slow_model(artifact, 0.4), timeout_s=0.1) as url:
        res = _post(url)
        assert res.status_code == 504 and "within" in res.json()["error"]
    with serve(loaded=_slow_model(artifact, 0.3), max_queue=1, max_batch=1) as url:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                files = [("files", ("a.png", PNG))]
                return await asyncio.gather(
                    *(client.post(f"{url}/v1/predict", files=files) for _ in range(6))
                )

        responses = asyncio.run(burst())
        busy = [r for r in responses if r.status_code == 503]
        assert busy and busy[0].headers["retry-after"] == "1"
        assert "busy" in busy[0].json()["error"]
        assert all(r.status_code in (200, 503) for r in responses)
        assert _post(url).status_code == 200


def test_non_finite_model_output_is_502_and_server_stays_up(serve, nan_artifact: Path):
    with serve(model=nan_artifact) as url:
        res = _post(url)
        assert res.status_code == 502 and "non-finite" in res.json()["error"]
        body = {
            "inputs": [{"name": "input", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": [0.0] * 768}]
        }
        res = httpx.post(f"{url}/v2/models/livt/infer", json=body)
        assert res.status_code == 502 and res.json()["error"]
        assert httpx.get(f"{url}/v2/health/live").status_code == 200


def test_backend_failure_is_502_json_and_server_stays_up(serve, batch_one_artifact: Path):
    # A real ONNX Runtime failure: the artifact's graph only runs one image at a time.
    with serve(model=batch_one_artifact) as url:
        assert _post(url).status_code == 200
        res = _post(url, [PNG, PNG])
        assert res.status_code == 502, res.text
        assert "the model failed on a batch of 2" in res.json()["error"]
        body = {
            "inputs": [{"name": "input", "shape": [2, 3, 16, 16], "datatype": "FP32", "data": [0.0] * 1536}]
        }
        res = httpx.post(f"{url}/v2/models/livt/infer", json=body)
        assert res.status_code == 502 and "failed on a batch" in res.json()["error"]
        assert _post(url).status_code == 200


def test_api_key(serve):
    with serve(api_key="s3cret") as url:
        assert _post(url).status_code == 401
        assert _post(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert _post(url, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert _post(url, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert httpx.get(f"{url}/v1/model").status_code == 401
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/v2/models/livt").status_code == 401
        for open_path in ("/", "/v2/health/live", "/v2/health/ready", "/v2", "/static/app.js"):
            assert httpx.get(f"{url}{open_path}").status_code == 200, open_path

        import tritonclient.http as tritonhttp

        client = tritonhttp.InferenceServerClient(url=url.removeprefix("http://"))
        try:
            assert client.is_model_ready("livt", headers={"X-API-Key": "s3cret"})
            assert not client.is_model_ready("livt")
        finally:
            client.close()


def test_openapi_documents_the_api(server: str):
    spec = httpx.get(f"{server}/openapi.json").json()
    predict = spec["paths"]["/v1/predict"]["post"]
    content = predict["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json", "image/*", "application/octet-stream"}
    query = {p["name"]: p["schema"] for p in predict["parameters"] if p["in"] == "query"}
    assert set(query) == {"top_k", "prior"}
    assert {"200", "400", "413", "415", "502", "503", "504"} <= set(predict["responses"])
    # Issue 10: the limits the server enforces are in the schema.
    assert query["top_k"]["minimum"] == 1 and query["top_k"]["maximum"] == 100
    form = content["multipart/form-data"]["schema"]["properties"]
    assert (form["files"]["minItems"], form["files"]["maxItems"]) == (1, 32)
    images = _resolve(spec, content["application/json"]["schema"])["properties"]["images"]
    assert (images["minItems"], images["maxItems"]) == (1, 32)
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    body = _resolve(spec, infer["requestBody"]["content"]["application/json"]["schema"])
    assert {"inputs"} <= set(body["required"])
    assert httpx.get(f"{server}/docs").status_code == 200


def _resolve(spec: dict, schema: dict) -> dict:
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def test_docs_need_no_cdn(server: str):
    page = httpx.get(f"{server}/docs").text
    assert "cdn." not in page and "https://" not in page, page
    for asset in re.findall(r'(?:src|href)="(/[^"]+)"', page):
        assert httpx.get(f"{server}{asset}").status_code == 200, asset


def test_host_header_must_name_this_server(serve):
    with serve() as url:
        port = url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
            assert httpx.get(f"{url}/v1/model", headers={"Host": host}).status_code == 200, host
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.attacker.example", ""):
            res = httpx.get(f"{url}/v1/model", headers={"Host": host})
            assert res.status_code == 400 and "Host" in res.json()["error"], host
    with serve(allowed_hosts=["livt.internal"]) as url:
        assert httpx.get(f"{url}/v1/model", headers={"Host": "livt.internal:80"}).status_code == 200
        assert httpx.get(f"{url}/v1/model").status_code == 400


def test_any_host_when_bound_beyond_loopback():
    from livt.serving import ServeSettings

    assert ServeSettings(model=Path("m.onnx"), host="0.0.0.0").allowed_hosts == ["*"]
    assert "localhost" in ServeSettings(model=Path("m.onnx")).allowed_hosts


def test_browser_facing_headers(server: str):
    for path in ("/", "/static/app.js", "/v1/model", "/v2/health/live", "/v1/nope"):
        assert httpx.get(f"{server}{path}").headers["x-content-type-options"] == "nosniff", path
    csp = httpx.get(f"{server}/").headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    page = httpx.get(f"{server}/").text
    assert "<script>" not in page and "style=" not in page and "<style" not in page


def test_index_page_and_script(server: str):
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text and 'id="prior"' in page.text
    assert "/v1/predict" in httpx.get(f"{server}/static/app.js").text


def test_serving_works_with_torch_unimportable(artifact: Path):
    script = textwrap.dedent(
        f"""
        import sys

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith(("torch.", "torchvision", "timm")):
                    raise ImportError(f"{{name}} is blocked in this test")
                return None

        sys.meta_path.insert(0, NoTorch())
        import httpx
        from fastapi.testclient import TestClient
        import livt.artifact, livt.images
        from livt.serving import ServeSettings, create_app

        app = create_app(ServeSettings(model={str(artifact)!r}))
        with TestClient(app, base_url="http://127.0.0.1") as client:
            res = client.post("/v1/predict", files=[("files", ("a.png", {PNG!r}))])
            assert res.status_code == 200, res.text
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
        assert not any(m.startswith("livt.export") for m in sys.modules), "serving imported livt.export"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_binds_to_loopback_by_default(server: str):
    from livt.serving import ServeSettings

    assert ServeSettings(model=Path("m.onnx")).host == "127.0.0.1"
    port = int(server.rsplit(":", 1)[1])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) == 0


def test_api_key_is_compared_as_the_utf_8_bytes_clients_send(serve):
    with serve(api_key="pässwörd") as url:
        # curl, httpx and browsers send a header value's text as UTF-8.
        assert _post(url, headers={"X-API-Key": "pässwörd".encode()}).status_code == 200
        assert _post(url, headers={"Authorization": "Bearer pässwörd".encode()}).status_code == 200
        assert _post(url, headers={"X-API-Key": "pässwörd".encode("latin-1")}).status_code == 401


def test_cross_site_posts_are_refused_and_never_reach_the_prior_window(serve):
    with serve(allowed_origins="https://app.example") as url:
        port = url.rsplit(":", 1)[1]
        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            res = _post(url, headers=headers)
            assert res.status_code == 403 and "--allowed-origins" in res.json()["error"], headers
        assert httpx.get(f"{url}/v1/prior").json()["seen"] == 0
        # The demo page (its own origin), an allowed origin, and clients that are not browsers.
        for headers in (
            {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"},
            {"Origin": "https://app.example"},
            {},
        ):
            assert _post(url, headers=headers).status_code == 200, headers
        # Reading is not state-changing (and a cross-site page cannot read the answer).
        assert httpx.get(f"{url}/v1/model", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200
