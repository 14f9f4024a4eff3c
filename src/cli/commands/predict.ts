// peft-ts predict: class label + softmax scores for each input text, or (token-cls) one label
// per word.
import * as fs from 'node:fs';
import { tensor } from '../../tensor/index.js';
import { noGrad } from '../../tensor/tensor.js';
import { tidy } from '../../tensor/memory.js';
import { softmaxRows } from '../../train/metrics.js';
import type { Tokenizer } from '../../io/tokenizer.js';
import type { ModelInputs, ModelOutput } from '../../models/types.js';
import { UsageError, num, str } from '../args.js';
import { Flags, checkKnown, commandFlags, loadWithAdapter, requireFile } from '../common.js';
import { load } from '../data.js';

export const PREDICT_HELP = `peft-ts predict: classify texts (seq-cls) or tag words (token-cls) with a base model + adapter

  --adapter DIR|ID     adapter folder or Hub id (train's, the library's or Python peft's: gives the task,
                       the labels and, without --model, the base model)  [required]
  --text "..."         a text to classify (repeat for several); token-cls splits it on whitespace
  --data FILE          or a file of rows (text column: --text-column, default text; token-cls reads
                       word lists from --tokens-column, default tokens, or else splits the text column)
  --output FILE        write one JSON line per input instead of printing: {text, label, score, scores}
                       (seq-cls) or {tokens, labels, scores} (token-cls, one label per word)
  --num-labels N       classes of an adapter saved with no label names and no classifier head
  --model DIR|ID  --revision REV  --adapter-revision REV (Hub branch, tag or commit)
  --max-length N (128)  --batch-size N (16)
  --dtype float32|bfloat16  base weights in bf16 (half the memory; compute stays float32)
token-cls prints one line per input: word/LABEL for every word (the label of its first sub-token).`;

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
  // --text may repeat: collect every value before the generic parser keeps only the last.
  const texts: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--text') { if (argv[i + 1] === undefined) throw new UsageError('--text needs a value'); texts.push(argv[++i]); }
    else if (argv[i].startsWith('--text=')) texts.push(argv[i].slice(7));
    else rest.push(argv[i]);
  }
  const flags: Flags = commandFlags(rest, ['help']);
  if (flags.help) { console.log(PREDICT_HELP); return; }
  checkKnown(flags, ['adapter', 'data', 'output', 'model', 'maxLength', 'batchSize', 'textColumn', 'tokensColumn', 'task', 'seed', 'dtype', 'numLabels', 'revision', 'adapterRevision'], 'predict');
  if (!str(flags, 'adapter')) throw new UsageError('predict: --adapter is required (a classifier trained with `peft-ts train`)');
  const file = str(flags, 'data');
  const ds = file ? load(requireFile(file, '--data')) : null;
  if (!texts.length && !ds) throw new UsageError('predict: give --text "..." (repeatable) or --data FILE');
  const { model, task, mapping, tokenizer } = await loadWithAdapter(flags, 'seq-cls');
  if (task === 'causal-lm' || !mapping) throw new UsageError(`predict: the adapter is for ${task}, not a classifier (use generate)`);
  if (task === 'token-cls') {
    const sentences = texts.map((t) => t.split(/\s+/).filter(Boolean));
    if (ds) {
      const tcol = str(flags, 'tokensColumn') ?? mapping.tokensColumn ?? 'tokens', col = str(flags, 'textColumn', 'text')!;
      const useWords = ds.columnNames.includes(tcol);
      if (!useWords) ds.requireColumns([col]);
      ds.rows.forEach((r, i) => {
        const v = useWords ? r[tcol] : r[col];
        if (useWords ? !Array.isArray(v) || v.some((w) => typeof w !== 'string') : typeof v !== 'string') throw new Error(`${ds.where(i)}: column '${useWords ? tcol : col}' must be ${useWords ? 'a list of words' : 'text'}`);
        sentences.push(useWords ? (v as string[]) : (v as string).split(/\s+/).filter(Boolean));
      });
    }
    if (!sentences.length) throw new UsageError('predict: give --text "..." (repeatable) or --data FILE');
    const preds = tagWords(model, tokenizer, sentences, mapping.id2label, num(flags, 'maxLength', mapping.maxLength ?? 128), num(flags, 'batchSize', 16));
    const output = str(flags, 'output');
    if (output) {
      fs.writeFileSync(output, preds.map((p) => JSON.stringify(p)).join('\n') + '\n');
      console.log(`wrote ${preds.length} predictions to ${output}`);
      return;
    }
    for (const p of preds) console.log(formatWordPrediction(p));
    return;
  }
  if (ds) {
    const col = str(flags, 'textColumn', 'text')!;
    ds.requireColumns([col]);
    ds.rows.forEach((r, i) => { if (typeof r[col] !== 'string') throw new Error(`${ds.where(i)}: column '${col}' must be text`); texts.push(r[col] as string); });
  }
  if (!texts.length) throw new UsageError('predict: give --text "..." (repeatable) or --data FILE');
  const preds = classify(model, tokenizer, texts, mapping.id2label, num(flags, 'maxLength', mapping.maxLength ?? 128), num(flags, 'batchSize', 16));
  const output = str(flags, 'output');
  if (output) {
    fs.writeFileSync(output, preds.map((p) => JSON.stringify(p)).join('\n') + '\n');
    console.log(`wrote ${preds.length} predictions to ${output}`);
    return;
  }
  for (const p of preds) console.log(formatPrediction(p));
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
