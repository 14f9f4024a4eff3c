#!/usr/bin/env bash
# One-time setup on a fresh Debian/Ubuntu machine: system packages, npm packages, native
# addon and TypeScript build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
if ! dpkg -s libopenblas-dev build-essential libopenmpi-dev openmpi-bin >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq build-essential libopenblas-dev libopenmpi-dev openmpi-bin >/dev/null
fi
# Build against the installed Node headers when present (no header download offline).
if [ -f /usr/include/node/node_api.h ]; then export npm_config_nodedir=/usr; fi
npm ci --no-audit --no-fund
npm run build
