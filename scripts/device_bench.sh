#!/usr/bin/env bash
# `mmembed bench` on a GPU machine with no network and no package index (the lent H100/H200 box):
# its image has python3 with torch, transformers and numpy 2, but no tritonserver, tritonclient or numpy<2.
#
# Needs, in .device/ (git-ignored, built on a machine with pip; docs/PERFORMANCE.md says how):
#   whl/numpy-1.26.4-cp312-*.whl  whl/tritonclient-*.whl  whl/protobuf-*.whl  whl/mmembed-*.whl
#   pytriton-trim.tar.xz          the nvidia-pytriton wheel's tritonserver, Python backend, 3.12 stub, libs
# A venv on the base interpreter gets those first on its path and the image's packages after them, so
# this process and the Python-backend stubs (which find python3 on PATH and ignore PYTHONPATH) see
# numpy 1.26 first. Prints the benchmark table last; writes bench.json, bench.log and the server logs to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/mmembed-bench-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
REPO=$(pwd)
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
python3 -m venv --without-pip /tmp/venv || exit 1
SITE=$(/tmp/venv/bin/python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
python3 -m pip install -q --no-index --no-deps --target "$SITE" "$REPO"/.device/whl/*.whl || exit 1
BASE=$(python3 -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))")
echo "import site; site.addsitedir('$BASE')" > "$SITE/zz-image-packages.pth"
tar xJf "$REPO/.device/pytriton-trim.tar.xz" -C "$SITE" || exit 1
cd /tmp  # not the repository root: there `import mmembed` would find the unmapped source folder
/tmp/venv/bin/python3 -c "import numpy, torch, transformers, mmembed; \
print('numpy', numpy.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, \
'mmembed', mmembed.__file__, 'cuda', torch.cuda.is_available())" || exit 1
/tmp/venv/bin/python3 -m mmembed.cli bench --size so400m-512 --device cuda --precision bf16 --precision fp8 \
    --seconds "${SECONDS_PER_PHASE:-20}" --processes 4 --threads 4 --work-dir /tmp/bench --report "$OUT/bench.json" \
    2>&1 | grep -v "31999" | tee "$OUT/bench.log"
for log in /tmp/mmembed-tritonserver-*.log; do cp "$log" "$OUT/"; done
