import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '../src/io/tokenizer.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIX = [path.resolve(here, '../../test/fixtures/io'), path.resolve(process.cwd(), 'test/fixtures/io')].find((p) => fs.existsSync(p))!;

interface Batch { inputIds: number[][]; attentionMask: number[][] }
interface Exp {
  vocabSize: number;
  paddingSide: 'left' | 'right';
  single: { text: string; ids: number[]; idsNoSpecial: number[]; decoded: string; decodedSkip: string }[];
  batch: Record<string, Batch>;
  chat?: string;
}
const expected = JSON.parse(fs.readFileSync(path.join(FIX, 'tokenizer_expected.json'), 'utf8')) as Record<'gpt2' | 'bert' | 'llama', Exp>;

for (const name of ['gpt2', 'bert', 'llama'] as const) {
  const exp = expected[name];
  const tok = Tokenizer.fromFile(path.join(FIX, `tok_${name}`));
  const texts = exp.single.map((s) => s.text);

  test(`${name}: encode / decode match transformers`, () => {
    assert.equal(tok.vocabSize, exp.vocabSize);
    for (const s of exp.single) {
      assert.deepEqual(tok.encode(s.text), s.ids, s.text);
      assert.deepEqual(tok.encode(s.text, { addSpecialTokens: false }), s.idsNoSpecial, s.text);
      assert.equal(tok.decode(s.ids), s.decoded);
      assert.equal(tok.decode(s.ids, { skipSpecialTokens: true }), s.decodedSkip);
    }
    assert.equal(tok.decode([]), '');
  });

  test(`${name}: batch padding (both sides) and truncation match transformers`, () => {
    const check = (got: { inputIds: number[][]; attentionMask: number[][] }, want: Batch, what: string) => {
      assert.deepEqual(got.inputIds, want.inputIds, what);
      assert.deepEqual(got.attentionMask, want.attentionMask, what);
    };
    assert.equal(tok.paddingSide, exp.paddingSide);
    check(tok.encodeBatch(texts, { padding: 'longest' }), exp.paddingSide === 'left' ? exp.batch.longest_left : exp.batch.longest_right, 'longest, default side');
    check(tok.encodeBatch(texts, { padding: 'longest', paddingSide: 'right' }), exp.batch.longest_right, 'longest right');
    check(tok.encodeBatch(texts, { padding: 'longest', paddingSide: 'left' }), exp.batch.longest_left, 'longest left');
    check(tok.encodeBatch(texts, { padding: 'max_length', truncation: true, maxLength: 6, paddingSide: 'right' }), exp.batch.max_length_6_trunc, 'max_length 6');
    check(tok.encodeBatch(texts, { truncation: true, maxLength: 5 }), exp.batch.trunc_5, 'truncate 5');
    if (exp.batch.pair_longest) {
      check(tok.encodeBatch(texts.slice(0, 2), { textPair: ['a test', 'hello'], padding: 'longest' }), exp.batch.pair_longest, 'pair longest');
      check(tok.encodeBatch(texts.slice(0, 2), { textPair: ['a test', 'hello the world is a test'], truncation: true, maxLength: 9 }), exp.batch.pair_trunc_9, 'pair truncation');
    }
  });

  test(`${name}: toTensors gives int32 [B, T]`, () => {
    const b = tok.encodeBatch(texts, { padding: 'longest', paddingSide: 'right' });
    const t = b.toTensors();
    const T = exp.batch.longest_right.inputIds[0].length;
    assert.deepEqual(t.inputIds.shape, [texts.length, T]);
    assert.equal(t.inputIds.dtype, 'int32');
    assert.deepEqual(Array.from(t.inputIds.ints), exp.batch.longest_right.inputIds.flat());
    assert.deepEqual(Array.from(t.attentionMask.ints), exp.batch.longest_right.attentionMask.flat());
    assert.throws(() => tok.encodeBatch(texts).toTensors(), /rows have different lengths/);
  });
}

test('gpt2: special tokens, pad = eos, model_max_length, chat template from chat_template.jinja', () => {
  const tok = Tokenizer.fromFile(path.join(FIX, 'tok_gpt2'));
  assert.equal(tok.eosToken, '<|endoftext|>');
  assert.equal(tok.eosTokenId, 0);
  assert.equal(tok.bosTokenId, 0);
  assert.equal(tok.padTokenId, 0);
  assert.equal(tok.padIsEos, true);
  assert.equal(tok.modelMaxLength, 16);
  assert.equal(tok.paddingSide, 'right');
  assert.ok(tok.chatTemplate);
  assert.equal(tok.applyChatTemplate([{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'yo' }]), expected.gpt2.chat);
  // truncation without maxLength uses model_max_length
  const long = tok.encodeBatch(['word '.repeat(40)], { truncation: true });
  assert.equal(long.inputIds[0].length, 16);
  // the eos string inside text is the special token
  assert.deepEqual(tok.encode('<|endoftext|>'), [0]);
});

test('bert: pad/cls/sep ids and token type ids for pairs', () => {
  const tok = Tokenizer.fromFile(path.join(FIX, 'tok_bert'));
  assert.equal(tok.padTokenId, 0);
  assert.equal(tok.padIsEos, false);
  assert.equal(tok.unkTokenId, 1);
  assert.equal(tok.numSpecialTokensToAdd(false), 2);
  assert.equal(tok.numSpecialTokensToAdd(true), 3);
  const b = tok.encodeBatch(['hello'], { textPair: ['a test'] });
  assert.deepEqual(b.inputIds, [[2, 35, 3, 5, 49, 3]]); // [CLS] hello [SEP] a test [SEP]
  assert.deepEqual(b.tokenTypeIds, [[0, 0, 0, 1, 1, 1]]);
  assert.throws(() => tok.applyChatTemplate([{ role: 'user', content: 'x' }]), /no chat_template/);
});

test('tokenizer_config.json options: padding_side, chat_template string, special_tokens_map.json, no tokenizer.json', () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'io-tok-'));
  try {
    fs.copyFileSync(path.join(FIX, 'tok_gpt2', 'tokenizer.json'), path.join(d, 'tokenizer.json'));
    fs.writeFileSync(path.join(d, 'tokenizer_config.json'), JSON.stringify({
      padding_side: 'left', model_max_length: 1e30, chat_template: '{{ bos_token }}{{ messages[0].content }}',
    }));
    fs.writeFileSync(path.join(d, 'special_tokens_map.json'), JSON.stringify({ bos_token: { content: '<|endoftext|>' }, eos_token: '<|endoftext|>' }));
    const tok = Tokenizer.fromFile(d);
    assert.equal(tok.paddingSide, 'left');
    assert.equal(tok.modelMaxLength, Infinity);
    assert.equal(tok.bosTokenId, 0);
    assert.equal(tok.applyChatTemplate([{ role: 'user', content: 'x' }]), '<|endoftext|>x');
    const b = tok.encodeBatch(['a', 'a b c'], { padding: true });
    assert.deepEqual(b.attentionMask[0].slice(0, 1), [0]);
    assert.throws(() => tok.encodeBatch(['a'], { truncation: true }), /need maxLength/);
    fs.rmSync(path.join(d, 'tokenizer.json'));
    fs.writeFileSync(path.join(d, 'vocab.txt'), 'a\n');
    assert.throws(() => Tokenizer.fromFile(d), /no tokenizer\.json in .*vocab\.txt.*only fast tokenizers/);
  } finally { fs.rmSync(d, { recursive: true, force: true }); }
});
