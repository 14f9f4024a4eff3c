// Adapter files exactly as peft 0.21 writes and reads them: adapter_config.json and
// adapter_model.safetensors, keys "base_model.model.<path>.lora_A.weight" (adapter name
// removed), DoRA magnitudes as "<path>.lora_magnitude_vector", modules_to_save copies under
// the module's own path ("base_model.model.classifier.weight"), non-default adapters in a
// subfolder named after the adapter.
import * as fs from 'node:fs';
import { readJsonFile, readJsonObject } from '../io/files.js';
import { countNonFinite } from '../io/tensor_file.js';
import * as path from 'node:path';
import type { Tensor } from '../tensor/tensor.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { TorchBinReader } from '../io/torchbin.js';
import { LoraLinear } from './layer.js';
import { LoraEmbedding, isLoraLayer } from './embedding.js';
import { Embedding } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { ALL_LINEAR, LoraConfig, pyFullMatch } from './config.js';
import { ModulesToSaveWrapper } from './modules-to-save.js';
import type { PeftModel } from './model.js';
import { peftWarn } from './warn.js';
import { findCachedSnapshot } from '../io/hub.js';
import { adapterCardMeta, modelCard } from '../io/model-card.js';

export const ADAPTER_CONFIG_NAME = 'adapter_config.json';
export const ADAPTER_WEIGHTS_NAME = 'adapter_model.safetensors';
export const ADAPTER_WEIGHTS_BIN_NAME = 'adapter_model.bin';
const PREFIX = 'base_model.model.';

/** peft's _remove_adapter_name_from_state_dict_key. */
export function removeAdapterName(key: string, name: string): string {
  if (!key.includes('.')) return key;
  if (key.endsWith(`.${name}`)) return key.slice(0, -(name.length + 1));
  const i = key.lastIndexOf('.');
  let head = key.slice(0, i);
  const suffix = key.slice(i + 1);
  if (head.endsWith(`.${name}`)) head = head.slice(0, -(name.length + 1));
  return `${head}.${suffix}`;
}

/**
 * Checkpoint key -> the model tensor it holds, for adapter `name` (peft's
 * get_peft_model_state_dict; loading uses the same map backwards).
 */
export function adapterKeyMap(pm: PeftModel, name: string): Map<string, Tensor> {
  const config = pm.peftConfig.get(name);
  if (!config) throw new Error(`Adapter ${name} not found. Available adapters: ${[...pm.peftConfig.keys()].join(', ')}`);
  const out = new Map<string, Tensor>();
  const model = pm.getBaseModel();
  for (const [p, m] of model.namedModules()) {
    const full = PREFIX + p;
    if (m instanceof LoraLinear) {
      const A = m.loraA.get(name), B = m.loraB.get(name), mag = m.loraMagnitudeVector.get(name);
      if (A) out.set(`${full}.lora_A.weight`, A.weight);
      if (B) {
        out.set(`${full}.lora_B.weight`, B.weight);
        if (B.bias) out.set(`${full}.lora_B.bias`, B.bias);
      }
      // peft saves the DoRA magnitude without the ".weight" its module adds
      if (mag) out.set(`${full}.lora_magnitude_vector`, mag.weight);
    } else if (m instanceof LoraEmbedding) {
      // ParameterDict entries: no ".weight" suffix (peft's keys)
      const A = m.loraEmbeddingA.get(name), B = m.loraEmbeddingB.get(name), mag = m.loraMagnitudeVector.get(name);
      if (A) out.set(`${full}.lora_embedding_A`, A);
      if (B) out.set(`${full}.lora_embedding_B`, B);
      if (mag) out.set(`${full}.lora_magnitude_vector`, mag.weight);
    } else if (m instanceof ModulesToSaveWrapper) {
      const copy = m.modulesToSave.get(name);
      if (copy) for (const [k, t] of copy.stateDict()) out.set(`${full}.${k}`, t);
    }
  }
  if (config.bias === 'all') {
    // every bias of the model, under its state-dict name with this adapter's name removed
    const others = [...pm.peftConfig.keys()].filter((n) => n !== name);
    for (const [k, t] of pm.stateDict()) {
      if (!(k === 'bias' || k.endsWith('.bias'))) continue;
      if (others.some((o) => k.includes(`.${o}.`) || k.endsWith(`.${o}`))) continue;
      const ck = removeAdapterName(k, name);
      if (!out.has(ck)) out.set(ck, t);
    }
  } else if (config.bias === 'lora_only') {
    for (const [p, m] of model.namedModules()) {
      if (isLoraLayer(m) && m.bias) out.set(`${PREFIX}${p}.base_layer.bias`, m.bias);
    }
  }
  return out;
}

