// peft-ts train: LoRA fine-tuning of a model on a data file with the Trainer.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Dataset } from '../../data/dataset.js';
import { getPeftModel, type PeftModel } from '../../peft/model.js';
import { prepareModelForKbitTraining } from '../../quant/model.js';
import { EarlyStoppingCallback, Trainer } from '../../train/trainer.js';
import type { TrainingArgumentsInit } from '../../train/args.js';
import { classificationMetrics } from '../../train/metrics.js';
import { isBioScheme, tokenClassificationMetrics } from '../../train/seqeval.js';
import { DataCollatorForTokenClassification } from '../../data/collators.js';
import type { LogEntry } from '../../train/callbacks.js';
import { type CommandDef, type Options, UsageError, commandOptions, flag, helpText, int, num, parseCommand, str } from '../args.js';
import { COLUMNS, LORA, MODEL, TASK, TRAINING, type CliTask } from '../options.js';
import {
  dtypeOf, isSeq2SeqModelDir, loadBaseModel, loadTokenizer, loraConfigFrom, modelDir, requireFile, writeLabelMapping,
} from '../common.js';
import { columnsFrom, defaultMaxLength, featuresFor, guessTask, load, tokenClsLabels } from '../data.js';
import { getCollective } from '../../train/distributed.js';
import { prepareOutputDir } from '../../train/checkpoint.js';

const TRAIN_OPTIONS = {
  data: str('training data (.jsonl, .json, .csv, .tsv)', { metavar: 'FILE', required: true, group: 'Data and task' }),
  'eval-data': str('evaluation data', { metavar: 'FILE', group: 'Data and task' }),
  'test-size': num('or split evaluation data off --data: a fraction (< 1) or a row count', { gt: 0, group: 'Data and task' }),
  ...TASK,
  ...COLUMNS,
  'num-labels': int('classes (default: from the data)', { min: 1, max: 1 << 20, group: 'Data and task' }),
  ...MODEL,
  ...LORA,
  ...TRAINING,
  quiet: flag('less output'),
} as const;
export const TRAIN: CommandDef<typeof TRAIN_OPTIONS> = {
  name: 'train', summary: 'LoRA fine-tuning with the Trainer', usage: '--data FILE [--eval-data FILE] [--task T] [flags]',
  options: TRAIN_OPTIONS,
  epilog: `Writes to the output dir: adapter_config.json, adapter_model.safetensors, label_mapping.json
(classification), tokenizer files, trainer_log.jsonl and training_curves.svg.`,
};
export type TrainOptions = Options<typeof TRAIN_OPTIONS>;

export interface TrainResult { outputDir: string; task: CliTask; peft: PeftModel; trainer: Trainer; evalMetrics: LogEntry | null; globalStep: number; /** This process's rank (0 unless under mpirun). */ rank: number }

