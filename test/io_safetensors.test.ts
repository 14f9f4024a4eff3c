import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  readSafetensors, readSafetensorsHeader, writeSafetensors, iterSafetensors, loadCheckpointDir,
  iterCheckpointDir, readTensorBytes, saveCheckpointDir,
} from '../src/io/safetensors.js';
import { f32ToBf16, f32ToF16 } from '../src/io/half.js';
import { tensor } from '../src/tensor/ops/basic.js';
import type { Tensor } from '../src/tensor/tensor.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIX = [path.resolve(here, '../../test/fixtures/io'), path.resolve(process.cwd(), 'test/fixtures/io')].find((p) => fs.existsSync(p))!;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'io-st-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

type Exp = Record<string, { shape: number[]; values: number[] }>;
const expected = JSON.parse(fs.readFileSync(path.join(FIX, 'safetensors_expected.json'), 'utf8')) as { f32: Exp; mixed: Exp };

function pyTensors(): Map<string, Tensor> {
  const m = new Map<string, Tensor>();
  for (const [k, v] of Object.entries(expected.f32)) {
    m.set(k, k === 'ids' ? tensor(Int32Array.from(v.values), v.shape, { dtype: 'int32' }) : tensor(Float32Array.from(v.values), v.shape));
  }
  return m;
}

function same(a: Tensor, shape: number[], values: number[], dtype?: string): void {
  assert.deepEqual(a.shape, shape);
  if (dtype) assert.equal(a.dtype, dtype);
  assert.deepEqual(Array.from(a.dtype === 'int32' ? a.ints : a.toFloat32Array()), values.map((x) => (a.dtype === 'int32' ? x : Math.fround(x))));
}

test('reads a Python-written F32/I32 file', () => {
  const m = readSafetensors(path.join(FIX, 'py_f32_i32.safetensors'));
  assert.deepEqual([...m.keys()].sort(), Object.keys(expected.f32).sort());
  for (const [k, v] of Object.entries(expected.f32)) same(m.get(k)!, v.shape, v.values, k === 'ids' ? 'int32' : 'float32');
  const h = readSafetensorsHeader(path.join(FIX, 'py_f32_i32.safetensors'));
  assert.deepEqual(h.metadata, { format: 'pt' });
  assert.equal(h.tensors.w.dtype, 'F32');
  assert.deepEqual(h.tensors.w.shape, [3, 4]);
  assert.equal(h.dataStart % 8, 0);
});

test('writes files byte-identical to Python safetensors (F32/I32, BF16, F16, no metadata)', () => {
  const t = pyTensors();
  const cases: [string, Record<string, string> | undefined, 'float32' | 'bfloat16' | 'float16'][] = [
    ['py_f32_i32.safetensors', { format: 'pt' }, 'float32'],
    ['py_bf16.safetensors', { format: 'pt' }, 'bfloat16'],
    ['py_f16.safetensors', undefined, 'float16'],
  ];
  for (const [file, meta, dtype] of cases) {
    const out = path.join(tmp, file);
    writeSafetensors(out, t, meta, { dtype });
    assert.ok(fs.readFileSync(out).equals(fs.readFileSync(path.join(FIX, file))), `${file} differs from the Python-written file`);
  }
});

test('reads Python F16/BF16/F64/I64/I16/I8/U8/BOOL', () => {
  const f = path.join(FIX, 'py_mixed.safetensors');
  const m = readSafetensors(f);
  for (const [k, v] of Object.entries(expected.mixed)) {
    const isFloat = ['f16', 'bf16', 'f64'].includes(k);
    same(m.get(k)!, v.shape, v.values, isFloat ? 'float32' : 'int32');
  }
  // Without conversion the 16-bit tensors keep their bits.
  const raw = readSafetensors(f, { names: ['f16', 'bf16'], toFloat32: false });
  assert.equal(raw.get('f16')!.dtype, 'float16');
  assert.equal(raw.get('bf16')!.dtype, 'bfloat16');
  same(raw.get('bf16')!, expected.mixed.bf16.shape, expected.mixed.bf16.values);
  assert.equal(raw.size, 2);
  const bytes = readTensorBytes(f, 'u8');
  assert.deepEqual(Array.from(bytes.bytes), [0, 255, 7]);
  assert.equal(bytes.dtype, 'U8');
});

