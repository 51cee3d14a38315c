#!/usr/bin/env bash
# The GPU machine's one prepared call (issue #8). Runs from the project root after the bundle is unpacked
# (docs/GPU.md, "Running it on a GPU machine"):
#   bash .device/unpack.sh && source /tmp/sft-rt/env.sh && bash bench/device-check.sh
# Default phases, in this order (the checks that decide the next defaults first), each under its own time limit:
#   doctor   the CUDA report (cudaProvider.cudaReport), nvidia-smi, torch/transformers, bench/contrib-probe.ts (the
#            com.microsoft BiasDropout kernel computes what engine/residual.ts assumes) and bench/eval-in-run-check.ts
#            (evaluation inside a training run = between runs, tiny model, bf16)          → $OUT/checks.txt
#   loss     bench/cuda-vs-cpu.ts: 20 steps of GPT-2 124M on CUDA (fp32, bf16) against the CPU fp32 reference
#            curve measured on the H200 machine's CPU (bench/results/2026-11-28-h200-a/cuda-vs-cpu.json; LOSS_ARGS
#            replaces that argument, LOSS_ARGS= computes the reference again, ~20 s); then, when LOSS_VARIANTS is
#            set ("ENV=VALUE,…"; default empty), bf16 again with those variables set
#                          → $OUT/cuda-vs-cpu.json, cuda-vs-cpu-variants.json, the tables appended to checks.txt
#   ablate   gpu-train.ts at B8 T512 bf16 once per ABLATE_RUNS entry ("label:ENV=VALUE[,ENV=VALUE…][:ARG,ARG…]"),
#            each with those variables set (and those extra gpu-train arguments): tok/s, run time, memory, beside
#            the bench phase's run of the same configuration when it ran first. Default, each at gpu-train's K
#            (~768k tokens per run: K = 48 at B8, 12 at B32; K = 16 gave ±5 % between identical runs): "default";
#            "bias-dropout" (the opt-in com.microsoft BiasDropout residual ends, SFT_BIAS_DROPOUT=1); "flat-no-decay"
#            (SFT_FLAT_NO_DECAY=1: the biases' and LayerNorms' AdamW on one vector, ~1,260 fewer small kernels a step);
#            "merge-4" (SFT_MERGE_MICRO_BATCHES=4: the 4 × B8 of a step as one B32 micro-batch, the same steps);
#            "no-hoist" (SFT_HOIST_INVARIANTS=0: weight casts per micro-batch again); "no-ln-fold" (SFT_LN_FOLD=0);
#            bias-dropout at ORT's 'basic' and 'disabled' levels (session creation of the 124M bf16 train graph on
#            the stub CUDA provider: 4.0 s at 'all', 2.7 s 'basic', 1.0 s 'disabled'; on the H200 session creation
#            and the first run took 8 + 7 s at 'all'; 'all' adds ORT's own BiasDropout fusion of the MLP branch and
#            12 FusedMatMul, which bias-dropout makes up for: does the lower level cost run time?); B32 T512 with
#            the defaults; and "dolly-best", the 3 Dolly-shaped epochs (20 s measured, then extrapolated) with
#            merge-4, bias-dropout and 'basic' (an entry whose arguments name --dolly-modes runs the Dolly epochs;
#            with --no-throughput only them) — ~25 s each on the H200, dolly-best ~40 s. The 2026-11-28 list (each
#            storage variant off alone, gelu-exp, no-bf16-storage, ort-basic) can be given in ABLATE_RUNS.
#            bench/step-traffic.ts --table predicts them on the CPU (the "previous" graph, SFT_AUTODIFF_ATTENTION=1
#            SFT_FUSED_LM_HEAD=0 SFT_AUTODIFF_LAYERNORM=1 SFT_BF16_*=0, was measured on 2026-11-28: …-h200-b).
#                                                                          → $OUT/ablate.txt
#   bench    bench/gpu-train.ts (default switches): throughput fp32 and bf16 at B8/B32 T512, host↔device share,
#            memory, Dolly-shaped epochs (--dolly-full here: all 3 epochs measured, ~60 s); the PyTorch ratios
#            from the 2026-11-28 run on the same card type (--pytorch-from bench/results/2026-11-28-h200-a/
#            pytorch.json; BENCH_ARGS="--dolly-max-s 30" runs PyTorch again, bench/pytorch_baseline.py, ~1 min)
#                                                                          → $OUT/gpu-train.{json,log}, pytorch.json
#   profile  one short engine run with ORT's profiler on (SFT_ORT_PROFILE): GPT-2 124M random weights, B8 T512
#            bf16, 4 micro-batches, a 1-step warm-up run, a 1-step run, a K=PROFILE_K (2) run; bench/ort-profile.ts
#            summarises the trace (node time per run, top op types and nodes, nodes per Loop iteration) and
#            bench/profile-vs-model.ts sets it node by node against the static cost model of the same graph. On CUDA
#            the run has CUDA_LAUNCH_BLOCKING=1 (PROFILE_BLOCKING=0 turns it off): every kernel launch waits for
#            its kernel, so a node's time is its GPU time (plus a sync), not the host-side launch time. The trace
#            is written only when the run ends inside its limit (share minus 2 × SUMMARY_S, 15 s, for the summaries)
#                                                                              → $OUT/profile-summary.txt
# Not in the default list (measured on the H200 on 2026-11-28, bench/results/):
#   cli      the product end to end on the device through `sft` (bin/sft.js → dist): train the tiny sample model
#            on the sample data (samples/run.json, a few epochs, device cuda, bf16 default), then `sft eval` and
#            greedy `sft chat` of the result on cuda and on the cpu side by side, and `sft perplexity` on cuda
#                                                                          → $OUT/extras.txt
#   decode   bench/decode-chunks.ts --device cuda: chunked decoding vs per-token on GPT-2 124M (same ids?
#            tok/s at a short and a long prompt)                               → appended to $OUT/extras.txt
# Time: each phase has a share (DOCTOR_S 35, LOSS_S 65, ABLATE_S 270, BENCH_S 200 = 570 s; PROFILE_S 0: it runs on what
# the phases before it leave unused; CLI_S
# 30, DECODE_S 35) and its limit is its share plus what the phases before it left unused, so the default sequence
# ends within ~570 s (a device call may run 600 s; machine start and transfers are outside it, and the session's
# device time is 15 minutes in all: see docs/GPU.md for what the 2026-11-28 calls cost). A phase with < 10 s left
# is skipped. Every phase writes its files as it goes, so a phase cut by its limit still leaves what it
# measured. The device call brings back at most 8 files from $OUT: the 8 above, nothing else goes there (the
# ablation runs' logs and JSON and the ORT traces go to a scratch folder outside $OUT, removed at the end
# unless KEEP_SCRATCH=1).
# Environment: OUT (default $TMPDIR/sft-device-out; the device tool sets it), PHASES, the shares above,
# LOSS_ARGS (cuda-vs-cpu.ts arguments, e.g. --test cuda:bf16), LOSS_VARIANTS, ABLATE_RUNS, PROFILE_K, SUMMARY_S,
# PROFILE_BLOCKING, BENCH_ARGS (extra gpu-train.ts arguments for the bench phase; default above; set it empty for
# gpu-train's own 60 s and a PyTorch run), DRY_RUN=1 (no GPU: the same phases on the CPU with a tiny model, to
# check the script itself: ~1 min on 2 cores).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-${TMPDIR:-/tmp}/sft-device-out}
PHASES=${PHASES:-doctor loss ablate bench profile}
mkdir -p "$OUT"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/sft-device-scratch.XXXXXX")
[ "${KEEP_SCRATCH:-0}" = 1 ] || trap 'rm -rf "$SCRATCH"' EXIT
status=0
# The ablate phase's runs: "label:ENV=VALUE[,ENV=VALUE…]" words, each one short_train with those variables set.
# The loss phase's second check: bf16 with these variables set ("ENV=VALUE,…"; empty: none).
# The four bf16 storage variants off (the bf16 graph before they became the defaults on 2026-11-28).
NO_BF16_STORAGE=SFT_BF16_ATTENTION=0,SFT_BF16_MLP=0,SFT_BF16_PROJ=0,SFT_BF16_LOGITS=0
LOSS_VARIANTS=${LOSS_VARIANTS-}
# Default: the formulation before the 2026-11-28 pass cuts (autodiff attention backward, unfused lm head), and the
# opt-in bf16 attention matrices and MLP activations, alone and together.
ABLATE_RUNS=${ABLATE_RUNS:-default: bias-dropout:SFT_BIAS_DROPOUT=1 flat-no-decay:SFT_FLAT_NO_DECAY=1 merge-4:SFT_MERGE_MICRO_BATCHES=4 no-hoist:SFT_HOIST_INVARIANTS=0 no-ln-fold:SFT_LN_FOLD=0 basic+bias-dropout:SFT_ORT_OPT_LEVEL=basic,SFT_BIAS_DROPOUT=1 disabled+bias-dropout:SFT_ORT_OPT_LEVEL=disabled,SFT_BIAS_DROPOUT=1 default-B32::--shapes,32x512 dolly-best:SFT_MERGE_MICRO_BATCHES=4,SFT_BIAS_DROPOUT=1,SFT_ORT_OPT_LEVEL=basic:--dolly-modes,packed,--dolly-max-s,20,--no-throughput}
declare -A SHARE=([doctor]=${DOCTOR_S:-35} [loss]=${LOSS_S:-65} [profile]=${PROFILE_S:-0} [bench]=${BENCH_S:-200} [cli]=${CLI_S:-30} [decode]=${DECODE_S:-35} [ablate]=${ABLATE_S:-270})
if [ "${DRY_RUN:-0}" = 1 ]; then
  loss_args=(--model tiny --test cpu:fp32)
  bench_args=(--device cpu --smoke)
  bench_default=""
  # The tiny model's shapes (n_positions 128) and fp32 (the CPU EP has no bf16 Gemm); smoke K default = 4.
  short_args=(--device cpu --smoke --shapes 4x64 --precisions fp32)
  model_args=(--model smoke --batch 4 --seq 64 --precision fp32) # profile-vs-model.ts: the profiled graph
  short_key=fp32_B4_T64
  dev=cpu
  loss_variant_test=(--test cpu:bf16emu)
  eval_check_args=()
  decode_args=(--model tiny --device cpu --new 16 --prompts 8,64 --seeds 1)
