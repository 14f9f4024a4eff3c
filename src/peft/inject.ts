// Putting an adapter into a model: finding targets, replacing them with LoraLinear or
// LoraEmbedding,
// wrapping modules_to_save, and setting which parameters train (peft's inject_adapter,
// _mark_only_adapters_as_trainable and _set_trainable).
import { Rng, defaultRng } from '../tensor/random.js';
import { Module } from '../nn/module.js';
import { Conv1D, Embedding, Linear, LinearLike } from '../nn/layers.js';
import type { PreTrainedModel } from '../models/types.js';
import { ALL_LINEAR, LoraConfig, pyFullMatch } from './config.js';
import { LoraLinear, isLinearLike } from './layer.js';
import { LoraEmbedding, isLoraLayer } from './embedding.js';
import { ModulesToSaveWrapper } from './modules-to-save.js';
import { MIN_TARGET_MODULES_FOR_OPTIMIZATION, alphaFor, checkTargetModule, matchesModulesToSave, minimalTargetModules, patternKey, rankFor } from './targets.js';
import { peftWarn } from './warn.js';
import { defaultTargetModules } from './default-targets.js';

/** Model parts peft asks of a transformers model; optional so that toy modules work too. */
type ModelLike = Module & Partial<Pick<PreTrainedModel, 'defaultLoraTargets' | 'outputHeadNames' | 'classifierModuleNames' | 'task'>>
  & { tiedWeightKeys?(): string[]; config?: { modelType?: string } };

/** peft's mapping by config.json's model_type first, then the model's own default (DistilBERT). */
export function defaultTargetsFor(model: ModelLike): string[] | null {
  const def = defaultTargetModules(model.config?.modelType) ?? model.defaultLoraTargets?.() ?? null;
  return def && def.length ? def : null;
}

/** peft's SEQ_CLS/TOKEN_CLS heads, always added to modules_to_save for those tasks. */
export const CLASSIFIER_MODULE_NAMES = ['classifier', 'score'];

function isLinearModule(m: Module): boolean {
  // peft: nn.Linear, Conv1D, or an adapter/quantized layer whose class name says Linear
  return m instanceof Linear || m instanceof Conv1D || m instanceof LoraLinear
    || (isLinearLike(m) && m.constructor.name.includes('Linear'));
}

/** Module names inside LoRA layers and modules_to_save wrappers: never targets themselves. */
function internalNames(model: Module): Set<string> {
  const out = new Set<string>();
  for (const [name, m] of model.namedModules()) {
    if (isLoraLayer(m) || m instanceof ModulesToSaveWrapper) {
      for (const [sub] of m.namedModules(name)) if (sub !== name) out.add(sub);
    }
  }
  return out;
}

/**
 * Every layer LoRA can target: path, class and [in, out]. Linear layers, then embeddings
 * (type "Embedding" or "LoraEmbedding(Embedding)", in = numEmbeddings, out = embeddingDim, as peft's in/out_features).
 */
export function inspectModules(model: Module): { name: string; type: string; inFeatures: number; outFeatures: number }[] {
  const internal = internalNames(model);
  const out: { name: string; type: string; inFeatures: number; outFeatures: number }[] = [];
  for (const [name, m] of model.namedModules()) {
    if (!name || internal.has(name)) continue;
    if (m instanceof Embedding || m instanceof LoraEmbedding) {
      out.push({ name, type: m instanceof LoraEmbedding ? 'LoraEmbedding(Embedding)' : 'Embedding', inFeatures: m.numEmbeddings, outFeatures: m.embeddingDim });
      continue;
    }
    if (!isLinearModule(m)) continue;
    const l = m as LinearLike;
    out.push({ name, type: m instanceof LoraLinear ? `LoraLinear(${l.constructor.name}: ${m.baseLayer.constructor.name})` : m.constructor.name, inFeatures: l.inFeatures, outFeatures: l.outFeatures });
  }
  return out;
}

/** Fills in the defaults peft derives from the model (target modules, classifier heads). */
export function prepareConfig(model: ModelLike, config: LoraConfig): void {
  if (config.targetModules === null) {
    const def = defaultTargetsFor(model);
    if (!def) throw new Error('Please specify `targetModules` in the LoraConfig: this model has no default LoRA targets');
    config.targetModules = [...def];
  }
  if (config.taskType === 'SEQ_CLS' || config.taskType === 'TOKEN_CLS') {
    const heads = [...CLASSIFIER_MODULE_NAMES, ...(model.classifierModuleNames?.() ?? [])];
    const mts = config.modulesToSave ? [...config.modulesToSave] : [];
    for (const h of heads) if (!mts.includes(h)) mts.push(h);
    config.modulesToSave = mts;
  } else if (config.taskType === null && (model.task === 'SEQ_CLS' || model.task === 'TOKEN_CLS') && !config.modulesToSave?.length) {
    peftWarn(`the model is a ${model.task} model but LoraConfig has no taskType: its classifier head stays frozen and random. Set taskType: '${model.task}' (peft adds the head to modulesToSave then).`);
  }
  if (typeof config.targetModules === 'string' && config.targetModules.toLowerCase() === ALL_LINEAR) {
    const exclude = new Set<string>(internalNames(model));
    for (const h of model.outputHeadNames?.() ?? []) exclude.add(h);
    if (config.taskType === 'SEQ_CLS') {
      const head = (model.classifierModuleNames?.() ?? []).find((n) => { try { model.getSubmodule(n); return true; } catch { return false; } });
      if (head) exclude.add(head);
    }
    const names = new Set<string>();
    for (const [name, m] of model.namedModules()) if (name && isLinearModule(m) && !exclude.has(name)) names.add(name);
    config.targetModules = [...names].sort();
  }
}