test('I64 outside int32 is an error naming the tensor and file', () => {
  assert.throws(() => readSafetensors(path.join(FIX, 'py_i64_overflow.safetensors')), /py_i64_overflow\.safetensors.*"big".*outside the int32 range/);
});

test('round trip keeps names, shapes, dtypes, values and metadata', () => {
  const f = path.join(tmp, 'rt.safetensors');
  const w = tensor([1.5, -2, 3.25, 1e-30, -0, 7], [2, 3]);
  const ids = tensor(new Int32Array([5, -6, 7]), [3], { dtype: 'int32' });
  const bits = new Uint16Array(4);
  f32ToBf16(Float32Array.from([1, 2, 3, 4]), bits);
  const bf = tensor(bits, [2, 2], { dtype: 'bfloat16' });
  const hbits = new Uint16Array(2);
  f32ToF16(Float32Array.from([0.5, -8]), hbits);
  const hf = tensor(hbits, [2], { dtype: 'float16' });
  writeSafetensors(f, { 'a.w': w, 'a.ids': ids, 'b.bf': bf, 'c.hf': hf }, { format: 'pt', note: 'é ü' });
  const h = readSafetensorsHeader(f);
  assert.deepEqual(h.metadata, { format: 'pt', note: 'é ü' });
  assert.deepEqual(Object.fromEntries(Object.entries(h.tensors).map(([k, v]) => [k, v.dtype])), { 'a.w': 'F32', 'a.ids': 'I32', 'b.bf': 'BF16', 'c.hf': 'F16' });
  const m = readSafetensors(f, { toFloat32: false });
  same(m.get('a.w')!, [2, 3], [1.5, -2, 3.25, 1e-30, -0, 7], 'float32');
  same(m.get('a.ids')!, [3], [5, -6, 7], 'int32');
  assert.deepEqual(Array.from(m.get('b.bf')!.halfBits), Array.from(bits));
  assert.deepEqual(Array.from(m.get('c.hf')!.halfBits), Array.from(hbits));
  assert.equal(m.get('a.w')!.name, 'a.w');
  // Streaming yields the same tensors, one at a time, in file order.
  const names = [...iterSafetensors(f)].map(([n]) => n);
  assert.deepEqual(names, Object.keys(h.tensors).sort((a, b) => h.tensors[a].dataOffsets[0] - h.tensors[b].dataOffsets[0]));
  // No temp file is left behind.
  assert.deepEqual(fs.readdirSync(tmp).filter((x) => x.includes('.tmp-')), []);
});

test('names filter and missing names', () => {
  const f = path.join(FIX, 'py_f32_i32.safetensors');
  assert.deepEqual([...readSafetensors(f, { names: ['bias'] }).keys()], ['bias']);
  assert.throws(() => readSafetensors(f, { names: ['bias', 'nope'] }), /py_f32_i32\.safetensors: no tensor named "nope"/);
});

test('sharded checkpoint folder via model.safetensors.index.json', () => {
  const dir = path.join(FIX, 'sharded');
  const exp = JSON.parse(fs.readFileSync(path.join(FIX, 'sharded_expected.json'), 'utf8')) as Record<string, number[]>;
  const m = loadCheckpointDir(dir);
  assert.deepEqual([...m.keys()].sort(), Object.keys(exp).sort());
  for (const [k, v] of Object.entries(exp)) assert.deepEqual(Array.from(m.get(k)!.data), v.map(Math.fround));
  assert.equal([...iterCheckpointDir(dir)].length, 3);
  // A single-file folder too.
  const single = path.join(tmp, 'single');
  writeSafetensors(path.join(single, 'model.safetensors'), { x: tensor([1, 2]) });
  assert.deepEqual(Array.from(loadCheckpointDir(single).get('x')!.data), [1, 2]);
});

