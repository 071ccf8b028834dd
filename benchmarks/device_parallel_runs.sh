#!/usr/bin/env bash
# CRM runs side by side on one borrowed GPU, each time-boxed by device_train.py (session 40: one H200,
# 16 cores; three runs at ~21 steps/s each, the GPU 96-98% busy). In the repo root:
#   OUT=folder PACK=runs/pack IMAGENET=runs/mnv2_imagenet.pt MINUTES=8.2 \
#     PLAN=benchmarks/device_plans/session40.txt bash benchmarks/device_parallel_runs.sh
# PLAN holds one run per line: a name, then its crm train arguments (shell words; $IMAGENET, $VAL1024,
# $VAL256 and $THIN are expanded; a line that does not parse, or a name used twice, stops the script before any
# run starts). `bash benchmarks/device_parallel_runs.sh --list` prints the plan's runs as read
# (NUL-separated: name, argument count, arguments) and exits. SHARE is device_train.py's --share: side by side, a step is slower than in the
# lone probe (session 40: 47 ms against 29-37), so less than 0.8 lets the schedule end inside MINUTES.
# PACK from benchmarks/pack_training_data.py, IMAGENET from benchmarks/trim_mobilenet_init.py. Wheels in
# WHEELS (default .dev/whl: typer, click, rich as pinned here) are installed first when present, since
# such a machine runs the checkout without installing it. OUT gets <run>.tar (logs, exports), <run>.last.pt
# (for --resume), env.txt and gpu_util.txt, refreshed every 20 s so that a call cut short returns them.
# THIN_N > 0 first draws that many thin composites at the thin set's scale from the pack's photos
# (make_thin_train.py, seed THIN_SEED, one process per core) into THIN (default $RUNS/thin, emptied
# first), for a plan that trains on "$THIN/data" with --network-masks "$THIN/coarse"; the drawing's time
# comes out of MINUTES. A plan whose arguments name $THIN needs THIN_N, or composites drawn there already.
# `--check` reads the plan and these settings as a run would, and exits (0: a run would start).
set -u
export PYTHONUNBUFFERED=1
MINUTES=${MINUTES:-8.4}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-4}
RUNS=${RUNS:-/tmp/crm_runs}
PACK=${PACK:-runs/pack}
IMAGENET=${IMAGENET:-runs/mnv2_imagenet.pt}
PLAN=${PLAN:-benchmarks/device_plans/session40.txt}
SHARE=${SHARE:-0.8}
VAL1024=${VAL1024:-}
VAL256=${VAL256:-}
WHEELS=${WHEELS:-.dev/whl}
THIN_N=${THIN_N:-0}
THIN_SEED=${THIN_SEED:-58}
THIN=${THIN:-$RUNS/thin}

