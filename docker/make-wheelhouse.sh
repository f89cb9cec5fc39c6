#!/usr/bin/env bash
# Download every wheel the CPU image installs into its build context, for an offline build:
#   docker/make-wheelhouse.sh [DIR]          (default DIR: docker/wheelhouse)
# The files are the locked ones (docker/requirements-*.lock, sha256-checked), for the image's
# Python and platform, not this host's: by default CPython 3.11 on x86_64 glibc 2.36, which is
# Debian bookworm's python3 (the offline base) and python:3.11-slim's. Another base needs
# WHEELHOUSE_PYTHON (e.g. 3.12), WHEELHOUSE_GLIBC (e.g. 2.39) or WHEELHOUSE_ARCH (e.g. aarch64).
# WHEELHOUSE_GPU=1: the GPU image's lock (onnxruntime-gpu, about 250 MB more) instead of the CPU one.
# Uses the pip of $PYTHON (default python3) and its configuration (index, proxy).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$repo/docker/wheelhouse}
python=${PYTHON:-python3}
py_version=${WHEELHOUSE_PYTHON:-3.11}
glibc_minor=${WHEELHOUSE_GLIBC:-2.36}
glibc_minor=${glibc_minor#2.}
arch=${WHEELHOUSE_ARCH:-x86_64}

# pip takes a --platform literally: a wheel built for an older glibc (manylinux_2_17, ...) is only
# accepted when its tag is listed too, so list all of them up to the base's glibc.
platforms=()
for ((minor = glibc_minor; minor >= 17; minor--)); do
    platforms+=(--platform "manylinux_2_${minor}_${arch}")
done
platforms+=(--platform "manylinux2014_${arch}")
if [[ $arch == x86_64 || $arch == i686 ]]; then
    platforms+=(--platform "manylinux2010_${arch}" --platform "manylinux1_${arch}")
    for ((minor = 16; minor >= 5; minor--)); do platforms+=(--platform "manylinux_2_${minor}_${arch}"); done
fi

serve_lock=$repo/docker/requirements-serve.lock
if [[ ${WHEELHOUSE_GPU:-0} == 1 ]]; then serve_lock=$repo/docker/requirements-gpu.lock; fi

mkdir -p "$dir"
"$python" -m pip download --quiet --disable-pip-version-check --require-hashes --only-binary=:all: \
    --python-version "$py_version" --implementation cp --abi "cp${py_version/./}" "${platforms[@]}" \
    -r "$serve_lock" -r "$repo/docker/requirements-build.lock" -d "$dir"
echo "wheelhouse: $(find "$dir" -name '*.whl' | wc -l) wheels, $(du -sh "$dir" | cut -f1) in $dir"