test('checkpoint folder errors', () => {
  const d = path.join(tmp, 'bad-ckpt');
  fs.mkdirSync(d);
  assert.throws(() => loadCheckpointDir(d), /no model\.safetensors.*pytorch_model\.bin.*found: nothing/s);
  fs.writeFileSync(path.join(d, 'pytorch_model.bin'), 'x');
  assert.throws(() => loadCheckpointDir(d), /pytorch_model\.bin: not a zip archive/);
  fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: 'model-1.safetensors' } }));
  assert.throws(() => loadCheckpointDir(d), /shard model-1\.safetensors is listed but .* does not exist/);
  writeSafetensors(path.join(d, 'model-1.safetensors'), { b: tensor([1]) });
  assert.throws(() => loadCheckpointDir(d), /model-1\.safetensors: no tensor named "a"/);
});

// ---------- malformed files: each gives its own error naming the file ----------

function raw(name: string, header: string | Buffer, data: Buffer = Buffer.alloc(0), lenOverride?: bigint): string {
  const h = typeof header === 'string' ? Buffer.from(header) : header;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lenOverride ?? BigInt(h.length));
  const f = path.join(tmp, name);
  fs.writeFileSync(f, Buffer.concat([len, h, data]));
  return f;
}

const ent = (dtype: string, shape: number[], a: number, b: number) => ({ dtype, shape, data_offsets: [a, b] });

test('malformed: each case has its specific error', () => {
  const cases: [string, () => string, RegExp][] = [
    ['tiny', () => { const f = path.join(tmp, 'tiny.st'); fs.writeFileSync(f, Buffer.from([1, 2])); return f; }, /tiny\.st: file is 2 bytes, too small/],
    ['absurd', () => raw('absurd.st', '{}', Buffer.alloc(0), 1n << 62n), /absurd\.st: header length \d+ is absurd/],
    ['beyond', () => raw('beyond.st', '{}', Buffer.alloc(0), 1000n), /beyond\.st: header length 1000 goes beyond the end of the file/],
    ['json', () => raw('json.st', '{"a": [1,'), /json\.st: header is not valid JSON/],
    ['notobj', () => raw('notobj.st', '[1,2]'), /notobj\.st: header does not start with "\{"/],
    ['utf8', () => raw('utf8.st', Buffer.from([0x7b, 0xff, 0x7d])), /utf8\.st: header is not valid UTF-8/],
    ['dtype', () => raw('dtype.st', JSON.stringify({ x: ent('Q7', [1], 0, 1) }), Buffer.alloc(1)), /dtype\.st: tensor "x": unknown dtype "Q7"/],
    ['range', () => raw('range.st', JSON.stringify({ x: ent('F32', [4], 0, 16) }), Buffer.alloc(8)), /range\.st: tensor "x": data_offsets \[0,16\] out of range \(data region is 8 bytes\)/],
    ['size', () => raw('size.st', JSON.stringify({ x: ent('F32', [3], 0, 8) }), Buffer.alloc(8)), /size\.st: tensor "x": data_offsets \[0,8\] span 8 bytes but F32\[3\] needs 12/],
    ['overlap', () => raw('overlap.st', JSON.stringify({ x: ent('F32', [2], 0, 8), y: ent('F32', [2], 4, 12) }), Buffer.alloc(12)), /overlap\.st: tensors "x" and "y" overlap/],
    ['gap', () => raw('gap.st', JSON.stringify({ x: ent('F32', [1], 0, 4), y: ent('F32', [1], 8, 12) }), Buffer.alloc(12)), /gap\.st: data region bytes \[4,8\) are not covered by any tensor/],
    ['trailing', () => raw('trailing.st', JSON.stringify({ x: ent('F32', [1], 0, 4) }), Buffer.alloc(12)), /trailing\.st: data region is 12 bytes but tensors cover only 4/],
    ['offsets', () => raw('offsets.st', JSON.stringify({ x: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }), Buffer.alloc(4)), /offsets\.st: tensor "x": data_offsets must be \[begin, end\]/],
    ['shape', () => raw('shape.st', JSON.stringify({ x: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }), Buffer.alloc(4)), /shape\.st: tensor "x": shape must be a list of non-negative integers/],
    ['meta', () => raw('meta.st', JSON.stringify({ __metadata__: { a: 1 } })), /meta\.st: __metadata__\["a"\] is not a string/],
    ['missing', () => path.join(tmp, 'does-not-exist.st'), /does-not-exist\.st: file not found/],
  ];
  for (const [name, make, re] of cases) {
    const f = make();
    assert.throws(() => readSafetensorsHeader(f), re, `case ${name}`);
    assert.throws(() => readSafetensors(f), re, `case ${name} (readSafetensors)`);
  }
});