/** The whole train command as a function (the demo uses it too). */
export async function runTrain(o: TrainOptions, log: (s: string) => void = (s) => console.log(s)): Promise<TrainResult> {
  const dataFile = requireFile(o.data, '--data');
  const evalFile = o.evalData !== undefined ? requireFile(o.evalData, '--eval-data') : undefined;
  const outputDir = o.outputDir;
  const resume = o.resume ?? null;
  const dtype = dtypeOf(o);
  const loadBest = o.loadBestModelAtEnd, patience = o.earlyStoppingPatience;
  if ((loadBest || patience !== undefined) && !evalFile && o.testSize === undefined) throw new UsageError('--load-best-model-at-end / --early-stopping-patience need evaluation data (--eval-data or --test-size)');
  // The output folder is checked before anything is loaded: unwritable, or holding another run.
  // (Under mpirun only rank 0 touches the folder.)
  if (getCollective().rank === 0) prepareOutputDir(outputDir, { resume: resume !== null, overwrite: o.overwriteOutputDir });
  const dir = await modelDir(o);
  const tok = loadTokenizer(dir);
  const cols = columnsFrom(o);
  let train = load(dataFile);
  let evalDs: Dataset | undefined;
  if (evalFile) evalDs = load(evalFile);
  else if (o.testSize !== undefined) {
    const s = train.trainTestSplit({ testSize: o.testSize, seed: o.seed });
    train = s.train; evalDs = s.test;
  }
  const task = o.task ?? (isSeq2SeqModelDir(dir) ? 'seq2seq-lm' : guessTask(train, cols));
  const tokLabels = task === 'token-cls' ? tokenClsLabels(train, cols, o.labels, dir) : undefined;
  if (tokLabels) log(`token-cls labels (from ${tokLabels.source}): ${Object.values(tokLabels.id2label).join(', ')}`);
  const feats = featuresFor(task, train, tok, cols, o, tokLabels?.label2id);
  const evalFeats = evalDs ? featuresFor(task, evalDs, tok, cols, o, feats.label2id) : undefined;
  const numLabels = feats.label2id ? Object.keys(feats.label2id).length : undefined;

  const seed = o.seed;
  let base = loadBaseModel(task, dir, { numLabels, seed, load4bit: o.loadIn4bit, dtype, nameOrPath: o.model });
  if (o.loadIn4bit) base = prepareModelForKbitTraining(base, { useGradientCheckpointing: o.gradientCheckpointing });
  const peft = getPeftModel(base, loraConfigFrom(o, task, base));
  log(peft.trainableParametersString());

  const evalSteps = o.evalSteps;
  const saveSteps = o.saveSteps;
  const evalStrategy = !evalFeats ? 'no' : evalSteps ? 'steps' : 'epoch';
  const saveStrategy = saveSteps ? 'steps' : (loadBest || patience !== undefined) ? evalStrategy : resume !== null ? 'epoch' : 'no';
  const bio = task === 'token-cls' && isBioScheme(Object.values(feats.id2label ?? {}));
  const metricForBest = o.metricForBestModel ?? (loadBest || patience !== undefined ? (task === 'seq-cls' ? 'accuracy' : bio ? 'f1' : task === 'token-cls' ? 'accuracy' : 'loss') : undefined);
  const args: TrainingArgumentsInit = {
    outputDir, overwriteOutputDir: o.overwriteOutputDir, numTrainEpochs: o.numTrainEpochs, maxSteps: o.maxSteps ?? -1, learningRate: o.learningRate,
    perDeviceTrainBatchSize: o.perDeviceTrainBatchSize, perDeviceEvalBatchSize: o.perDeviceEvalBatchSize,
    gradientAccumulationSteps: o.gradientAccumulationSteps, warmupSteps: o.warmupSteps, warmupRatio: o.warmupRatio,
    lrSchedulerType: o.lrSchedulerType, weightDecay: o.weightDecay, maxGradNorm: o.maxGradNorm,
    loggingSteps: o.loggingSteps, evalStrategy, evalSteps: evalSteps ?? 0,
    saveStrategy, saveSteps: saveSteps ?? (evalStrategy === 'steps' ? evalSteps : 500), saveTotalLimit: o.saveTotalLimit ?? null,
    seed, loadBestModelAtEnd: loadBest, metricForBestModel: metricForBest, gradientCheckpointing: o.gradientCheckpointing,
    nonFiniteAction: o.nonFiniteAction, bf16: o.bf16,
  };
  const trainer = new Trainer({
    model: peft, args, trainDataset: feats.dataset, evalDataset: evalFeats?.dataset, tokenizer: tok,
    computeMetrics: metricsFor(task, feats.id2label),
    dataCollator: task === 'token-cls' ? DataCollatorForTokenClassification({ tokenizer: tok }) : undefined,
    callbacks: patience !== undefined ? [new EarlyStoppingCallback(patience)] : [],
  });
  const out = await trainer.train({ resumeFromCheckpoint: resume });
  await trainer.saveModel(outputDir);
  // Under mpirun only rank 0 writes files and runs the final evaluation.
  if (trainer.collective.rank !== 0) return { outputDir, task, peft, trainer, evalMetrics: null, globalStep: out.globalStep, rank: trainer.collective.rank };
  if (feats.label2id && feats.id2label) {
    writeLabelMapping(outputDir, {
      task, id2label: feats.id2label, label2id: feats.label2id, maxLength: o.maxLength ?? defaultMaxLength(task),
      ...(task === 'token-cls' ? { tokensColumn: cols.tokens, tagsColumn: cols.tags } : { textColumn: cols.text }),
    });
  }
  else writeLabelMapping(outputDir, { task, id2label: {}, label2id: {}, ...(task === 'seq2seq-lm' ? { sourceColumn: cols.source, targetColumn: cols.target } : {}) });
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt']) {
    if (fs.existsSync(path.join(dir, f))) fs.copyFileSync(path.join(dir, f), path.join(outputDir, f));
  }
  let evalMetrics: LogEntry | null = null;
  if (evalFeats) {
    // The evaluation train() made at its last step, unless the weights changed since (best model reloaded).
    evalMetrics = { ...(trainer.finalEvaluation() ?? await trainer.evaluate()) };
    if ((task === 'causal-lm' || task === 'seq2seq-lm') && evalMetrics.eval_loss !== undefined) evalMetrics.eval_perplexity = Math.exp(evalMetrics.eval_loss);
  }
  return { outputDir, task, peft, trainer, evalMetrics, globalStep: out.globalStep, rank: 0 };
}

/** computeMetrics of a CLI task: accuracy / F1, token accuracy + entity P/R/F1, or none (loss). */
export function metricsFor(task: CliTask, id2label?: Record<string, string>) {
  if (task === 'seq-cls') return classificationMetrics;
  if (task === 'token-cls') return tokenClassificationMetrics(id2label ?? {});
  return undefined;
}

export function printMetrics(m: LogEntry, log: (s: string) => void = (s) => console.log(s)): void {
  for (const [k, v] of Object.entries(m)) if (!/runtime|per_second|^epoch$|^step$/.test(k)) log(`  ${k.padEnd(20)} ${Number.isInteger(v) ? v : v.toFixed(4)}`);
}

/** The train command's options from an object (camelCase keys), checked as flags are. */
export const trainOptions = (values: Record<string, unknown>): TrainOptions => commandOptions(TRAIN, values);

export async function trainCommand(argv: string[]): Promise<void> {
  const o = parseCommand(TRAIN, argv);
  if (o.help) { console.log(helpText(TRAIN)); return; }
  const r = await runTrain(o);
  if (r.rank !== 0) return;
  console.log(`saved the adapter, trainer_log.jsonl and training_curves.svg to ${r.outputDir} (${r.globalStep} steps)`);
  if (r.evalMetrics) { console.log('final evaluation:'); printMetrics(r.evalMetrics); }
}
