// peft-ts predict: class label + softmax scores for each input text, or (token-cls) one label
// per word.
import * as fs from 'node:fs';
import { tensor } from '../../tensor/index.js';
import { noGrad } from '../../tensor/tensor.js';
import { tidy } from '../../tensor/memory.js';
import { softmaxRows } from '../../train/metrics.js';
import type { Tokenizer } from '../../io/tokenizer.js';
import type { ModelInputs, ModelOutput } from '../../models/types.js';
import { type CommandDef, UsageError, helpText, int, oneOf, parseCommand, str, strings } from '../args.js';
import { ADAPTER_REVISION, BASE_FROM_ADAPTER, MODEL, TASKS } from '../options.js';
import { loadWithAdapter, requireFile } from '../common.js';
import { load } from '../data.js';

const PREDICT_OPTIONS = {
  adapter: str("adapter folder or Hub id (train's, the library's or Python peft's: gives the task, the labels and, without --model, the base model)", { metavar: 'DIR|ID', required: true }),
  ...ADAPTER_REVISION,
  text: strings('a text to classify (repeat for several); token-cls splits it on whitespace', { metavar: '"..."' }),
  data: str('or a file of rows (text column: --text-column; token-cls reads word lists from --tokens-column, else splits the text column)', { metavar: 'FILE' }),
  output: str('write one JSON line per input instead of printing: {text, label, score, scores} (seq-cls) or {tokens, labels, scores} (token-cls)', { metavar: 'FILE' }),
  ...MODEL,
  model: { ...MODEL.model, defaultText: BASE_FROM_ADAPTER },
  'num-labels': int('classes of an adapter saved with no label names and no classifier head', { min: 1, max: 1 << 20 }),
  task: oneOf(TASKS, 'the adapter task', { defaultText: "the adapter's label_mapping.json" }),
  'max-length': int('tokens per text', { min: 1, max: 1 << 20, defaultText: "the adapter's, else 128" }),
  'batch-size': int('texts per batch', { min: 1, max: 1 << 16, default: 16 }),
  'text-column': str('text column of --data', { metavar: 'C', default: 'text' }),
  'tokens-column': str('token-cls: word-list column of --data', { metavar: 'C', defaultText: "the adapter's, else tokens" }),
  seed: int('seed of a head the adapter does not hold', { min: 0, max: 2 ** 32 - 1, default: 42 }),
} as const;

export const PREDICT: CommandDef<typeof PREDICT_OPTIONS> = {
  name: 'predict', summary: 'classify texts (seq-cls) or tag words (token-cls) with a base model + adapter', options: PREDICT_OPTIONS,
  epilog: 'token-cls prints one line per input: word/LABEL for every word (the label of its first sub-token).',
};

export interface Prediction { text: string; label: string; score: number; scores: Record<string, number> }

type Classifier = { forward(i: ModelInputs): ModelOutput };

/** Labels and softmax scores for texts (batched, right-padded). */
export function classify(model: Classifier, tok: Tokenizer, texts: string[], id2label: Record<string, string>, maxLength = 128, batchSize = 16): Prediction[] {
  const out: Prediction[] = [];
  const pad = tok.padTokenId ?? tok.eosTokenId ?? 0;
  for (let i = 0; i < texts.length; i += batchSize) {
    const chunk = texts.slice(i, i + batchSize);
    const ids = chunk.map((t) => tok.encode(t).slice(0, maxLength));
    const T = Math.max(1, ...ids.map((r) => r.length));
    const flat = new Int32Array(chunk.length * T).fill(pad), mask = new Int32Array(chunk.length * T);
    ids.forEach((r, b) => { flat.set(r, b * T); mask.fill(1, b * T, b * T + r.length); });
    const logits = tidy(() => noGrad(() => model.forward({ inputIds: tensor(flat, [chunk.length, T]), attentionMask: tensor(mask, [chunk.length, T]) }).logits.toFloat32Array()));
    const C = logits.length / chunk.length;
    checkFinite(logits, chunk.length);
    const p = softmaxRows(logits, C);
    chunk.forEach((text, b) => {
      const scores: Record<string, number> = {};
      let best = 0;
      for (let c = 0; c < C; c++) { scores[id2label[c] ?? String(c)] = p[b * C + c]; if (p[b * C + c] > p[b * C + best]) best = c; }
      out.push({ text, label: id2label[best] ?? String(best), score: p[b * C + best], scores });
    });
  }
  return out;
}

