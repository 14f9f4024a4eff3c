#!/usr/bin/env bash
# What a user of the published package gets: packs this checkout, installs the tarball into
# a fresh app in a temp folder (dependencies from the npm registry or its cache), and checks
# that the install built the native backend, that ESM import, CJS require, subpath imports
# and `npx peft-ts --help` work, that the embedded model loads by its exported path, and
# that training runs at native speed with the event loop free. `npm run test:package`.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(mktemp -d /tmp/peft-ts-pkg-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
npm pack --pack-destination "$WORK" >/dev/null
TGZ=$(ls "$WORK"/peft-ts-*.tgz)
echo "tarball: $(du -h "$TGZ" | cut -f1), $(tar tzf "$TGZ" | wc -l) files"
if tar tzf "$TGZ" | grep -E '^package/(test|bench|dist/test|dist/bench|native/build)/|\.ts$' | grep -v '\.d\.ts$'; then
  echo "FAIL: the tarball ships tests, bench, builds or .ts sources"; exit 1
fi
mkdir "$WORK/app" && cd "$WORK/app"
npm init -y >/dev/null
npm pkg set type=module >/dev/null
# Build against the installed Node headers when present (no header download offline).
if [ -f /usr/include/node/node_api.h ]; then export npm_config_nodedir=/usr; fi
npm install --no-audit --no-fund --prefer-offline "$TGZ" 2>&1 | tail -5
test -f node_modules/peft-ts/native/build/Release/peft_native.node || { echo "FAIL: install did not build the addon"; exit 1; }
npx peft-ts --help | head -3
cat > check.mjs <<'JS'
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import {
  AutoModelForSequenceClassification, Tokenizer, LoraConfig, getPeftModel, Trainer, loadDataset, tokenizeClassification,
  defaultModelPath, defaultDataPath, backendName,
} from 'peft-ts';
import { Tensor } from 'peft-ts/tensor';
assert.equal(backendName(), 'cpu', 'the native backend is active');
assert.equal(typeof Tensor, 'function');
const cjs = createRequire(import.meta.url)('peft-ts');
assert.equal(typeof cjs.Trainer, 'function', 'require("peft-ts") works');
const tok = await Tokenizer.fromPretrained(defaultModelPath);
const model = await AutoModelForSequenceClassification.fromPretrained(defaultModelPath, { numLabels: 4, logger: () => {} });
const peft = getPeftModel(model, new LoraConfig({ r: 8, loraAlpha: 16, taskType: 'SEQ_CLS', targetModules: ['c_attn'] }));
const ds = tokenizeClassification(loadDataset(defaultDataPath('kjv_section_train.jsonl')).select([...Array(320).keys()]), tok, { textColumn: 'text', maxLength: 64 });
let ticks = 0;
const timer = setInterval(() => ticks++, 10);
const t0 = performance.now();
await new Trainer({ model: peft, tokenizer: tok, trainDataset: ds, progressStream: { write: () => true },
  args: { outputDir: 'runs/check', maxSteps: 40, perDeviceTrainBatchSize: 8, learningRate: 2e-3, saveStrategy: 'no', reportTo: 'none', plotCurves: false } }).train();
const s = (performance.now() - t0) / 1000;
clearInterval(timer);
console.log(`40 training steps in ${s.toFixed(1)} s; a 10 ms timer fired ${ticks} times meanwhile`);
assert.ok(ticks >= 20, 'the event loop ran during train()');
JS
node check.mjs
echo "package check: OK"