/** peft's EMBEDDING_LAYER_NAMES: target names that make save_embedding_layers="auto" save the tables. */
export const EMBEDDING_LAYER_NAMES = ['embed_tokens', 'lm_head'];

/** Whether the adapter's target_modules name an embedding layer, as peft's get_peft_model_state_dict decides it. */
export function embeddingIsTargeted(model: Module, config: LoraConfig): boolean {
  const tm = config.targetModules;
  if (typeof tm === 'string') {
    if (tm === ALL_LINEAR) return false;
    const re = new RegExp(`(^|\\.)(${EMBEDDING_LAYER_NAMES.join('|')})$`);
    return [...model.namedModules()].some(([k]) => re.test(k) && pyFullMatch(tm, k));
  }
  return !!tm && EMBEDDING_LAYER_NAMES.some((e) => tm.includes(e));
}

type EmbeddingModel = Module & { config?: { vocabSize?: number; raw?: Record<string, unknown> }; outputHeadNames?(): string[] };

/** transformers' get_input_embeddings / get_output_embeddings, by path; null when not a transformers-style model. */
function embeddingLayers(model: EmbeddingModel): { input: string | null; output: string | null } | null {
  const vocab = model.config?.vocabSize;
  if (typeof vocab !== 'number') return null;
  let input: string | null = null;
  for (const [k, m] of model.namedModules()) {
    const e = m instanceof LoraEmbedding ? m.baseLayer : m;
    if (e instanceof Embedding && e.numEmbeddings === vocab && !k.endsWith('.base_layer')) { input = k; break; }
  }
  const heads = model.outputHeadNames?.() ?? [];
  const names = new Set([...model.namedModules()].map(([k]) => k));
  return { input, output: heads.find((h) => names.has(h)) ?? null };
}

/**
 * peft's get_peft_model_state_dict, with its save_embedding_layers rule: "auto" saves the
 * embedding tables when target_modules names embed_tokens/lm_head (with peft's warning) or when
 * the vocabulary differs from the base model's config.json; a targeted table is saved as its
 * "<path>.base_layer.weight", an untargeted one (resized) under its own path.
 */
export function getPeftModelStateDict(pm: PeftModel, name = 'default', saveEmbeddingLayers: boolean | 'auto' = 'auto'): Map<string, Tensor> {
  const out = adapterKeyMap(pm, name);
  const config = pm.peftConfig.get(name)!;
  const model = pm.getBaseModel() as unknown as EmbeddingModel;
  const targeted = embeddingIsTargeted(model, config);
  let save = saveEmbeddingLayers;
  if (save === 'auto' && targeted) {
    peftWarn('Setting `save_embedding_layers` to `True` as embedding layers found in `target_modules`.');
    save = true;
  } else if (save === 'auto') {
    save = vocabResized(model, config);
    if (save) peftWarn('Setting `save_embedding_layers` to `True` as the embedding layer has been resized during finetuning.');
  }
  if (!save) return out;
  const layers = embeddingLayers(model);
  if (!layers) { peftWarn('Could not identify embedding layer(s) because the model is not a 🤗 transformers model.'); return out; }
  const seen = new Set<Tensor>(out.values());
  for (const p of [layers.input, layers.output]) {
    if (p === null) continue;
    const layer = model.getSubmodule(p);
    let prefix: string | null = null;
    if (isLoraLayer(layer)) prefix = `${p}.base_layer`;
    else if (!targeted) prefix = p;
    if (prefix === null) continue;
    for (const [k, t] of model.getSubmodule(prefix).stateDict()) {
      // safetensors cannot hold aliases: a tied table is written once (peft drops the alias too)
      if (seen.has(t)) continue;
      seen.add(t);
      out.set(`${PREFIX}${prefix}.${k}`, t);
    }
  }
  return out;
}

