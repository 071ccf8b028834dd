#!/usr/bin/env bash
# GPU timings of the shipped default, for a borrowed GPU machine (session 41: one H200). In the repo root,
# with crm importable (PYTHONPATH=src, as device_parallel_runs.sh sets it):
#   OUT=folder VAL=folder-in-BIG-layout bash benchmarks/device_gpu_timings.sh
# Writes OUT/gpu_timings.txt: `crm time` at 3840x2160 and 6000x4000 (both presets' paths: a blocky and a
# precise mask come from the synthetic scene) at fp32, fp16 and bf16; whole `crm refine` processes
# (benchmarks/whole_process.py) at 4K on the device in fp32 and fp16; and `crm eval` of VAL (when given)
# at each precision and on the machine's CPU, to show what reduced precision does to IoU and mBA. Each
# part has its own time limit.
set -u
LOG="$OUT/gpu_timings.txt"
DEVICE=${DEVICE:-cuda}
step() {  # seconds, then a command; its output appended to LOG under a header
  local limit=$1; shift
  echo "### $*" >> "$LOG"
  timeout "$limit" "$@" >> "$LOG" 2>&1
  echo "### exit $? after ${SECONDS}s" >> "$LOG"
}
mkdir -p "$OUT"
: > "$LOG"
for precision in fp32 fp16 bf16; do
  for size in 3840x2160 6000x4000; do
    step 40 python3 -m crm_cli time --size "$size" --device "$DEVICE" --precision "$precision" --repeat 3 --json
  done
done
step 60 python3 benchmarks/whole_process.py --sizes 3840x2160 --repeat 3 --budget 5 -- --device "$DEVICE"
step 60 python3 benchmarks/whole_process.py --sizes 3840x2160 --repeat 3 --budget 5 -- --device "$DEVICE" --precision fp16
if [ -n "${VAL:-}" ]; then
  for precision in fp32 fp16 bf16; do
    step 60 python3 -m crm_cli eval "$VAL" --device "$DEVICE" --precision "$precision" --json -q
  done
  step 90 python3 -m crm_cli eval "$VAL" --device cpu --json -q
fi