export async function predictCommand(argv: string[]): Promise<void> {
  const o = parseCommand(PREDICT, argv);
  if (o.help) { console.log(helpText(PREDICT)); return; }
  const texts = [...(o.text ?? [])];
  const file = o.data;
  const ds = file ? load(requireFile(file, '--data')) : null;
  if (!texts.length && !ds) throw new UsageError('predict: give --text "..." (repeatable) or --data FILE');
  const { model, task, mapping, tokenizer } = await loadWithAdapter(o, 'seq-cls');
  if (task === 'causal-lm' || !mapping) throw new UsageError(`predict: the adapter is for ${task}, not a classifier (use generate)`);
  if (task === 'token-cls') {
    const sentences = texts.map((t) => t.split(/\s+/).filter(Boolean));
    if (ds) {
      const tcol = o.tokensColumn ?? mapping.tokensColumn ?? 'tokens', col = o.textColumn;
      const useWords = ds.columnNames.includes(tcol);
      if (!useWords) ds.requireColumns([col]);
      ds.rows.forEach((r, i) => {
        const v = useWords ? r[tcol] : r[col];
        if (useWords ? !Array.isArray(v) || v.some((w) => typeof w !== 'string') : typeof v !== 'string') throw new Error(`${ds.where(i)}: column '${useWords ? tcol : col}' must be ${useWords ? 'a list of words' : 'text'}`);
        sentences.push(useWords ? (v as string[]) : (v as string).split(/\s+/).filter(Boolean));
      });
    }
    if (!sentences.length) throw new UsageError('predict: give --text "..." (repeatable) or --data FILE');
    const preds = tagWords(model, tokenizer, sentences, mapping.id2label, o.maxLength ?? mapping.maxLength ?? 128, o.batchSize);
    const output = o.output;
    if (output) {
      fs.writeFileSync(output, preds.map((p) => JSON.stringify(p)).join('\n') + '\n');
      console.log(`wrote ${preds.length} predictions to ${output}`);
      return;
    }
    for (const p of preds) console.log(formatWordPrediction(p));
    return;
  }
  if (ds) {
    const col = o.textColumn;
    ds.requireColumns([col]);
    ds.rows.forEach((r, i) => { if (typeof r[col] !== 'string') throw new Error(`${ds.where(i)}: column '${col}' must be text`); texts.push(r[col] as string); });
  }
  if (!texts.length) throw new UsageError('predict: give --text "..." (repeatable) or --data FILE');
  const preds = classify(model, tokenizer, texts, mapping.id2label, o.maxLength ?? mapping.maxLength ?? 128, o.batchSize);
  const output = o.output;
  if (output) {
    fs.writeFileSync(output, preds.map((p) => JSON.stringify(p)).join('\n') + '\n');
    console.log(`wrote ${preds.length} predictions to ${output}`);
    return;
  }
  for (const p of preds) console.log(formatPrediction(p));
}

/** NaN / Inf logits (non-finite weights, overflow) would print as NaN scores: an error instead. */
function checkFinite(logits: Float32Array, n: number): void {
  for (let i = 0; i < logits.length; i++) {
    if (!Number.isFinite(logits[i])) {
      throw new Error(`predict: the model produced a non-finite logit (${logits[i]}) for input ${Math.floor(i / (logits.length / n)) + 1} of this batch; `
        + 'the base model or adapter weights hold NaN / Inf (see the load warnings), or the computation overflowed');
    }
  }
}

export interface WordPrediction { tokens: string[]; labels: string[]; scores: number[] }

/**
 * Word-level labels of pre-split sentences: each word takes the argmax label of its first
 * sub-token (the token the model was trained to label). Words cut off by maxLength get the
 * label of id 0 with score 0, and a warning.
 */
export function tagWords(model: Classifier, tok: Tokenizer, sentences: string[][], id2label: Record<string, string>, maxLength = 128, batchSize = 16,
  warn: (s: string) => void = (s) => process.stderr.write(s + '\n')): WordPrediction[] {
  const out: WordPrediction[] = [];
  const pad = tok.padTokenId ?? tok.eosTokenId ?? 0;
  for (let i = 0; i < sentences.length; i += batchSize) {
    const chunk = sentences.slice(i, i + batchSize);
    const enc = chunk.map((words) => tok.encodeWords(words, { maxLength }));
    const T = Math.max(1, ...enc.map((e) => e.ids.length));
    const flat = new Int32Array(chunk.length * T).fill(pad), mask = new Int32Array(chunk.length * T);
    enc.forEach((e, b) => { flat.set(e.ids, b * T); mask.fill(1, b * T, b * T + e.ids.length); });
    const logits = tidy(() => noGrad(() => model.forward({ inputIds: tensor(flat, [chunk.length, T]), attentionMask: tensor(mask, [chunk.length, T]) }).logits.toFloat32Array()));
    const C = logits.length / (chunk.length * T);
    checkFinite(logits, chunk.length);
    const p = softmaxRows(logits, C);
    chunk.forEach((words, b) => {
      const labels: string[] = words.map(() => id2label['0'] ?? '0'), scores: number[] = words.map(() => 0);
      const seen = new Set<number>();
      enc[b].wordIds.forEach((w, j) => {
        if (w === null || seen.has(w)) return;
        seen.add(w);
        const row = (b * T + j) * C;
        let best = 0;
        for (let c = 1; c < C; c++) if (p[row + c] > p[row + best]) best = c;
        labels[w] = id2label[String(best)] ?? String(best); scores[w] = p[row + best];
      });
      if (seen.size < words.length) warn(`predict: ${words.length - seen.size} of ${words.length} words are past --max-length ${maxLength} and got no prediction`);
      out.push({ tokens: words, labels, scores });
    });
  }
  return out;
}

export function formatWordPrediction(p: WordPrediction): string {
  return p.tokens.map((w, i) => `${w}/${p.labels[i]}`).join(' ');
}

export function formatPrediction(p: Prediction): string {
  const s = Object.entries(p.scores).map(([l, v]) => `${l}=${v.toFixed(3)}`).join(' ');
  const t = p.text.length > 70 ? p.text.slice(0, 67) + '...' : p.text;
  return `${p.label}\t${p.score.toFixed(3)}\t[${s}]\t${t}`;
}