// peft compares the vocab size with the base model's config.json: a local folder, else the
// Hub id's snapshot in the cache (never the network here: without it the check says "not resized").
function vocabResized(model: EmbeddingModel, config: LoraConfig): boolean {
  const id = config.baseModelNameOrPath, vocab = model.config?.vocabSize;
  if (!id || typeof vocab !== 'number') return false;
  let file = path.join(id, 'config.json');
  if (!fs.existsSync(file)) {
    let snap: string | null = null;
    try { snap = findCachedSnapshot(id, { revision: config.revision ?? undefined }); } catch { snap = null; }
    if (!snap) return false;
    file = path.join(snap, 'config.json');
  }
  try {
    const base = readJsonObject(file) as { vocab_size?: number; text_config?: { vocab_size?: number } };
    const v = base.vocab_size ?? base.text_config?.vocab_size;
    return typeof v === 'number' && v !== vocab;
  } catch { return false; }
}

/** The adapter_config.json object peft would write for this adapter. */
export function adapterConfigJson(pm: PeftModel, name: string): Record<string, unknown> {
  const cfg = pm.peftConfig.get(name)!.clone();
  cfg.inferenceMode = true; // peft always saves configs in inference mode
  const model = pm.getBaseModel() as unknown as { architecture?: string; config?: { modelType?: string; raw?: Record<string, unknown> }; nameOrPath?: string };
  if (cfg.baseModelNameOrPath === null) {
    const n = model.nameOrPath ?? model.config?.raw?._name_or_path;
    if (typeof n === 'string' && n) cfg.baseModelNameOrPath = n;
  }
  if (cfg.taskType === null && model.architecture && model.config?.modelType) {
    const t = model.config.modelType;
    cfg.autoMapping = { base_model_class: model.architecture, parent_library: `transformers.models.${t}.modeling_${t}` };
  }
  return cfg.toPeftJson();
}

function writeFileAtomic(file: string, content: string): void {
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  fs.writeFileSync(tmp, content);
  fs.renameSync(tmp, file);
}

export interface SaveAdapterOptions {
  /** Adapters to save (default: all). "default" goes in dir itself, others in dir/<name>. */
  selectedAdapters?: string[];
  /** peft's save_embedding_layers: also save the embedding tables ("auto": when targeted by name or resized). */
  saveEmbeddingLayers?: boolean | 'auto';
}

export function savePretrained(pm: PeftModel, dir: string, opts: SaveAdapterOptions = {}): string[] {
  const names = opts.selectedAdapters ?? [...pm.peftConfig.keys()];
  for (const n of names) if (!pm.peftConfig.has(n)) throw new Error(`You passed an invalid \`selected_adapters\` argument: '${n}' is not an adapter of this model (has: ${[...pm.peftConfig.keys()].join(', ')})`);
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) throw new Error(`Provided path (${dir}) should be a directory, not a file`);
  const written: string[] = [];
  for (const name of names) {
    const out = name === 'default' ? dir : path.join(dir, name);
    fs.mkdirSync(out, { recursive: true });
    const sd = getPeftModelStateDict(pm, name, opts.saveEmbeddingLayers ?? 'auto');
    writeSafetensors(path.join(out, ADAPTER_WEIGHTS_NAME), sd, { format: 'pt' });
    writeFileAtomic(path.join(out, ADAPTER_CONFIG_NAME), JSON.stringify(adapterConfigJson(pm, name), null, 2));
    const readme = path.join(out, 'README.md');
    if (!fs.existsSync(readme)) {
      const cfg = adapterConfigJson(pm, name);
      const base = (cfg.base_model_name_or_path as string | null) ?? null;
      writeFileAtomic(readme, modelCard(adapterCardMeta(base, (cfg.task_type as string | null) ?? null),
        `# LoRA adapter '${name}'${base ? ` for ${base}` : ''}\n\nSaved by peft-ts in peft's format: load it with peft's ` +
        `\`AutoPeftModel...from_pretrained\` / \`PeftModel.from_pretrained\`, or peft-ts's \`AutoPeftModel...fromPretrained\`.`));
    }
    // Classifiers: the base model's config.json (with id2label / label2id) beside the adapter, as
    // transformers saves a model's config, so the label names travel with the head.
    const base = pm.getBaseModel() as unknown as { task?: string; configForSave?(): Record<string, unknown> };
    if ((base.task === 'SEQ_CLS' || base.task === 'TOKEN_CLS') && typeof base.configForSave === 'function') {
      writeFileAtomic(path.join(out, 'config.json'), JSON.stringify(base.configForSave(), null, 2) + '\n');
    }
    written.push(out);
  }
  return written;
}

