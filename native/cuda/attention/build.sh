#!/usr/bin/env bash
# Builds the fused-attention kernels' checks into native/cuda/attention/build/.
#
#   bash native/cuda/attention/build.sh          nvcc: build/attention_test (sm_90 SASS + compute_90 PTX)
#   bash native/cuda/attention/build.sh emu      g++: build/attention_emu, the same test on the CPU emulation
#   bash native/cuda/attention/build.sh oracle   node + g++: the C++ oracle port against the TypeScript
#                                                oracle (needs `npx tsc -p .` first)
#
#   CUDA_HOME  CUDA toolkit (default /usr/local/cuda)
#   CUDA_ARCH  SASS target (default 90: H100/H200), PTX for it is embedded too
#   STRICT=1   warnings are errors
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/build"
mkdir -p "$out"
mode="${1:-gpu}"
werr_nv=(); werr_cc=()
if [ "${STRICT:-0}" = 1 ]; then werr_nv=(-Werror all-warnings); werr_cc=(-Werror); fi

case "$mode" in
  gpu)
    CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
    NVCC="${NVCC:-$CUDA_HOME/bin/nvcc}"
    ARCH="${CUDA_ARCH:-90}"
    # Same flags as native/cuda/build.sh, so attention.cu drops into the addon unchanged.
    "$NVCC" -std=c++17 -O3 -Xcompiler -Wall,-Wextra "${werr_nv[@]}" -lineinfo \
      -gencode "arch=compute_$ARCH,code=sm_$ARCH" -gencode "arch=compute_$ARCH,code=compute_$ARCH" \
      -I"$here" "$here/attention.cu" "$here/attention_test.cu" -o "$out/attention_test"
    echo "built $out/attention_test (run it on the GPU machine; --bench for timings)"
    ;;
  emu)
    # -O1: quick to build, and the emulation's fibers need no more.
    g++ -std=c++17 -O1 -g -fno-strict-aliasing -Wall -Wextra "${werr_cc[@]}" -DATTN_EMULATE -I"$here" \
      -x c++ "$here/attention.cu" -x c++ "$here/attention_test.cu" -o "$out/attention_emu"
    echo "built $out/attention_emu (EMU_ORDER=forward|reverse|random $out/attention_emu [case name substring])"
    ;;
  oracle)
    root="$(cd "$here/../../.." && pwd)"
    [ -f "$root/dist/src/backends/reference/attention.js" ] || { echo "run npx tsc -p . first" >&2; exit 1; }
    node "$here/oracle_fixture.mjs" fixture "$out/oracle_fixture.bin"
    g++ -std=c++17 -O2 -Wall -Wextra "${werr_cc[@]}" "$here/oracle_check.cpp" -o "$out/oracle_check"
    "$out/oracle_check" "$out/oracle_fixture.bin"
    ;;
  *)
    echo "usage: build.sh [gpu|emu|oracle]" >&2
    exit 1
    ;;
esac
