import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseCsv } from '../src/data/csv.js';
import { Dataset, encodeLabels, loadDataset, trainTestSplit } from '../src/data/dataset.js';
import { IGNORE_INDEX, tokenizeCausalLM, tokenizeClassification } from '../src/data/tokenize.js';
import { DataCollatorForLanguageModeling, DataCollatorForTokenClassification, DataCollatorWithPadding } from '../src/data/collators.js';
import { ALPACA_PROMPT_INPUT, alpacaPrompt, applyChatTemplate, formatAlpaca } from '../src/data/templates.js';
import { ToyTokenizer } from './fixtures/train/toys.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'h5-data-'));
const write = (name: string, text: string) => { const p = path.join(dir, name); fs.writeFileSync(p, text); return p; };

test('CSV: quotes, escaped quotes, newlines and commas inside quotes, CRLF, BOM, blank lines', () => {
  const text = '\ufefftext,label\r\n"hello, world",1\r\n"she said ""hi""",0\n"line one\nline two",1\n\nplain,0\n"",1';
  const recs = parseCsv(text, 'x.csv');
  assert.deepEqual(recs.map((r) => r.fields), [
    ['text', 'label'], ['hello, world', '1'], ['she said "hi"', '0'], ['line one\nline two', '1'], ['plain', '0'], ['', '1'],
  ]);
  // line numbers: the record starting after a quoted newline is on line 6
  assert.deepEqual(recs.map((r) => r.line), [1, 2, 3, 4, 7, 8]);
  assert.throws(() => parseCsv('a,b\n"open,1\n2,3', 'bad.csv'), /bad\.csv:2: unterminated quoted field/);
  assert.throws(() => parseCsv('a,b\nx"y,1', 'bad.csv'), /bad\.csv:2: stray quote/);
  assert.throws(() => parseCsv('a,b\n"x"y,1', 'bad.csv'), /bad\.csv:2: characters after a closing quote/);
});

test('loadDataset: csv types, jsonl, json (records and columns), and errors naming file and line', () => {
  const csv = loadDataset(write('d.csv', 'text,label,score\n"a, b",pos,1.5\nc,neg,\n'));
  assert.deepEqual(csv.rows, [{ text: 'a, b', label: 'pos', score: 1.5 }, { text: 'c', label: 'neg', score: null }]);
  assert.equal(csv.where(1), `${path.join(dir, 'd.csv')}:3`);
  const f = write('w.csv', 'text,label\nok,1\ntoo,many,fields\n');
  assert.throws(() => loadDataset(f), new RegExp(`${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3: expected 2 fields`));
  const jl = write('d.jsonl', '{"text": "a", "label": 0}\n\n{"text": "b", "label": 1}\n');
  assert.equal(loadDataset(jl).length, 2);
  assert.equal(loadDataset(jl).where(1), `${jl}:3`);
  assert.throws(() => loadDataset(write('bad.jsonl', '{"text": "a"}\n{"text": oops}\n')), /bad\.jsonl:2: invalid JSON/);
  assert.throws(() => loadDataset(write('arr.jsonl', '[1,2]\n')), /arr\.jsonl:1: each line must be a JSON object/);
  assert.deepEqual(loadDataset(write('c.json', '{"text": ["x", "y"], "label": [1, 0]}')).rows, [{ text: 'x', label: 1 }, { text: 'y', label: 0 }]);
  assert.equal(loadDataset(write('r.json', '{"data": [{"a": 1}]}'), { field: 'data' }).length, 1);
  assert.throws(() => loadDataset(write('empty.jsonl', '\n\n')), /empty\.jsonl holds no rows/);
  assert.throws(() => loadDataset(write('e.csv', '')), /is empty/);
  assert.throws(() => loadDataset(path.join(dir, 'nope.csv')), /no such file/);
  assert.throws(() => loadDataset(write('x.txt', 'hi')), /format/);
});

test('map / filter / shuffle / split keep row origins; split sizes like datasets', () => {
  const ds = new Dataset([...Array(10)].map((_, i) => ({ i })));
  const { train, test: te } = trainTestSplit(ds, { testSize: 0.25, seed: 3 });
  assert.equal(te.length, 3); assert.equal(train.length, 7);
  assert.deepEqual([...train.rows, ...te.rows].map((r) => r.i).sort((a, b) => a - b), [...Array(10).keys()]);
  assert.deepEqual(trainTestSplit(ds, { testSize: 0.25, seed: 3 }).test.rows, te.rows);
  assert.notDeepEqual(ds.shuffle(1).rows, ds.rows);
  const odd = ds.filter((r) => r.i % 2 === 1);
  assert.equal(odd.where(0), 'row 1');
  assert.throws(() => odd.map((r) => { if (r.i === 5) throw new Error('boom'); return r; }), /^Error: row 5: boom/);
  assert.throws(() => trainTestSplit(ds, { testSize: 10 }), /no rows/);
});

