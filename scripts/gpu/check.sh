#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, after scripts/gpu/pack.sh here and a
# device run carrying ["dist", "native/cuda/build", ".gpu"]. Unpacks node, prints the device,
# rebuilds the CUDA addon with the machine's nvcc when it can (falling back to the carried
# build), then runs the cuda tests: the backend-vs-reference op tests, gradient checks,
# the memory loop, Linear4bit (quant_linear4bit) and test/cuda.test.ts. Writes logs to $OUT when set. Well under 5 minutes.
#   PEFT_TS_CUDA_REBUILD=0  use the carried addon as is
#   DRY=1                   rehearsal without a GPU: the CPU emulator build, cuda.test.js only
#   CHECK_TESTS="..."       the test files (default: the list below)
#   CHECK_TEST_TIMEOUT=240  seconds for the tests
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/gpu/env.sh
say "node $(node --version)"

if [ "$DRY" = 1 ]; then
  say "DRY: building the CPU emulator addon instead of the GPU one"
  bash native/cuda/emu/build.sh > "$out/build.txt" 2>&1 || { tail -30 "$out/build.txt"; die "emulator build FAILED"; }
  tail -1 "$out/build.txt"
else
  say "device"
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,compute_cap --format=csv 2>&1 | tee "$out/nvidia-smi.txt" || true
  ls /usr/local/cuda/lib64/libcublas.so* 2>/dev/null | head -3
  if [ "${PEFT_TS_CUDA_REBUILD:-1}" = 1 ] && [ -x /usr/local/cuda/bin/nvcc ]; then
    say "rebuild with $(/usr/local/cuda/bin/nvcc --version | tail -1)"
    keep=""
    if [ -f native/cuda/build/peft_cuda.node ]; then keep=/tmp/peft_cuda.carried.node; cp native/cuda/build/peft_cuda.node "$keep"; fi
    if ! STRICT=1 JOBS=16 bash native/cuda/build.sh > "$out/build.txt" 2>&1; then
      tail -30 "$out/build.txt"
      echo "check.sh: rebuild FAILED (log in build.txt); using the carried addon"
      [ -n "$keep" ] && cp "$keep" native/cuda/build/peft_cuda.node
    else
      tail -3 "$out/build.txt"
    fi
  fi
  [ -f native/cuda/build/peft_cuda.node ] || die "no native/cuda/build/peft_cuda.node (carry native/cuda/build)"
fi

say "status"
node --input-type=module -e "
  const m = await import('./dist/src/backends/index.js');
  const s = m.cudaStatus();
  console.log(JSON.stringify(s));
  if (!s.available) process.exit(3);
  console.log(JSON.stringify(m.cudaInfo()));
" 2>&1 | tee "$out/status.txt"
[ "${PIPESTATUS[0]}" = 0 ] || die "the cuda backend is not available (see above)"

if [ "$DRY" != 1 ]; then
  say "attention kernels (standalone, against a C++ port of the oracle)"
  if bash native/cuda/attention/build.sh > "$out/attention_build.txt" 2>&1; then
    timeout 120 native/cuda/attention/build/attention_test 2>&1 | tail -25 | tee "$out/attention_test.txt"
  else
    tail -20 "$out/attention_build.txt"; echo "check.sh: attention test build FAILED"
  fi
fi

say "tests"
all="dist/test/cuda.test.js dist/test/attention_fused.test.js dist/test/ops.test.js dist/test/ops-grad.test.js dist/test/memory.test.js dist/test/quant_linear4bit.test.js"
[ "$DRY" = 1 ] && all="dist/test/cuda.test.js"
# shellcheck disable=SC2086
timeout "${CHECK_TEST_TIMEOUT:-240}" node --test --test-concurrency=1 ${CHECK_TESTS:-$all} > "$out/tests.tap" 2>&1
rc=$?
grep -E '^# (tests|pass|fail|skipped|duration)' "$out/tests.tap"
grep -E '^not ok|^# cuda device' "$out/tests.tap" | head -40
if [ $rc -ne 0 ]; then
  grep -B2 -A25 -E '^\s*not ok' "$out/tests.tap" | head -150
fi
say "check done, tests exit $rc"
exit $rc
