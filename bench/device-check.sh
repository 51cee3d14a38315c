#!/usr/bin/env bash
# The GPU machine's one prepared call (issue #8). Runs from the project root after the bundle is unpacked
# (docs/GPU.md, "Running the benchmark on a lent GPU machine"):
#   bash .device/unpack.sh && source /tmp/sft-rt/env.sh && bash bench/device-check.sh
# Phases, each under its own time limit so the whole stays under ~9 minutes of device time:
#   doctor   the CUDA report (cudaProvider.cudaReport) and nvidia-smi            → $OUT/doctor.txt
#   loss     bench/cuda-vs-cpu.ts: 20 steps of GPT-2 124M on CUDA (fp32, bf16) vs the CPU → $OUT/cuda-vs-cpu.{json,log}
#   bench    bench/gpu-train.ts: throughput, host↔device share, memory, Dolly-shaped epochs, PyTorch
#            side by side (bench/pytorch_baseline.py)                              → $OUT/gpu-train.{json,log}, pytorch.json
# Environment: OUT (default $TMPDIR/sft-device-out; the device tool sets it), PHASES (default "doctor loss bench"), LOSS_S (150), BENCH_S (380),
# BENCH_ARGS (extra gpu-train.ts arguments, e.g. "--dolly-max-s 30 --no-pytorch"), DRY_RUN=1 (no GPU: the same
# phases on the CPU with a tiny model, to check the script itself: ~1 minute on 2 cores).
# Every phase writes its files as it goes, so a phase cut by its limit still leaves what it measured.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-${TMPDIR:-/tmp}/sft-device-out}
PHASES=${PHASES:-doctor loss bench}
mkdir -p "$OUT"
status=0
run_ts() { node --import tsx "$@"; }
if [ "${DRY_RUN:-0}" = 1 ]; then
  loss_args=(--model tiny --test cpu:fp32)
  bench_args=(--device cpu --smoke)
else
  loss_args=()
  bench_args=(--device cuda)
fi
started=$(date +%s)
stamp() { echo "[$(( $(date +%s) - started )) s] $*"; }

for phase in $PHASES; do
  case "$phase" in
    doctor)
      stamp "doctor"
      {
        date -u
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi not available"
        echo "node $(node --version)"
        run_ts -e "for (const l of require('./native-runner/engine/cudaProvider.ts').cudaReport()) console.log(l)"
        python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__)" 2>&1 | tail -1
      } 2>&1 | tee "$OUT/doctor.txt"
      ;;
    loss)
      stamp "loss-curve check (limit ${LOSS_S:-150} s)"
      timeout "${LOSS_S:-150}" node --import tsx bench/cuda-vs-cpu.ts "${loss_args[@]}" --out "$OUT" 2>&1 | tee "$OUT/cuda-vs-cpu.log"
      rc=${PIPESTATUS[0]}
      [ "$rc" -eq 0 ] || { stamp "loss check exit status $rc"; status=1; }
      ;;
    bench)
      stamp "benchmark (limit ${BENCH_S:-380} s)"
      # shellcheck disable=SC2086
      timeout "${BENCH_S:-380}" node --import tsx bench/gpu-train.ts "${bench_args[@]}" --out "$OUT" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/gpu-train.log"
      rc=${PIPESTATUS[0]}
      [ "$rc" -eq 0 ] || { stamp "benchmark exit status $rc"; status=1; }
      ;;
    *)
      echo "unknown phase $phase (doctor, loss, bench)" >&2
      status=2
      ;;
  esac
done
stamp "done; results in $OUT"
ls -la "$OUT"
exit $status