else
  # The CPU reference curve measured on the H200 machine's CPU (2026-11-28): saves ~20 s of device time.
  # shellcheck disable=SC2206
  loss_args=(${LOSS_ARGS---reference bench/results/2026-11-28-h200-a/cuda-vs-cpu.json})
  bench_args=(--device cuda)
  # The Dolly-shaped epochs run to the end, measured (~60 s on the H200), the first run as long as the trainer's.
  bench_default="--dolly-full --pytorch-from bench/results/2026-11-28-h200-a/pytorch.json"
  short_args=(--device cuda --shapes 8x512 --precisions bf16)
  model_args=(--model gpt2 --batch 8 --seq 512 --precision bf16)
  short_key=bf16_B8_T512
  dev=cuda
  loss_variant_test=(--test cuda:bf16)
  eval_check_args=(--bf16)
  decode_args=(--model gpt2 --device cuda --new 64 --prompts 32,480 --seeds 1)
fi
started=$(date +%s)
now() { echo $(( $(date +%s) - started )); }
stamp() { echo "[$(now) s] $*"; }
shares_before=0 # sum of the shares of the phases already run
phase_limit() { # limit of the phase about to run: its share + what earlier phases left unused
  local carry=$(( shares_before - $(now) ))
  [ "$carry" -gt 0 ] || carry=0
  echo $(( ${SHARE[$1]} + carry ))
}

