#!/usr/bin/env bash
# `npm run test:cuda-emu`: the cuda tests (test/cuda.test.ts, the backend-vs-reference op
# tests, gradient checks, the memory loop, Linear4bit's device path, NCCL data parallelism
# under mpirun with the fake libnccl.so.2) against the CPU emulator build of the addon. They
# check the addon's logic and the kernels' indexing, reductions and barriers; not GPU-only
# behaviour (real concurrency, memory model, launch limits, speed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
bash native/cuda/emu/build.sh
export PEFT_TS_CUDA_PATH="$PWD/native/cuda/build-emu/peft_cuda.node"
export PEFT_TS_CUBLAS_PATH="$PWD/native/cuda/build-emu/libcublas.so.13"
export PEFT_TS_NCCL_LIB="$PWD/native/cuda/build-emu/libnccl.so.2"
node --test --test-concurrency=1 dist/test/cuda.test.js dist/test/ops.test.js dist/test/ops-grad.test.js dist/test/memory.test.js dist/test/quant_linear4bit.test.js \
  dist/test/nccl.test.js
