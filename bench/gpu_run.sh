#!/usr/bin/env bash
# The prepared GPU run (bench/BENCHMARKS.md): on a bare GPU machine that has torch but not diffusers, zarr or
# numcodecs, install those from wheels carried in .whl/, build the SD 1.x architecture with random weights,
# run the three benchmarks at GPU sizes and copy their JSON (and this log) to $OUT. Each phase has its own
# time limit so one slow phase cannot take the others' time; torch.compile, the slowest to warm up, is last.
#   device tool: run(command="bash bench/gpu_run.sh", carry=[".whl"], timeout_s=570)
#   on CPU (a smoke run of the same script): SMALL=1 bash bench/gpu_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-run-out}; mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_run.log") 2>&1
start=$(date +%s)
phase() { echo "== $1 ($(( $(date +%s) - start )) s)"; }
if ls .whl/*.whl >/dev/null 2>&1; then
  phase "install carried wheels"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HAIRDIFF_CACHE=${HAIRDIFF_CACHE:-/tmp/hairdiff-cache} OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), sys.version.split()[0])"
if [ "${SMALL:-0}" = 1 ]; then  # CPU smoke sizes: the same commands, minutes not seconds of GPU
  MODEL=tiny; R=64; N=32; NAIVE=4; TN=16; TI=5; TB=4; CT=300; RES=${RES:-/tmp/gpu-run-smoke}
else
  MODEL=/tmp/sd1; R=512; N=1024; NAIVE=16; TN=64; TI=25; TB=16; CT=150; RES=${RES:-bench/results}
  phase "build the SD 1.x architecture with random weights"
  [ -f /tmp/sd1/model_index.json ] || timeout 180 python3 bench/build_sd1_random.py /tmp/sd1 --half
fi
phase "extract_speed (product path, ceiling, naive, variants)"
timeout 240 python3 bench/extract_speed.py --model $MODEL --resolution $R --images $N --naive-images $NAIVE --variants --out $RES
phase "train_speed (cached vs online)"
timeout 120 python3 bench/train_speed.py --model $MODEL --resolution $R --images $TN --iters $TI --batch-size $TB --out $RES
phase "head_speed (the head's training step alone)"
[ "${SMALL:-0}" = 1 ] || timeout 90 python3 bench/head_speed.py
phase "host_pipeline (host side alone: codecs and the training reader on 1, 2 and 8 cores)"
timeout 90 python3 bench/host_pipeline.py --seconds 1 --repeats 1 --threads 1,2,8 --resolution $R --out $RES
phase "torch.compile row (last: may be cut by its limit)"
timeout $CT python3 bench/extract_speed.py --model $MODEL --compile-only --out $RES
phase "done"
cp "$RES"/extract_speed.json "$RES"/train_speed.json "$RES"/host_pipeline.json "$RES"/head_speed.json "$OUT"/ 2>/dev/null
ls -la "$OUT"
