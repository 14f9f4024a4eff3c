// SFTTrainer / SFTConfig: TRL's supervised fine-tuning front end over the Trainer. The
// trainer applies peftConfig itself, prepares the data as TRL does (src/data/sft.ts: text
// field, formatting function, prompt-completion and chat data, completion-only and
// assistant-only loss, maxLength truncation, packing) and collates with TRL's collator.
import * as fs from 'node:fs';
import { Dataset, Row } from '../data/dataset.js';
import { DataCollatorForSFT, PackingStrategy, SFTTokenizer, TruncationMode, prepareSFTDataset, resolveCompletionOnlyLoss } from '../data/sft.js';
import type { DataCollator } from '../data/collators.js';
import { Tokenizer } from '../io/tokenizer.js';
import { AutoModelForCausalLM, type FromPretrainedOptions } from '../models/auto.js';
import { LoraConfig } from '../peft/config.js';
import { PeftModel, getPeftModel } from '../peft/model.js';
import type { Module } from '../nn/module.js';
import { TrainingArguments, TrainingArgumentsInit } from './args.js';
import { EvalPrediction, Trainer, TrainableModel, TrainerOptions } from './trainer.js';
import type { TrainerCallback } from './callbacks.js';

export interface SFTConfigInit extends TrainingArgumentsInit {
  /** Column of language-modeling text (TRL's dataset_text_field; default 'text'). */
  datasetTextField?: string;
  /** Truncation length, and the block length when packing (default 1024); null: none. */
  maxLength?: number | null;
  /** The name TRL used before 0.20 for maxLength. */
  maxSeqLength?: number | null;
  truncationMode?: TruncationMode;
  packing?: boolean;
  /** 'bfd' (default), 'bfd_split' or 'wrapped'. */
  packingStrategy?: PackingStrategy;
  /** Flatten each batch into one row with restarting position ids (on by itself for bfd packing). */
  paddingFree?: boolean;
  padToMultipleOf?: number | null;
  /** Pack the eval set too (default: as packing). */
  evalPacking?: boolean | null;
  /** Loss on completions only; default: true for prompt-completion data. */
  completionOnlyLoss?: boolean | null;
  /** Loss on assistant turns only (chat data; template with {% generation %}). */
  assistantOnlyLoss?: boolean;
  /** Token that ends each text / completion (default the tokenizer's eos). */
  eosToken?: string | null;
  /** Pad token for the collator (default the tokenizer's pad, else eos). */
  padToken?: string | null;
  /** A .jinja file (or a tokenizer folder) whose chat template replaces the tokenizer's. */
  chatTemplatePath?: string | null;
  shuffleDataset?: boolean;
  /** { skipPrepareDataset: true } takes the rows as already prepared (inputIds and labels). */
  datasetKwargs?: { skipPrepareDataset?: boolean } | null;
  /** Options for AutoModelForCausalLM.fromPretrained when the model is given as a folder. */
  modelInitKwargs?: FromPretrainedOptions | null;
  /** Row -> text (also accepted as the trainer's formattingFunc option, which wins). */
  formattingFunc?: ((example: Row) => string) | null;
}

const SFT_KEYS = [
  'datasetTextField', 'maxLength', 'maxSeqLength', 'truncationMode', 'packing', 'packingStrategy', 'paddingFree',
  'padToMultipleOf', 'evalPacking', 'completionOnlyLoss', 'assistantOnlyLoss', 'eosToken', 'padToken',
  'chatTemplatePath', 'shuffleDataset', 'datasetKwargs', 'modelInitKwargs', 'formattingFunc',
] as const;

/**
 * TRL's SFTConfig: TrainingArguments plus the SFT fields, camelCase. As in TRL, learningRate
 * defaults to 2e-5 and loggingSteps to 10. TRL's bf16 / gradient_checkpointing defaults (on)
 * are not copied: the CPU backends compute in float32 and checkpointing only costs time here.
 */
export class SFTConfig extends TrainingArguments {
  datasetTextField = 'text';
  maxLength: number | null = 1024;
  truncationMode: TruncationMode = 'keep_start';
  packing = false;
  packingStrategy: PackingStrategy = 'bfd';
  paddingFree = false;
  padToMultipleOf: number | null = null;
  evalPacking: boolean | null = null;
  completionOnlyLoss: boolean | null = null;
  assistantOnlyLoss = false;
  eosToken: string | null = null;
  padToken: string | null = null;
  chatTemplatePath: string | null = null;
  shuffleDataset = false;
  datasetKwargs: { skipPrepareDataset?: boolean } | null = null;
  modelInitKwargs: FromPretrainedOptions | null = null;
  formattingFunc: ((example: Row) => string) | null = null;