# The plan's runs: NAMES[i] and RUN_ARGS[i], its crm train arguments quoted again (printf %q), to eval.
read_plan() {
  local line name rest number=0 known
  local -a args
  NAMES=() RUN_ARGS=()
  [ -r "$PLAN" ] || { echo "cannot read the plan $PLAN" >&2; return 1; }
  while IFS= read -r line || [ -n "$line" ]; do  # the last line may lack its newline
    number=$((number + 1))
    line=${line%$'\r'}
    read -r name rest <<< "$line"
    case "$name" in ''|'#'*) continue ;; esac
    args=()
    if ! eval "args=($rest)" 2> /dev/null; then
      echo "$PLAN:$number: the arguments of run $name do not parse (an open quote, or a comment after them?)" >&2
      return 1
    fi
    for known in "${NAMES[@]}"; do
      [ "$known" != "$name" ] || { echo "$PLAN:$number: a second run named $name" >&2; return 1; }
    done
    NAMES+=("$name")
    if [ ${#args[@]} -eq 0 ]; then RUN_ARGS+=(""); else RUN_ARGS+=("$(printf '%q ' "${args[@]}")"); fi
  done < "$PLAN"
  [ ${#NAMES[@]} -gt 0 ] || { echo "no run in $PLAN" >&2; return 1; }
}

read_plan || exit 1
if [ "${1:-}" = "--list" ]; then
  for i in "${!NAMES[@]}"; do
    eval "args=(${RUN_ARGS[i]})"
    printf '%s\0%s\0' "${NAMES[i]}" "${#args[@]}"
    [ ${#args[@]} -eq 0 ] || printf '%s\0' "${args[@]}"
  done
  exit 0
fi
[[ $THIN_N =~ ^[0-9]+$ ]] || { echo "THIN_N must be a whole number, not '$THIN_N'" >&2; exit 1; }
if [ "$THIN_N" -eq 0 ] && [ ! -d "$THIN/data" ]; then
  for i in "${!NAMES[@]}"; do
    eval "args=(${RUN_ARGS[i]})"
    for word in ${args[@]+"${args[@]}"}; do
      if [[ $word == *"$THIN"* ]]; then
        echo "run ${NAMES[i]} of $PLAN trains on thin composites in $THIN: give THIN_N, the number to draw" >&2
        exit 1
      fi
    done
  done
fi
[ "${1:-}" != "--check" ] || exit 0
mkdir -p "$RUNS" "$OUT"
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
{
  date -u; nproc; free -g | head -2; df -h /dev/shm | tail -1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c "import sys, torch, timm, typer, click, rich, cv2, numpy, safetensors; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.is_available(), 'timm', timm.__version__, 'typer', typer.__version__, 'numpy', numpy.__version__, 'cv2', cv2.__version__)"
  python3 -m crm_cli info 2>&1 | head -30
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [ "$THIN_N" -gt 0 ]; then
  start=$(date +%s)
  rm -rf "$THIN"  # a warm machine's earlier, larger draw would leave composites beyond THIN_N
  python3 benchmarks/make_thin_train.py "$PACK/train" "$THIN" --n "$THIN_N" --seed "$THIN_SEED" --workers "$(nproc)" \
    2> "$OUT/thin.log" > "$OUT/thin.json" || { echo "make_thin_train.py failed:"; tail -n 5 "$OUT/thin.log"; exit 1; }
  drawn=$(( $(date +%s) - start ))
  MINUTES=$(python3 -c "print(max(1.0, $MINUTES - $drawn / 60))")
  echo "$THIN_N thin composites in $drawn s (the runs get $MINUTES minutes): $(cat "$OUT/thin.json")"
fi
(nvidia-smi dmon -s u -d 5 > "$OUT/gpu_util.txt" 2>&1 &) 2>/dev/null

COMMON=(--data "$PACK/train" --val "$PACK/val" --device "$DEVICE" --workers "$WORKERS" --threads 2
        --batch 12 --query-window 112 --keep-exports --val-images 16 --ckpt-every 250)

train() {  # name, then crm train arguments
  local name=$1; shift
  python3 benchmarks/device_train.py --minutes "$MINUTES" --probe-steps "${PROBE:-60}" --share "$SHARE" --validations 8 --out "$RUNS/$name" -- \
    "${COMMON[@]}" "$@" < /dev/null > "$RUNS/$name.log" 2>&1
  echo "run $name ended with exit code $?" >> "$RUNS/$name.log"
}

snapshot() {  # each run's small files into OUT/<run>.tar and OUT/<run>.last.pt (atomically), so a killed
              # call still returns them
  local name
  for name in "${NAMES[@]}"; do
    [ -f "$RUNS/$name.log" ] || continue
    (cd "$RUNS" && tar -cf "$OUT/.$name.tar" "$name.log" $(ls $name/log.csv $name/val.jsonl $name/model*.safetensors 2>/dev/null)) \
      && mv "$OUT/.$name.tar" "$OUT/$name.tar"
    if [ -f "$RUNS/$name/last.pt" ]; then cp "$RUNS/$name/last.pt" "$OUT/.$name.pt" && mv "$OUT/.$name.pt" "$OUT/$name.last.pt"; fi
  done
}

PIDS=()
for i in "${!NAMES[@]}"; do
  eval "args=(${RUN_ARGS[i]})"
  train "${NAMES[i]}" "${args[@]}" & PIDS+=($!)
done

running() { local p; for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
while running; do sleep 20; snapshot; done
wait
snapshot
pkill -f "nvidia-smi dmon" 2>/dev/null
ls -la "$OUT"
tail -n 4 "$RUNS"/*.log
