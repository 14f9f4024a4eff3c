#!/usr/bin/env bash
# `npm run build:cuda`: builds native/cuda/build/peft_cuda.node, the CUDA backend's addon.
# Never part of `npm run build` or `npm test`. Needs nvcc (CUDA 13), g++, the cuBLAS headers
# (not the library: cuBLAS is loaded at run time) and the Node-API headers.
#
#   CUDA_HOME    CUDA toolkit (default /usr/local/cuda): nvcc, cuda_runtime headers, libcudart_static.a
#   CUBLAS_HOME  where include/cublas_api.h is, when not under $CUDA_HOME/include (e.g. an
#                unzipped nvidia-cublas wheel: .../nvidia/cu13)
#   NODE_INCLUDE Node-API headers (default <node prefix>/include/node, else the snapshot
#                that a previous build left in native/cuda/build/include)
#   CUDA_ARCH    SASS target (default 90: H100/H200), PTX for it is embedded too
#   STRICT=1     warnings are errors
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/build"
obj="$out/obj"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
NVCC="${NVCC:-$CUDA_HOME/bin/nvcc}"
CXX="${CXX:-g++}"
ARCH="${CUDA_ARCH:-90}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"

die() { echo "build:cuda: $*" >&2; exit 1; }
[ -x "$NVCC" ] || die "nvcc not found at $NVCC (set CUDA_HOME or NVCC)"
command -v "$CXX" >/dev/null || die "$CXX not found"
[ -f "$CUDA_HOME/lib64/libcudart_static.a" ] || die "libcudart_static.a not found under $CUDA_HOME/lib64"

# cuBLAS headers
cublas_inc=""
for d in "${CUBLAS_HOME:+$CUBLAS_HOME/include}" "$CUDA_HOME/include" "$out/include/cublas"; do
  if [ -n "$d" ] && [ -f "$d/cublas_api.h" ]; then cublas_inc="$d"; break; fi
done
[ -n "$cublas_inc" ] || die "cublas_api.h not found: set CUBLAS_HOME (e.g. an unzipped nvidia-cublas wheel's nvidia/cu13)"

# Node-API headers (C) and node-addon-api (C++ wrapper)
node_inc="${NODE_INCLUDE:-}"
if [ -z "$node_inc" ] && command -v node >/dev/null; then
  node_inc="$(cd "$(dirname "$(command -v node)")/.." && pwd)/include/node"
fi
[ -n "$node_inc" ] && [ -f "$node_inc/node_api.h" ] || node_inc="$out/include/node"
[ -f "$node_inc/node_api.h" ] || die "node_api.h not found (set NODE_INCLUDE to the Node headers' include/node)"
napi_inc="$root/node_modules/node-addon-api"
[ -f "$napi_inc/napi.h" ] || napi_inc="$out/include/node-addon-api"
[ -f "$napi_inc/napi.h" ] || die "node-addon-api not found (npm install)"

mkdir -p "$obj"
werr_nv=(); werr_cc=()
if [ "${STRICT:-0}" = 1 ]; then werr_nv=(-Werror all-warnings); werr_cc=(-Werror); fi

nvflags=(-std=c++17 -O3 -Xcompiler -fPIC,-Wall,-Wextra "${werr_nv[@]}" -lineinfo
  -gencode "arch=compute_$ARCH,code=sm_$ARCH" -gencode "arch=compute_$ARCH,code=compute_$ARCH")
ccflags=(-std=c++17 -O2 -fPIC -Wall -Wextra "${werr_cc[@]}" -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS
  -I"$CUDA_HOME/include" -I"$cublas_inc" -I"$node_inc" -I"$napi_inc")

echo "build:cuda: nvcc $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), sm_$ARCH + PTX, cuBLAS headers $cublas_inc"
pids=()
compile() {  # one job per source, at most $JOBS at a time
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 0.2; done
  "$@" &
  pids+=($!)
}
for f in "$here"/src/*.cu "$here"/attention/attention.cu; do
  compile "$NVCC" "${nvflags[@]}" -c "$f" -o "$obj/$(basename "$f" .cu).o"
done
for f in "$here"/src/*.cc; do
  compile "$CXX" "${ccflags[@]}" -c "$f" -o "$obj/$(basename "$f" .cc).o"
done
ok=1
for p in "${pids[@]}"; do wait "$p" || ok=0; done
[ "$ok" = 1 ] || die "compilation failed"

# cudart is linked statically: the addon then needs only the driver (libcuda.so.1, opened
# by cudart when first used), so it loads anywhere and reports a missing GPU cleanly.
"$CXX" -shared -o "$out/peft_cuda.node" "$obj"/*.o "$CUDA_HOME/lib64/libcudart_static.a" \
  -ldl -lpthread -lrt
# Only Node-API symbols may stay unresolved (node provides them when it loads the addon).
if command -v nm >/dev/null; then
  missing="$(nm -uD "$out/peft_cuda.node" | awk '$1 == "U" {print $2}' | grep -v '@' | grep -Ev '^(napi_|node_api_)' || true)"
  [ -z "$missing" ] || die "unresolved symbols in peft_cuda.node: $missing"
fi
echo "build:cuda: wrote $out/peft_cuda.node"

# The host-only unit check of the allocator and the strided walks.
"$CXX" -std=c++17 -O1 -Wall -Wextra "${werr_cc[@]}" "$here/test/host_test.cc" "$here/src/alloc.cc" -o "$out/host_test"
"$out/host_test"

# Snapshot the headers, so the build folder alone can be rebuilt on a machine without
# them (the GPU machine has nvcc but no Node headers).
if [ "$node_inc" != "$out/include/node" ]; then
  mkdir -p "$out/include/node" "$out/include/node-addon-api"
  cp "$node_inc"/js_native_api.h "$node_inc"/js_native_api_types.h "$node_inc"/node_api.h "$node_inc"/node_api_types.h \
    "$out/include/node/"
  cp "$napi_inc"/napi.h "$napi_inc"/napi-inl.h "$napi_inc"/napi-inl.deprecated.h "$out/include/node-addon-api/" 2>/dev/null || true
fi
if [ "$cublas_inc" != "$out/include/cublas" ]; then
  mkdir -p "$out/include/cublas"
  cp "$cublas_inc"/cublas_api.h "$cublas_inc"/cublas_v2.h "$out/include/cublas/"
fi
