#!/usr/bin/env bash
# One-off device call of 2026-11-28 (fourth session): see bench/results/README.md, 2026-11-28-h200-d.
set -u
ALL=SFT_BF16_ATTENTION=1,SFT_BF16_MLP=1,SFT_BF16_PROJ=1,SFT_BF16_LOGITS=1
PHASES="loss ablate bench" LOSS_S=75 ABLATE_S=85 BENCH_S=70 \
LOSS_ARGS="--reference bench/results/2026-11-28-h200-a/cuda-vs-cpu.json --test cuda:fp32,cuda:bf16" \
LOSS_VARIANTS=$ALL \
ABLATE_RUNS="default::--k,48 all:$ALL:--k,48 all-B32:$ALL:--shapes,32x512" \
BENCH_ARGS="--precisions fp32 --no-dolly --pytorch-from bench/results/2026-11-28-h200-a/pytorch.json" \
bash bench/device-check.sh
echo "== 3 Dolly-shaped epochs, packed, bf16, with $ALL" >>"$OUT/checks.txt"
( export ${ALL//,/ }; timeout 55 node --import tsx bench/gpu-train.ts --device cuda --no-throughput --no-pytorch --no-roundtrip --dolly-modes packed --dolly-max-s 25 --out /tmp/dolly ) >/tmp/dolly.log 2>&1
echo "exit $?" >>/tmp/dolly.log
grep -v "W:onnxruntime" /tmp/dolly.log | tail -30 >>"$OUT/checks.txt"
cp /tmp/dolly/gpu-train.json "$OUT/dolly-all.json" 2>/dev/null
tail -12 "$OUT/checks.txt"
