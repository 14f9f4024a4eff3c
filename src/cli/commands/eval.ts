// peft-ts eval: a base model (+ adapter) on a labelled file; accuracy / F1, or loss / perplexity.
import { Trainer } from '../../train/trainer.js';
import { DataCollatorForTokenClassification } from '../../data/collators.js';
import type { LogEntry } from '../../train/callbacks.js';
import { type Dataset, encodeLabels } from '../../data/dataset.js';
import type { Tokenizer } from '../../io/tokenizer.js';
import { num, str } from '../args.js';
import { CliTask, Flags, checkKnown, commandFlags, loadWithAdapter, modelDir, requireFile } from '../common.js';
import { columnsFrom, featuresFor, guessTask, load, tokenClsLabels } from '../data.js';
import { metricsFor, printMetrics } from './train.js';

export const EVAL_HELP = `peft-ts eval: evaluate a base model, with or without a LoRA adapter, on a labelled file

  --data FILE          labelled data (.jsonl / .json / .csv)                  [required]
  --adapter DIR        adapter folder written by train (its label_mapping.json gives task and labels)
  --model DIR|ID       base model (default: the adapter's base_model_name_or_path, else assets/default-model)
  --revision REV  --adapter-revision REV   Hub branch, tag or commit of --model / --adapter
  --task T             seq-cls | token-cls | causal-lm | seq2seq-lm (default: from the adapter, else
                       the model (T5 / BART: seq2seq-lm), else from the columns)
  --num-labels N       classes for a base classifier without adapter (default: from the data)
  --labels a,b,c       token-cls tag names without adapter (default: model id2label, else the data's)
  --text-column C  --label-column C  --prompt-column C  --completion-column C  --template T  --max-length N
  --tokens-column C (tokens)  --tags-column C (ner_tags)   token-cls words and tags
  --source-column C (source)  --target-column C (target)   seq2seq-lm inputs and outputs  --max-target-length N
  --batch-size N (16)  --seed N (head init of a classifier without adapter)
  --dtype float32|bfloat16  base weights in bf16 (half the memory; compute stays float32)
Prints accuracy and macro-F1 (seq-cls), token accuracy and entity-level precision / recall / F1
(token-cls with BIO tags, as seqeval), or loss and perplexity (causal-lm, seq2seq-lm).`;

const KNOWN = ['data', 'adapter', 'model', 'task', 'numLabels', 'textColumn', 'labelColumn', 'promptColumn', 'completionColumn', 'template', 'maxLength', 'batchSize', 'seed', 'loadIn4bit', 'dtype', 'json', 'tokensColumn', 'tagsColumn', 'labels', 'revision', 'adapterRevision', 'sourceColumn', 'targetColumn', 'maxTargetLength'];

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
  const flags: Flags = commandFlags(argv, ['help', 'loadIn4bit', 'json']);
  if (flags.help) { console.log(EVAL_HELP); return; }
  checkKnown(flags, KNOWN, 'eval');
  const file = requireFile(str(flags, 'data'), '--data');
  const ds = load(file);
  const cols = columnsFrom(flags);
  const hint: CliTask = guessTask(ds, cols);
  // A classifier without adapter needs the class count before the model is built.
  let label2id: Record<string, number> | undefined;
  const explicit = str(flags, 'task');
  if (!str(flags, 'adapter') && hint === 'seq-cls' && (explicit ?? 'seq-cls') === 'seq-cls') {
    label2id = encodeLabels(ds, cols.label).mapping.label2id;
  } else if (!str(flags, 'adapter') && (explicit ?? hint) === 'token-cls') {
    label2id = tokenClsLabels(ds, cols, flags, await modelDir(flags)).label2id;
  }
  if (label2id && flags.numLabels === undefined) flags.numLabels = String(Object.keys(label2id).length);
  const { model, task, mapping, tokenizer } = await loadWithAdapter(flags, hint);
  const fromAdapter = mapping?.label2id && Object.keys(mapping.label2id).length ? mapping.label2id : undefined;
  const c = {
    ...cols, text: str(flags, 'textColumn') ?? mapping?.textColumn ?? cols.text,
    tokens: str(flags, 'tokensColumn') ?? mapping?.tokensColumn ?? cols.tokens, tags: str(flags, 'tagsColumn') ?? mapping?.tagsColumn ?? cols.tags,
    source: str(flags, 'sourceColumn') ?? mapping?.sourceColumn ?? cols.source, target: str(flags, 'targetColumn') ?? mapping?.targetColumn ?? cols.target,
  };
  const feats = featuresFor(task, ds, tokenizer, c, flags, fromAdapter ?? label2id);
  const m = await evaluateModel(model, task, feats.dataset, tokenizer, num(flags, 'batchSize', 16), feats.id2label);
  if (flags.json) { console.log(JSON.stringify(m)); return; }
  console.log(`evaluation on ${file} (${ds.length} rows):`);
  printMetrics(m);
}
