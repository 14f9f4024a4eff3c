#!/usr/bin/env bash
# Rebuilds assets/ (default model, tokenizer, data sets) from the Debian KJV text. See assets/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-/opt/pyref/bin/python}
command -v bible >/dev/null || { apt-get update -qq && apt-get install -y -qq bible-kjv; }
"$PY" scripts/build_default_data.py
"$PY" scripts/build_default_model.py "$@"