test('unloadable but valid dtype reads as raw bytes', () => {
  const f = raw('f8.st', JSON.stringify({ x: ent('F8_E4M3', [2], 0, 2) }), Buffer.from([1, 2]));
  assert.equal(readSafetensorsHeader(f).tensors.x.dtype, 'F8_E4M3');
  assert.throws(() => readSafetensors(f), /f8\.st: tensor "x": dtype F8_E4M3 cannot be loaded as a Tensor \(use readTensorBytes/);
  assert.deepEqual(Array.from(readTensorBytes(f, 'x').bytes), [1, 2]);
});

test('writer rejects bad input clearly', () => {
  const f = path.join(tmp, 'bad.safetensors');
  const t = tensor([1]);
  t.dispose();
  assert.throws(() => writeSafetensors(f, { x: t }), /tensor "x" was disposed/);
  assert.throws(() => writeSafetensors(f, { __metadata__: tensor([1]) }), /reserved/);
  assert.throws(() => writeSafetensors(f, { x: tensor([1]) }, { a: 3 as unknown as string }), /metadata\["a"\] must be a string/);
  assert.ok(!fs.existsSync(f));
});

test('float16/bfloat16 conversions round to nearest even like torch', () => {
  // Python-written F16/BF16 bits of the same float32 values are the oracle.
  const h16 = readSafetensors(path.join(FIX, 'py_f16.safetensors'), { toFloat32: false });
  const b16 = readSafetensors(path.join(FIX, 'py_bf16.safetensors'), { toFloat32: false });
  for (const k of ['w', 'bias']) {
    const src = Float32Array.from(expected.f32[k].values);
    const h = new Uint16Array(src.length), b = new Uint16Array(src.length);
    f32ToF16(src, h);
    f32ToBf16(src, b);
    assert.deepEqual(Array.from(h), Array.from(h16.get(k)!.halfBits));
    assert.deepEqual(Array.from(b), Array.from(b16.get(k)!.halfBits));
  }
  const h = new Uint16Array(6);
  f32ToF16(Float32Array.from([65520, 6e-8, -0, Infinity, NaN, 1 + 2 ** -11]), h);
  assert.deepEqual(Array.from(h), [0x7c00, 0x0001, 0x8000, 0x7c00, 0x7e00, 0x3c00]);
});

test('saveCheckpointDir shards like save_pretrained and loads back', () => {
  const d = path.join(tmp, 'save-sharded');
  const t = { 'a.weight': tensor([1, 2, 3, 4], [2, 2]), 'a.bias': tensor([5, 6]), 'b.weight': tensor([7, 8, 9]) };
  const files = saveCheckpointDir(d, t, { maxShardBytes: 20 });
  assert.deepEqual(files, ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
  const idx = JSON.parse(fs.readFileSync(path.join(d, 'model.safetensors.index.json'), 'utf8'));
  assert.deepEqual(idx, { metadata: { total_size: 36 }, weight_map: { 'a.bias': 'model-00002-of-00002.safetensors', 'a.weight': 'model-00001-of-00002.safetensors', 'b.weight': 'model-00002-of-00002.safetensors' } });
  const m = loadCheckpointDir(d);
  assert.deepEqual(Array.from(m.get('b.weight')!.data), [7, 8, 9]);
  assert.deepEqual(readSafetensorsHeader(path.join(d, files[0])).metadata, { format: 'pt' });
  const one = path.join(tmp, 'save-one');
  assert.deepEqual(saveCheckpointDir(one, t), ['model.safetensors']);
  assert.equal(loadCheckpointDir(one).size, 3);
  assert.throws(() => readSafetensors(one), /save-one: is a folder, not a file/);
});
