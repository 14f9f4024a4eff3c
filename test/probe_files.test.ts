// Probes of the file readers with hostile inputs: special files (FIFO, /dev/zero links,
// folders) are refused at once, sizes are capped, JSON shapes are checked before use, a UTF-8
// BOM is accepted and invalid UTF-8 is an error naming the file and line, files cut short by
// a crash mid-write are refused with their name, and non-finite weights are reported on load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/io/config.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { MAX_TENSORS, readSafetensors, readSafetensorsHeader, writeSafetensors } from '../src/io/safetensors.js';
import { decodeUtf8, readJsonFile } from '../src/io/files.js';
import { loadDataset } from '../src/data/dataset.js';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { LoraConfig, PeftModel, getPeftModel } from '../src/peft/index.js';
import { captureWarnings } from '../src/peft/warn.js';
import { readLabelMapping } from '../src/cli/common.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = [path.resolve(here, '../..'), path.resolve(here, '..'), process.cwd()].find((p) => fs.existsSync(path.join(p, 'assets', 'default-model')))!;
const MODEL = path.join(root, 'assets', 'default-model');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-probe-files-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

let n = 0;
/** A copy of the default model folder, with some files replaced. */
function modelCopy(replace: Record<string, (p: string) => void> = {}): string {
  const d = path.join(tmp, `model${n++}`);
  fs.mkdirSync(d);
  for (const f of fs.readdirSync(MODEL)) {
    const p = path.join(d, f);
    if (replace[f]) replace[f](p); else fs.copyFileSync(path.join(MODEL, f), p);
  }
  return d;
}
const mkfifo = (p: string) => { const r = spawnSync('mkfifo', [p]); assert.equal(r.status, 0, 'mkfifo'); };
const toZero = (p: string) => fs.symlinkSync('/dev/zero', p);
const fast = (fn: () => unknown, re: RegExp, ms = 5000) => {
  const t0 = Date.now();
  assert.throws(fn, re);
  assert.ok(Date.now() - t0 < ms, `refused in ${Date.now() - t0} ms`);
};

test('special files are refused without reading or blocking: /dev/zero, FIFO, folder', () => {
  fast(() => loadConfig(modelCopy({ 'config.json': toZero })), /config\.json: is a character device, not a regular file/);
  fast(() => AutoModelForCausalLM.fromPretrainedSync(modelCopy({ 'config.json': toZero })), /config\.json: is a character device/);
  fast(() => Tokenizer.fromFile(modelCopy({ 'tokenizer.json': toZero })), /tokenizer\.json: is a character device/);
  fast(() => Tokenizer.fromFile(modelCopy({ 'tokenizer.json': mkfifo })), /tokenizer\.json: is a FIFO/);
  fast(() => loadConfig(modelCopy({ 'config.json': (p) => fs.mkdirSync(p) })), /config\.json: is a folder/);
  // A FIFO named model.safetensors would block a plain open() forever.
  const fifoModel = modelCopy({ 'model.safetensors': mkfifo });
  fast(() => readSafetensorsHeader(path.join(fifoModel, 'model.safetensors')), /model\.safetensors: is a FIFO \(named pipe\), not a regular file/);
  fast(() => AutoModelForCausalLM.fromPretrainedSync(fifoModel), /model\.safetensors: is a FIFO/);
  fast(() => readSafetensors(path.join(modelCopy({ 'model.safetensors': toZero }), 'model.safetensors')), /is a character device/);
  const data = path.join(tmp, 'fifo.jsonl');
  mkfifo(data);
  fast(() => loadDataset(data), /fifo\.jsonl: is a FIFO/);
  const zdata = path.join(tmp, 'zero.jsonl');
  toZero(zdata);
  fast(() => loadDataset(zdata), /zero\.jsonl: is a character device/);
});

