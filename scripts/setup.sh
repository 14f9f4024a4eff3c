#!/usr/bin/env bash
# One-time setup on a fresh Debian/Ubuntu machine: system packages, npm packages, native
# addon and TypeScript build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
# python3: node-gyp runs gyp, a Python program, to configure the native builds.
# libdnnl-dev: oneDNN bf16 GEMMs (optional at run time). Open MPI: the data-parallel addon (npm run build:mpi).
if ! dpkg -s libopenblas-dev libdnnl-dev build-essential python3 libopenmpi-dev openmpi-bin >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq build-essential libopenblas-dev libdnnl-dev python3 libopenmpi-dev openmpi-bin >/dev/null
fi
# Build against the installed Node headers when present (no header download offline).
if [ -f /usr/include/node/node_api.h ]; then export npm_config_nodedir=/usr; fi
# npm ci runs the package's install script (native addon) and prepare (TypeScript build).
npm ci --no-audit --no-fund
# The install script never fails an install; here a missing addon is an error.
node native/install.cjs --strict
npm run build:mpi
[ -f dist/src/index.js ] || npm run build:ts
echo "setup done: try  npx peft-ts --help  or  npm run demo"
