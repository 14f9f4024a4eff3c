// Adapter files exactly as peft 0.21 writes and reads them: adapter_config.json and
// adapter_model.safetensors, keys "base_model.model.<path>.lora_A.weight" (adapter name
// removed), DoRA magnitudes as "<path>.lora_magnitude_vector", modules_to_save copies under
// the module's own path ("base_model.model.classifier.weight"), non-default adapters in a
// subfolder named after the adapter.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Tensor } from '../tensor/tensor.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { LoraConfig } from './config.js';
import { LoraLinear } from './layer.js';
import { ModulesToSaveWrapper } from './modules-to-save.js';
import type { PeftModel } from './model.js';
import { peftWarn } from './warn.js';

export const ADAPTER_CONFIG_NAME = 'adapter_config.json';
export const ADAPTER_WEIGHTS_NAME = 'adapter_model.safetensors';
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
      if (m instanceof LoraLinear && m.bias) out.set(`${PREFIX}${p}.base_layer.bias`, m.bias);
    }
  }
  return out;
}

/** peft's get_peft_model_state_dict. */
export function getPeftModelStateDict(pm: PeftModel, name = 'default'): Map<string, Tensor> {
  return adapterKeyMap(pm, name);
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
}

export function savePretrained(pm: PeftModel, dir: string, opts: SaveAdapterOptions = {}): string[] {
  const names = opts.selectedAdapters ?? [...pm.peftConfig.keys()];
  for (const n of names) if (!pm.peftConfig.has(n)) throw new Error(`You passed an invalid \`selected_adapters\` argument: '${n}' is not an adapter of this model (has: ${[...pm.peftConfig.keys()].join(', ')})`);
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) throw new Error(`Provided path (${dir}) should be a directory, not a file`);
  const written: string[] = [];
  for (const name of names) {
    const out = name === 'default' ? dir : path.join(dir, name);
    fs.mkdirSync(out, { recursive: true });
    const sd = getPeftModelStateDict(pm, name);
    writeSafetensors(path.join(out, ADAPTER_WEIGHTS_NAME), sd, { format: 'pt' });
    writeFileAtomic(path.join(out, ADAPTER_CONFIG_NAME), JSON.stringify(adapterConfigJson(pm, name), null, 2));
    const readme = path.join(out, 'README.md');
    if (!fs.existsSync(readme)) {
      const base = pm.peftConfig.get(name)!.baseModelNameOrPath;
      writeFileAtomic(readme, `---\nlibrary_name: peft\n${base ? `base_model: ${base}\n` : ''}---\n\n# LoRA adapter '${name}'\n\nSaved by peft-ts in peft's format (load with \`PeftModel.from_pretrained\`).\n`);
    }
    written.push(out);
  }
  return written;
}

export function readAdapterConfig(dir: string): LoraConfig {
  const file = path.join(dir, ADAPTER_CONFIG_NAME);
  if (!fs.existsSync(file)) throw new Error(`Can't find '${ADAPTER_CONFIG_NAME}' at '${dir}'`);
  let json: Record<string, unknown>;
  try { json = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { throw new Error(`${file} is not valid JSON: ${(e as Error).message}`); }
  return LoraConfig.fromPeftJson(json);
}

/** Reads adapter_model.safetensors from dir into adapter `name` (peft's set_peft_model_state_dict). */
export function loadAdapterWeights(pm: PeftModel, dir: string, name: string): { missingKeys: string[]; unexpectedKeys: string[] } {
  const file = path.join(dir, ADAPTER_WEIGHTS_NAME);
  if (!fs.existsSync(file)) {
    const bin = path.join(dir, 'adapter_model.bin');
    if (fs.existsSync(bin)) throw new Error(`${dir} has adapter_model.bin (a pickle): convert it to safetensors first (peft-ts reads only ${ADAPTER_WEIGHTS_NAME})`);
    throw new Error(`Can't find '${ADAPTER_WEIGHTS_NAME}' at '${dir}'`);
  }
  const sd = readSafetensors(file, { toFloat32: true });
  const map = adapterKeyMap(pm, name);
  const unexpected: string[] = [];
  const seen = new Set<string>();
  const allParams = pm.stateDict();
  for (const [k, t] of sd) {
    // old peft files kept modules_to_save copies under ".modules_to_save.<name>."
    const key = k.replace(/\.modules_to_save\.[^.]+\./, '.');
    let dst = map.get(key);
    if (!dst && key.endsWith('bias')) dst = allParams.get(key); // bias="all": biases of any module
    if (!dst) { unexpected.push(k); t.dispose(); continue; }
    if (t.size !== dst.size || t.shape.join() !== dst.shape.join()) {
      throw new Error(`size mismatch for ${key}: copying a param with shape [${t.shape}] from the checkpoint, the shape in current model is [${dst.shape}]`);
    }
    if (dst.dtype !== 'float32') throw new Error(`cannot load ${key} into a ${dst.dtype} parameter`);
    dst.data.set(t.dtype === 'float32' ? t.data : t.toFloat32Array());
    t.dispose();
    seen.add(key);
  }
  const missing = [...map.keys()].filter((k) => !seen.has(k));
  if (unexpected.length) peftWarn(`Found unexpected keys while loading adapter '${name}' from ${dir}: ${unexpected.slice(0, 5).join(', ')}${unexpected.length > 5 ? ` (+${unexpected.length - 5} more)` : ''}. Is this adapter for a different base model?`);
  if (missing.length) peftWarn(`Found missing adapter keys while loading the checkpoint for adapter '${name}': ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ` (+${missing.length - 5} more)` : ''}.`);
  // DoRA merge caches etc. depend on weights: nothing is merged right after loading.
  return { missingKeys: missing, unexpectedKeys: unexpected };
}
