// The embedded default (assets/): the pretrained KJV GPT-2 and its tokenizer load with the
// project's own loaders and generate exactly what transformers generates from them; the
// shipped data sets have the documented shape.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tensor } from '../src/tensor/index.js';
import { AutoModelForCausalLM } from '../src/models/index.js';
import { Tokenizer } from '../src/io/index.js';
import { generate, generateText, generateTextSync, TextStreamer } from '../src/generate/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = [resolve(here, '../..'), process.cwd()].find((p) => existsSync(join(p, 'assets', 'default-model')))!;
const MODEL = join(root, 'assets', 'default-model');
const DATA = join(root, 'assets', 'data');

test('default model + tokenizer reproduce transformers greedy generation', () => {
  const ref = JSON.parse(readFileSync(join(root, 'test', 'fixtures', 'generate', 'default-model-greedy.json'), 'utf8')) as {
    maxNewTokens: number; cases: { prompt: string; promptIds: number[]; sequence: number[]; text: string }[];
  };
  assert.ok(ref.cases.length >= 2, 'the reference has prompts to compare');
  const tok = Tokenizer.fromFile(MODEL);
  const model = AutoModelForCausalLM.fromPretrainedSync(MODEL);
  assert.equal(model.config.vocabSize, 4096);
  assert.equal(tok.eosTokenId, 0);
  for (const c of ref.cases) {
    const ids = tok.encode(c.prompt);
    assert.deepEqual(ids, c.promptIds, `tokenisation of ${JSON.stringify(c.prompt)}`);
    let streamed = '';
    const streamer = new TextStreamer(tok, { write: (s) => { streamed += s; } });
    const out = generate(model, tensor(Int32Array.from(ids), [1, ids.length], { dtype: 'int32' }),
      { maxNewTokens: ref.maxNewTokens, eosTokenId: tok.eosTokenId, streamer });
    assert.deepEqual(Array.from(out.ints), c.sequence, `continuation of ${JSON.stringify(c.prompt)}`);
    assert.equal(tok.decode(Array.from(out.ints)), c.text);
    assert.equal(streamed, c.text + '\n');
  }
});

test('generateText: a left-padded batch gives each prompt its own greedy continuation (async and sync alike)', async () => {
  const ref = JSON.parse(readFileSync(join(root, 'test', 'fixtures', 'generate', 'default-model-greedy.json'), 'utf8')) as {
    maxNewTokens: number; cases: { prompt: string; promptIds: number[]; sequence: number[] }[];
  };
  const tok = await Tokenizer.fromPretrained(MODEL);
  const model = await AutoModelForCausalLM.fromPretrained(MODEL);
  const prompts = ref.cases.map((c) => c.prompt);
  const want = ref.cases.map((c) => tok.decode(c.sequence.slice(c.promptIds.length), { skipSpecialTokens: true }));
  assert.deepEqual(await generateText(model, tok, prompts, { maxNewTokens: ref.maxNewTokens }), want);
  assert.deepEqual(generateTextSync(model, tok, prompts, { maxNewTokens: ref.maxNewTokens }), want);
  assert.equal(await generateText(model, tok, prompts[0], { maxNewTokens: ref.maxNewTokens, returnFullText: true }),
    prompts[0] + want[0]);
  const sampled = await generateText(model, tok, prompts[0], { maxNewTokens: 12, doSample: true, seed: 1, topP: 0.9 });
  assert.equal(sampled, generateTextSync(model, tok, prompts[0], { maxNewTokens: 12, doSample: true, seed: 1, topP: 0.9 }));
  assert.ok(sampled.length > 0);
  // Beam search through the async driver gives what the sync one gives.
  assert.deepEqual(await generateText(model, tok, prompts, { maxNewTokens: 8, numBeams: 3 }), generateTextSync(model, tok, prompts, { maxNewTokens: 8, numBeams: 3 }));
});

test('generateText leaves the event loop free between tokens; a signal stops it', async () => {
  const tok = await Tokenizer.fromPretrained(MODEL);
  const model = await AutoModelForCausalLM.fromPretrained(MODEL);
  // Counts macrotask turns: a timer callback re-armed with setImmediate runs once per loop turn.
  let turns = 0, on = true;
  const spin = () => { if (on) { turns++; setImmediate(spin); } };
  setImmediate(spin);
  const text = await generateText(model, tok, 'And God said', { maxNewTokens: 20, eosTokenId: null });
  on = false;
  assert.ok(text.length > 0);
  assert.ok(turns >= 15, `the event loop turned ${turns} times while 20 tokens were decoded`);
  const ac = new AbortController();
  let steps = 0;
  const p = generateText(model, tok, 'And God said', { maxNewTokens: 20, eosTokenId: null, streamer: () => { if (++steps === 3) ac.abort(); }, signal: ac.signal });
  await assert.rejects(p, (e: Error) => e.name === 'AbortError');
  assert.ok(steps <= 4, `decoded ${steps} tokens after the abort at 3`);
});

function readJsonl(name: string): Record<string, string>[] {
  return readFileSync(join(DATA, name), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
}

test('default data sets: balanced 4-class verse task and verse completion, disjoint splits', () => {
  const train = readJsonl('kjv_section_train.jsonl'), testSet = readJsonl('kjv_section_test.jsonl');
  assert.equal(train.length, 3200);
  assert.equal(testSet.length, 800);
  for (const [rows, per] of [[train, 800], [testSet, 200]] as const) {
    const counts: Record<string, number> = {};
    for (const r of rows) { assert.equal(typeof r.text, 'string'); counts[r.label] = (counts[r.label] ?? 0) + 1; }
    assert.deepEqual(counts, { law: per, wisdom: per, gospel: per, epistle: per });
  }
  const seen = new Set(train.map((r) => r.text));
  assert.ok(testSet.filter((r) => seen.has(r.text)).length <= 5, 'test verses are not training verses (a few verses repeat word for word in the KJV)');
  const comp = readJsonl('kjv_complete_train.jsonl'), compTest = readJsonl('kjv_complete_test.jsonl');
  assert.equal(comp.length, 1500);
  assert.equal(compTest.length, 100);
  for (const r of [...comp, ...compTest]) {
    assert.ok(r.prompt.length > 0 && r.completion.startsWith(' '), JSON.stringify(r));
  }
});
