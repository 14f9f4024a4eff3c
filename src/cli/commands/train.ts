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
import type { SchedulerType } from '../../train/schedulers.js';
import type { LogEntry } from '../../train/callbacks.js';
import { UsageError, bool, num, str } from '../args.js';
import {
  CliTask, Flags, checkKnown, commandFlags, dtypeFlag, isSeq2SeqModelDir, loadBaseModel, loadTokenizer, loraConfigFrom, modelDir, requireFile, taskOf, writeLabelMapping,
} from '../common.js';
import { columnsFrom, featuresFor, guessTask, load, tokenClsLabels } from '../data.js';

export const LORA_FLAGS = ['r', 'loraAlpha', 'loraDropout', 'targetModules', 'useDora', 'useRslora', 'bias', 'modulesToSave'];
const KNOWN = [
  'model', 'revision', 'task', 'data', 'evalData', 'testSize', 'textColumn', 'labelColumn', 'promptColumn', 'completionColumn', 'template', 'maxLength',
  ...LORA_FLAGS, 'outputDir', 'epochs', 'maxSteps', 'lr', 'batchSize', 'evalBatchSize', 'gradAccum', 'warmupSteps', 'warmupRatio',
  'scheduler', 'weightDecay', 'evalSteps', 'saveSteps', 'saveTotalLimit', 'loggingSteps', 'seed', 'earlyStoppingPatience',
  'metricForBestModel', 'loadBestModelAtEnd', 'gradientCheckpointing', 'resume', 'loadIn4bit', 'numLabels', 'quiet', 'dtype',
  'tokensColumn', 'tagsColumn', 'labels', 'sourceColumn', 'targetColumn', 'maxTargetLength', 'bf16',
];
export const TRAIN_BOOLEANS = ['useDora', 'useRslora', 'loadBestModelAtEnd', 'gradientCheckpointing', 'loadIn4bit', 'quiet', 'help', 'bf16'];

export const TRAIN_HELP = `peft-ts train: LoRA fine-tuning with the Trainer

Data and task
  --model DIR|ID            base model: folder or Hub id, downloaded into the HF cache (default: the embedded assets/default-model)
  --revision REV            Hub branch, tag or commit of --model
  --data FILE               training data (.jsonl, .json, .csv, .tsv)            [required]
  --eval-data FILE          evaluation data; or --test-size F to split it off --data
  --task T                  seq-cls | token-cls | causal-lm | seq2seq-lm (default: seq-cls when the
                            data has a label column, token-cls when it has tokens and ner_tags
                            columns, seq2seq-lm for a T5 / BART model or source and target columns)
  --text-column C           (text)     --label-column C (label)
  --tokens-column C         (tokens)   --tags-column C (ner_tags)   token-cls: words and their tags
  --labels a,b,c            token-cls tag names by id (default: the model's id2label, else the
                            tag names in the data, sorted)
  --source-column C         (source)   --target-column C (target)   seq2seq-lm input and output texts
  --max-target-length N     seq2seq-lm target tokens (default: --max-length)
  --prompt-column C         (prompt)   --completion-column C (completion)
  --template T              none | alpaca | chat (causal-lm prompt format; default none)
  --max-length N            tokens per example (128 for seq-cls and token-cls, 256 for causal-lm)
LoRA
  --r N (8)  --lora-alpha N (16)  --lora-dropout P (0.05)  --bias none|all|lora_only
  --target-modules a,b | REGEX | all-linear   (default: the architecture's peft default)
  --use-dora  --use-rslora  --modules-to-save a,b  --load-in-4bit (QLoRA: NF4 base weights)
  --dtype float32|bfloat16  base weights in bf16 (half the memory; LoRA and compute stay float32)
Training (transformers' TrainingArguments)
  --output-dir DIR (runs/train)  --epochs N (3)  --max-steps N  --lr X (2e-4)
  --batch-size N (8)  --eval-batch-size N (16)  --grad-accum N (1)  --warmup-steps N | --warmup-ratio F
  --scheduler linear|cosine|constant|...  --weight-decay X (0)  --logging-steps N (10)
  --eval-steps N (default: evaluate every epoch)  --save-steps N  --save-total-limit N
  --early-stopping-patience N  --metric-for-best-model M  --load-best-model-at-end
  --gradient-checkpointing  --seed N (42)  --resume [CHECKPOINT_DIR]
  --bf16                    mixed precision (transformers' bf16=True): bf16 GEMM operands, float32
                            accumulation, weights and optimizer; also for the evaluations
  --config FILE.json        any of the above as JSON (camelCase or kebab-case keys; flags win)

Writes to the output dir: adapter_config.json, adapter_model.safetensors, label_mapping.json
(classification), tokenizer files, trainer_log.jsonl and training_curves.svg.`;

export interface TrainResult { outputDir: string; task: CliTask; peft: PeftModel; trainer: Trainer; evalMetrics: LogEntry | null; globalStep: number; /** This process's rank (0 unless under mpirun). */ rank: number }