test('sizes are capped per kind of file, checked before reading', () => {
  const big = modelCopy({ 'config.json': (p) => { fs.writeFileSync(p, '{}'); fs.truncateSync(p, 17 << 20); } });
  fast(() => loadConfig(big), /config\.json: 17825792 bytes is more than the 16777216/);
  // A safetensors header of a million tiny entries (under the 100 MB byte cap) is refused
  // from a count on the raw bytes, not parsed for tens of seconds.
  const entries = MAX_TENSORS + 10;
  const hdr = Buffer.from(`{${'"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'.repeat(entries)}"u":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`);
  const len = Buffer.alloc(8); len.writeBigUInt64LE(BigInt(hdr.length));
  const f = path.join(tmp, 'many.safetensors');
  fs.writeFileSync(f, Buffer.concat([len, hdr, Buffer.alloc(4 * entries)]));
  fast(() => readSafetensorsHeader(f), /many\.safetensors: header lists more than 262144 entries/, 2000);
});

test('UTF-8: a BOM is accepted; invalid bytes are an error naming file and line, never replaced', () => {
  const bom = path.join(tmp, 'bom.jsonl');
  fs.writeFileSync(bom, '\uFEFF{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n');
  assert.equal(loadDataset(bom).rows[0].text, 'a');
  const bomJson = path.join(tmp, 'bom.json');
  fs.writeFileSync(bomJson, '\uFEFF[{"text": "é", "label": 1}]');
  assert.equal(loadDataset(bomJson).rows[0].text, 'é');
  const badLine = path.join(tmp, 'latin1.jsonl');
  fs.writeFileSync(badLine, Buffer.concat([Buffer.from('{"text": "a"}\n{"text": "b"}\n{"text": "caf'), Buffer.from([0xe9]), Buffer.from('"}\n')]));
  assert.throws(() => loadDataset(badLine), /latin1\.jsonl:3: invalid UTF-8 \(byte 0xe9 at offset 41\)/);
  assert.throws(() => decodeUtf8(Buffer.from([0x41, 0xed, 0xa0, 0x80]), 'f'), /f:1: invalid UTF-8/); // a UTF-16 surrogate
  assert.throws(() => decodeUtf8(Buffer.from([0xc0, 0xaf]), 'f'), /invalid UTF-8/); // overlong
  assert.equal(decodeUtf8(Buffer.from('\uFEFFhé', 'utf8'), 'f'), 'hé');
  const cfg = modelCopy({ 'config.json': (p) => fs.writeFileSync(p, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), fs.readFileSync(path.join(MODEL, 'config.json'))])) });
  assert.equal(loadConfig(cfg).modelType, 'gpt2');
  const empty = path.join(tmp, 'empty.json');
  fs.writeFileSync(empty, '');
  assert.throws(() => readJsonFile(empty), /empty\.json: empty file \(expected JSON\)/);
  const cut = path.join(tmp, 'cut.json');
  fs.writeFileSync(cut, '{"a": [1, 2');
  assert.throws(() => readJsonFile(cut), /cut\.json: invalid JSON/);
});

