#!/usr/bin/env bash
# Build .device/ (git-ignored) for scripts/device_bench.sh: what the lent GPU box lacks, for its Python 3.12.
# Run here, after `make setup`; the box has no network. About 45 MB, under the 64 MiB a device call carries.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
rm -rf .device && mkdir -p .device/whl
P=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
   --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64)
$PY -m pip download -q --no-deps "${P[@]}" -d .device/whl \
    numpy==1.26.4 tritonclient==2.73.0 protobuf==6.33.6 python-rapidjson==1.25
$PY -m pip wheel -q --no-deps --no-build-isolation . -w .device/whl
# The nvidia-pytriton wheel's tritonserver, Python backend, 3.12 stub and the libraries ldd names.
SITE=$($PY -c "import os, pytriton; print(os.path.dirname(os.path.dirname(pytriton.__file__)))")
TRIM=$(mktemp -d)
mkdir -p "$TRIM/pytriton/tritonserver/python_backend_stubs" "$TRIM/nvidia_pytriton.libs"
cp -a "$SITE"/pytriton/tritonserver/{bin,backends,caches} "$TRIM/pytriton/tritonserver/"
cp -a "$SITE/pytriton/tritonserver/python_backend_stubs/3.12" "$TRIM/pytriton/tritonserver/python_backend_stubs/"
for lib in $(LD_LIBRARY_PATH="$SITE/nvidia_pytriton.libs" ldd "$SITE"/pytriton/tritonserver/bin/tritonserver \
        "$SITE"/pytriton/tritonserver/backends/python/libtriton_python.so \
        "$SITE"/pytriton/tritonserver/python_backend_stubs/3.12/triton_python_backend_stub \
        | grep nvidia_pytriton.libs | awk '{print $1}' | sort -u); do
    cp -a "$SITE/nvidia_pytriton.libs/$lib" "$TRIM/nvidia_pytriton.libs/"
done
echo '"""Trimmed nvidia-pytriton: the tritonserver binary and Python backend only."""' > "$TRIM/pytriton/__init__.py"
tar cJf .device/pytriton-trim.tar.xz -C "$TRIM" .
rm -rf "$TRIM"
grep -qx "/.device/" .git/info/exclude 2>/dev/null || echo "/.device/" >> .git/info/exclude
du -sh .device
