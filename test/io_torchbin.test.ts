// PyTorch .bin checkpoints (torch.save zip + restricted pickle): models and adapters load from
// them exactly as from safetensors; strided views, shared storages and dtypes decode to
// torch's values; pickles that would run code are refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { tensor, tidy, noGrad } from '../src/tensor/index.js';
import { AutoModelForCausalLM, AutoModelForSequenceClassification } from '../src/models/index.js';
import { TorchBinReader } from '../src/io/torchbin.js';
import { unpickle } from '../src/io/pickle.js';
import { checkpointShards, loadCheckpointDir, writeSafetensors } from '../src/io/safetensors.js';
import { PeftModel, captureWarnings } from '../src/peft/index.js';
import { isPytorchWeightFile } from '../src/io/hub.js';

const FIX = path.resolve('test/fixtures');
const BIN = path.join(FIX, 'bin');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-bin-'));

function logits(model: { forward(i: { inputIds: ReturnType<typeof tensor> }): { logits: ReturnType<typeof tensor> } }, ids: number[][]): Float32Array {
  return tidy(() => noGrad(() => model.forward({ inputIds: tensor(Int32Array.from(ids.flat()), [ids.length, ids[0].length]) }).logits.toFloat32Array()));
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i] - b[i]));
  return w;
}

const IDS = [[1, 5, 9, 33, 2, 70], [4, 4, 81, 17, 60, 3]];
const quiet = { logger: () => {} };

for (const [name, binDir, auto, tol] of [
  ['gpt2_lm', 'gpt2_lm', AutoModelForCausalLM, 0],
  ['llama_lm', 'llama_lm_sharded', AutoModelForCausalLM, 0],
  // stored in bfloat16: the weights are rounded, so only close
  ['bert_seqcls', 'bert_seqcls', AutoModelForSequenceClassification, 5e-2],
] as const) {
  test(`${binDir}: pytorch .bin checkpoint gives the safetensors model's logits`, () => {
    const st = auto.fromPretrainedSync(path.join(FIX, 'models', name), quiet);
    const bin = auto.fromPretrainedSync(path.join(BIN, binDir), quiet);
    assert.deepEqual(bin.loadingInfo!.missingKeys, st.loadingInfo!.missingKeys);
    const ids = IDS.map((r) => r.map((x) => x % 64));
    const d = maxAbsDiff(logits(bin, ids), logits(st, ids));
    assert.ok(d <= tol, `max |diff| ${d} > ${tol}`);
    if (tol > 0) assert.ok(d > 0, 'bf16 copy should differ a little (test would not notice a float32 read)');
  });
}

test('tied weights: one storage under two keys is read for both', () => {
  const r = new TorchBinReader(path.join(BIN, 'gpt2_lm', 'pytorch_model.bin'));
  try {
    assert.equal(r.info('lm_head.weight').storage, r.info('transformer.wte.weight').storage);
    assert.deepEqual(Array.from(r.tensor('lm_head.weight').data), Array.from(r.tensor('transformer.wte.weight').data));
  } finally { r.close(); }
});

test('odd tensors: strided views, offsets, shared storage and dtypes match torch', () => {
  const want = JSON.parse(fs.readFileSync(path.join(BIN, 'odd_expected.json'), 'utf8')) as Record<string, { shape: number[]; values: number[] }>;
  const r = new TorchBinReader(path.join(BIN, 'odd.bin'));
  try {
    assert.deepEqual(r.names(), Object.keys(want));
    assert.equal(r.info('shared_a').storage, r.info('shared_b').storage);
    assert.equal(r.info('shared_b').offset, 8);
    for (const [k, w] of Object.entries(want)) {
      const t = r.tensor(k);
      assert.deepEqual(t.shape, w.shape, k);
      const got = Array.from(t.dtype === 'int32' ? t.ints : t.data);
      if (k === 'f16' || k === 'bf16') assert.ok(maxAbsDiff(got, w.values) === 0, k); // values were rounded in torch already
      else assert.deepEqual(got, t.dtype === 'int32' ? w.values : w.values.map((v) => Math.fround(v)), k);
    }
    assert.equal(r.info('bf16').dtype, 'BF16');
    assert.equal(r.tensor('f16', false).dtype, 'float16');
    // ranges of a strided view, read in pieces, equal the whole
    const whole = r.tensor('transposed').data;
    const part = new Float32Array(7);
    r.readFloat32('transposed', 11, part);
    assert.deepEqual(Array.from(part), Array.from(whole.subarray(11, 18)));
    assert.throws(() => r.readFloat32('i64', 0, new Float32Array(1)), /"i64" is I64, not a floating point tensor/);
  } finally { r.close(); }
});