function fmtTargets(t: string[] | string | null): string {
  return Array.isArray(t) ? `{${t.map((x) => `'${x}'`).join(', ')}}` : `'${t}'`;
}

function linearNamesHint(model: Module): string {
  const mods = inspectModules(model).filter((m) => !m.type.includes('Embedding'));
  if (!mods.length) return ' This model has no linear layers.';
  const short = [...new Set(mods.map((m) => m.name.split('.').pop()!))];
  return ` Linear modules in this model: ${short.join(', ')} (e.g. '${mods[0].name}'; inspectModules(model) lists them all).`;
}

const EMBEDDING_NAMES = ['embed_tokens', 'lm_head']; // peft's EMBEDDING_LAYER_NAMES

/** peft's _check_tied_modules: a tied embedding / lm head in the adapter is not tied in the adapter. */
export function checkTiedModules(model: ModelLike, config: LoraConfig): void {
  if (!model.tiedWeightKeys?.().length) return;
  const last = (m: string) => m.split('.').pop()!;
  const toSave = (config.modulesToSave ?? []).some((m) => EMBEDDING_NAMES.includes(last(m)));
  const tm = config.targetModules;
  const inTarget = typeof tm === 'string' ? EMBEDDING_NAMES.some((e) => pyFullMatch(tm, e)) : (tm ?? []).some((m) => EMBEDDING_NAMES.includes(last(m)));
  if (toSave || inTarget) {
    peftWarn('Model has `tie_word_embeddings=True` and a tied layer is part of the adapter, but `ensure_weight_tying` is not set to True. '
      + 'This can lead to complications, for example when merging the adapter or converting your model to formats other than safetensors. '
      + 'Check the discussion here: https://github.com/huggingface/peft/issues/2777');
  }
}

/** peft's _check_merge_allowed warning: merging into a tied embedding also changes the tied lm head. */
export function warnTiedMerge(model: ModelLike, targeted: string[]): void {
  if (!model.tiedWeightKeys?.().length) return;
  const tied = targeted.filter((t) => EMBEDDING_NAMES.includes(t.split('.').pop()!));
  if (!tied.length) return;
  peftWarn(`Model with \`tie_word_embeddings=True\` and the tied_target_modules=[${tied.map((t) => `'${t}'`).join(', ')}] are part of the adapter. `
    + 'This can lead to complications. You can opt to merge the adapter after cloning the weights (to untie the embeddings). '
    + 'You can untie the embeddings by loading the model with `tie_word_embeddings=False`.');
}

/**
 * Adds adapter `name` to `model` (the plain model, not the PeftModel), replacing targeted
 * linear layers with LoraLinear or adding the adapter to existing ones. New layers of an
 * adapter that is not active are frozen (peft does the same for add_adapter).
 */
