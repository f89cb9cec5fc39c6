"""The CPU image, running: the README's way of starting it, its answers against ``livt-serve`` on the
host, its health check, what it leaves out (torch, root, compilers), stopping it under load, and
refusing a bad model. ``make docker-check`` runs these on an image it has just built offline."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from .conftest import DOCKER, Container, docker, readme_run_args

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
FASHION_MNIST_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


# --- image files ---------------------------------------------------------------------------------


def _photo_like(size: tuple[int, int], seed: int) -> Image.Image:
    """Smooth colour gradients with noise on top, so resizing and JPEG coding have work to do."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], axis=-1)
    pixels = np.clip(base + rng.normal(0, 25, size=base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Real image files as a user sends them: PNG, JPEG, greyscale, RGBA, and one over 1 MiB
    (a multipart upload that size is spooled to /tmp: the tmpfs of a read-only container)."""
    folder = tmp_path_factory.mktemp("images")
    files = []
    for name, img, fmt in [
        ("photo.jpg", _photo_like((57, 41), 0), "JPEG"),
        ("square.png", _photo_like((32, 32), 1), "PNG"),
        ("grey.png", _photo_like((40, 48), 2).convert("L"), "PNG"),
        ("alpha.png", _photo_like((36, 36), 3).convert("RGBA"), "PNG"),
        ("large.png", _photo_like((700, 700), 4), "PNG"),
    ]:
        path = folder / name
        img.save(path, format=fmt)
        files.append(path)
    assert (folder / "large.png").stat().st_size > 1024 * 1024
    if FASHION_MNIST_TEST.is_file():  # a real photograph's worth of structure, where installed
        import gzip

        with gzip.open(FASHION_MNIST_TEST, "rb") as f:
            f.seek(16)
            pixels = np.frombuffer(f.read(28 * 28), dtype=np.uint8).reshape(28, 28)
        Image.fromarray(pixels).save(folder / "fmnist0.png")
        files.append(folder / "fmnist0.png")
    return files


# --- HTTP ----------------------------------------------------------------------------------------


def _multipart(files: list[Path], fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = "livt-docker-check"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    for path in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + path.read_bytes() + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _post(url: str, body: bytes, content_type: str) -> dict:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=30) as res:
        assert res.status == 200
        return json.load(res)


def _probabilities(answer: dict) -> np.ndarray:
    """One row of all class probabilities per image, by class index."""
    rows = []
    for pred in answer["predictions"]:
        row = np.zeros(len(pred["top_k"]))
        for score in pred["top_k"]:
            row[score["index"]] = score["probability"]
        rows.append(row)
    return np.array(rows)


# --- the running container -----------------------------------------------------------------------


def test_starts_the_readme_way_and_becomes_healthy(served: Container, image: str):
    info = served.inspect()
    config, host = info["Config"], info["HostConfig"]
    assert config["Entrypoint"] == ["livt-serve"] and not config["Cmd"]
    assert "LIVT_MODEL=/models/model.onnx" in config["Env"]
    assert config["User"] == "livt"
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
    assert host["PortBindings"]["8000/tcp"][0]["HostPort"] == str(served.port)
    mount = next(m for m in info["Mounts"] if m["Destination"] == "/models")
    assert mount["RW"] is False
    logs = served.logs()
    assert "[W:onnxruntime" not in logs and "Traceback" not in logs, logs
    # Docker's own health status: the image's HEALTHCHECK ran in the container and passed.
    health = info["State"]["Health"]
    assert health["Status"] == "healthy" and health["Log"][-1]["ExitCode"] == 0, health


def test_host_network_and_livt_port(run_container: Callable[..., Container], artifact: Path):
    # Without -p, the port moves with LIVT_PORT, and the health check follows it.
    container = run_container(*readme_run_args(), model_dir=artifact.parent, host_network=True)
    container.wait_ready()
    container.wait_health()


def test_predict_matches_livt_serve_on_the_host(served: Container, host_server: str, image_files: list[Path]):
    body, content_type = _multipart(image_files, {"top_k": "100"})
    ours = _probabilities(_post(f"{served.url}/v1/predict", body, content_type))
    theirs = _probabilities(_post(f"{host_server}/v1/predict", body, content_type))
    assert ours.shape == (len(image_files), ours.shape[1]) and ours.shape[1] >= 2
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-4)
    # The other two ways of sending an image reach the same model.
    raw = _probabilities(
        _post(f"{served.url}/v1/predict?top_k=100", image_files[0].read_bytes(), "image/jpeg")
    )
    np.testing.assert_allclose(raw[0], ours[0], rtol=0, atol=1e-6)


def test_v2_infer_with_stock_tritonclient(served: Container, artifact: Path, image_files: list[Path]):
    import onnxruntime as ort
    import tritonclient.http as triton

    from livt.inference.artifact import parse_metadata
    from livt.inference.preprocess import preprocess_bytes

    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    info = parse_metadata(session.get_modelmeta().custom_metadata_map["livt"], artifact, "0" * 64)
    x = np.stack([preprocess_bytes(p.read_bytes(), info.preprocess, max_pixels=10**8) for p in image_files])
    expected = session.run(["probabilities"], {"input": x})[0]

    client = triton.InferenceServerClient(url=f"127.0.0.1:{served.port}")
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("livt")
        meta = client.get_model_metadata("livt")
        assert meta["inputs"][0]["name"] == "input" and meta["inputs"][0]["datatype"] == "FP32"
        inp = triton.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        outputs = [
            triton.InferRequestedOutput("probabilities", binary_data=True),
            triton.InferRequestedOutput("logits", binary_data=False, class_count=1),
        ]
        result = client.infer("livt", [inp], outputs=outputs)
    finally:
        client.close()
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=0, atol=1e-5)
    # BYTES "score:index:label" per image (str when sent as JSON, bytes when binary).
    labels = [s.decode() if isinstance(s, bytes) else s for s in result.as_numpy("logits").reshape(-1)]
    top1 = [int(s.split(":")[1]) for s in labels]
    assert top1 == expected.argmax(axis=1).tolist()


OPENVINO_INFERENCE = """
import json, numpy as np, onnxruntime as ort, openvino as ov
path = "/models/model.onnx"
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((4, *session.get_inputs()[0].shape[1:]), dtype=np.float32)
expected = session.run(["probabilities"], {"input": x})[0]
core = ov.Core()
compiled = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
got = compiled(x)["probabilities"]
print(json.dumps({"version": ov.__version__, "devices": core.available_devices,
                  "max_diff": float(abs(got - expected).max()),
                  "same_top1": bool((got.argmax(1) == expected.argmax(1)).all())}))
"""


def test_openvino_runs_the_served_model_inside(served: Container):
    # In the running container (read-only root, user livt): OpenVINO's CPU plugin on the mounted model.
    proc = docker("exec", served.id, "python", "-c", OPENVINO_INFERENCE, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == ["CPU"], result  # the other devices' plugins are left out of the image
    assert result["same_top1"] and result["max_diff"] < 1e-5, result


def test_auto_serves_a_measured_engine(
    run_container: Callable[..., Container], artifact: Path, host_server: str, image_files: list[Path]
):
    # The image's default, --backend auto: an engine chosen and named, the ORT fp32 answers kept.
    container = run_container(*readme_run_args(), model_dir=artifact.parent)
    container.wait_ready()
    with urllib.request.urlopen(f"{container.url}/v1/model", timeout=10) as res:
        engine = json.load(res)["engine"]
    assert engine["engine"] in ("ort", "openvino") and engine["precision"] in ("fp32", "bf16", "int8")
    assert engine["reason"], engine
    body, content_type = _multipart(image_files, {"top_k": "100"})
    ours = _probabilities(_post(f"{container.url}/v1/predict", body, content_type))
    theirs = _probabilities(_post(f"{host_server}/v1/predict", body, content_type))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=0.02)  # bf16 keeps about 3 significant digits


def test_metrics_answer(served: Container):
    with urllib.request.urlopen(f"{served.url}/metrics", timeout=10) as res:
        assert res.status == 200
        text = res.read().decode()
    assert "livt_batch_size_count" in text
    # The health probes, at least, were counted.
    counted = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("livt_http_requests_total{") and "/v2/health/ready" in line
    ]
    assert counted and sum(counted) >= 1, text


def test_no_torch_no_root_no_compilers_inside(served: Container, image: str):
    torch = docker("exec", served.id, "python", "-c", "import torch", check=False)
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr, torch.stderr
    # The training commands are installed with the package, and say what they lack (the first
    # missing import, which may be yaml or timm as well as torch) and how to install it.
    train = docker("exec", served.id, "livt-train", "list", check=False)
    assert train.returncode == 2 and "livt-train: needs the package '" in train.stderr, train.stderr
    assert "pip install torch torchvision" in train.stderr, train.stderr
    assert "Traceback" not in train.stderr
    uid = docker("exec", served.id, "id", "-u").stdout.strip()
    assert uid.isdigit() and int(uid) != 0
    write = docker("exec", served.id, "sh", "-c", "touch /opt/livt/probe", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    # What a lean image leaves out: toolchains, the wheels and the build venv of the build stage,
    # and any pip cache.
    leftovers = docker("run", "--rm", "--entrypoint", "python", image, "-c", LEFTOVERS).stdout.strip()
    assert leftovers == "[] [] [] []", leftovers
    size_mb = int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout) / 1e6
    # torch alone would add several hundred MB; the base is ~150 MB, the serving stack ~320 MB (ONNX
    # Runtime 78 MB, OpenVINO's CPU part ~100 MB, NumPy 73 MB).
    assert size_mb < 500, f"the image is {size_mb:.0f} MB"


LEFTOVERS = """
import glob, shutil
tools = [t for t in ("gcc", "cc", "c++", "g++", "clang", "make", "ld") if shutil.which(t)]
roots = ("/opt", "/usr", "/var", "/root", "/home", "/tmp")
# Debian's python3-venv keeps pip's own wheels in /usr/share/python-wheels (for ensurepip).
wheels = [
    p for r in roots for p in glob.glob(r + "/**/*.whl", recursive=True)
    if not p.startswith("/usr/share/python-wheels/")
]
caches = glob.glob("/root/.cache/pip") + glob.glob("/home/*/.cache/pip") + glob.glob("/tmp/*")
print(tools, wheels, caches, glob.glob("/opt/build"))
"""


# --- stopping and failing ------------------------------------------------------------------------


def _load(port: int, body: bytes, stop_issued: list[float], results: list[tuple[str, float]]) -> None:
    """Send requests back to back on a keep-alive connection until the server is gone.

    Appends (outcome, time it ended): "ok", "http NNN" or the name of a connection-level error.
    A connection refused means the server has closed its socket: the end. A timeout is a hang.
    """
    conn: http.client.HTTPConnection | None = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": "image/png"})
            res = conn.getresponse()
            payload = res.read()
            ok = res.status == 200 and json.loads(payload)["predictions"][0]["top_k"]
            results.append(("ok" if ok else f"http {res.status}: {payload[:200]!r}", time.monotonic()))
            if res.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except ConnectionRefusedError:
            results.append(("refused", time.monotonic()))
            return
        except TimeoutError:
            results.append(("timeout", time.monotonic()))
            return
        except (ConnectionError, http.client.HTTPException) as exc:
            results.append((type(exc).__name__, time.monotonic()))
            if conn is not None:
                conn.close()
            conn = None
            if not stop_issued:  # before the stop, a dropped connection is a failure
                return
    results.append(("still running after 30 s", time.monotonic()))


def test_docker_stop_under_load_is_clean(run_container: Callable[..., Container], artifact: Path):
    container = run_container(*readme_run_args(), model_dir=artifact.parent)
    container.wait_ready()
    buf = io.BytesIO()
    _photo_like((32, 32), 5).save(buf, format="PNG")
    stop_issued: list[float] = []
    results: list[list[tuple[str, float]]] = [[] for _ in range(8)]
    threads = [
        threading.Thread(target=_load, args=(container.port, buf.getvalue(), stop_issued, r), daemon=True)
        for r in results
    ]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop_issued.append(time.monotonic())
    # -t 10 is docker's default grace period: past it the process would be SIGKILLed (exit 137).
    stop = subprocess.run([DOCKER, "stop", "-t", "10", container.id], capture_output=True, timeout=30)
    stop_s = time.monotonic() - stop_issued[0]
    for t in threads:
        t.join(timeout=15)
    assert not any(t.is_alive() for t in threads), "a client is still waiting for an answer"
    assert stop.returncode == 0, stop.stderr
    state = container.inspect()["State"]
    logs = container.logs()
    assert state["ExitCode"] == 0 and not state["OOMKilled"], (state, logs)
    assert stop_s < 9, f"docker stop took {stop_s:.1f} s: close to the grace period, not a quick exit"
    assert "Application shutdown complete" in logs and "Traceback" not in logs, logs

    outcomes = [o for r in results for o in r]
    clean = {"ok", "refused", "RemoteDisconnected", "ConnectionResetError", "BrokenPipeError"}
    bad = [o for o, _ in outcomes if o not in clean]
    assert not bad, f"unclean outcomes: {bad[:5]}"
    before = sum(1 for o, t in outcomes if o == "ok" and t < stop_issued[0])
    after = sum(1 for o, t in outcomes if o == "ok" and t >= stop_issued[0])
    assert before > 50, f"only {before} requests answered before the stop: no load to speak of"
    # Requests in flight when SIGTERM arrived were answered, not dropped.
    assert after >= 1, "no request completed after the stop signal"


@pytest.mark.parametrize(
    ("case", "cause"),
    [
        ("missing", "does not exist"),
        ("checksum", "checksum mismatch"),
        ("garbage", "not a loadable ONNX model"),
    ],
)
def test_a_bad_model_exits_at_once_with_the_cause_in_the_logs(
    run_container: Callable[..., Container], artifact: Path, tmp_path: Path, case: str, cause: str
):
    models = tmp_path / "models"
    models.mkdir()
    models.chmod(0o755)  # the container's user is not root
    if case == "checksum":  # the artifact's bytes changed after export, its .sha256 did not
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 0xFF
        (models / "model.onnx").write_bytes(bytes(data))
        (models / "model.onnx.sha256").write_text(Path(f"{artifact}.sha256").read_text())
    elif case == "garbage":  # with its checksum: the image requires one, and it must not be the cause
        garbage = b"\x08\x01 this is no ONNX model"
        (models / "model.onnx").write_bytes(garbage)
        (models / "model.onnx.sha256").write_text(f"{hashlib.sha256(garbage).hexdigest()}  model.onnx\n")
    for f in models.iterdir():
        f.chmod(0o644)
    container = run_container(*readme_run_args(), model_dir=models)
    state = container.wait_exit(timeout=30)
    exited_s = time.monotonic() - container.started
    logs = container.logs()
    assert state["ExitCode"] == 2, (state, logs)
    assert "livt-serve: cannot serve the model" in logs and cause in logs and "Traceback" not in logs, logs
    assert container.inspect()["RestartCount"] == 0
    assert exited_s < 15, f"took {exited_s:.1f} s to give up"


# --- compose -------------------------------------------------------------------------------------


def _compose() -> list[str]:
    if docker("compose", "version", check=False).returncode == 0:
        return [DOCKER, "compose"]
    if shutil.which("docker-compose"):  # Debian's package (compose v1)
        return ["docker-compose"]
    pytest.fail("no compose: install docker-compose (Debian) or the compose plugin")


def test_compose_file_mounts_the_demo_export():
    # `config` parses and validates the file against the compose schema and resolves the paths.
    proc = subprocess.run(
        [*_compose(), "-f", str(ROOT / "docker" / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    for name in ("livt-serve", "livt-serve-gpu"):
        svc = services[name]
        volumes = svc["volumes"]
        assert len(volumes) == 1, volumes
        vol = volumes[0]
        if isinstance(vol, str):  # short syntax: SOURCE:TARGET:MODE
            source, target, mode = vol.rsplit(":", 2)
            read_only = mode == "ro"
        else:
            source, target, read_only = vol["source"], vol["target"], vol.get("read_only", False)
        # Where README's `make demo` writes the export.
        assert Path(source) == ROOT / "runs" / "fmnist" / "export", source
        assert target == "/models" and read_only, vol
        assert svc["environment"]["LIVT_MODEL"] == "/models/model.onnx"
        assert svc["read_only"] is True and "/tmp" in svc["tmpfs"]
