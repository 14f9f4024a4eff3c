// PeftModel: a model with LoRA adapters, laid out like peft's (PeftModel.base_model is the
// LoraModel, whose .model is the wrapped transformers-style model), so parameter names are
// "base_model.model.<path>" exactly as in peft.
import { Rng, defaultRng } from '../tensor/random.js';
import { Module } from '../nn/module.js';
import type { ModelInputs, ModelOutput, PreTrainedModel } from '../models/types.js';
import { LoraConfig } from './config.js';
import { isDequantizable } from './layer.js';
import { type LoraLayer, isLoraLayer } from './embedding.js';
import { ModulesToSaveWrapper } from './modules-to-save.js';
import { checkTiedModules, injectAdapter, inspectModules, warnTiedMerge, markOnlyAdaptersAsTrainable, prepareConfig, setModulesToSave } from './inject.js';
import { peftWarn } from './warn.js';
import { pushFolder, type PushResult, type PushToHubOptions } from '../io/hub-upload.js';
import { type SaveAdapterOptions, getPeftModelStateDict, loadAdapterWeights, readAdapterConfig, savePretrained } from './save.js';

export interface LoadAdapterOptions {
  /**
   * false (the default, as in peft): the adapter is loaded for inference, its weights frozen
   * and the model put in eval mode. Pass true to continue training it.
   */
  isTrainable?: boolean;
}

type AnyModel = Module & Partial<PreTrainedModel> & { forward(...args: never[]): unknown };

/** peft's LoraModel: holds the wrapped model as child "model". */
export class LoraModel extends Module {
  constructor(model: Module) {
    super();
    this.registerModule('model', model);
  }
  get model(): AnyModel { return this.getChild('model') as AnyModel; }
}

export interface GetPeftModelOptions {
  /** Rng for the LoRA A initialisation (default: the global one). */
  rng?: Rng;
}

export class PeftModel extends Module {
  /** Adapter name -> its config (peft's peft_config). */
  readonly peftConfig = new Map<string, LoraConfig>();
  private _activeAdapter: string;
  protected rng: Rng;

  constructor(model: Module, config: LoraConfig, adapterName = 'default', opts: GetPeftModelOptions = {}) {
    super();
    if (model instanceof PeftModel) throw new Error('the model already is a PeftModel; use addAdapter() for another adapter');
    this.rng = opts.rng ?? defaultRng();
    this.registerModule('base_model', new LoraModel(model));
    this._activeAdapter = adapterName;
    this.training = model.training;
    this.addAdapterInternal(adapterName, config, true);
  }

  get baseModel(): LoraModel { return this.getChild('base_model') as LoraModel; }
  /** The wrapped model (peft's get_base_model()). */
  getBaseModel(): AnyModel { return this.baseModel.model; }
  get activeAdapter(): string { return this._activeAdapter; }
  get activeAdapters(): string[] { return [this._activeAdapter]; }
  get activePeftConfig(): LoraConfig { return this.peftConfig.get(this._activeAdapter)!; }
  get task() { return this.getBaseModel().task; }

  forward(inputs: ModelInputs): ModelOutput {
    return (this.getBaseModel() as unknown as { forward(i: ModelInputs): ModelOutput }).forward(inputs);
  }

  /** LoRA layers by their path inside the wrapped model. */
  loraLayers(): [string, LoraLayer][] {
    return [...this.getBaseModel().namedModules()].filter(([, m]) => isLoraLayer(m)) as [string, LoraLayer][];
  }

  modulesToSaveWrappers(): [string, ModulesToSaveWrapper][] {
    return [...this.getBaseModel().namedModules()].filter(([, m]) => m instanceof ModulesToSaveWrapper) as [string, ModulesToSaveWrapper][];
  }

  private addAdapterInternal(name: string, config: LoraConfig, activate: boolean): void {
    if (this.peftConfig.has(name)) throw new Error(`an adapter named '${name}' already exists`);
    if (!/^[^.\s]+$/.test(name)) throw new Error(`adapter name '${name}' must be non-empty without dots or spaces (it becomes part of parameter names)`);
    const cfg = config.clone();
    const model = this.getBaseModel();
    prepareConfig(model, cfg);
    checkTiedModules(model, cfg);
    this.peftConfig.set(name, cfg);
    try {
      injectAdapter(model, cfg, name, this.activeAdapters, this.rng);
    } catch (e) {
      this.peftConfig.delete(name);
      throw e;
    }
    markOnlyAdaptersAsTrainable(model, this.peftConfig, this.activeAdapters);
    if (cfg.inferenceMode) {
      // peft: every parameter of an adapter loaded for inference is frozen
      for (const [, l] of this.loraLayers()) for (const p of l.adapterParameters(name)) p.requiresGrad = false;
    }
    setModulesToSave(model, cfg.modulesToSave, name, activate, cfg.inferenceMode);
  }

