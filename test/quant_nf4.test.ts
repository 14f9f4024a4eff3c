import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DYNAMIC_MAP, NF4_CODE, dequantizeAbsmax, dequantizeNF4, dequantizeNF4Range, nf4Index, quantizeNF4,
  quantizeBlockwise, dequantizeBlockwise, dynamicIndex,
} from '../src/quant/nf4.js';
import {
  pythonFloatRepr, quantStateFromTensors, quantStateJson, quantStateToTensors, quantizedFromTensors,
  quantizedToTensors, isUint8Key,
} from '../src/quant/serialize.js';

// Fixtures live in the source tree; the compiled test runs from <outDir>/test.
function fixturePath(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const c of [path.join(here, 'fixtures/quant/nf4_cases.json'), path.join(here, '../../test/fixtures/quant/nf4_cases.json'),
    path.join(process.cwd(), 'test/fixtures/quant/nf4_cases.json')]) if (fs.existsSync(c)) return c;
  throw new Error('nf4_cases.json fixture not found');
}
const fx = JSON.parse(fs.readFileSync(fixturePath(), 'utf8'));
const buf = (s: string) => { const b = Buffer.from(s, 'base64'); return new Uint8Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length)); };
const f32 = (s: string) => new Float32Array(buf(s).buffer);

function bitsEqual(a: Float32Array, b: Float32Array, what: string) {
  assert.equal(a.length, b.length, `${what}: length`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < a.length; i++) {
    // -0 and +0 both dequantize a zero block; compare values there, bits elsewhere.
    if (ua[i] !== ub[i] && !(a[i] === 0 && b[i] === 0)) assert.fail(`${what}[${i}]: ${a[i]} != ${b[i]}`);
  }
}

test('code tables match the reference', () => {
  bitsEqual(new Float32Array(NF4_CODE), f32(fx.nf4), 'nf4');
  bitsEqual(new Float32Array(DYNAMIC_MAP), f32(fx.dynamicMap), 'dynamic map');
  for (let i = 1; i < 256; i++) assert.ok(DYNAMIC_MAP[i] >= DYNAMIC_MAP[i - 1], 'sorted');
  assert.equal(DYNAMIC_MAP[255], 1);
});

for (const c of fx.cases) {
  test(`NF4 quantize/dequantize exactly as the reference: ${c.name}`, () => {
    const x = f32(c.input);
    const plain = quantizeNF4(x, c.shape);
    assert.deepEqual(plain.packed, buf(c.packed));
    bitsEqual(plain.state.absmax as Float32Array, f32(c.absmax), 'absmax');
    bitsEqual(dequantizeNF4(plain.packed, plain.state), f32(c.dequant), 'dequant');

    const dq = quantizeNF4(x, c.shape, { compressStatistics: true });
    assert.deepEqual(dq.packed, buf(c.packed));
    assert.ok(dq.state.absmax instanceof Uint8Array);
    assert.deepEqual(dq.state.absmax, buf(c.qabsmax));
    assert.equal(dq.state.nested!.offset, c.offset);
    bitsEqual(dq.state.nested!.absmax, f32(c.nestedAbsmax), 'nested absmax');
    bitsEqual(dequantizeAbsmax(dq.state), f32(c.absmaxDequant), 'absmax dequant');
    bitsEqual(dequantizeNF4(dq.packed, dq.state), f32(c.dequantNested), 'dequant nested');
    assert.equal(quantStateJson(dq.state), c.quantStateJson);
  });
}

test('ties on a midpoint go to the lower code; NaN (zero block) to code 0', () => {
  for (let i = 0; i < 15; i++) {
    const mid = Math.fround((NF4_CODE[i] + NF4_CODE[i + 1]) / 2);
    assert.equal(nf4Index(mid), i, `midpoint ${i}`);
    assert.equal(nf4Index(NF4_CODE[i]), i);
  }
  assert.equal(nf4Index(NaN), 0);
  const z = quantizeNF4(new Float32Array(64), [64]);
  assert.ok(dequantizeNF4(z.packed, z.state).every((v) => v === 0));
});

test('first element in the high nibble, odd count padded with code 7', () => {
  const q = quantizeNF4(new Float32Array([1, -1, 0]), [3]);
  assert.deepEqual([...q.packed], [0xf0, 0x77]);
});