test('adapter_config.json shapes are checked before use; errors name the file', () => {
  const base = AutoModelForCausalLM.fromPretrainedSync(MODEL);
  const good = path.join(tmp, 'adapter-good');
  getPeftModel(base, new LoraConfig({ r: 2, targetModules: ['c_attn'], fanInFanOut: true })).savePretrained(good);
  const goodCfg = JSON.parse(fs.readFileSync(path.join(good, 'adapter_config.json'), 'utf8'));
  const cases: [unknown, RegExp][] = [
    [[], /expected a JSON object \(peft's adapter config\), got an array/],
    ['hello', /expected a JSON object .*got string/],
    [null, /expected a JSON object .*got null/],
    [{}, /no "peft_type"/],
    [{ ...goodCfg, peft_type: undefined }, /no "peft_type"/],
    [{ ...goodCfg, peft_type: 'IA3' }, /peft_type "IA3"; only LORA/],
    [{ ...goodCfg, r: '8' }, /"r" must be a positive integer, got "8"/],
    [{ ...goodCfg, r: true }, /"r" must be a positive integer, got true/],
    [{ ...goodCfg, lora_alpha: null }, /"lora_alpha" must be a number/],
    [{ ...goodCfg, lora_dropout: '0.1' }, /"lora_dropout" must be a number in \[0, 1\)/],
    [{ ...goodCfg, target_modules: 5 }, /"target_modules" must be a list of names/],
    [{ ...goodCfg, use_dora: 'no' }, /"use_dora" must be true or false/],
    [{ ...goodCfg, rank_pattern: { c_attn: -1 } }, /"rank_pattern" must be an object of positive integers/],
  ];
  for (const [i, [json, re]] of cases.entries()) {
    const d = path.join(tmp, `adapter-bad${i}`);
    fs.cpSync(good, d, { recursive: true });
    fs.writeFileSync(path.join(d, 'adapter_config.json'), JSON.stringify(json) ?? '');
    assert.throws(() => PeftModel.fromPretrainedSync(AutoModelForCausalLM.fromPretrainedSync(MODEL), d), (e: Error) => {
      assert.ok(e.message.includes(path.join(d, 'adapter_config.json')), `names the file: ${e.message}`);
      assert.match(e.message, re);
      return true;
    });
  }
  // A crash mid-write leaves a truncated weight file: refused with its name, never loaded half.
  const cut = path.join(tmp, 'adapter-cut');
  fs.cpSync(good, cut, { recursive: true });
  const w = path.join(cut, 'adapter_model.safetensors');
  fs.truncateSync(w, Math.floor(fs.statSync(w).size / 2));
  assert.throws(() => PeftModel.fromPretrainedSync(AutoModelForCausalLM.fromPretrainedSync(MODEL), cut), /adapter-cut\/adapter_model\.safetensors/);
  // label_mapping.json beside an adapter is checked too.
  fs.writeFileSync(path.join(cut, 'label_mapping.json'), JSON.stringify({ task: 'seq-cls', id2label: [1], label2id: {} }));
  assert.throws(() => readLabelMapping(cut), /label_mapping\.json: "id2label" must be an object of label names/);
});

test('non-finite weights load with a warning naming the tensors (base model and adapter)', () => {
  const nanModel = modelCopy({
    'model.safetensors': (p) => {
      const w = readSafetensors(path.join(MODEL, 'model.safetensors'));
      w.get('transformer.h.0.mlp.c_fc.weight')!.data[3] = NaN;
      w.get('transformer.h.1.attn.c_proj.weight')!.data[0] = Infinity;
      writeSafetensors(p, w, { format: 'pt' });
    },
  });
  const logs: string[] = [];
  AutoModelForCausalLM.fromPretrainedSync(nanModel, { logger: (m) => logs.push(m) });
  const msg = logs.find((l) => /non-finite/.test(l));
  assert.ok(msg, logs.join('\n'));
  assert.match(msg!, /transformer\.h\.0\.mlp\.c_fc\.weight \(1 of 65536\)/);
  assert.match(msg!, /transformer\.h\.1\.attn\.c_proj\.weight \(1 of 16384\)/);
  const clean: string[] = [];
  AutoModelForCausalLM.fromPretrainedSync(MODEL, { logger: (m) => clean.push(m) });
  assert.ok(!clean.some((l) => /non-finite/.test(l)));
  // bf16 base weights are checked in their own bits.
  const bf: string[] = [];
  AutoModelForCausalLM.fromPretrainedSync(nanModel, { dtype: 'bfloat16', logger: (m) => bf.push(m) });
  assert.ok(bf.some((l) => /c_fc\.weight \(1 of 65536\)/.test(l)), bf.join('\n'));

  const ad = path.join(tmp, 'adapter-nan');
  const pm = getPeftModel(AutoModelForCausalLM.fromPretrainedSync(MODEL), new LoraConfig({ r: 2, targetModules: ['c_attn'], fanInFanOut: true }));
  pm.savePretrained(ad);
  const f = path.join(ad, 'adapter_model.safetensors');
  const t = readSafetensors(f);
  const k = [...t.keys()].find((x) => x.includes('lora_A'))!;
  t.get(k)!.data[1] = NaN;
  writeSafetensors(f, t, { format: 'pt' });
  const { warnings: warned } = captureWarnings(() => PeftModel.fromPretrainedSync(AutoModelForCausalLM.fromPretrainedSync(MODEL), ad));
  assert.ok(warned.some((w) => w.includes('non-finite') && w.includes(k)), warned.join('\n'));
});