test('labels: strings through label2id, ints range-checked, errors name the row', () => {
  const ds = new Dataset([{ label: 'pos' }, { label: 'neg' }, { label: 'pos' }], ['f.csv:2', 'f.csv:3', 'f.csv:4']);
  const { dataset, mapping } = encodeLabels(ds, 'label');
  assert.deepEqual(mapping.label2id, { neg: 0, pos: 1 });
  assert.deepEqual(dataset.column('label'), [1, 0, 1]);
  assert.throws(() => encodeLabels(ds, 'label', { label2id: { pos: 0, neutral: 1 } }), /f\.csv:3: unknown label "neg" \(known: pos, neutral\)/);
  assert.throws(() => encodeLabels(new Dataset([{ label: 0 }, { label: 3 }]), 'label', { numLabels: 2 }), /row 1: label 3 is out of range \[0, 2\)/);
  assert.throws(() => encodeLabels(new Dataset([{ label: 0 }, { text: 'x' }]), 'label'), /row 1: missing column 'label'/);
});

test('tokenizeClassification: pairs, truncation, over-long rows without truncation name the row', () => {
  const tok = new ToyTokenizer();
  const ds = new Dataset([{ a: 'x y z', b: 'w', label: 'yes' }, { a: 'x', b: 'q r', label: 'no' }], ['t.jsonl:1', 't.jsonl:2']);
  const f = tokenizeClassification(ds, tok, { textColumn: 'a', textPairColumn: 'b', labelColumn: 'label', maxLength: 4 });
  assert.deepEqual(f.rows[0].inputIds, tok.encode('x y z', { textPair: 'w' }).slice(0, 4));
  assert.deepEqual(f.rows[1].inputIds, tok.encode('x', { textPair: 'q r' }));
  assert.deepEqual(f.rows[0].attentionMask, [1, 1, 1, 1]);
  assert.deepEqual(f.rows.map((r) => r.labels), [1, 0]);
  assert.deepEqual(f.labelMapping!.label2id, { no: 0, yes: 1 });
  const long = new Dataset([{ a: 'x', label: 0 }, { a: 'a b c d e f', label: 1 }], ['t.jsonl:1', 't.jsonl:2']);
  assert.throws(() => tokenizeClassification(long, tok, { textColumn: 'a', maxLength: 4, truncation: false }), /t\.jsonl:2: text is 7 tokens, longer than maxLength 4/);
  assert.throws(() => tokenizeClassification(long, tok, { textColumn: 'text' }), /t\.jsonl:1: missing column 'text'/);
});

test('tokenizeCausalLM: prompt masking (Alpaca style), eos, packing', () => {
  const tok = new ToyTokenizer();
  const ds = new Dataset([{ p: 'Q: a b', r: ' c d' }, { p: 'Q: e', r: ' f' }]);
  const f = tokenizeCausalLM(ds, tok, { promptColumn: 'p', responseColumn: 'r' });
  const full = [...tok.encode('Q: a b c d'), tok.eosTokenId];
  assert.deepEqual(f.rows[0].inputIds, full);
  const np = tok.encode('Q: a b').length;
  assert.deepEqual(f.rows[0].labels, full.map((t, i) => (i < np ? IGNORE_INDEX : t)));
  const onPrompt = tokenizeCausalLM(ds, tok, { promptColumn: 'p', responseColumn: 'r', trainOnPrompt: true });
  assert.deepEqual(onPrompt.rows[0].labels, full);
  const plain = tokenizeCausalLM(new Dataset([{ t: 'a b' }]), tok, { textColumn: 't', addEos: false });
  assert.deepEqual(plain.rows[0].inputIds, tok.encode('a b'));
  assert.throws(() => tokenizeCausalLM(ds, tok, { promptColumn: 'p', responseColumn: 'r', maxLength: 4, truncation: false }), /row 0: example is 7 tokens/);
  const packed = tokenizeCausalLM(ds, tok, { promptColumn: 'p', responseColumn: 'r', packing: true, maxLength: 5 });
  // 7 + 5 = 12 tokens -> two blocks of 5, tail of 2 dropped
  assert.equal(packed.length, 2);
  const stream = [...f.rows[0].inputIds, ...f.rows[1].inputIds];
  assert.deepEqual([...packed.rows[0].inputIds, ...packed.rows[1].inputIds], stream.slice(0, 10));
  assert.deepEqual(packed.rows[1].labels, [...f.rows[0].labels, ...f.rows[1].labels].slice(5, 10));
});

