// SFT data preparation against TRL 1.13 (test/fixtures/sft/expected.json, made by
// scripts/sft_make_fixtures.py): the same rows give the same ids, the same -100 labels, the
// same packing and the same collated batches.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from '../src/io/tokenizer.js';
import { Dataset, Row } from '../src/data/dataset.js';
import { alpacaPrompt } from '../src/data/templates.js';
import {
  DataCollatorForSFT, PrepareSFTOptions, SFTFeatures, isConversational, packDataset, prepareSFTDataset, tokenizeChat,
} from '../src/data/sft.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const fx = JSON.parse(fs.readFileSync(path.join(ROOT, 'test/fixtures/sft/expected.json'), 'utf8'));
export const MODEL_DIR = path.join(ROOT, 'assets/default-model');

/** The default model's tokenizer plus the fixture's special tokens and chat template, as the Python side made it. */
export function chatTokenizer(): Tokenizer {
  const tj = JSON.parse(fs.readFileSync(path.join(MODEL_DIR, 'tokenizer.json'), 'utf8'));
  const cfg = JSON.parse(fs.readFileSync(path.join(MODEL_DIR, 'tokenizer_config.json'), 'utf8'));
  let id = Object.keys(tj.model.vocab).length;
  for (const content of fx.added_tokens as string[]) {
    tj.added_tokens.push({ id: id++, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  }
  return new Tokenizer(tj, cfg, fx.chat_template);
}

const tok = chatTokenizer();
const inputs = fx.inputs;

function camel(cfg: Record<string, unknown>): PrepareSFTOptions {
  const o: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(cfg)) o[k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())] = v;
  return o as PrepareSFTOptions;
}

function check(name: string, rows: Row[], extra: PrepareSFTOptions = {}): Dataset<SFTFeatures> {
  const c = fx.cases[name];
  const ds = prepareSFTDataset(rows, tok, { ...camel(c.config), ...extra });
  assert.equal(ds.length, c.rows.length, `${name}: row count`);
  c.rows.forEach((want: { input_ids: number[]; labels: number[]; seq_lengths?: number[] }, i: number) => {
    assert.deepEqual(ds.rows[i].inputIds, want.input_ids, `${name} row ${i} input ids`);
    assert.deepEqual(ds.rows[i].labels, want.labels, `${name} row ${i} labels`);
    if (want.seq_lengths) assert.deepEqual(ds.rows[i].seqLengths, want.seq_lengths, `${name} row ${i} seq lengths`);
  });
  // The collated batch of the first two rows, as TRL's DataCollatorForLanguageModeling gives it.
  const paddingFree = !!c.config.packing && (c.config.packing_strategy ?? 'bfd') !== 'wrapped';
  const batch = DataCollatorForSFT({ tokenizer: tok, paddingFree })(ds.rows.slice(0, 2));
  const b = c.batch;
  assert.deepEqual(Array.from(batch.inputIds.ints), b.input_ids.flat(), `${name} batch ids`);
  assert.deepEqual(batch.inputIds.shape, [b.input_ids.length, b.input_ids[0].length]);
  assert.deepEqual(Array.from(batch.labels!.ints), b.labels.flat(), `${name} batch labels`);
  if (b.position_ids) assert.deepEqual(Array.from(batch.positionIds!.ints), b.position_ids.flat(), `${name} batch positions`);
  else assert.deepEqual(Array.from(batch.attentionMask.ints), b.attention_mask.flat(), `${name} batch mask`);
  return ds;
}

const texts = () => (inputs.texts as string[]).map((text) => ({ text }));

test('SFT text rows: eos appended, truncated to maxLength, labels = ids (TRL fixture)', () => {
  const ds = check('text', texts());
  assert.ok(ds.rows.some((r) => r.inputIds.length === 10), 'some rows were truncated');
  check('text_field', (inputs.texts as string[]).slice(0, 3).map((verse) => ({ verse })));
});

test('SFT prompt-completion: completion-only loss by default, full loss on request, rows left without labels dropped', () => {
  const ds = check('prompt_completion', inputs.prompt_completion);
  assert.ok(ds.rows.every((r) => r.labels[0] === -100 && r.labels[r.labels.length - 1] === tok.eosTokenId));
  check('prompt_completion_full', inputs.prompt_completion);
  check('prompt_completion_trunc', inputs.prompt_completion);
});

