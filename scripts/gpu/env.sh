# Sourced by scripts/gpu/check.sh and run_all.sh (from the repository root): puts node on
# PATH (the GPU machine has none: the carried .gpu/node.xz from pack.sh), sets $out (logs,
# under $OUT when the device tool gives one), `say` and `die`, and, with DRY=1, points the
# cuda backend at the CPU emulator build (native/cuda/emu) for a rehearsal without a GPU.
gpu_start=${gpu_start:-$(date +%s)}
out="${OUT:-/tmp/peft-gpu-run}"
mkdir -p "$out"
say() { echo "== $* ($(( $(date +%s) - gpu_start ))s)"; }
die() { echo "${0##*/}: $*" >&2; exit 1; }

if ! command -v node >/dev/null; then
  [ -s .gpu/node.xz ] || die "no node on PATH and no .gpu/node.xz (run scripts/gpu/pack.sh and carry .gpu)"
  mkdir -p /tmp/n && xz -dc .gpu/node.xz > /tmp/n/node && chmod +x /tmp/n/node && export PATH=/tmp/n:$PATH
fi
[ -d dist/test ] || die "dist/ missing: carry it (scripts/gpu/pack.sh builds it)"

DRY="${DRY:-0}"
if [ "$DRY" = 1 ]; then
  export PEFT_TS_CUDA_PATH="$PWD/native/cuda/build-emu/peft_cuda.node"
  export PEFT_TS_CUBLAS_PATH="$PWD/native/cuda/build-emu/libcublas.so.13"
  export PEFT_TS_NCCL_LIB="$PWD/native/cuda/build-emu/libnccl.so.2"
  # a small emulated card, so the rehearsal runs under the out-of-memory guard
  export PEFT_TS_CUDA_EMU_MEMORY_MB="${PEFT_TS_CUDA_EMU_MEMORY_MB:-4096}"
fi
# NCCL (data parallelism): no system package there; torch's wheels ship one (nvidia-nccl-cu*).
if [ "$DRY" != 1 ] && [ -z "${PEFT_TS_NCCL_LIB:-}" ]; then
  for d in $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64; do
    for f in "$d"/nvidia/nccl/lib/libnccl.so.2 "$d"/libnccl.so.2; do
      if [ -f "$f" ]; then export PEFT_TS_NCCL_LIB="$f"; break 2; fi
    done
  done
fi
