// What every Hugging Face architecture here shares beyond PreTrainedModel: its transformers
// class name, base-model prefix, tied weights, dropout Rng and how it saves itself.
import type { Tensor } from '../tensor/tensor.js';
import { Rng, defaultRng } from '../tensor/random.js';
import { PreTrainedModel, type ModelConfig, type TaskType } from './types.js';
import { savePretrained } from './save.js';
import { weightsDtype } from '../nn/dtype.js';
import { initWeights, num, type RawConfig } from './common.js';
import { labelNames, withNumLabels } from '../io/config.js';
import { pushFolder, type PushResult, type PushToHubOptions } from '../io/hub-upload.js';
import { modelCard } from '../io/model-card.js';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface ModelInitOptions {
  /** Rng for dropout (and the random init). Defaults to the global one. */
  rng?: Rng;
  /** Number of labels for classification heads (overrides config num_labels). */
  numLabels?: number;
  /**
   * Draw transformers-style random weights (default true). The loader turns it off and
   * initialises only what the checkpoint lacks, which saves a pass over every weight.
   */
  initWeights?: boolean;
}

export abstract class HFModel extends PreTrainedModel {
  /** transformers class name, written to config.json "architectures". */
  abstract readonly architecture: string;
  /** transformers' base_model_prefix ("transformer", "bert", "model", ...). */
  abstract readonly baseModelPrefix: string;
  readonly rng: Rng;
  /** Filled by from_pretrained: what the checkpoint lacked / had in excess. */
  loadingInfo?: { missingKeys: string[]; unexpectedKeys: string[]; newlyInitialized: string[]; mismatchedKeys: string[] };
  /**
   * transformers' name_or_path: the folder or Hub id fromPretrained was given, as given
   * (relative paths stay relative, as in Python). peft writes it into adapter_config.json's
   * base_model_name_or_path, which AutoPeftModel reads back. null for models built from a config.
   */
  nameOrPath: string | null = null;

  private readonly drawInit: boolean;
  private initPaddingIdx: (name: string) => number | null = () => null;

  constructor(opts: ModelInitOptions = {}) {
    super();
    this.rng = opts.rng ?? defaultRng();
    this.drawInit = opts.initWeights ?? true;
  }

  get numLabels(): number { return this.config.numLabels ?? 2; }
  get padTokenId(): number | null {
    const p = this.config.raw.pad_token_id;
    return typeof p === 'number' ? p : null;
  }

  /** Parameter names that alias another (tied) parameter and are left out of checkpoints. */
  tiedWeightKeys(): string[] { return []; }

  /** Parameters the loader may silently skip when a checkpoint has them (old buffers). */
  ignoredUnexpectedKeys(): RegExp[] { return []; }

  /** Weights as they go into model.safetensors (tied aliases dropped). */
  checkpointStateDict(): Map<string, Tensor> {
    const sd = this.stateDict();
    for (const k of this.tiedWeightKeys()) sd.delete(k);
    return sd;
  }

  /** config.json contents as transformers would save them for this model. */
  configForSave(): RawConfig {
    const raw: RawConfig = { ...this.config.raw };
    raw.architectures = [this.architecture];
    if (this.task !== 'CAUSAL_LM') {
      // The labels as resolved at load (io/config.ts), so a reload gives the same head size.
      const id2label = Object.fromEntries(labelNames(this.config).map((name, i) => [String(i), name]));
      raw.id2label = id2label;
      raw.label2id = this.config.label2id ?? Object.fromEntries(Object.entries(id2label).map(([k, v]) => [v, Number(k)]));
      delete raw.num_labels;
    }
    // bf16 Linear / Embedding weights are saved as BF16 (norms and biases stay F32).
    raw.dtype = weightsDtype(this) === 'float32' ? 'float32' : 'bfloat16';
    delete raw.torch_dtype;
    return raw;
  }

  /** Writes config.json + model.safetensors to dir (transformers' save_pretrained). */
  savePretrained(dir: string): void { savePretrained(this, dir); }

  /**
   * transformers' push_to_hub: config.json + model.safetensors and a model card (base_model:
   * what it was loaded from, e.g. the base of a merged adapter) in one commit to repoId.
   */
  async pushToHub(repoId: string, opts: PushToHubOptions = {}): Promise<PushResult> {
    return pushFolder(repoId, (d) => {
      this.savePretrained(d);
      const base = this.nameOrPath && !path.isAbsolute(this.nameOrPath) && !this.nameOrPath.startsWith('.') ? this.nameOrPath : null;
      fs.writeFileSync(path.join(d, 'README.md'), modelCard(
        { base_model: base, library_name: 'transformers', pipeline_tag: this.task === 'CAUSAL_LM' ? 'text-generation' : this.task === 'SEQ_CLS' ? 'text-classification' : 'token-classification', tags: ['peft-ts'] },
        `# ${repoId.split('/')[1]}\n\n${this.architecture}${base ? ` from ${base}` : ''}, saved by peft-ts (load with transformers' \`from_pretrained\`).`));
    }, { what: 'model', ...opts });
  }

  /** Fresh random weights as transformers' _init_weights draws them. */
  protected initRandom(paddingIdxOf: (name: string) => number | null = () => null): void {
    this.initPaddingIdx = paddingIdxOf;
    if (this.drawInit) initWeights(this, num(this.config.raw, ['initializer_range'], 0.02), this.rng, paddingIdxOf);
  }

  /** Re-draws the weights of the modules owning these parameter names (newly initialised heads). */
  initParameters(paramNames: string[]): void {
    const mods = new Set(paramNames.map((k) => k.slice(0, Math.max(0, k.lastIndexOf('.')))));
    initWeights(this, num(this.config.raw, ['initializer_range'], 0.02), this.rng, this.initPaddingIdx, mods);
  }
}

export { withNumLabels };

export type { TaskType };