test('SFT formattingFunc: Alpaca prompts become text rows (TRL fixture)', () => {
  const format = (ex: Row) => alpacaPrompt(ex as { instruction: string; input: string }) + '\n' + String(ex.output);
  check('alpaca', inputs.alpaca, { formattingFunc: format });
  assert.throws(() => prepareSFTDataset(inputs.prompt_completion, tok, { formattingFunc: () => 'x' }), /formattingFunc.*completionOnlyLoss/);
});

test('SFT chat messages: the chat template, loss on assistant turns only ({% generation %} spans), TRL fixture', () => {
  const ds = check('chat_assistant_only', inputs.messages);
  const masked = ds.rows[0].labels.filter((l) => l !== -100).length;
  assert.ok(masked > 0 && masked < ds.rows[0].labels.length);
  // The learned tokens decode to the assistant replies and their end-of-turn tokens.
  const learned = tok.decode(ds.rows[1].labels.filter((l) => l !== -100));
  assert.equal(learned, 'Amen.<|im_end|>');
  check('chat_full', inputs.messages);
  check('chat_from_value', inputs.conversations);
  check('chat_prompt_completion', inputs.chat_prompt_completion);
});

test('SFT packing: bfd, bfd_split and wrapped as TRL packs, padding-free batches with restarting positions', () => {
  const bfd = check('pack_bfd', texts());
  for (const r of bfd.rows) assert.equal(r.seqLengths!.reduce((a, b) => a + b, 0), r.inputIds.length);
  check('pack_bfd_split', texts());
  check('pack_wrapped', texts());
});

test('packDataset: TRL docstring example (bfd truncates, bfd_split keeps every token)', () => {
  const rows = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10], [11]].map((ids) => ({ inputIds: ids, labels: ids }));
  const bfd = packDataset(rows, 4, 'bfd');
  assert.deepEqual(bfd.rows.map((r) => r.inputIds), [[1, 2, 3, 4], [8, 9, 10, 11], [6, 7]]);
  assert.deepEqual(bfd.rows.map((r) => r.seqLengths), [[4], [3, 1], [2]]);
  const split = packDataset(rows, 4, 'bfd_split');
  assert.deepEqual(split.rows.map((r) => r.inputIds), [[1, 2, 3, 4], [8, 9, 10, 5], [6, 7, 11]]);
  assert.deepEqual(split.rows.map((r) => r.seqLengths), [[4], [3, 1], [2, 1]]);
  assert.throws(() => packDataset(rows, 4, 'nope' as 'bfd'), /invalid packing strategy/);
  assert.throws(() => packDataset([{ inputIds: [1], labels: [] }], 4), /1 inputIds but 0 labels/);
});

test('SFT bad input: clear errors', () => {
  assert.throws(() => prepareSFTDataset([], tok), /empty/);
  assert.throws(() => prepareSFTDataset([{ body: 'x' }], tok), /column 'text' must be text/);
  assert.throws(() => prepareSFTDataset(texts(), tok, { assistantOnlyLoss: true }), /only supported for conversational/);
  assert.throws(() => prepareSFTDataset(texts(), tok, { packing: true, maxLength: null }), /maxLength cannot be null/);
  const plain = new Tokenizer(JSON.parse(fs.readFileSync(path.join(MODEL_DIR, 'tokenizer.json'), 'utf8')), { eos_token: '<|endoftext|>' }, '{% for m in messages %}{{ m.content }}{% endfor %}');
  assert.throws(() => prepareSFTDataset(inputs.messages, plain, { assistantOnlyLoss: true }), /\{% generation %\}/);
  assert.throws(() => prepareSFTDataset([{ messages: [{ role: 'user', content: 'hi' }] }], tok, { assistantOnlyLoss: true }), /no assistant tokens/);
  assert.equal(isConversational({ messages: [{ role: 'user', content: 'x' }] }), true);
  assert.equal(isConversational({ prompt: 'x', completion: 'y' }), false);
  assert.throws(() => tokenizeChat(tok, [{ role: 'user', content: 'a\uE000b' }]), /U\+E000/);
});