test('dequantizeNF4Range equals slices of the full dequantization', () => {
  const c = fx.cases.find((k: { name: string }) => k.name === 'scaled_257x65');
  const q = quantizeNF4(f32(c.input), c.shape, { compressStatistics: true });
  const full = dequantizeNF4(q.packed, q.state);
  for (const [s, e] of [[0, 1], [63, 130], [65 * 10 + 1, 65 * 20], [16700, 16705]]) {
    bitsEqual(dequantizeNF4Range(q.packed, q.state, s, e, new Float32Array(e - s)), full.subarray(s, e), `range ${s}-${e}`);
  }
});

test('8-bit blockwise: nearest map entry, round trip within half a step', () => {
  const x = new Float32Array(600).map((_, i) => Math.sin(i * 0.37) * (i % 7));
  const { q, absmax } = quantizeBlockwise(x, DYNAMIC_MAP, 256);
  assert.equal(absmax.length, 3);
  const y = dequantizeBlockwise(q, absmax, DYNAMIC_MAP, 256);
  for (let i = 0; i < x.length; i++) {
    const s = x[i] / absmax[Math.floor(i / 256)];
    let best = Infinity;
    for (const c of DYNAMIC_MAP) best = Math.min(best, Math.abs(c - s));
    assert.ok(Math.abs(DYNAMIC_MAP[q[i]] - s) <= best + 1e-7, `element ${i}`);
    assert.ok(Math.abs(y[i] - x[i]) <= (best + 1e-6) * absmax[Math.floor(i / 256)] + 1e-6);
  }
  assert.equal(dynamicIndex(DYNAMIC_MAP, 1), 255);
  assert.equal(dynamicIndex(DYNAMIC_MAP, -1), 0);
});

test('pythonFloatRepr matches Python repr', () => {
  const cases: [number, string][] = [[0.5, '0.5'], [3, '3.0'], [1e-5, '1e-05'], [0.0001, '0.0001'], [1.5e-7, '1.5e-07'],
    [1e16, '1e+16'], [123456789012345680, '1.2345678901234568e+17'], [-2.61572527885437, '-2.61572527885437'], [100, '100.0'],
    [0.04968694970011711, '0.04968694970011711'], [1234.5, '1234.5'], [0, '0.0']];
  for (const [v, s] of cases) assert.equal(pythonFloatRepr(v), s);
});

test('quant state round trip through bnb keys', () => {
  const c = fx.cases.find((k: { name: string }) => k.name === 'odd_7x33');
  for (const compressStatistics of [true, false]) {
    const q = quantizeNF4(f32(c.input), c.shape, { compressStatistics });
    const m = quantizedToTensors('model.layers.0.mlp.up_proj.weight', q);
    const keys = [...m.keys()].sort();
    const p = 'model.layers.0.mlp.up_proj.weight';
    assert.deepEqual(keys, [p, `${p}.absmax`, ...(compressStatistics ? [`${p}.nested_absmax`, `${p}.nested_quant_map`] : []),
      `${p}.quant_map`, `${p}.quant_state.bitsandbytes__nf4`].sort());
    assert.deepEqual(m.get(p)!.shape, [116, 1]);
    assert.equal(m.get(`${p}.absmax`)!.dtype, compressStatistics ? 'int32' : 'float32');
    for (const [k, t] of m) if (t.dtype === 'int32') assert.ok(isUint8Key(k), k);
    const back = quantizedFromTensors(p, m);
    assert.deepEqual(back.packed, q.packed);
    bitsEqual(dequantizeNF4(back.packed, back.state), dequantizeNF4(q.packed, q.state), 'round trip');
    assert.deepEqual(back.state.shape, [7, 33]);
  }
});

test('quantStateFromTensors rejects incomplete or foreign states', () => {
  const q = quantizeNF4(new Float32Array(128).fill(0.3), [2, 64], { compressStatistics: true });
  const m = quantStateToTensors('w', q.state);
  const noNested = new Map(m); noNested.delete('w.nested_absmax');
  assert.throws(() => quantStateFromTensors('w', noNested), /nested/);
  const fp4 = new Map(m); fp4.set('w.quant_state.bitsandbytes__fp4', fp4.get('w.quant_state.bitsandbytes__nf4')!); fp4.delete('w.quant_state.bitsandbytes__nf4');
  assert.throws(() => quantStateFromTensors('w', fp4), /fp4/);
  assert.throws(() => quantStateFromTensors('x', m), /expected one/);
  assert.throws(() => quantizeNF4(new Float32Array(3), [2, 2]), /4 elements/);
});