test('collators: dynamic padding, masks, -100 labels on padding only', () => {
  const cls = DataCollatorWithPadding({ padTokenId: 0, padToMultipleOf: 4 })([
    { inputIds: [5, 6, 7], labels: 1 }, { inputIds: [8], labels: 0 },
  ]);
  assert.deepEqual(cls.inputIds.shape, [2, 4]);
  assert.equal(cls.inputIds.dtype, 'int32');
  assert.deepEqual(Array.from(cls.inputIds.ints), [5, 6, 7, 0, 8, 0, 0, 0]);
  assert.deepEqual(Array.from(cls.attentionMask.ints), [1, 1, 1, 0, 1, 0, 0, 0]);
  assert.deepEqual(Array.from(cls.labels!.ints), [1, 0]);
  // pad == eos: a real eos keeps its label, padding gets -100
  const lm = DataCollatorForLanguageModeling({ padTokenId: 2 })([{ inputIds: [1, 9, 2] }, { inputIds: [1, 2] }]);
  assert.deepEqual(Array.from(lm.labels!.ints), [1, 9, 2, 1, 2, -100]);
  const left = DataCollatorForLanguageModeling({ padTokenId: 0, paddingSide: 'left' })([{ inputIds: [4, 5], labels: [-100, 5] }, { inputIds: [6] }]);
  assert.deepEqual(Array.from(left.inputIds.ints), [4, 5, 0, 6]);
  assert.deepEqual(Array.from(left.attentionMask.ints), [1, 1, 0, 1]);
  assert.deepEqual(Array.from(left.labels!.ints), [-100, 5, -100, 6]);
  const tc = DataCollatorForTokenClassification({ padTokenId: 0 })([{ inputIds: [3, 4], labels: [1, 2] }, { inputIds: [5], labels: [0] }]);
  assert.deepEqual(Array.from(tc.labels!.ints), [1, 2, 0, -100]);
  assert.throws(() => DataCollatorWithPadding({ padTokenId: 0 })([{ inputIds: [1], labels: 'x' }]), /label must be an integer/);
  assert.throws(() => DataCollatorWithPadding({ tokenizer: { encode: () => [] } }), /no pad token/);
});

test('Alpaca prompts are the Stanford Alpaca text', () => {
  assert.equal(alpacaPrompt({ instruction: 'Add 2 and 3.', input: '' }),
    'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:');
  assert.equal(alpacaPrompt({ instruction: 'Translate.', input: 'Bonjour $&' }),
    'Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\nTranslate.\n\n### Input:\nBonjour $&\n\n### Response:');
  assert.ok(ALPACA_PROMPT_INPUT.endsWith('### Response:'));
  assert.deepEqual(formatAlpaca({ instruction: 'i', output: 'o' }).response, 'o');
});

test('chat templates render exactly as transformers apply_chat_template(tokenize=False)', () => {
  const cases = JSON.parse(fs.readFileSync(path.join(process.cwd(), 'test', 'fixtures', 'data', 'chat_templates.json'), 'utf8'));
  assert.ok(cases.length >= 8);
  for (const c of cases) {
    const got = applyChatTemplate(c.messages, { chatTemplate: c.template, addGenerationPrompt: c.addGenerationPrompt, bosToken: c.bosToken, eosToken: c.eosToken });
    assert.equal(got, c.expected, `${c.name} agp=${c.addGenerationPrompt}`);
  }
  const tok = { encode: () => [], chatTemplate: cases[0].template, bosToken: '<s>', eosToken: '</s>' };
  assert.equal(applyChatTemplate(cases[0].messages, { tokenizer: tok }), cases[0].expected);
  assert.throws(() => applyChatTemplate([{ role: 'user', content: 'x' }], { chatTemplate: "{{ raise_exception('no users') }}" }), /no users/);
  assert.throws(() => applyChatTemplate([], { tokenizer: { encode: () => [] } }), /no chat_template/);
});