# gpu-train.ts with the short arguments; $1 = name, $2 = limit (s), the rest: more arguments. Output in $SCRATCH.
short_train() {
  local name=$1 limit=$2
  shift 2
  mkdir -p "$SCRATCH/$name"
  # An entry whose arguments name --dolly-modes runs the Dolly-shaped epochs (with --no-throughput: only them).
  local dolly=--no-dolly
  [[ " $* " == *" --dolly-modes "* ]] && dolly=--no-pytorch
  timeout "$limit" node --import tsx bench/gpu-train.ts "${short_args[@]}" "$dolly" --no-pytorch --no-roundtrip --out "$SCRATCH/$name" "$@" >"$SCRATCH/$name.log" 2>&1
  local rc=$?
  grep -v '^RESULT' "$SCRATCH/$name.log" | sed "s/^/  [$name] /"
  return $rc
}

for phase in $PHASES; do
  [ -n "${SHARE[$phase]:-}" ] || { echo "unknown phase $phase (doctor, loss, bench, cli, profile, decode, ablate)" >&2; status=2; continue; }
  limit=$(phase_limit "$phase")
  shares_before=$(( shares_before + ${SHARE[$phase]} ))
  if [ "$limit" -lt 10 ]; then
    stamp "$phase skipped: $limit s left"
    # A phase with no share of its own (PROFILE_S 0) only runs on time left over: its skip is not a failure.
    [ "${SHARE[$phase]}" -eq 0 ] || status=1
    continue
  fi
  case "$phase" in
    doctor)
      stamp "doctor (limit $limit s)"
      end=$(( $(now) + limit ))
      timeout "$limit" bash -c '
        date -u
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi not available"
        echo "node $(node --version)"
        node --import tsx -e "for (const l of require(\"./native-runner/engine/cudaProvider.ts\").cudaReport()) console.log(l)"
        python3 -c "import torch, transformers; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"| transformers\", transformers.__version__)" 2>&1 | tail -1
      ' 2>&1 | tee "$OUT/checks.txt"
      # What residualBiasDropout (SFT_BIAS_DROPOUT=1) assumes of the com.microsoft BiasDropout CUDA kernel (no CPU kernel).
      left=$(( end - $(now) ))
      [ "$left" -ge 5 ] && timeout "$left" node --import tsx bench/contrib-probe.ts --device "$dev" 2>&1 | tee -a "$OUT/checks.txt"
      # Evaluation inside training runs (the engine's CUDA default since 2026-12-08) against evaluation between runs.
      left=$(( end - $(now) ))
      if [ "$left" -ge 5 ]; then
        timeout "$left" node --import tsx bench/eval-in-run-check.ts --device "$dev" "${eval_check_args[@]}" 2>&1 | tee -a "$OUT/checks.txt"
        if [ "${PIPESTATUS[0]}" -ne 0 ] && [ -z "${SFT_EVAL_IN_RUN:-}" ]; then
          # Keep the later phases' numbers: evaluate between runs, as before 2026-12-08.
          export SFT_EVAL_IN_RUN=0
          echo "eval-in-run check failed: the later phases run with SFT_EVAL_IN_RUN=0" | tee -a "$OUT/checks.txt"
          status=1
        fi
      fi
      ;;
    loss)
      stamp "loss-curve check (limit $limit s)"
      echo "== loss-curve check: bench/cuda-vs-cpu.ts ${loss_args[*]}" >>"$OUT/checks.txt"
      end=$(( $(now) + limit ))
      first=$limit # the variant check below gets the last 30 s
      [ -z "$LOSS_VARIANTS" ] || first=$(( limit - 30 ))
      timeout "$first" node --import tsx bench/cuda-vs-cpu.ts "${loss_args[@]}" --out "$OUT" 2>&1 | tee -a "$OUT/checks.txt"
      rc=${PIPESTATUS[0]}
      [ "$rc" -eq 0 ] || { stamp "loss check exit status $rc"; status=1; }
      # The same check of bf16 with the opt-in variants set (they must pass it before they become defaults).
      left=$(( end - $(now) ))
      if [ -n "$LOSS_VARIANTS" ] && [ "$left" -ge 15 ]; then
        echo "== loss-curve check with ${LOSS_VARIANTS}: bench/cuda-vs-cpu.ts ${loss_args[*]} ${loss_variant_test[*]}" >>"$OUT/checks.txt"
        mkdir -p "$SCRATCH/loss-variants"
        # shellcheck disable=SC2086
        ( export ${LOSS_VARIANTS//,/ }; timeout "$left" node --import tsx bench/cuda-vs-cpu.ts "${loss_args[@]}" "${loss_variant_test[@]}" --out "$SCRATCH/loss-variants" ) 2>&1 | tee -a "$OUT/checks.txt"
        rc=${PIPESTATUS[0]}
        [ "$rc" -eq 0 ] || { stamp "loss check with variants exit status $rc"; status=1; }
        [ -f "$SCRATCH/loss-variants/cuda-vs-cpu.json" ] && cp "$SCRATCH/loss-variants/cuda-vs-cpu.json" "$OUT/cuda-vs-cpu-variants.json"
      elif [ -n "$LOSS_VARIANTS" ]; then
        stamp "loss check with variants skipped: $left s left"
      fi
      ;;
    bench)
      stamp "benchmark (limit $limit s)"
      # shellcheck disable=SC2086
      timeout "$limit" node --import tsx bench/gpu-train.ts "${bench_args[@]}" --out "$OUT" ${BENCH_ARGS-$bench_default} 2>&1 | tee "$OUT/gpu-train.log"
      rc=${PIPESTATUS[0]}
      [ "$rc" -eq 0 ] || { stamp "benchmark exit status $rc"; status=1; }
      ;;
    cli)
      stamp "sft end to end on $dev (limit $limit s)"
      d="$SCRATCH/cli"
      mkdir -p "$d"
      end=$(( $(now) + limit ))
      left() { local l=$(( end - $(now) )); echo $(( l > 1 ? l : 1 )); }
      {
        echo "== sft end to end on $dev, $(date -u)"
        # samples/run.json with absolute paths, the device, 5 epochs (the demo's run is 20), output in scratch
        node -e '
          const fs = require("fs"), path = require("path");
          const [dir, dev] = process.argv.slice(1);
          const run = JSON.parse(fs.readFileSync("samples/run.json", "utf8"));
          run.model_name_or_path = path.resolve("samples", run.model_name_or_path);
          run.dataset = path.resolve("samples", run.dataset);
          run.output_dir = path.join(dir, "run");
          run.device = dev;
          run.num_train_epochs = 5;
          fs.writeFileSync(path.join(dir, "run.json"), JSON.stringify(run, null, 2));
          console.log(JSON.stringify(run));
        ' "$d" "$dev"
        t0=$(now); timeout "$(left)" node bin/sft.js train --config "$d/run.json" 2>&1 | tail -25; echo "train exit ${PIPESTATUS[0]} ($(( $(now) - t0 )) s)"
        ls "$d/run"
        for dv in "$dev" cpu; do
          t0=$(now); timeout "$(left)" node bin/sft.js eval --model "$d/run" --dataset samples/dolly-sample.jsonl --dataset_format dolly --max_length 128 --device "$dv" --json 2>&1 | tail -3; echo "eval on $dv exit ${PIPESTATUS[0]} ($(( $(now) - t0 )) s)"
        done
        for dv in "$dev" cpu; do
          t0=$(now); timeout "$(left)" node bin/sft.js chat --model "$d/run" --prompt "Name three primary colors." --temperature 0 --max_new_tokens 40 --device "$dv" --json 2>&1 | tail -3; echo "greedy chat on $dv exit ${PIPESTATUS[0]} ($(( $(now) - t0 )) s)"
        done
        t0=$(now); timeout "$(left)" node bin/sft.js chat --model "$d/run" --prompt "Name three primary colors." --seed 1 --device "$dev" --json 2>&1 | tail -3; echo "sampled chat (0.7, top-p 0.9) on $dev exit ${PIPESTATUS[0]} ($(( $(now) - t0 )) s)"
        t0=$(now); timeout "$(left)" node bin/sft.js perplexity --model "$d/run" --file README.md --window 128 --stride 64 --device "$dev" --json 2>&1 | tail -3; echo "perplexity on $dev exit ${PIPESTATUS[0]} ($(( $(now) - t0 )) s)"
      } 2>&1 | tee -a "$OUT/extras.txt"
      ;;
    decode)
      stamp "chunked decoding on $dev (limit $limit s)"
      { echo "== bench/decode-chunks.ts ${decode_args[*]}, $(date -u)"; timeout "$limit" node --import tsx bench/decode-chunks.ts "${decode_args[@]}" 2>&1; echo "decode exit $?"; } | tee -a "$OUT/extras.txt"
      ;;
    ablate)
      stamp "ablation: $ABLATE_RUNS (limit $limit s)"
      end=$(( $(now) + limit ))
      labels=()
      set -f # the entries are words, not globs
      # shellcheck disable=SC2206
      runs=($ABLATE_RUNS)
      set +f
      i=0
      for entry in "${runs[@]}"; do
        label=${entry%%:*}
        envs=${entry#*:}
        extra=()
        if [[ $envs == *:* ]]; then
          # shellcheck disable=SC2206
          extra=(${envs#*:}) # "--shapes,32x512" → extra gpu-train arguments
          extra=(${extra[@]//,/ })
          # The dry run's tiny model has 128 positions: its B32 entry runs at 8x64.
          [ "${DRY_RUN:-0}" = 1 ] && extra=("${extra[@]//32x512/8x64}")
          envs=${envs%%:*}
        fi
        left=$(( (end - $(now) - 3) / (${#runs[@]} - i) ))
        i=$(( i + 1 ))
        if [ "$left" -lt 15 ]; then stamp "ablate $label skipped: $left s left"; status=1; continue; fi
        labels+=("$label")
        # shellcheck disable=SC2086
        ( [ -z "$envs" ] || export ${envs//,/ }; short_train "$label" "$left" "${extra[@]}" ) || { stamp "ablate $label exit status $?"; status=1; }
      done
      node -e '
        // The side-by-side table of the ablation runs and the run of the same configuration in the bench phase.
        const fs = require("fs");
        const [scratch, out, key, ...labels] = process.argv.slice(1);
        const read = (f) => { try { return JSON.parse(fs.readFileSync(f, "utf8")); } catch { return null; } };
        const rows = [["run", "switches", "shape", "K", "tok/s", "s per K-step run", "first run s", "peak mem GB"]];
        const notes = [];
        const add = (label, j) => {
          // A Dolly-shaped entry (--dolly-modes): its 3-epoch estimate and where the time went.
          for (const [mode, d] of Object.entries((j && j.dolly) || {})) {
            const sw = Object.entries((j && j.env) || {}).map(([k, v]) => `${k}=${v}`).join(" ") || "(defaults)";
            notes.push(`${label} (${sw}): Dolly ${mode} 3 epochs ${d.three_epochs_s} s${d.extrapolated ? " (extrapolated)" : ""}: session ${d.create_s} s, first run ${d.first_run_s} s, ${d.s_per_step} s/step × ${d.optimizer_steps}, eval ${d.eval_s_each} s, save ${d.save_s_each} s, peak ${d.peak_gpu_mem_GB ?? d.peak_rss_GB} GB`);
          }
          if (j && j.dolly && Object.keys(j.throughput || {}).length === 0) return;
          // An entry run at other shapes (extra arguments) has its own key: its only throughput result.
          const k = j && j.throughput && (j.throughput[key] ? key : Object.keys(j.throughput)[0]);
          const r = k && j.throughput[k];
          if (!r) return notes.push(`${label}: no result (cut by its limit or failed: see its log lines)`);
          if (r.error) return notes.push(`${label}: failed: ${r.error}`);
          const sw = Object.entries((j && j.env) || {}).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => `${k}=${v}`).join(" ") || "(defaults)";
          rows.push([label, sw, k, String(r.K), String(r.tok_s), String(r.run_K_steps_s), String(r.first_run_s), String(r.peak_gpu_mem_GB ?? r.peak_rss_GB ?? "—")]);
        };
        // The run of the same configuration in the bench phase, when that phase ran before this one.
        if (fs.existsSync(`${out}/gpu-train.json`)) add("bench phase", read(`${out}/gpu-train.json`));
        for (const l of labels) add(l, read(`${scratch}/${l}/gpu-train.json`));
        const w = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i] ?? "").length)));
        console.log(`ablation at ${key} (tok/s of the K-step run; each run: one engine, a 1-step warm-up, a 1-step run, then the K-step run):`);
        for (const r of rows) console.log(r.map((c, i) => (i <= 2 ? String(c ?? "").padEnd(w[i]) : String(c ?? "").padStart(w[i]))).join("  ").trimEnd());
        for (const n of notes) console.log(n);
      ' "$SCRATCH" "$OUT" "$short_key" "${labels[@]}" 2>&1 | tee "$OUT/ablate.txt"
      ;;
    profile)
      stamp "profile (limit $limit s)"
      mkdir -p "$SCRATCH/trace"
      # The run gets all but 2 × SUMMARY_S (default 15 s each); the two summaries (reading a trace of some 10⁵ events) the rest.
      if [ "$limit" -lt 40 ]; then
        stamp "profile skipped: $limit s left"
        status=1
        continue
      fi
      blocking=${PROFILE_BLOCKING:-1}
      [ "$dev" = cuda ] || blocking=0
      if [ "$blocking" = 1 ]; then export CUDA_LAUNCH_BLOCKING=1; fi
      SFT_ORT_PROFILE="$SCRATCH/trace/ort" short_train profile $(( limit - 2 * ${SUMMARY_S:-15} )) --k "${PROFILE_K:-2}"
      unset CUDA_LAUNCH_BLOCKING
      rc=$?
      [ "$rc" -eq 0 ] || { stamp "profile run exit status $rc (a session not released writes no trace)"; status=1; }
      {
        echo "ORT profile, $(date -u): gpu-train.ts ${short_args[*]} --no-dolly --no-pytorch --no-roundtrip --k ${PROFILE_K:-2}, SFT_ORT_PROFILE set, CUDA_LAUNCH_BLOCKING=$blocking (profiled: slower than unprofiled runs)"
        grep -v '^RESULT' "$SCRATCH/profile.log"
        echo
        ls -l "$SCRATCH/trace"
        echo
        timeout "${SUMMARY_S:-15}" node --import tsx bench/ort-profile.ts "$SCRATCH/trace" --top 25
        echo
        # The same trace against the static cost model of the same graph, node by node (bench/profile-vs-model.ts).
        timeout "${SUMMARY_S:-15}" node --import tsx bench/profile-vs-model.ts "$SCRATCH/trace" "${model_args[@]}" --steps $(( 1 + ${PROFILE_K:-2} ))
      } >"$OUT/profile-summary.txt" 2>&1
      head -c 8000 "$OUT/profile-summary.txt"
      ;;
  esac
done
stamp "done; results in $OUT$([ "${KEEP_SCRATCH:-0}" = 1 ] && echo " (scratch: $SCRATCH)")"
ls -la "$OUT"
n=$(find "$OUT" -type f | wc -l)
[ "$n" -le 8 ] || echo "warning: $n files in $OUT; the device call brings back at most 8"
exit $status