  /** Adds a new (inactive) adapter; use setAdapter(name) to train or use it. */
  addAdapter(name: string, config: LoraConfig): void { this.addAdapterInternal(name, config, false); }

  /** Makes `name` the active adapter; its weights become trainable unless inferenceMode. */
  setAdapter(name: string, opts: { inferenceMode?: boolean } = {}): void {
    if (!this.peftConfig.has(name)) throw new Error(`Adapter ${name} not found. Available adapters: ${[...this.peftConfig.keys()].join(', ')}`);
    for (const [, l] of this.loraLayers()) {
      if (l.merged) { peftWarn('Adapter cannot be set when the model is merged. Unmerging the model first.'); l.unmerge(); }
      l.setAdapter(name, opts.inferenceMode ?? false);
    }
    for (const [, w] of this.modulesToSaveWrappers()) {
      if (w.adapterNames().includes(name)) w.setAdapter(name, opts.inferenceMode ?? false);
      else w.setAdapter(null);
    }
    this._activeAdapter = name;
  }

  /** Runs fn with every adapter switched off (the base model's behaviour), then restores them. */
  disableAdapter<T>(fn: () => T): T {
    const layers = [...this.loraLayers().map(([, l]) => l), ...this.modulesToSaveWrappers().map(([, w]) => w)];
    const prev = layers.map((l) => l.disableAdapters);
    for (const l of layers) l.disableAdapters = true;
    const restore = () => layers.forEach((l, i) => { l.disableAdapters = prev[i]; });
    let res: T;
    try { res = fn(); } catch (e) { restore(); throw e; }
    if (res instanceof Promise) return res.finally(restore) as T;
    restore();
    return res;
  }

  deleteAdapter(name: string): void {
    if (!this.peftConfig.has(name)) throw new Error(`Adapter ${name} does not exist`);
    this.peftConfig.delete(name);
    for (const [, l] of this.loraLayers()) l.deleteAdapter(name);
    for (const [, w] of this.modulesToSaveWrappers()) w.deleteAdapter(name);
    if (this._activeAdapter === name) {
      const rest = [...this.peftConfig.keys()];
      if (rest.length) this.setAdapter(rest[0]);
    }
  }

  /** Adds the active adapter (or the given ones) into the base weights; forward then skips LoRA. */
  mergeAdapter(adapterNames?: string[], opts: { safeMerge?: boolean } = {}): void {
    warnTiedMerge(this.getBaseModel(), this.loraLayers().map(([p]) => p));
    for (const [, l] of this.loraLayers()) l.merge(adapterNames, opts.safeMerge ?? false);
  }

  unmergeAdapter(): void {
    for (const [, l] of this.loraLayers()) if (l.merged) l.unmerge();
  }

  /**
   * Merges the active adapter into the base weights and returns the plain model with the
   * LoRA layers removed (modules_to_save replaced by the active adapter's copy).
   */
  mergeAndUnload(opts: { safeMerge?: boolean; adapterNames?: string[] } = {}): AnyModel {
    return this.unloadAndOptionallyMerge(true, opts);
  }

  /** The plain model back, without merging (LoRA layers removed, base weights as they were). */
  unload(): AnyModel { return this.unloadAndOptionallyMerge(false, {}); }

  private unloadAndOptionallyMerge(merge: boolean, opts: { safeMerge?: boolean; adapterNames?: string[] }): AnyModel {
    const model = this.getBaseModel();
    if (merge) warnTiedMerge(model, this.loraLayers().map(([p]) => p));
    for (const [path, l] of this.loraLayers()) {
      if (merge) l.merge(opts.adapterNames, opts.safeMerge ?? false);
      else if (l.merged) l.unmerge();
      model.setSubmodule(path, l.baseLayer);
    }
    for (const [path, w] of this.modulesToSaveWrappers()) {
      model.setSubmodule(path, w.current());
    }
    return model;
  }