export function injectAdapter(model: ModelLike, config: LoraConfig, name: string, activeAdapters: string[], rng: Rng = defaultRng()): string[] {
  const internal = internalNames(model);
  const keys = [...model.namedModules()].map(([k]) => k).filter((k) => k && !internal.has(k));
  const tm = config.targetModules;
  if (Array.isArray(tm) && tm.length >= MIN_TARGET_MODULES_FOR_OPTIMIZATION) {
    // peft condenses a long list (all-linear on a deep model) to the suffixes that tell the
    // targets apart, and saves that list in adapter_config.json.
    const suffixes = tm.map((t) => `.${t}`);
    const others = keys.filter((k) => !tm.includes(k) && !suffixes.some((sfx) => k.endsWith(sfx)));
    const minimal = minimalTargetModules(tm, others);
    if (minimal.length < tm.length) config.targetModules = minimal;
  }
  const targeted: string[] = [];
  let excluded = 0;
  for (const key of keys) {
    const res = checkTargetModule(config, key);
    if (res === 'excluded') { excluded++; continue; }
    if (res === 'no') continue;
    const target = model.getSubmodule(key);
    const r = rankFor(config, key), alpha = alphaFor(config, key);
    if (isLoraLayer(target)) {
      if (target.adapterNames().includes(name)) throw new Error(`adapter '${name}' already exists on '${key}'`);
      target.updateLayer(name, r, alpha, config, rng);
    } else if (target instanceof Embedding) {
      const layer = new LoraEmbedding(target, name, config, r, alpha, rng);
      if (!activeAdapters.includes(name)) layer.requiresGrad_(false);
      layer.setAdapter(activeAdapters.length ? activeAdapters : [name], config.inferenceMode);
      target.requiresGrad_(false);
      model.setSubmodule(key, layer);
    } else if (isLinearLike(target)) {
      const layer = new LoraLinear(target, name, config, r, alpha, rng);
      if (!activeAdapters.includes(name)) layer.requiresGrad_(false);
      layer.setAdapter(activeAdapters.length ? activeAdapters : [name], config.inferenceMode);
      // keep the base frozen; setAdapter only touches adapter params
      target.requiresGrad_(false);
      model.setSubmodule(key, layer);
    } else {
      throw new Error(`Target module ${key} (${target.constructor.name}) is not supported. Currently, only linear layers (Linear, Conv1D, Linear4bit) and Embedding are supported.`);
    }
    targeted.push(key);
  }
  if (!targeted.length) {
    let msg: string;
    if (!excluded) {
      msg = `Target modules ${fmtTargets(config.targetModules)} not found in the base model. Please check the target modules and try again.`;
    } else {
      msg = 'No modules were targeted for adaptation. This might be caused by a combination of mismatched target modules and excluded modules. '
        + 'Please check your `target_modules` and `exclude_modules` configuration. You may also have only targeted modules that are marked to be saved (`modules_to_save`).';
    }
    if (config.layersToTransform !== null) msg += ` Note: You specified 'layers_to_transform': ${JSON.stringify(config.layersToTransform)}.`;
    if (config.layersPattern !== null) msg += ` You also specified 'layers_pattern': ${JSON.stringify(config.layersPattern)}.`;
    throw new Error(msg + linearNamesHint(model));
  }
  if (config.excludeModules && config.excludeModules.length && !excluded) {
    peftWarn(`You have passed exclude_modules=${JSON.stringify(config.excludeModules)} but no modules were excluded. Please check that exclude_modules was set correctly.`);
  }
  for (const [attr, pats] of [['rank_pattern', config.rankPattern], ['alpha_pattern', config.alphaPattern]] as const) {
    const unmatched = Object.keys(pats).filter((k) => !targeted.some((t) => patternKey([k], t) !== null)).sort();
    if (unmatched.length) peftWarn(`The following ${attr} keys did not match any targeted module and were ignored: ${JSON.stringify(unmatched)}.`);
  }
  return targeted;
}

/** peft's _mark_only_adapters_as_trainable: base frozen, LoRA as set per layer, biases per `bias`. */
export function markOnlyAdaptersAsTrainable(model: Module, configs: Map<string, LoraConfig>, active: string[]): void {
  const adapterParams = new Set<unknown>();
  for (const [, m] of model.namedModules()) {
    if (isLoraLayer(m)) for (const n of m.adapterNames()) for (const p of m.adapterParameters(n)) adapterParams.add(p);
    if (m instanceof ModulesToSaveWrapper) for (const p of m.parameters()) adapterParams.add(p);
  }
  for (const p of model.parameters()) if (!adapterParams.has(p)) p.requiresGrad = false;
  for (const name of active) {
    const bias = configs.get(name)?.bias ?? 'none';
    if (bias === 'all') {
      for (const [n, p] of model.namedParameters()) if ((n === 'bias' || n.endsWith('.bias')) && p.dtype === 'float32') p.requiresGrad = true;
    } else if (bias === 'lora_only') {
      for (const [, m] of model.namedModules()) if (isLoraLayer(m) && m.bias) m.bias.requiresGrad = true;
    }
  }
}

/** peft's _set_trainable: wraps modules_to_save (plain suffix match) for adapter `name`. */
export function setModulesToSave(model: Module, names: string[] | null, name: string, activate: boolean, inferenceMode: boolean): void {
  if (!names || !names.length) return;
  const internal = internalNames(model);
  const keys = [...model.namedModules()].map(([k]) => k).filter((k) => k && !internal.has(k));
  for (const key of keys) {
    if (!matchesModulesToSave(names, key)) continue;
    const target = model.getSubmodule(key);
    if (isLoraLayer(target)) continue; // already adapted by LoRA; peft excludes these from targets instead
    if (target instanceof ModulesToSaveWrapper) {
      target.update(name);
      target.setAdapter(target.activeAdapter, inferenceMode);
    } else {
      const w = new ModulesToSaveWrapper(target, name);
      w.setAdapter(activate ? name : null, inferenceMode);
      model.setSubmodule(key, w);
    }
  }
}