  constructor(init: SFTConfigInit) {
    const base: Record<string, unknown> = { learningRate: 2e-5, loggingSteps: 10 };
    const sft: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(init)) ((SFT_KEYS as readonly string[]).includes(k) ? sft : base)[k] = v;
    super(base as unknown as TrainingArgumentsInit);
    if ('maxSeqLength' in sft) {
      if ('maxLength' in sft && sft.maxLength !== sft.maxSeqLength) throw new Error('SFTConfig: maxLength and maxSeqLength (its old name) disagree; give one');
      sft.maxLength = sft.maxSeqLength;
      delete sft.maxSeqLength;
    }
    Object.assign(this, sft);
    if (this.maxLength !== null && !(Number.isInteger(this.maxLength) && this.maxLength > 0)) throw new Error(`SFTConfig: maxLength must be a positive integer or null, got ${this.maxLength}`);
    if (!['keep_start', 'keep_end'].includes(this.truncationMode)) throw new Error(`SFTConfig: truncationMode must be 'keep_start' or 'keep_end', got '${this.truncationMode}'`);
    if (!['bfd', 'bfd_split', 'wrapped'].includes(this.packingStrategy)) throw new Error(`SFTConfig: packingStrategy must be 'bfd', 'bfd_split' or 'wrapped', got '${this.packingStrategy}'`);
    if (this.packing && this.maxLength === null) throw new Error('SFTConfig: packing needs maxLength');
    if (this.padToMultipleOf !== null && !(Number.isInteger(this.padToMultipleOf) && this.padToMultipleOf > 0)) throw new Error(`SFTConfig: padToMultipleOf must be a positive integer, got ${this.padToMultipleOf}`);
  }

  /** maxLength under TRL's old name. */
  get maxSeqLength(): number | null { return this.maxLength; }
}

export interface SFTTrainerOptions extends Omit<TrainerOptions, 'model' | 'args' | 'tokenizer'> {
  /** A causal LM, a PeftModel, or a model folder (loaded with AutoModelForCausalLM). */
  model: TrainableModel | string;
  args?: SFTConfig | SFTConfigInit;
  /** The tokenizer (TRL's processing_class); loaded from the model folder when the model is a path. */
  processingClass?: SFTTokenizer;
  tokenizer?: SFTTokenizer;
  /** Applied by the trainer (getPeftModel) before training. */
  peftConfig?: LoraConfig | null;
  formattingFunc?: ((example: Row) => string) | null;
  callbacks?: TrainerCallback[];
  computeMetrics?: (p: EvalPrediction) => Record<string, number>;
  dataCollator?: DataCollator;
}

/** The chat template TRL's chat_template_path names: a .jinja file, or a tokenizer folder's. */
function templateFrom(file: string): string {
  let template: string;
  if (fs.existsSync(file) && fs.statSync(file).isFile()) template = fs.readFileSync(file, 'utf8');
  else if (fs.existsSync(file) && fs.statSync(file).isDirectory()) {
    const t = Tokenizer.fromFile(file).chatTemplate;
    if (!t) throw new Error(`chatTemplatePath: the tokenizer in ${file} has no chat template`);
    template = t;
  } else throw new Error(`chatTemplatePath: ${file} does not exist`);
  return template;
}

interface Prepared {
  model: TrainableModel;
  tokenizer: SFTTokenizer;
  args: SFTConfig;
  train?: Dataset;
  eval?: Dataset;
  collator: DataCollator;
  completionOnlyLoss: boolean;
  paddingFree: boolean;
}

