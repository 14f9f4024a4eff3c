// pipeline() with transformers.js's call shapes, on model folders, adapters and loaded models;
// results checked against a direct forward of the same model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pipeline } from '../src/generate/pipeline.js';
import { generateTextSync as generateText } from '../src/generate/text.js';
import { AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification } from '../src/models/index.js';
import { LoraConfig, getPeftModel } from '../src/peft/index.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { noGrad } from '../src/tensor/tensor.js';
import { Rng } from '../src/tensor/random.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const DEFAULT = path.join(ROOT, 'assets/default-model');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pipe-'));
const quiet = { logger: () => {} };

function softmax(x: number[]): number[] { const m = Math.max(...x); const e = x.map((v) => Math.exp(v - m)); const s = e.reduce((a, b) => a + b); return e.map((v) => v / s); }

/** A GPT-2 classifier folder with named labels (config.json + weights + tokenizer). */
function classifierDir(): string {
  const dir = path.join(tmp, 'cls');
  const m = AutoModelForSequenceClassification.fromPretrainedSync(DEFAULT, { ...quiet, numLabels: 3, rng: new Rng(5), configOverrides: { id2label: { 0: 'law', 1: 'prophets', 2: 'gospels' } } });
  m.savePretrained(dir);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(DEFAULT, f), path.join(dir, f));
  return dir;
}

test("text-classification: [{label, score}] for a text, flat for a batch at top_k 1, lists for top_k > 1; equals a direct forward", async () => {
  const dir = classifierDir();
  const clf = await pipeline('text-classification', dir);
  const texts = ['In the beginning God created the heaven.', 'Jesus wept.'];
  const one = await clf(texts[0]);
  assert.equal(one.length, 1);
  const tok = Tokenizer.fromFile(dir);
  const m = AutoModelForSequenceClassification.fromPretrainedSync(dir, quiet);
  for (const [i, t] of texts.entries()) {
    const logits = noGrad(() => Array.from(m.forward({ inputIds: tok.encodeBatch([t]).toTensors().inputIds }).logits.data));
    const p = softmax(logits);
    const best = p.indexOf(Math.max(...p));
    const got = (await clf(t))[0] as { label: string; score: number };
    assert.equal(got.label, ['law', 'prophets', 'gospels'][best]);
    assert.ok(Math.abs(got.score - p[best]) < 1e-5);
    const batch = await clf(texts);
    assert.equal(batch.length, 2);
    assert.ok(Math.abs((batch[i] as { score: number }).score - p[best]) < 1e-4, 'padding in the batch does not change the result');
  }
  const all = await clf(texts[0], { top_k: null });
  assert.equal(all.length, 3);
  const scores = (all as { score: number }[]).map((r) => r.score);
  assert.ok(Math.abs(scores.reduce((a, b) => a + b) - 1) < 1e-5 && scores[0] >= scores[1] && scores[1] >= scores[2]);
  const two = await clf(texts, { top_k: 2 });
  assert.equal(two.length, 2);
  assert.ok(Array.isArray(two[0]) && (two[0] as unknown[]).length === 2);
  await assert.rejects(clf(42 as unknown as string), /expected a string/);
  clf.dispose();
});

test('text-classification over a PeftModel and over a model folder + adapter folder', async () => {
  const dir = classifierDir();
  const base = AutoModelForSequenceClassification.fromPretrainedSync(dir, quiet);
  const pm = getPeftModel(base, new LoraConfig({ r: 2, targetModules: ['c_attn'], taskType: 'SEQ_CLS' }));
  for (const [n, p] of pm.namedParameters()) if (n.includes('lora_B')) p.data.fill(0.05);
  const tok = Tokenizer.fromFile(dir);
  const fromModel = await pipeline('text-classification', pm, { tokenizer: tok });
  const r1 = await fromModel('Jesus wept.', { top_k: null });
  const adapter = path.join(tmp, 'adapter');
  pm.savePretrained(adapter);
  const fromDirs = await pipeline('text-classification', dir, { adapter });
  assert.deepEqual(await fromDirs('Jesus wept.', { top_k: null }), r1);
  // An adapter folder alone, its base named by base_model_name_or_path (as peft writes it).
  const cfgFile = path.join(adapter, 'adapter_config.json');
  fs.writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgFile, 'utf8')), base_model_name_or_path: dir }));
  assert.deepEqual(await (await pipeline('text-classification', adapter))('Jesus wept.', { top_k: null }), r1);
  const plain = await pipeline('text-classification', dir);
  assert.notDeepEqual(await plain('Jesus wept.', { top_k: null }), r1, 'the adapter changes the scores');
  await assert.rejects(pipeline('text-generation', dir, { adapter }), /SEQ_CLS|CAUSAL_LM/);
  await assert.rejects(pipeline('text-classification', pm), /needs options.tokenizer/);
  await assert.rejects(pipeline('summarization' as 'text-classification', dir), /unsupported task/);
});