export function readAdapterConfig(dir: string): LoraConfig {
  const file = path.join(dir, ADAPTER_CONFIG_NAME);
  if (!fs.existsSync(file)) throw new Error(`Can't find '${ADAPTER_CONFIG_NAME}' at '${dir}'`);
  const json = readJsonFile(file);
  try { return LoraConfig.fromPeftJson(json, file); } catch (e) {
    const m = (e as Error).message;
    throw new Error(m.startsWith(file) ? m : `${file}: ${m.replace(/^LoraConfig: /, '')}`);
  }
}

/** adapter_model.safetensors, else (as peft falls back) the torch.save'd adapter_model.bin. */
function readAdapterFile(dir: string): Map<string, Tensor> {
  const file = path.join(dir, ADAPTER_WEIGHTS_NAME);
  if (fs.existsSync(file)) return readSafetensors(file, { toFloat32: true });
  const bin = path.join(dir, ADAPTER_WEIGHTS_BIN_NAME);
  if (!fs.existsSync(bin)) throw new Error(`Can't find '${ADAPTER_WEIGHTS_NAME}' or '${ADAPTER_WEIGHTS_BIN_NAME}' at '${dir}'`);
  const r = new TorchBinReader(bin);
  try { return new Map(r.names().map((n) => [n, r.tensor(n, true)])); } finally { r.close(); }
}

/** Reads adapter_model.safetensors (or adapter_model.bin) from dir into adapter `name` (peft's set_peft_model_state_dict). */
export function loadAdapterWeights(pm: PeftModel, dir: string, name: string): { missingKeys: string[]; unexpectedKeys: string[] } {
  const sd = readAdapterFile(dir);
  const map = adapterKeyMap(pm, name);
  const unexpected: string[] = [], nonFinite: string[] = [];
  const seen = new Set<string>();
  const allParams = pm.stateDict();
  for (const [k, t] of sd) {
    // old peft files kept modules_to_save copies under ".modules_to_save.<name>."
    const key = k.replace(/\.modules_to_save\.[^.]+\./, '.');
    let dst = map.get(key);
    // bias="all": biases of any module; save_embedding_layers: the embedding tables (peft loads
    // them with load_state_dict(strict=False), so they replace the base model's)
    if (!dst) dst = allParams.get(key);
    if (!dst) { unexpected.push(k); t.dispose(); continue; }
    if (t.size !== dst.size || t.shape.join() !== dst.shape.join()) {
      throw new Error(`size mismatch for ${key}: copying a param with shape [${t.shape}] from the checkpoint, the shape in current model is [${dst.shape}]`);
    }
    if (dst.dtype !== 'float32') throw new Error(`cannot load ${key} into a ${dst.dtype} parameter`);
    dst.data.set(t.dtype === 'float32' ? t.data : t.toFloat32Array());
    const bad = countNonFinite(dst.data);
    if (bad) nonFinite.push(`${k} (${bad} of ${dst.size})`);
    t.dispose();
    seen.add(key);
  }
  const missing = [...map.keys()].filter((k) => !seen.has(k));
  if (nonFinite.length) peftWarn(`The adapter '${name}' in ${dir} holds non-finite weights (NaN / Inf): ${nonFinite.slice(0, 10).join(', ')}${nonFinite.length > 10 ? ` (+${nonFinite.length - 10} more)` : ''}; outputs will be NaN.`);
  if (unexpected.length) peftWarn(`Found unexpected keys while loading adapter '${name}' from ${dir}: ${unexpected.slice(0, 5).join(', ')}${unexpected.length > 5 ? ` (+${unexpected.length - 5} more)` : ''}. Is this adapter for a different base model?`);
  if (missing.length) peftWarn(`Found missing adapter keys while loading the checkpoint for adapter '${name}': ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ` (+${missing.length - 5} more)` : ''}.`);
  // DoRA merge caches etc. depend on weights: nothing is merged right after loading.
  return { missingKeys: missing, unexpectedKeys: unexpected };
}
