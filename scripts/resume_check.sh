#!/usr/bin/env bash
# Kills a training run mid-way (SIGKILL, no chance to clean up), resumes it from its last
# checkpoint, and checks the final adapter is byte-identical to an uninterrupted run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/peft-ts-resume-check}
rm -rf "$out"; mkdir -p "$out"
cli="node dist/src/cli/main.js"
args=(train --data assets/data/kjv_section_train.jsonl --eval-data assets/data/kjv_section_test.jsonl
  --max-steps 40 --save-steps 10 --eval-steps 1000 --batch-size 8 --lr 2e-3 --max-length 48 --seed 7 --lora-dropout 0.1)
$cli "${args[@]}" --output-dir "$out/full" > "$out/full.log" 2>&1
$cli "${args[@]}" --output-dir "$out/killed" > "$out/killed.log" 2>&1 &
pid=$!
while [ ! -d "$out/killed/checkpoint-20" ]; do
  kill -0 $pid 2>/dev/null || { echo "run ended before checkpoint-20"; exit 1; }
  sleep 0.2
done
kill -9 $pid; wait $pid 2>/dev/null || true
echo "killed after: $(ls "$out/killed" | grep checkpoint | tr '\n' ' ')"
$cli "${args[@]}" --output-dir "$out/killed" --resume > "$out/resumed.log" 2>&1
a=$(sha256sum "$out/full/adapter_model.safetensors" | cut -d' ' -f1)
b=$(sha256sum "$out/killed/adapter_model.safetensors" | cut -d' ' -f1)
echo "uninterrupted: $a"; echo "killed+resumed: $b"
[ "$a" = "$b" ] && echo "IDENTICAL" || { echo "DIFFERENT"; exit 1; }
