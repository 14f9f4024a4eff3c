#!/usr/bin/env bash
# Prepares what scripts/gpu/check.sh needs on the GPU machine (which has CUDA but no Node,
# no node_modules and no network), all in git-ignored paths that the device tool carries:
#   dist/               compiled TypeScript (npx tsc)
#   native/cuda/build/  the addon, its objects and a snapshot of the headers to rebuild it
#   .gpu/node.xz        this machine's node binary, xz-compressed (~24 MB)
#   .gpu/peft_baseline.py  the Python peft anchor (../shared/bench), for run_all.sh
# Then run there:  carry ["dist", "native/cuda/build", ".gpu"], command "bash scripts/gpu/run_all.sh"
# (everything, under 10 minutes) or "bash scripts/gpu/check.sh" (build and tests only).
# CUBLAS_HOME must point at cuBLAS headers when /usr/local/cuda has none (native/cuda/README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
npx tsc -p tsconfig.json
bash native/cuda/build.sh
mkdir -p .gpu
if [ ! -s .gpu/node.xz ] || [ "$(command -v node)" -nt .gpu/node.xz ]; then
  xz -6 -T2 -c "$(command -v node)" > .gpu/node.xz.tmp && mv .gpu/node.xz.tmp .gpu/node.xz
fi
for b in ../shared/bench/peft_baseline.py shared/bench/peft_baseline.py; do
  if [ -f "$b" ]; then cp "$b" .gpu/peft_baseline.py; break; fi
done
[ -f .gpu/peft_baseline.py ] || echo "pack.sh: peft_baseline.py not found: run_all.sh will run without the baseline" >&2
du -sh dist native/cuda/build .gpu
echo 'carry: ["dist", "native/cuda/build", ".gpu"]   command: bash scripts/gpu/run_all.sh   timeout_s: 600'
