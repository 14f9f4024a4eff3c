// peft-ts eval: a base model (+ adapter) on a labelled file; accuracy / F1, or loss / perplexity.
import { Trainer } from '../../train/trainer.js';
import { DataCollatorForTokenClassification } from '../../data/collators.js';
import type { LogEntry } from '../../train/callbacks.js';
import { type Dataset, encodeLabels } from '../../data/dataset.js';
import type { Tokenizer } from '../../io/tokenizer.js';
import { type CommandDef, flag, helpText, int, parseCommand, str } from '../args.js';
import { ADAPTER_REVISION, BASE_FROM_ADAPTER, COLUMNS, MODEL, TASK, type CliTask } from '../options.js';
import { loadWithAdapter, modelDir, requireFile } from '../common.js';
import { columnsFrom, featuresFor, guessTask, load, tokenClsLabels } from '../data.js';
import { metricsFor, printMetrics } from './train.js';

const EVAL_OPTIONS = {
  data: str('labelled data (.jsonl / .json / .csv)', { metavar: 'FILE', required: true }),
  adapter: str('adapter folder or Hub id (its label_mapping.json gives task and labels)', { metavar: 'DIR|ID' }),
  ...ADAPTER_REVISION,
  ...MODEL,
  model: { ...MODEL.model, defaultText: BASE_FROM_ADAPTER },
  ...TASK,
  'num-labels': int('classes for a base classifier without adapter', { min: 1, max: 1 << 20, defaultText: 'from the data', group: 'Data and task' }),
  ...COLUMNS,
  'batch-size': int('examples per batch', { min: 1, max: 1 << 16, default: 16, alias: ['per-device-eval-batch-size'] }),
  seed: int('seed of the head of a classifier without adapter', { min: 0, max: 2 ** 32 - 1, default: 42 }),
  json: flag('print the metrics as one JSON line'),
} as const;

export const EVAL: CommandDef<typeof EVAL_OPTIONS> = {
  name: 'eval', summary: 'evaluate a base model, with or without a LoRA adapter, on a labelled file', options: EVAL_OPTIONS,
  epilog: `Prints accuracy and macro-F1 (seq-cls), token accuracy and entity-level precision / recall / F1
(token-cls with BIO tags, as seqeval), or loss and perplexity (causal-lm, seq2seq-lm).`,
};

/** Evaluation metrics of `model` on tokenized features (no log files written). */
export async function evaluateModel(model: ConstructorParameters<typeof Trainer>[0]['model'], task: CliTask, features: Dataset, tok: Tokenizer, batchSize = 16,
  id2label?: Record<string, string>): Promise<LogEntry> {
  const trainer = new Trainer({
    model, tokenizer: tok, args: { outputDir: '.', reportTo: 'none', perDeviceEvalBatchSize: batchSize, plotCurves: false },
    computeMetrics: metricsFor(task, id2label), progressStream: { write: () => true },
    dataCollator: task === 'token-cls' ? DataCollatorForTokenClassification({ tokenizer: tok }) : undefined,
  });
  const m = await trainer.evaluate(features);
  if ((task === 'causal-lm' || task === 'seq2seq-lm') && m.eval_loss !== undefined) m.eval_perplexity = Math.exp(m.eval_loss);
  return m;
}

export async function evalCommand(argv: string[]): Promise<void> {
  const o = parseCommand(EVAL, argv);
  if (o.help) { console.log(helpText(EVAL)); return; }
  const file = requireFile(o.data, '--data');
  const ds = load(file);
  const cols = columnsFrom(o);
  const hint: CliTask = guessTask(ds, cols);
  // A classifier without adapter needs the class count before the model is built.
  let label2id: Record<string, number> | undefined;
  if (!o.adapter && hint === 'seq-cls' && (o.task ?? 'seq-cls') === 'seq-cls') {
    label2id = encodeLabels(ds, cols.label).mapping.label2id;
  } else if (!o.adapter && (o.task ?? hint) === 'token-cls') {
    label2id = tokenClsLabels(ds, cols, o.labels, await modelDir(o)).label2id;
  }
  const numLabels = o.numLabels ?? (label2id ? Object.keys(label2id).length : undefined);
  const { model, task, mapping, tokenizer } = await loadWithAdapter({ ...o, numLabels }, hint);
  const fromAdapter = mapping?.label2id && Object.keys(mapping.label2id).length ? mapping.label2id : undefined;
  const c = {
    ...cols, text: o.textColumn ?? mapping?.textColumn ?? cols.text,
    tokens: o.tokensColumn ?? mapping?.tokensColumn ?? cols.tokens, tags: o.tagsColumn ?? mapping?.tagsColumn ?? cols.tags,
    source: o.sourceColumn ?? mapping?.sourceColumn ?? cols.source, target: o.targetColumn ?? mapping?.targetColumn ?? cols.target,
  };
  const feats = featuresFor(task, ds, tokenizer, c, { maxLength: o.maxLength, numLabels, maxTargetLength: o.maxTargetLength }, fromAdapter ?? label2id);
  const m = await evaluateModel(model, task, feats.dataset, tokenizer, o.batchSize, feats.id2label);
  if (o.json) { console.log(JSON.stringify(m)); return; }
  console.log(`evaluation on ${file} (${ds.length} rows):`);
  printMetrics(m);
}