function prepare(o: SFTTrainerOptions): Prepared {
  const args = o.args instanceof SFTConfig ? o.args : new SFTConfig(o.args ?? { outputDir: 'trainer_output' });
  let model: TrainableModel;
  let tokenizer = o.processingClass ?? o.tokenizer;
  if (o.processingClass && o.tokenizer && o.processingClass !== o.tokenizer) throw new Error('SFTTrainer: give processingClass or tokenizer, not both');
  if (typeof o.model === 'string') {
    model = AutoModelForCausalLM.fromPretrainedSync(o.model, args.modelInitKwargs ?? {}) as unknown as TrainableModel;
    tokenizer ??= Tokenizer.fromFile(o.model);
  } else model = o.model;
  if (!tokenizer) throw new Error('SFTTrainer: give processingClass (the tokenizer), or the model as a folder that has one');
  if (!model || typeof model.forward !== 'function') throw new Error('SFTTrainer: model must be a causal LM (or a folder holding one)');

  let template: string | null = null;
  if (args.chatTemplatePath) template = templateFrom(args.chatTemplatePath);

  if (o.peftConfig) {
    if (!(o.peftConfig instanceof LoraConfig)) throw new TypeError('SFTTrainer: peftConfig must be a LoraConfig');
    if (model instanceof PeftModel) {
      throw new Error('SFTTrainer: you passed a PeftModel together with a peftConfig. Merge and unload the existing adapter first, or pass the base model with the new peftConfig.');
    }
    model = getPeftModel(model as unknown as Module, o.peftConfig) as unknown as TrainableModel;
  }

  if (args.eosToken !== null && tokenizer instanceof Tokenizer && tokenizer.tokenToId(args.eosToken) === undefined) {
    throw new Error(`SFTConfig: eosToken '${args.eosToken}' is not in the tokenizer's vocabulary`);
  }
  const trainSample = o.trainDataset ? (o.trainDataset instanceof Dataset ? o.trainDataset.rows[0] : o.trainDataset[0]) : undefined;
  const completionOnlyLoss = resolveCompletionOnlyLoss(trainSample, args.completionOnlyLoss);
  const paddingFree = args.paddingFree || (args.packing && args.packingStrategy !== 'wrapped');
  if (paddingFree && o.dataCollator) throw new Error('SFTTrainer: a custom dataCollator cannot be used with padding-free batches (paddingFree, or bfd packing)');
  if (paddingFree && !args.packing && args.maxLength !== null) {
    throw new Error('SFTTrainer: paddingFree without packing does not enforce maxLength; enable packing, or set maxLength null with truncated inputs');
  }
  const formattingFunc = o.formattingFunc ?? args.formattingFunc;
  const skip = !!args.datasetKwargs?.skipPrepareDataset;
  const prep = (d: Dataset | Row[] | undefined, packing: boolean): Dataset | undefined => {
    if (d === undefined) return undefined;
    if (skip) return d instanceof Dataset ? d : new Dataset(d);
    return prepareSFTDataset(d, tokenizer!, {
      datasetTextField: args.datasetTextField, maxLength: args.maxLength, truncationMode: args.truncationMode,
      packing, packingStrategy: args.packingStrategy, completionOnlyLoss, assistantOnlyLoss: args.assistantOnlyLoss,
      formattingFunc, eosToken: args.eosToken, chatTemplate: template, shuffleDataset: args.shuffleDataset, seed: args.seed,
    });
  };
  const train = prep(o.trainDataset, args.packing);
  const evalDs = prep(o.evalDataset, args.evalPacking ?? args.packing);

  let padTokenId: number | undefined;
  const padToken = args.padToken ?? tokenizer.padToken ?? tokenizer.eosToken;
  if (args.padToken !== null) {
    const id = tokenizer instanceof Tokenizer ? tokenizer.tokenToId(args.padToken) : undefined;
    if (id === undefined) throw new Error(`SFTConfig: padToken '${args.padToken}' is not in the tokenizer's vocabulary`);
    padTokenId = id;
  } else padTokenId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? undefined;
  if (padTokenId === undefined) throw new Error(`SFTTrainer: no pad token (${padToken ?? 'none'}) and no eos token to pad with; set padToken`);
  const collator = o.dataCollator ?? DataCollatorForSFT({ padTokenId, paddingFree, padToMultipleOf: args.padToMultipleOf });
  return { model, tokenizer, args, train, eval: evalDs, collator, completionOnlyLoss, paddingFree };
}

/**
 * TRL's SFTTrainer: `new SFTTrainer({ model, args: new SFTConfig({...}), trainDataset,
 * peftConfig, processingClass })` then `await trainer.train()`. The prepared datasets are
 * trainDataset / evalDataset (inputIds, labels with -100 where no loss, seqLengths when packed).
 */
export class SFTTrainer extends Trainer {
  declare readonly args: SFTConfig;
  readonly processingClass: SFTTokenizer;
  /** Whether the loss is on completions only (resolved from the data when not set). */
  readonly completionOnlyLoss: boolean;
  readonly paddingFree: boolean;

  constructor(o: SFTTrainerOptions) {
    const p = prepare(o);
    super({
      model: p.model, args: p.args, trainDataset: p.train, evalDataset: p.eval, dataCollator: p.collator,
      computeMetrics: o.computeMetrics, callbacks: o.callbacks, progressStream: o.progressStream,
    });
    this.processingClass = p.tokenizer;
    this.completionOnlyLoss = p.completionOnlyLoss;
    this.paddingFree = p.paddingFree;
  }
}