/** The whole train command as a function (the demo uses it too). */
export async function runTrain(flags: Flags, log: (s: string) => void = (s) => console.log(s)): Promise<TrainResult> {
  const dataFile = requireFile(str(flags, 'data'), '--data');
  const dir = await modelDir(flags);
  const tok = loadTokenizer(dir);
  const cols = columnsFrom(flags);
  let train = load(dataFile);
  let evalDs: Dataset | undefined;
  const evalFile = str(flags, 'evalData');
  if (evalFile) evalDs = load(requireFile(evalFile, '--eval-data'));
  else if (flags.testSize !== undefined) {
    const s = train.trainTestSplit({ testSize: num(flags, 'testSize')!, seed: num(flags, 'seed', 42) });
    train = s.train; evalDs = s.test;
  }
  const task = taskOf(str(flags, 'task')) ?? (isSeq2SeqModelDir(dir) ? 'seq2seq-lm' : guessTask(train, cols));
  const tokLabels = task === 'token-cls' ? tokenClsLabels(train, cols, flags, dir) : undefined;
  if (tokLabels) log(`token-cls labels (from ${tokLabels.source}): ${Object.values(tokLabels.id2label).join(', ')}`);
  const feats = featuresFor(task, train, tok, cols, flags, tokLabels?.label2id);
  const evalFeats = evalDs ? featuresFor(task, evalDs, tok, cols, flags, feats.label2id) : undefined;
  const numLabels = feats.label2id ? Object.keys(feats.label2id).length : undefined;

  const seed = num(flags, 'seed', 42)!;
  const load4bit = bool(flags, 'loadIn4bit');
  const dtype = dtypeFlag(flags);
  let base = loadBaseModel(task, dir, { numLabels, seed, load4bit, dtype, nameOrPath: str(flags, 'model') });
  if (load4bit) base = prepareModelForKbitTraining(base, { useGradientCheckpointing: bool(flags, 'gradientCheckpointing') });
  const peft = getPeftModel(base, loraConfigFrom(flags, task, base));
  log(peft.trainableParametersString());

  const outputDir = str(flags, 'outputDir', 'runs/train')!;
  const evalSteps = num(flags, 'evalSteps');
  const saveSteps = num(flags, 'saveSteps');
  const loadBest = bool(flags, 'loadBestModelAtEnd');
  const patience = num(flags, 'earlyStoppingPatience');
  const evalStrategy = !evalFeats ? 'no' : evalSteps ? 'steps' : 'epoch';
  if ((loadBest || patience !== undefined) && evalStrategy === 'no') throw new UsageError('--load-best-model-at-end / --early-stopping-patience need evaluation data (--eval-data or --test-size)');
  const saveStrategy = saveSteps ? 'steps' : (loadBest || patience !== undefined) ? evalStrategy : flags.resume !== undefined ? 'epoch' : 'no';
  const bio = task === 'token-cls' && isBioScheme(Object.values(feats.id2label ?? {}));
  const metricForBest = str(flags, 'metricForBestModel') ?? (loadBest || patience !== undefined ? (task === 'seq-cls' ? 'accuracy' : bio ? 'f1' : task === 'token-cls' ? 'accuracy' : 'loss') : undefined);
  const resume = flags.resume === undefined ? null : flags.resume === true ? true : String(flags.resume);
  const args: TrainingArgumentsInit = {
    outputDir, numTrainEpochs: num(flags, 'epochs', 3), maxSteps: num(flags, 'maxSteps', -1), learningRate: num(flags, 'lr', 2e-4),
    perDeviceTrainBatchSize: num(flags, 'batchSize', 8), perDeviceEvalBatchSize: num(flags, 'evalBatchSize', 16),
    gradientAccumulationSteps: num(flags, 'gradAccum', 1), warmupSteps: num(flags, 'warmupSteps', 0), warmupRatio: num(flags, 'warmupRatio', 0),
    lrSchedulerType: str(flags, 'scheduler', 'linear') as SchedulerType, weightDecay: num(flags, 'weightDecay', 0),
    loggingSteps: num(flags, 'loggingSteps', 10), evalStrategy, evalSteps: evalSteps ?? 0,
    saveStrategy, saveSteps: saveSteps ?? (evalStrategy === 'steps' ? evalSteps : 500), saveTotalLimit: num(flags, 'saveTotalLimit') ?? null,
    seed, loadBestModelAtEnd: loadBest, metricForBestModel: metricForBest, gradientCheckpointing: bool(flags, 'gradientCheckpointing'),
    bf16: bool(flags, 'bf16'),
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
      task, id2label: feats.id2label, label2id: feats.label2id, maxLength: num(flags, 'maxLength', 128),
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

export async function trainCommand(argv: string[]): Promise<void> {
  const flags = commandFlags(argv, TRAIN_BOOLEANS);
  if (flags.help) { console.log(TRAIN_HELP); return; }
  checkKnown(flags, KNOWN, 'train');
  const r = await runTrain(flags);
  if (r.rank !== 0) return;
  console.log(`saved the adapter, trainer_log.jsonl and training_curves.svg to ${r.outputDir} (${r.globalStep} steps)`);
  if (r.evalMetrics) { console.log('final evaluation:'); printMetrics(r.evalMetrics); }
}
