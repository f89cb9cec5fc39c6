#!/usr/bin/env bash
# Check the serving image's install and entry command without Docker:
#   docker/ci-serve-check.sh ARTIFACT.onnx [PORT]
# Creates a fresh virtualenv WITHOUT torch, installs exactly as docker/Dockerfile does, starts the
# image's entry command against ARTIFACT, checks /v2/health/ready and one /v1/predict, stops it.
set -euo pipefail

artifact=$(realpath "${1:?usage: $0 ARTIFACT.onnx [PORT]}")
port=${2:-18000}
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d)
server_pid=""

cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "== venv in $work (no torch)"
"$python" -m venv "$work/venv"
venv="$work/venv/bin"
"$venv/pip" install --quiet --disable-pip-version-check -r "$repo/docker/requirements-serve.txt"
# Install from a copy of the image's build context, exactly what .dockerignore lets in: pip builds
# in place, so installing "$repo" itself could pick up a stale build/ (modules deleted since) or
# files the image never sees.
src="$work/src"
mkdir -p "$src/docker"
for file in pyproject.toml README.md LICENSE; do
    if [[ -e "$repo/$file" ]]; then cp "$repo/$file" "$src/"; fi
done
cp "$repo/docker/requirements-serve.txt" "$src/docker/"
tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' -cf - livt | tar -C "$src" -xf -
"$venv/pip" install --quiet --disable-pip-version-check --no-deps "$src"
"$venv/python" -c "import importlib.util as u, livt.serving; assert u.find_spec('torch') is None, 'torch is installed'"

echo "== livt-serve on port $port"
# The Dockerfile's ENTRYPOINT, with the port moved so CI can run several checks at once.
LIVT_MODEL="$artifact" "$venv/livt-serve" --host 0.0.0.0 --port "$port" >"$work/serve.log" 2>&1 &
server_pid=$!

# The Dockerfile's HEALTHCHECK, retried while the server starts.
for _ in $(seq 60); do
    if "$venv/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/v2/health/ready', timeout=2)" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$work/serve.log"; echo "livt-serve exited during start-up" >&2; exit 1
    fi
    sleep 1
done
"$venv/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/v2/health/ready', timeout=2)"
echo "ready"

"$venv/python" - "$port" <<'PY'
import base64, io, json, sys, urllib.request

from PIL import Image

port = sys.argv[1]
buf = io.BytesIO()
Image.new("RGB", (40, 30), (200, 120, 40)).save(buf, format="PNG")
body = json.dumps({"images": [base64.b64encode(buf.getvalue()).decode()], "top_k": 3}).encode()
req = urllib.request.Request(
    f"http://127.0.0.1:{port}/v1/predict", data=body, headers={"Content-Type": "application/json"}
)
with urllib.request.urlopen(req, timeout=30) as res:
    answer = json.load(res)
top = answer["predictions"][0]["top_k"]
assert len(top) >= 1 and 0.0 <= top[0]["probability"] <= 1.0, answer
print("predict ok:", top[0]["label"], round(top[0]["probability"], 4))
PY
echo "== serving check passed"