  /** peft's get_nb_trainable_parameters: [trainable, all] (tied weights counted once). */
  getNbTrainableParameters(): [number, number] {
    let trainable = 0, all = 0;
    for (const [, p] of this.namedParameters()) {
      all += p.size;
      if (p.requiresGrad) trainable += p.size;
    }
    // A 4-bit weight is not a parameter here; peft counts a Params4bit as numel*2 = in*out.
    for (const [, m] of this.namedModules()) {
      if (isDequantizable(m) && !m.getParameter('weight')) all += m.inFeatures * m.outFeatures;
    }
    return [trainable, all];
  }

  /** peft's exact line "trainable params: N || all params: M || trainable%: P", plus a hint when nothing trains. */
  trainableParametersString(): string {
    const [t, a] = this.getNbTrainableParameters();
    let s = `trainable params: ${fmtInt(t)} || all params: ${fmtInt(a)} || trainable%: ${(100 * t / a).toFixed(4)}`;
    const frozen = [...this.peftConfig.entries()].filter(([, c]) => c.inferenceMode).map(([n]) => n);
    if (t === 0 && frozen.length) {
      s += `\nNote: adapter(s) ${frozen.map((n) => `'${n}'`).join(', ')} were loaded for inference, so their LoRA weights are frozen. `
        + 'To train a loaded adapter, pass { isTrainable: true } to PeftModel.fromPretrained() or loadAdapter().';
    }
    return s;
  }

  printTrainableParameters(): void { console.log(this.trainableParametersString()); }

  /** Writes adapter_config.json + adapter_model.safetensors per adapter (non-default ones in dir/<name>). */
  savePretrained(dir: string, opts: SaveAdapterOptions = {}): string[] { return savePretrained(this, dir, opts); }

  /**
   * peft's push_to_hub: the adapter files savePretrained writes (adapter_config.json,
   * adapter_model.safetensors, model card with base_model / library_name: peft, config.json with
   * the labels of a classifier) in one commit to repoId, created when missing.
   */
  async pushToHub(repoId: string, opts: PushToHubOptions & SaveAdapterOptions = {}): Promise<PushResult> {
    return pushFolder(repoId, (d) => { this.savePretrained(d, opts); }, { what: 'adapter', ...opts });
  }

  /** peft's get_peft_model_state_dict: checkpoint key -> tensor for one adapter. */
  getAdapterStateDict(name = this._activeAdapter) { return getPeftModelStateDict(this, name); }

  /**
   * Loads an adapter saved by peft (or by savePretrained) as `name`. It is not activated:
   * call setAdapter(name). Loaded frozen for inference unless isTrainable.
   */
  loadAdapter(dir: string, name: string, opts: LoadAdapterOptions = {}): void {
    const cfg = readAdapterConfig(dir);
    cfg.inferenceMode = !opts.isTrainable;
    this.addAdapterInternal(name, cfg, false);
    loadAdapterWeights(this, dir, name);
    if (!opts.isTrainable) this.eval();
  }

  /**
   * peft's PeftModel.from_pretrained: wraps `model` with the adapter saved in `dir`.
   * By default (isTrainable=false) the adapter is frozen and the model in eval mode:
   * printTrainableParameters() then shows 0 trainable params. Pass { isTrainable: true } to train.
   */
  static fromPretrained(model: Module, dir: string, opts: LoadAdapterOptions & { adapterName?: string } = {}): PeftModel {
    const cfg = readAdapterConfig(dir);
    cfg.inferenceMode = !opts.isTrainable;
    const pm = new PeftModel(model, cfg, opts.adapterName ?? 'default');
    loadAdapterWeights(pm, dir, opts.adapterName ?? 'default');
    if (!opts.isTrainable) pm.eval();
    return pm;
  }

  /** Targetable linear layers of the wrapped model. */
  inspectModules() { return inspectModules(this.getBaseModel()); }
}

function fmtInt(n: number): string { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ','); }

/** Wraps `model` with a new LoRA adapter (peft's get_peft_model). The base weights are frozen. */
export function getPeftModel(model: Module, config: LoraConfig, adapterName = 'default', opts: GetPeftModelOptions = {}): PeftModel {
  // peft's get_peft_model: the config names the model it was made for (model.name_or_path),
  // so the saved adapter_config.json leads AutoPeftModel back to the base.
  const newName = (model as { nameOrPath?: string | null }).nameOrPath || null; // '' (from config) is no name
  const oldName = config.baseModelNameOrPath;
  if (oldName !== null && oldName !== newName) {
    peftWarn(`The PEFT config's \`base_model_name_or_path\` was renamed from '${oldName}' to '${newName}'. Please ensure that the correct base model is loaded when loading this checkpoint.`);
  }
  return new PeftModel(model, config.clone({ baseModelNameOrPath: newName }), adapterName, opts);
}
