#!/usr/bin/env bash
# Everything a lent GPU is needed for, in one device call of under 10 minutes:
#   1. scripts/gpu/check.sh: node, the device, rebuild of the cuda addon, the cuda tests;
#      then test/nccl.test.ts on one GPU (PEFT_TS_NCCL_LIB: env.sh looks in python's site-packages);
#   2. training throughput of gpt2-clm, llama1b-clm and llama1b-qlora (bench/train.js
#      --device cuda), each beside Python peft (shared/bench/peft_baseline.py, carried as
#      .gpu/peft_baseline.py by pack.sh) on the same GPU, in separate processes so that the
#      two never share the card's memory; nvidia-smi samples memory.used meanwhile.
# Every step has its own timeout, cut further so the whole run ends by RUN_ALL_BUDGET_S
# (default 560); a failed step is recorded and the next one runs. Logs and JSON go to $OUT
# (summary.json, steps.tsv, <step>.log, train-<workload>.json, base-<workload>.json).
#
#   here:  bash scripts/gpu/pack.sh
#   there: carry ["dist", "native/cuda/build", ".gpu"], command "bash scripts/gpu/run_all.sh", timeout_s 600
#   DRY=1 bash scripts/gpu/run_all.sh   rehearsal without a GPU: the CPU emulator addon,
#        --tiny models, one step, the baseline on the CPU for gpt2-clm only
#   RUN_ALL_ONLY="gpt2-clm llama1b-clm"  a subset of the workloads; RUN_ALL_CHECK=0 skips step 1
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
gpu_start=$(date +%s)
source scripts/gpu/env.sh
budget="${RUN_ALL_BUDGET_S:-560}"
: > "$out/steps.tsv"

# step NAME TIMEOUT CMD...: runs CMD with min(TIMEOUT, what is left of the budget), output to
# $out/NAME.log (its tail echoed), exit status and seconds to steps.tsv. 124: timed out.
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( budget - ($(date +%s) - gpu_start) ))
  if [ "$left" -lt 15 ]; then say "$name: skipped, budget spent"; printf '%s\tskipped\t0\n' "$name" >> "$out/steps.tsv"; return 1; fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "$name (timeout ${limit}s)"
  local t0=$(date +%s)
  timeout -k 5 "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$out/steps.tsv"
  tail -n "${TAIL:-6}" "$out/$name.log"
  [ $rc -eq 0 ] || echo "!! $name exit $rc$([ $rc -eq 124 ] && echo ' (timed out)')"
  return $rc
}

if [ "${RUN_ALL_CHECK:-1}" = 1 ]; then
  TAIL=25 step check 270 env CHECK_TEST_TIMEOUT=150 bash scripts/gpu/check.sh
fi
# NCCL on one GPU: world size 1 still makes a communicator and calls ncclAllReduce and
# ncclBroadcast on device buffers (test/nccl.test.ts; the 2-rank jobs need two GPUs and mpirun).
step nccl 60 env PEFT_TS_TEST_NCCL_NP=1 node --test --test-concurrency=1 dist/test/nccl.test.js
node --input-type=module -e "
  const m = await import('./dist/src/backends/index.js');
  const s = m.cudaStatus(); if (!s.available) { console.log('cuda unavailable: ' + s.reason); process.exit(3); }
  console.log(JSON.stringify(m.cudaInfo()));" > "$out/cuda_info.json" 2>&1 || die "the cuda backend is not available: $(cat "$out/cuda_info.json")"

# Python baseline: the GPU machine's python3 (torch, transformers, peft; no bitsandbytes, so
# llama1b-qlora has no baseline there). DRY: the oracle's python, on the CPU, gpt2-clm only.
py="${PEFT_BASELINE_PYTHON:-python3}"
baseline=.gpu/peft_baseline.py
[ -f "$baseline" ] || baseline=../shared/bench/peft_baseline.py
if [ "$DRY" = 1 ]; then
  py="${PEFT_BASELINE_PYTHON:-/opt/pyref/bin/python}"
  ours_args=(--tiny --steps 1 --warmup 1)
else
  ours_args=(--steps "${RUN_ALL_STEPS:-5}" --warmup "${RUN_ALL_WARMUP:-2}")
fi

if [ "$DRY" != 1 ] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,memory.used,memory.total,utilization.gpu --format=csv -l 1 > "$out/nvidia-smi-mem.csv" 2>&1 &
  smi=$!
  trap 'kill $smi 2>/dev/null' EXIT
fi

for wl in ${RUN_ALL_ONLY:-gpt2-clm llama1b-clm llama1b-qlora}; do
  case $wl in
    gpt2-clm) t_base=60; t_ours=120; dtype=bfloat16 ;;
    llama1b-clm) t_base=90; t_ours=150; dtype=bfloat16 ;;
    llama1b-qlora) t_base=60; t_ours=150; dtype=float32 ;;  # NF4 weights; bf16 compute inside Linear4bit
    *) die "unknown workload $wl" ;;
  esac
  [ "$DRY" = 1 ] && t_base=$(( t_base * 2 ))  # the CPU baseline on a shared 2-core machine
  base_args=(--no-baseline)
  if [ -f "$baseline" ] && { [ "$DRY" != 1 ] || [ "$wl" = gpt2-clm ]; }; then
    if [ "$DRY" = 1 ]; then dev_args=(cpu 2); else dev_args=(cuda); fi
    if step "base-$wl" "$t_base" "$py" "$baseline" "$wl" "${dev_args[@]}"; then
      tail -1 "$out/base-$wl.log" > "$out/base-$wl.json"
      base_args=(--baseline-result "$out/base-$wl.json")
    fi
  fi
  TAIL=8 step "train-$wl" "$t_ours" node dist/bench/train.js "$wl" --device cuda --dtype "$dtype" "${ours_args[@]}" \
    "${base_args[@]}" --out "$out/train-$wl.json"
done

# summary.json: the step table and every result row, for the report
node --input-type=module -e "
  import { readFileSync, existsSync, writeFileSync } from 'node:fs';
  const out = process.argv[1];
  const steps = readFileSync(out + '/steps.tsv', 'utf8').trim().split('\n').filter(Boolean)
    .map((l) => { const [name, rc, s] = l.split('\t'); return { name, rc, seconds: Number(s) }; });
  const results = {};
  for (const wl of ['gpt2-clm', 'llama1b-clm', 'llama1b-qlora']) {
    const f = out + '/train-' + wl + '.json';
    if (existsSync(f)) results[wl] = JSON.parse(readFileSync(f, 'utf8')).rows;
  }
  const info = readFileSync(out + '/cuda_info.json', 'utf8').trim();
  writeFileSync(out + '/summary.json', JSON.stringify({ dry: process.env.DRY === '1', info: JSON.parse(info), steps, results }, null, 2));
  console.log('| workload | impl | step ms | throughput | peak GPU GiB | staged GiB |');
  console.log('|---|---|---|---|---|---|');
  for (const [wl, rows] of Object.entries(results)) for (const r of rows)
    console.log('| ' + wl + (r.tiny ? ' (tiny)' : '') + ' | ' + r.impl + ' | ' + r.step_ms + ' | ' + r.throughput + ' ' + r.unit + ' | ' + (r.peak_mem_GiB ?? '-') + ' | ' + (r.staged_GiB ?? '-') + ' |');
  console.log(steps.map((s) => s.name + ':' + s.rc + '(' + s.seconds + 's)').join(' '));
" "$out" || echo "!! summary failed"
say "run_all done"
awk -F'\t' '$2 != 0 { bad = 1 } END { exit bad }' "$out/steps.tsv"
