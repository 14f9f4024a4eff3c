// peft-ts predict: class label + softmax scores for each input text.
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

export const PREDICT_HELP = `peft-ts predict: classify texts with a base model + adapter

  --adapter DIR        adapter folder written by train (gives the labels)          [required]
  --text "..."         a text to classify (repeat for several)
  --data FILE          or a file of rows (text column: --text-column, default text)
  --output FILE        write one JSON line per input {text, label, score, scores} instead of printing
  --model DIR|ID  --max-length N (128)  --batch-size N (16)`;

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
  checkKnown(flags, ['adapter', 'data', 'output', 'model', 'maxLength', 'batchSize', 'textColumn', 'task', 'seed'], 'predict');
  if (!str(flags, 'adapter')) throw new UsageError('predict: --adapter is required (a classifier trained with `peft-ts train`)');
  const file = str(flags, 'data');
  if (file) {
    const ds = load(requireFile(file, '--data'));
    const col = str(flags, 'textColumn', 'text')!;
    ds.requireColumns([col]);
    ds.rows.forEach((r, i) => { if (typeof r[col] !== 'string') throw new Error(`${ds.where(i)}: column '${col}' must be text`); texts.push(r[col] as string); });
  }
  if (!texts.length) throw new UsageError('predict: give --text "..." (repeatable) or --data FILE');
  const { model, task, mapping, tokenizer } = loadWithAdapter(flags, 'seq-cls');
  if (task !== 'seq-cls' || !mapping) throw new UsageError(`predict: the adapter is for ${task}, not a sequence classifier (use generate)`);
  const preds = classify(model, tokenizer, texts, mapping.id2label, num(flags, 'maxLength', mapping.maxLength ?? 128), num(flags, 'batchSize', 16));
  const output = str(flags, 'output');
  if (output) {
    fs.writeFileSync(output, preds.map((p) => JSON.stringify(p)).join('\n') + '\n');
    console.log(`wrote ${preds.length} predictions to ${output}`);
    return;
  }
  for (const p of preds) console.log(formatPrediction(p));
}

export function formatPrediction(p: Prediction): string {
  const s = Object.entries(p.scores).map(([l, v]) => `${l}=${v.toFixed(3)}`).join(' ');
  const t = p.text.length > 70 ? p.text.slice(0, 67) + '...' : p.text;
  return `${p.label}\t${p.score.toFixed(3)}\t[${s}]\t${t}`;
}
