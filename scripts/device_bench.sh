#!/usr/bin/env bash
# `mmembed bench` on a GPU machine with no network and no package index (the lent H100/H200 box):
# its image has python3 with torch, transformers and numpy 2, but no tritonserver or tritonclient.
#
# Needs, in .device/ (git-ignored, built on a machine with pip; docs/PERFORMANCE.md says how):
#   whl/numpy-1.26.4-cp312-*.whl whl/tritonclient-*.whl whl/python_rapidjson-*.whl whl/protobuf-*.whl
#   whl/mmembed-*.whl            pytriton-trim.tar.xz (the nvidia-pytriton wheel's server, backend, libs)
# Two environments: this process runs on the image's packages (numpy 2, which its transformers and
# scipy need) plus the client and server wheels; the Python-backend stubs run in a venv that puts
# numpy 1.26 first (the pip Triton's Python backend cannot use numpy 2) and the image's packages after.
# Prints the benchmark table last; writes bench.json, bench.log (and bench-gpu-preprocess.*, below) and
# the server logs (server-logs.tar.gz) to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/mmembed-bench-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
REPO=$(pwd)
WHEELS=("$REPO"/.device/whl/*.whl)
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
BASE=$(python3 -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))")

python3 -m venv --without-pip /tmp/stubenv || exit 1
STUB_SITE=$(/tmp/stubenv/bin/python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
python3 -m pip install -q --no-index --no-deps --target "$STUB_SITE" "${WHEELS[@]}" || exit 1
echo "import site; site.addsitedir('$BASE')" > "$STUB_SITE/zz-image-packages.pth"
# The image's scipy (and sklearn, built on it) use numpy-2-only names (`np.long`) and fail to import
# beside numpy 1.26, and transformers imports them whenever they are installed (a detection loss,
# generation utilities). The encoders use neither: marking both absent in the stub environment only
# makes transformers skip them (seen on the H200, 2026-11-26: SiglipTextModel then imports).
echo 'import sys; sys.modules.update(scipy=None, sklearn=None)' > "$STUB_SITE/aa-no-scipy.pth"
export MMEMBED_STUB_PYTHON=/tmp/stubenv/bin/python3

CLIENT_SITE=/tmp/clientsite
python3 -m pip install -q --no-index --no-deps --target "$CLIENT_SITE" $(ls "${WHEELS[@]}" | grep -v numpy) || exit 1
tar xJf "$REPO/.device/pytriton-trim.tar.xz" -C "$CLIENT_SITE" || exit 1
export PYTHONPATH=$CLIENT_SITE

cd /tmp  # not the repository root: there `import mmembed` would find the unmapped source folder
python3 -c "import numpy, torch, transformers, mmembed; print('bench env: numpy', numpy.__version__, 'torch', \
torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" || exit 1
env -u PYTHONPATH /tmp/stubenv/bin/python3 -c "import numpy, PIL, tokenizers, mmembed.runtime.torch_encoder; \
import transformers.models.siglip.modeling_siglip; print('stub env: numpy', numpy.__version__, 'ok')" 2>&1 | tail -4
# BENCH_PRECISIONS=bf16 measures one precision. JinaCLIP-v2 instead: BENCH_FAMILY=jinaclip2 BENCH_SIZE=full
# (the smoke parity and the transformers baseline are SigLIP-2 only and are skipped for it).
python3 -m mmembed.cli bench --family "${BENCH_FAMILY:-siglip2}" --size "${BENCH_SIZE:-so400m-512}" \
    --device cuda $(for p in ${BENCH_PRECISIONS:-bf16 fp8}; do printf -- "--precision %s " "$p"; done) \
    --seconds "${SECONDS_PER_PHASE:-15}" --processes 4 --threads 4 --work-dir /tmp/bench --report "$OUT/bench.json" \
    ${BENCH_ARGS:-} \
    2>&1 | grep -v "31999" | tee "$OUT/bench.log"
# Then bf16 served once more with image preprocessing on the GPU (nvJPEG): about 2 more minutes, reusing
# the checkpoint; every step the first run measured is skipped. GPU_PREPROCESS_RUN=0 leaves it out.
if [ "${GPU_PREPROCESS_RUN:-1}" = "1" ]; then
  python3 -m mmembed.cli bench --family "${BENCH_FAMILY:-siglip2}" --size "${BENCH_SIZE:-so400m-512}" \
      --device cuda --precision bf16 --image-preprocess torch --preprocess-instances 4 \
      --skip smoke --skip encoder --skip baseline --skip preprocess \
      --seconds "${SECONDS_PER_PHASE:-15}" --processes 4 --threads 4 --work-dir /tmp/bench \
      --report "$OUT/bench-gpu-preprocess.json" \
      2>&1 | grep -v "31999" | tee "$OUT/bench-gpu-preprocess.log"
fi
# One archive: the device tool brings back at most 8 files from $OUT.
tar czf "$OUT/server-logs.tar.gz" -C /tmp $(cd /tmp && ls mmembed-tritonserver-*.log 2>/dev/null)