test('Hub ids from the local cache (offline): a model repo, and an adapter repo whose base is a Hub id', async () => {
  const dir = classifierDir();
  const cache = path.join(tmp, 'hub');
  const snap = (repo: string) => {
    const d = path.join(cache, `models--${repo.replace('/', '--')}`, 'snapshots', 'a'.repeat(40));
    fs.mkdirSync(d, { recursive: true });
    return d;
  };
  const modelSnap = snap('peft-ts/tiny-cls');
  for (const f of fs.readdirSync(dir)) fs.copyFileSync(path.join(dir, f), path.join(modelSnap, f));
  const pm = getPeftModel(AutoModelForSequenceClassification.fromPretrainedSync(dir, quiet), new LoraConfig({ r: 2, targetModules: ['c_attn'], taskType: 'SEQ_CLS' }));
  for (const [n, p] of pm.namedParameters()) if (n.includes('lora_B')) p.data.fill(0.05);
  const adapterSnap = snap('peft-ts/tiny-adapter');
  pm.savePretrained(adapterSnap);
  const cfgFile = path.join(adapterSnap, 'adapter_config.json');
  fs.writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgFile, 'utf8')), base_model_name_or_path: 'peft-ts/tiny-cls' }));
  const o = { cacheDir: cache, offline: true };
  const byId = await pipeline('text-classification', 'peft-ts/tiny-cls', o);
  assert.deepEqual(await byId('Jesus wept.', { top_k: null }), await (await pipeline('text-classification', dir))('Jesus wept.', { top_k: null }));
  const adapterById = await pipeline('text-classification', 'peft-ts/tiny-adapter', o);
  const direct = await pipeline('text-classification', pm, { tokenizer: Tokenizer.fromFile(dir) });
  assert.deepEqual(await adapterById('Jesus wept.', { top_k: null }), await direct('Jesus wept.', { top_k: null }));
  await assert.rejects(pipeline('text-classification', 'peft-ts/missing', o), /missing/);
});

test('token-classification: entities per token (special tokens and ignore_labels skipped), batch gives a list per text', async () => {
  const dir = path.join(tmp, 'ner');
  fs.mkdirSync(dir);
  const FIX = path.join(ROOT, 'test/fixtures');
  for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(FIX, 'models/bert_tokcls', f), path.join(dir, f));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(FIX, 'io/tok_bert', f), path.join(dir, f));
  const ner = await pipeline('token-classification', dir);
  const text = 'hello loras world';
  const ents = await ner(text, { ignore_labels: [] }) as { entity: string; score: number; index: number; word: string; start: null; end: null }[];
  const tok = Tokenizer.fromFile(dir);
  const ids = tok.encode(text);
  assert.equal(ents.length, ids.length - 2, 'every token but [CLS] and [SEP]');
  const m = AutoModelForTokenClassification.fromPretrainedSync(dir, quiet);
  const logits = noGrad(() => m.forward({ inputIds: tok.encodeBatch([text]).toTensors().inputIds }).logits);
  const C = logits.shape[2];
  for (const e of ents) {
    const row = Array.from(logits.data.subarray(e.index * C, (e.index + 1) * C));
    const p = softmax(row), best = p.indexOf(Math.max(...p));
    assert.equal(e.entity, `LABEL_${best}`);
    assert.ok(Math.abs(e.score - p[best]) < 1e-5);
    assert.equal(e.word, tok.decode([ids[e.index]]));
    assert.equal(e.start, null);
  }
  const skip = ents[0].entity;
  const fewer = await ner(text, { ignore_labels: [skip] }) as { entity: string }[];
  assert.ok(fewer.every((e) => e.entity !== skip) && fewer.length < ents.length);
  const batch = await ner([text, 'world'], { ignore_labels: [] });
  assert.equal(batch.length, 2);
  assert.ok(Array.isArray(batch[0]));
  assert.deepEqual(batch[0], ents);
});

test('text-generation: [{generated_text}] with the prompt (return_full_text), chats, batches, and a PeftModel', async () => {
  const gen = await pipeline('text-generation', DEFAULT);
  const prompt = 'And God said';
  const out = await gen(prompt, { max_new_tokens: 5 });
  assert.equal(out.length, 1);
  const text = (out[0] as { generated_text: string }).generated_text;
  const tok = Tokenizer.fromFile(DEFAULT);
  const m = AutoModelForCausalLM.fromPretrainedSync(DEFAULT, quiet);
  const cont = generateText(m, tok, prompt, { maxNewTokens: 5 });
  assert.equal(text, prompt + cont);
  const only = await gen(prompt, { max_new_tokens: 5, return_full_text: false });
  assert.equal((only[0] as { generated_text: string }).generated_text, cont);
  const batch = await gen([prompt, 'Jesus'], { max_new_tokens: 3, num_return_sequences: 1 });
  assert.equal(batch.length, 2);
  assert.ok(Array.isArray(batch[0]));
  const pm = getPeftModel(m, new LoraConfig({ r: 2, targetModules: ['c_attn'], taskType: 'CAUSAL_LM' }));
  const tpl = '{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}';
  const chatTok = new Tokenizer(JSON.parse(fs.readFileSync(path.join(DEFAULT, 'tokenizer.json'), 'utf8')), JSON.parse(fs.readFileSync(path.join(DEFAULT, 'tokenizer_config.json'), 'utf8')), tpl);
  const chat = await pipeline('text-generation', pm, { tokenizer: chatTok });
  const messages = [{ role: 'user', content: 'Who made the light?' }];
  const res = await chat(messages, { max_new_tokens: 4 });
  const g = (res[0] as { generated_text: { role: string; content: string }[] }).generated_text;
  assert.deepEqual(g.slice(0, 1), messages);
  assert.equal(g[1].role, 'assistant');
  assert.equal(g[1].content, generateText(pm, chatTok, 'user: Who made the light?\nassistant:', { maxNewTokens: 4 }));
  await assert.rejects(gen(5 as unknown as string), /input must be/);
});
