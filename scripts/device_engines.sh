#!/usr/bin/env bash
# Issue 16's GPU measurement, one call of the device tool (run scripts/device_prepare.sh here first):
# SigLIP-2 SO400M/16-512 served end to end with real JPEGs, eager and compiled ahead of time side by side
# in one bench run, nvJPEG preprocessing, each tower's attention backend, compile time and package size.
#   ENGINES_PRECISION=bf16 (default) or fp8: one precision per call keeps a call under 10 minutes
#   (estimate: export and AOTInductor compile of both towers 2-4 min, four served phases of 15 s).
#   BENCH_FAMILY=jinaclip2 BENCH_SIZE=full: JinaCLIP-v2 full size instead.
set -uo pipefail
cd "$(dirname "$0")/.."
export BENCH_PRECISIONS="${ENGINES_PRECISION:-bf16}"
export BENCH_ARGS="--compile --skip smoke --image-preprocess torch --preprocess-instances 4 ${BENCH_ARGS:-}"
export GPU_PREPROCESS_RUN=0  # this run's served phases already use nvJPEG
exec bash scripts/device_bench.sh
