#!/usr/bin/env bash
# Check the serving image's install and entry command without Docker:
#   docker/ci-serve-check.sh ARTIFACT.onnx [PORT]
# Creates a fresh virtualenv WITHOUT torch, installs what docker/Dockerfile installs (the locked,
# hash-checked serve dependencies, then the package with --no-deps), starts the image's entry
# command against ARTIFACT, checks /v2/health/ready and one /v1/predict, stops it. `make
# docker-check` does the same and more in the image itself; this one needs no Docker.
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
"$venv/pip" install --quiet --disable-pip-version-check --require-hashes -r "$repo/docker/requirements-serve.lock"
# Install from a copy of the image's build context, exactly what .dockerignore lets in: pip builds
# in place, so installing "$repo" itself could pick up a stale build/ (modules deleted since) or
# files the image never sees.
src="$work/src"
mkdir -p "$src"
cp "$repo/pyproject.toml" "$repo/README.md" "$src/"
tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' -cf - livt | tar -C "$src" -xf -
"$venv/pip" install --quiet --disable-pip-version-check --no-deps "$src"
"$venv/python" -c "import importlib.util as u, livt.serving; assert u.find_spec('torch') is None, 'torch is installed'"

echo "== livt-serve on port $port"
# The Dockerfile's ENTRYPOINT and environment, with the port moved so CI can run several checks at once.
LIVT_MODEL="$artifact" LIVT_HOST=0.0.0.0 LIVT_PORT="$port" "$venv/livt-serve" >"$work/serve.log" 2>&1 &
server_pid=$!

# The Dockerfile's HEALTHCHECK command (read from it), retried while the server starts.
healthcheck=$("$venv/python" - "$repo/docker/Dockerfile" <<'PY'
import json, re, sys

text = open(sys.argv[1]).read()
print(json.loads(re.search(r"HEALTHCHECK[^\n]*\\\n\s*CMD (\[.*\])", text).group(1))[2])
PY
)
export LIVT_PORT=$port
for _ in $(seq 60); do
    if "$venv/python" -c "$healthcheck" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$work/serve.log"; echo "livt-serve exited during start-up" >&2; exit 1
    fi
    sleep 1
done
"$venv/python" -c "$healthcheck"
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
