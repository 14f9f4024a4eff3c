#!/usr/bin/env bash
# Builds the CUDA addon against a CPU emulator instead of the GPU, for testing on machines
# without one: native/cuda/build-emu/peft_cuda.node (the real addon.cc, device.cc, alloc.cc;
# the .cu kernels rewritten so that each <<<...>>> launch calls emu::launch; a fake CUDA
# runtime), build-emu/libcublas.so.13 (a fake cuBLAS) and build-emu/libnccl.so.2 (a fake NCCL
# over shared memory between the ranks of one machine). Needs only g++, the CUDA and
# cuBLAS headers and the Node-API headers (found as native/cuda/build.sh finds them).
# Used by `npm run test:cuda-emu`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cuda="$(dirname "$here")"
root="$(cd "$cuda/../.." && pwd)"
out="$cuda/build-emu"
gen="$out/gen"
snap="$cuda/build/include"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
CXX="${CXX:-g++}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
die() { echo "emu build: $*" >&2; exit 1; }

[ -f "$CUDA_HOME/include/cuda_runtime_api.h" ] || die "CUDA headers not found under $CUDA_HOME/include"
cublas_inc=""
for d in "${CUBLAS_HOME:+$CUBLAS_HOME/include}" "$CUDA_HOME/include" "$snap/cublas"; do
  if [ -n "$d" ] && [ -f "$d/cublas_api.h" ]; then cublas_inc="$d"; break; fi
done
[ -n "$cublas_inc" ] || die "cublas_api.h not found (set CUBLAS_HOME, or run npm run build:cuda once)"
node_inc="${NODE_INCLUDE:-}"
if [ -z "$node_inc" ] && command -v node >/dev/null; then node_inc="$(cd "$(dirname "$(command -v node)")/.." && pwd)/include/node"; fi
[ -n "$node_inc" ] && [ -f "$node_inc/node_api.h" ] || node_inc="$snap/node"
[ -f "$node_inc/node_api.h" ] || die "node_api.h not found (set NODE_INCLUDE)"
napi_inc="$root/node_modules/node-addon-api"
[ -f "$napi_inc/napi.h" ] || napi_inc="$snap/node-addon-api"
[ -f "$napi_inc/napi.h" ] || die "node-addon-api not found"

rm -rf "$gen" && mkdir -p "$gen" "$out/obj"
# common.cuh: the emulator instead of the CUDA headers
sed -e 's|#include <cuda_runtime.h>|#include "emu.h"|' -e '/#include <math_constants.h>/d' "$cuda/src/common.cuh" > "$gen/common.cuh"
# kernels: NAME<<<cfg>>>(args); -> emu::launch(emu launch config, [&] { NAME(args); });
for f in "$cuda"/src/*.cu; do
  python3 - "$f" "$gen/$(basename "$f" .cu).cc" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
pat = re.compile(r'([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)<<<([^;]*?)>>>\(([^;]*?)\);')
def split(s):  # top-level commas only: dim3(a, b) stays one argument
    parts, depth, cur = [], 0, ''
    for ch in s:
        if ch == ',' and depth == 0:
            parts.append(cur.strip()); cur = ''; continue
        depth += ch in '(<'
        depth -= ch in ')>'
        cur += ch
    return parts + [cur.strip()]
def launch(m):
    cfg = split(m.group(2))
    return 'emu::launch(%s, %s, [&] { %s(%s); });' % (cfg[0], cfg[1], m.group(1), m.group(3))
out, n = pat.subn(launch, src)
if '<<<' in out: sys.exit('unconverted launch left in ' + sys.argv[1])
open(sys.argv[2], 'w').write('// generated from %s by emu/build.sh\n' % sys.argv[1] + out)
PY
done

flags=(-std=c++17 -O1 -g -fPIC -Wall -Wno-unused-parameter -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -DPEFT_CUDA_EMU
  -I"$gen" -I"$here" -I"$cuda/src" -I"$CUDA_HOME/include" -I"$cublas_inc" -I"$node_inc" -I"$napi_inc")
pids=()
compile() {
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 0.2; done
  "$@" & pids+=($!)
}
for f in "$gen"/*.cc "$cuda"/src/*.cc "$here/emu_runtime.cc"; do
  compile "$CXX" "${flags[@]}" -c "$f" -o "$out/obj/$(basename "$f" .cc).o"
done
compile "$CXX" -std=c++17 -O2 -fPIC -shared "$here/fake_cublas.cc" -o "$out/libcublas.so.13"
compile "$CXX" -std=c++17 -O2 -fPIC -Wall -shared "$here/fake_nccl.cc" -o "$out/libnccl.so.2" -lrt
ok=1; for p in "${pids[@]}"; do wait "$p" || ok=0; done
[ "$ok" = 1 ] || die "compilation failed"
"$CXX" -shared -o "$out/peft_cuda.node" "$out"/obj/*.o -ldl -lpthread
echo "emu build: wrote $out/peft_cuda.node, $out/libcublas.so.13 and $out/libnccl.so.2"
