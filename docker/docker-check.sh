#!/usr/bin/env bash
# `make docker-check`: build the CPU image offline, from nothing, and check the running container.
#   docker/docker-check.sh ARTIFACT.onnx
# 1. Docker and debootstrap (and a compose, to validate docker/compose.yaml): installed with
#    apt-get when missing and running as root, else a failure that says what to install.
# 2. A daemon: the one that answers, else one started here (root only) and stopped on exit. No
#    systemd here, and no iptables: dockerd runs without its default bridge; the tests publish
#    ports on a network of their own (docker-proxy), as `docker run -p` in the README.
# 3. The offline base (docker/make-offline-base.sh) and the wheelhouse (docker/make-wheelhouse.sh),
#    then `docker build --network none`: the build cannot reach any network.
# 4. tests/docker (pytest -m docker) on the image: they start, check and remove their containers.
# It never skips: where Docker cannot run, it fails with the reason. $PYTHON (default python3) is
# the environment with livt, pytest and tritonclient (the dev extra).
set -euo pipefail

artifact=$(realpath "${1:?usage: $0 ARTIFACT.onnx}")
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
cache=${LIVT_DOCKER_CACHE:-$repo/build/docker}
base=${LIVT_DOCKER_BASE:-livt-base:bookworm}
image=${LIVT_DOCKER_IMAGE:-livt-serve:check}
docker=${DOCKER:-docker}
label=livt.docker-check
daemon_pid=""

fail() {
    echo "docker-check: $*" >&2
    exit 1
}
now() { date +%s%N; }
elapsed() { # seconds since $1 (from now), one decimal
    local tenths=$((($(now) - $1) / 100000000))
    echo "$((tenths / 10)).$((tenths % 10))"
}
daemon_answers() { "$docker" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

cleanup() {
    local status=$?
    if daemon_answers; then
        # What a test left behind if it was killed: only what carries this check's label.
        "$docker" ps -aq --filter "label=$label" | xargs -r "$docker" rm -f -v >/dev/null || true
        "$docker" network ls -q --filter "label=$label" | xargs -r "$docker" network rm >/dev/null || true
    fi
    if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        echo "== stopping the Docker daemon started here (pid $daemon_pid)"
        kill -TERM "$daemon_pid"
        for _ in $(seq 60); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$daemon_pid" 2>/dev/null; then
            echo "docker-check: dockerd $daemon_pid did not stop in 30 s; killing it" >&2
            kill -KILL "$daemon_pid" || true
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$cache"
start=$(now)

# --- 1. tools ------------------------------------------------------------------------------------
missing=()
if ! daemon_answers && ! command -v dockerd >/dev/null; then missing+=(docker.io); fi
command -v "$docker" >/dev/null || missing+=(docker.io)
# The base's root file system, once made, is kept: debootstrap is needed only to make it.
if [[ ! -s $cache/debian-bookworm-python3.tar ]] && ! command -v debootstrap >/dev/null; then
    missing+=(debootstrap)
fi
if ! "$docker" compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
    missing+=(docker-compose)
fi
if ((${#missing[@]})); then
    readarray -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [[ $(id -u) != 0 ]]; then
        fail "missing ${missing[*]}: run 'sudo apt-get install ${missing[*]}' (or run this as root)"
    fi
    echo "== apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$cache/apt.log" 2>&1 \
        || { tail -20 "$cache/apt.log" >&2; fail "apt-get install ${missing[*]} failed"; }
fi

# --- 2. daemon -----------------------------------------------------------------------------------
if daemon_answers; then
    echo "== using the Docker daemon that answers ($("$docker" version --format '{{.Server.Version}}'))"
else
    [[ $(id -u) == 0 ]] || fail "no Docker daemon answers, and starting one needs root"
    echo "== starting dockerd (log: $cache/dockerd.log)"
    dockerd --iptables=false --ip6tables=false --bridge=none >"$cache/dockerd.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 120); do
        daemon_answers && break
        kill -0 "$daemon_pid" 2>/dev/null || {
            tail -20 "$cache/dockerd.log" >&2
            daemon_pid=""
            fail "dockerd exited at start-up (above: the end of its log)"
        }
        sleep 0.5
    done
    daemon_answers || { tail -20 "$cache/dockerd.log" >&2; fail "dockerd did not answer within 60 s"; }
fi

# --- 3. offline base, wheelhouse, image ----------------------------------------------------------
step=$(now)
bash "$repo/docker/make-offline-base.sh" "$base"
echo "   base: $(elapsed "$step") s"

step=$(now)
PYTHON=$python bash "$repo/docker/make-wheelhouse.sh"
echo "   wheelhouse: $(elapsed "$step") s"

echo "== docker build --network none (offline base, wheelhouse only) -> $image"
step=$(now)
if ! "$docker" build --network none -f "$repo/docker/Dockerfile" --build-arg "BASE_IMAGE=$base" \
    --build-arg PIP_NO_INDEX=1 -t "$image" "$repo" >"$cache/build.log" 2>&1; then
    tail -40 "$cache/build.log" >&2
    fail "docker build failed (whole log: $cache/build.log)"
fi
size=$("$docker" image inspect --format '{{.Size}}' "$image")
echo "   build: $(elapsed "$step") s; image $image: $((size / 1000000)) MB"

# --- 4. the running container --------------------------------------------------------------------
echo "== tests/docker on $image"
LIVT_DOCKER_IMAGE=$image LIVT_DOCKER_ARTIFACT=$artifact DOCKER=$docker \
    "$python" -m pytest -q -m docker -p no:cacheprovider "$repo/tests/docker"
echo "== docker check passed in $(elapsed "$start") s"
