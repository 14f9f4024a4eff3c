// peft's AutoPeftModelFor*: an adapter folder (or Hub id) alone is enough. Its
// adapter_config.json names the base model (base_model_name_or_path, resolved as peft does:
// a local path relative to the working directory, else a Hub id) and the task; the base is
// loaded with the task's AutoModel class, then the adapter on top.
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification, type FromPretrainedOptions,
} from '../models/auto.js';
import type { HFModel } from '../models/base.js';
import type { TaskType } from '../models/types.js';
import type { RawConfig } from '../models/common.js';
import { resolveLocalModelPath, resolveModelPath } from '../io/hub.js';
import { Tokenizer } from '../io/tokenizer.js';
import { PeftModel, type LoadAdapterOptions } from './model.js';
import { ADAPTER_CONFIG_NAME, readAdapterConfig } from './save.js';
import { readAdapterLabels } from './labels.js';
import type { LoraConfig } from './config.js';

/** peft's task types that have an AutoPeftModel class. */
type PeftTask = TaskType | 'SEQ_2_SEQ_LM';

interface AutoModelClass {
  fromPretrained(dirOrId: string, opts?: FromPretrainedOptions): HFModel;
  fromPretrainedAsync(dirOrId: string, opts?: FromPretrainedOptions): Promise<HFModel>;
}

/** The AutoModel class that loads each task's base (a new task is one line here). */
const AUTO_CLASS: Partial<Record<PeftTask, AutoModelClass>> = {
  CAUSAL_LM: AutoModelForCausalLM,
  SEQ_CLS: AutoModelForSequenceClassification,
  TOKEN_CLS: AutoModelForTokenClassification,
};

/** peft's PeftModelFor* names, for its error messages. */
const PEFT_CLASS: Record<string, string> = {
  CAUSAL_LM: 'PeftModelForCausalLM', SEQ_CLS: 'PeftModelForSequenceClassification', TOKEN_CLS: 'PeftModelForTokenClassification',
  SEQ_2_SEQ_LM: 'PeftModelForSeq2SeqLM', QUESTION_ANS: 'PeftModelForQuestionAnswering', FEATURE_EXTRACTION: 'PeftModelForFeatureExtraction',
};

export interface AutoPeftOptions extends FromPretrainedOptions, LoadAdapterOptions {
  /** Name the adapter is loaded under (default "default"). */
  adapterName?: string;
}

interface Plan { adapterDir: string; config: LoraConfig; base: string; baseOpts: FromPretrainedOptions; auto: AutoModelClass }

function plan(task: PeftTask, adapterDir: string, opts: AutoPeftOptions): Plan {
  const auto = AUTO_CLASS[task];
  if (!auto) throw new Error(`AutoPeftModel for ${task}: peft-ts has no model class for this task yet`);
  const config = readAdapterConfig(adapterDir);
  if (config.taskType !== null && (config.taskType as string) !== task) {
    throw new Error(`Expected target PEFT class: ${PEFT_CLASS[config.taskType] ?? config.taskType}, but you have asked for: ${PEFT_CLASS[task]} ` +
      `make sure that you are loading the correct model for your task type (${adapterDir} has task_type ${config.taskType}).`);
  }
  if (config.taskType === null && config.autoMapping === null) {
    throw new Error(`Cannot infer the auto class from the config, please make sure that you are loading the correct model for your task type (${path.join(adapterDir, ADAPTER_CONFIG_NAME)} has neither task_type nor auto_mapping).`);
  }
  const base = config.baseModelNameOrPath;
  if (!base) {
    throw new Error(`${path.join(adapterDir, ADAPTER_CONFIG_NAME)} has no base_model_name_or_path, so the base model is unknown: ` +
      'load it yourself and use PeftModel.fromPretrained(model, dir)');
  }
  // The adapter's revision option is for the adapter; the base uses the one in its config (as peft).
  const baseOpts: FromPretrainedOptions = { ...opts, revision: config.revision ?? undefined };
  if ((task === 'SEQ_CLS' || task === 'TOKEN_CLS') && opts.numLabels === undefined) {
    // The head's size and names come with the adapter (the base's config may have another count).
    const labels = readAdapterLabels(adapterDir);
    if (labels) {
      const n = Object.keys(labels.id2label).length;
      const over: RawConfig = labels.source === 'weights' ? { num_labels: n } : { id2label: labels.id2label, label2id: labels.label2id, num_labels: n };
      baseOpts.configOverrides = { ...over, ...(opts.configOverrides ?? {}) };
      // The base's own head (another label count) is replaced by the adapter's saved one.
      baseOpts.ignoreMismatchedSizes = opts.ignoreMismatchedSizes ?? true;
    }
  }
  return { adapterDir, config, base, baseOpts, auto };
}

function finish(p: Plan, model: HFModel, opts: AutoPeftOptions): PeftModel {
  // peft resizes the embeddings to a larger tokenizer saved with the adapter; we cannot resize yet.
  if (fs.existsSync(path.join(p.adapterDir, 'tokenizer.json'))) {
    const n = Tokenizer.fromFile(p.adapterDir).vocabSize, rows = model.config.vocabSize;
    if (typeof rows === 'number' && n > rows) {
      throw new Error(`the tokenizer saved with the adapter in ${p.adapterDir} has ${n} tokens, more than the ${rows} embeddings of ${p.base}; resizing token embeddings is not supported`);
    }
  }
  return PeftModel.fromPretrained(model, p.adapterDir, { isTrainable: opts.isTrainable, adapterName: opts.adapterName });
}

function autoPeftClass(task: PeftTask) {
  return {
    /**
     * Loads base model + adapter from an adapter folder, or a Hub id already in the cache (no
     * network): the base is the adapter config's base_model_name_or_path. Classifier heads get
     * their label count and names from the adapter (config.json, label_mapping.json, or the
     * saved head's shape) unless numLabels is given.
     */
    fromPretrained(adapterDirOrId: string, opts: AutoPeftOptions = {}): PeftModel {
      const dir = resolveLocalModelPath(adapterDirOrId, { ...opts, requiredFile: ADAPTER_CONFIG_NAME });
      const p = plan(task, dir, opts);
      return finish(p, p.auto.fromPretrained(p.base, p.baseOpts), opts);
    },
    /** Like fromPretrained, but downloads the adapter and the base from the Hub when missing (unless offline). */
    async fromPretrainedAsync(adapterDirOrId: string, opts: AutoPeftOptions = {}): Promise<PeftModel> {
      const dir = await resolveModelPath(adapterDirOrId, { ...opts, requiredFile: ADAPTER_CONFIG_NAME });
      const p = plan(task, dir, opts);
      return finish(p, await p.auto.fromPretrainedAsync(p.base, p.baseOpts), opts);
    },
  };
}

export const AutoPeftModelForCausalLM = autoPeftClass('CAUSAL_LM');
export const AutoPeftModelForSequenceClassification = autoPeftClass('SEQ_CLS');
export const AutoPeftModelForTokenClassification = autoPeftClass('TOKEN_CLS');
/** Needs an AutoModelForSeq2SeqLM in AUTO_CLASS above; until then it says so. */
export const AutoPeftModelForSeq2SeqLM = autoPeftClass('SEQ_2_SEQ_LM');