test('peft adapter_model.bin loads like adapter_model.safetensors', () => {
  const baseDir = path.join(FIX, 'peft', 'gpt2_lora', 'base');
  const base = () => captureWarnings(() => AutoModelForCausalLM.fromPretrainedSync(baseDir, quiet)).result;
  const ids = IDS.map((r) => r.map((x) => x % 64));
  const plain = logits(base(), ids);
  const st = logits(PeftModel.fromPretrainedSync(base(), path.join(FIX, 'peft', 'gpt2_lora', 'adapter')), ids);
  const bin = logits(PeftModel.fromPretrainedSync(base(), path.join(BIN, 'gpt2_lora_adapter')), ids);
  assert.ok(maxAbsDiff(st, plain) > 1e-3, 'the adapter must change the outputs');
  assert.equal(maxAbsDiff(bin, st), 0);
});

test('safetensors is preferred when both formats are present', () => {
  const d = path.join(tmp, 'both');
  fs.mkdirSync(d);
  fs.copyFileSync(path.join(BIN, 'odd.bin'), path.join(d, 'pytorch_model.bin'));
  writeSafetensors(path.join(d, 'model.safetensors'), { only: tensor([1, 2]) });
  assert.deepEqual(checkpointShards(d).files, ['model.safetensors']);
  assert.deepEqual([...loadCheckpointDir(d).keys()], ['only']);
  fs.rmSync(path.join(d, 'model.safetensors'));
  assert.deepEqual(checkpointShards(d).files, ['pytorch_model.bin']);
  assert.ok(loadCheckpointDir(d).has('transposed'));
});

test('a pickle calling os.system is refused before anything runs', () => {
  assert.throws(() => new TorchBinReader(path.join(BIN, 'evil_global.bin')), /evil_global\.bin: pickle: global 'posix\.system' is not allowed/);
  assert.throws(() => new TorchBinReader(path.join(BIN, 'evil_opcode.bin')), /evil_opcode\.bin: pickle: opcode STRING \(0x53\) at byte 1 is not allowed/);
  // the same in hand-made pickles: GLOBAL builtins.eval, REDUCE on a non-callable, unknown opcodes
  const globals = {};
  const enc = (s: string) => Buffer.from(s, 'latin1');
  assert.throws(() => unpickle(enc('\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R.'), { globals }), /global 'builtins\.eval' is not allowed/);
  assert.throws(() => unpickle(enc('\x80\x02\x81.'), { globals }), /opcode NEWOBJ \(0x81\)/);
  assert.throws(() => unpickle(enc('\x80\x02\xff.'), { globals }), /opcode unknown \(0xff\)/);
  assert.throws(() => unpickle(enc('\x80\x02K\x01)R.'), { globals }), /REDUCE on a value that is not a whitelisted callable/);
  assert.throws(() => unpickle(enc('\x80\x02X\xff\xff\xff\x00'), { globals }), /truncated/);
  assert.ok(!fs.existsSync('/tmp/peft_ts_pwned'));
});

test('plain data pickles decode (dicts, lists, ints, floats, memo)', () => {
  // pickle.dumps({'a': [1, -2, 70000, 2**40, 1.5, None, True], 'b': ('x', 'x')}, protocol=2)
  const hex = '80027d71002858010000006171015d7102284b014afeffffff4a701101008a06000000000001473ff80000000000004e8865580100000062710358010000007871046804867105752e';
  const v = unpickle(Buffer.from(hex, 'hex'), { globals: {} }) as { map: Map<string, unknown> };
  assert.deepEqual(v.map.get('a'), [1, -2, 70000, 2 ** 40, 1.5, null, true]);
  assert.deepEqual(v.map.get('b'), ['x', 'x']);
});

test('hub downloads pick .bin weight files only as the fallback set', () => {
  for (const f of ['pytorch_model.bin', 'pytorch_model-00001-of-00002.bin', 'pytorch_model.bin.index.json', 'adapter_model.bin']) assert.ok(isPytorchWeightFile(f), f);
  for (const f of ['training_args.bin', 'optimizer.bin', 'sub/pytorch_model.bin', 'model.safetensors']) assert.ok(!isPytorchWeightFile(f), f);
});
