// config.json -> ModelConfig. Architectures name the same quantity differently (GPT-2's
// n_embd, BERT's hidden_size, DistilBERT's dim); we map them per model_type and keep the raw
// object for everything architecture-specific.
import * as fs from 'node:fs';
import { readJsonObject } from './files.js';
import * as path from 'node:path';
import type { ModelConfig } from '../models/types.js';

type Field = 'vocabSize' | 'hiddenSize' | 'numLayers' | 'numHeads' | 'maxPositions';

const STANDARD: Record<Field, string[]> = {
  vocabSize: ['vocab_size'],
  hiddenSize: ['hidden_size'],
  numLayers: ['num_hidden_layers'],
  numHeads: ['num_attention_heads'],
  maxPositions: ['max_position_embeddings'],
};

/** Per model_type: the keys to try, in order (transformers' attribute_map). */
const BY_TYPE: Record<string, Partial<Record<Field, string[]>>> = {
  gpt2: { hiddenSize: ['n_embd'], numLayers: ['n_layer'], numHeads: ['n_head'], maxPositions: ['n_positions', 'n_ctx'] },
  distilbert: { hiddenSize: ['dim'], numLayers: ['n_layers'], numHeads: ['n_heads'] },
  gptj: { hiddenSize: ['n_embd'], numLayers: ['n_layer'], numHeads: ['n_head'], maxPositions: ['n_positions'] },
  falcon: { hiddenSize: ['hidden_size', 'n_embed'] },
  // Seq2seq-style names, tried last for model types not listed here.
  t5: { hiddenSize: ['d_model'], numLayers: ['num_layers'], numHeads: ['num_heads'], maxPositions: ['n_positions'] },
  bart: { hiddenSize: ['d_model'], numLayers: ['encoder_layers'], numHeads: ['encoder_attention_heads'] },
};

/** transformers' default max_position_embeddings per config class, when config.json omits it. */
const DEFAULT_MAX_POSITIONS: Record<string, number> = {
  gpt2: 1024, bert: 512, roberta: 512, distilbert: 512, llama: 2048, mistral: 32768, qwen2: 32768, qwen3: 32768,
  gemma: 8192, gemma2: 8192, gemma3_text: 131072, phi3: 4096, phi: 2048, gpt_neox: 2048, gptj: 2048, falcon: 2048, opt: 2048,
  bart: 1024,
  // T5 has relative positions and no limit; 512 is its config's historical n_positions.
  t5: 512,
};

function keysFor(modelType: string, field: Field): string[] {
  const own = BY_TYPE[modelType]?.[field] ?? [];
  // Every known alias as a fallback, so an unlisted model_type with GPT-2-style names still loads.
  const all = [...own, ...STANDARD[field]];
  for (const m of Object.values(BY_TYPE)) for (const k of m[field] ?? []) if (!all.includes(k)) all.push(k);
  return all;
}

/**
 * Parses an already-read config.json object: the one parser of config.json (the models and the
 * CLI both go through it). `source` names the file in errors. `raw` is kept as read; the label
 * fields are resolved as transformers resolves them (see labelsOf).
 */
export function parseConfig(raw: Record<string, unknown>, source = 'config.json'): ModelConfig {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${source}: expected a JSON object`);
  const modelType = raw.model_type;
  if (typeof modelType !== 'string' || !modelType) throw new Error(`${source}: missing "model_type"`);
  const get = (field: Field): number => {
    const keys = keysFor(modelType, field);
    for (const k of keys) {
      const v = raw[k];
      if (v === undefined || v === null) continue;
      if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new Error(`${source}: "${k}" must be a positive integer, got ${JSON.stringify(v)}`);
      return v;
    }
    if (field === 'maxPositions' && DEFAULT_MAX_POSITIONS[modelType]) return DEFAULT_MAX_POSITIONS[modelType];
    throw new Error(`${source}: model_type "${modelType}" has none of ${keys.map((k) => `"${k}"`).join(', ')}`);
  };
  const labels = labelsOf(raw, source);
  return {
    modelType,
    raw,
    vocabSize: get('vocabSize'),
    hiddenSize: get('hiddenSize'),
    numLayers: get('numLayers'),
    numHeads: get('numHeads'),
    maxPositions: get('maxPositions'),
    numLabels: labels.numLabels,
    id2label: labels.id2label,
    label2id: labels.label2id,
  };
}

export interface ConfigLabels { numLabels: number; id2label: Record<string, string>; label2id: Record<string, number> }

const defaultNames = (n: number): Record<string, string> => Object.fromEntries(Array.from({ length: n }, (_, i) => [String(i), `LABEL_${i}`]));
const inverse = (m: Record<string, string>): Record<string, number> => Object.fromEntries(Object.entries(m).map(([k, v]) => [v, Number(k)]));

/**
 * num_labels / id2label / label2id as transformers 5 resolves them (PreTrainedConfig, where
 * num_labels is a property over id2label and its setter runs after id2label is read):
 * - id2label only: kept, num_labels is its size;
 * - num_labels only, or none (2): id2label = LABEL_0..LABEL_{n-1};
 * - both, same size: id2label kept; both, different sizes: num_labels wins and id2label is
 *   replaced by LABEL_i (transformers warns "incompatible"; 4.x kept id2label instead);
 * - label2id is kept beside a kept id2label (transformers leaves it None when absent: we give
 *   id2label's inverse); whenever id2label is replaced, label2id is its inverse, so a
 *   label2id without id2label is ignored, as transformers does.
 * A num_labels override (fromPretrained's numLabels) is the same rule with num_labels replaced.
 */
export function labelsOf(raw: Record<string, unknown>, source = 'config.json'): ConfigLabels {
  const n = raw.num_labels;
  if (n !== undefined && n !== null && (typeof n !== 'number' || !Number.isInteger(n) || n <= 0)) {
    throw new Error(`${source}: "num_labels" must be a positive integer, got ${JSON.stringify(n)}`);
  }
  const given = raw.id2label;
  if (given !== undefined && given !== null && (typeof given !== 'object' || Array.isArray(given))) {
    throw new Error(`${source}: "id2label" must be an object of id -> name`);
  }
  if (given) {
    const id2label: Record<string, string> = {};
    for (const [k, v] of Object.entries(given as Record<string, unknown>)) {
      if (!/^\d+$/.test(k)) throw new Error(`${source}: "id2label" keys must be integer ids, got ${JSON.stringify(k)}`);
      id2label[String(Number(k))] = String(v);
    }
    const size = Object.keys(id2label).length;
    if (typeof n !== 'number' || n === size) {
      const l2i = raw.label2id;
      const label2id = l2i && typeof l2i === 'object' && !Array.isArray(l2i)
        ? Object.fromEntries(Object.entries(l2i as Record<string, unknown>).map(([k, v]) => [k, Number(v)]))
        : inverse(id2label);
      return { numLabels: size, id2label, label2id };
    }
  }
  const count = typeof n === 'number' ? n : 2;
  const id2label = defaultNames(count);
  return { numLabels: count, id2label, label2id: inverse(id2label) };
}

/** Label names by id, 0..numLabels-1 (LABEL_i where id2label has a gap). */
export function labelNames(cfg: ModelConfig): string[] {
  const l = cfg.id2label ? { numLabels: cfg.numLabels ?? 2, id2label: cfg.id2label } : labelsOf(cfg.raw);
  return Array.from({ length: l.numLabels }, (_, i) => l.id2label[String(i)] ?? `LABEL_${i}`);
}

/** The config with numLabels overridden (transformers' from_pretrained(..., num_labels=n)). */
export function withNumLabels(cfg: ModelConfig, n?: number): ModelConfig {
  if (n === undefined) return cfg;
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`numLabels must be a positive integer, got ${n}`);
  const l = labelsOf({ ...cfg.raw, num_labels: n });
  return { ...cfg, numLabels: l.numLabels, id2label: l.id2label, label2id: l.label2id };
}

/** Reads <dir>/config.json (or a path to a .json file). */
export function loadConfig(dirOrFile: string): ModelConfig {
  const file = dirOrFile.endsWith('.json') ? dirOrFile : path.join(dirOrFile, 'config.json');
  if (!fs.existsSync(file)) throw new Error(`no config.json at ${file}`);
  return parseConfig(readJsonObject(file), file);
}

/**
 * Keys whose config.json value was written as a float with no fraction ("4.0"): JSON.parse
 * makes them 4, and transformers 5's strict config classes refuse an int where they type a
 * float (final_logit_softcapping). readConfigJson records them here; saving writes them back as floats.
 */
export const FLOAT_LITERAL_KEYS = Symbol('floatLiteralKeys');

/** Names of the keys holding integral float literals ("key": 4.0, 1e+06) in config.json text. */
export function floatLiteralKeys(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/"([^"\\]+)"\s*:\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)/g)) {
    const lit = m[2];
    if (/[.eE]/.test(lit) && Number.isInteger(Number(lit))) out.add(m[1]);
  }
  return out;
}

/** JSON text of a config with the recorded float keys' integral values written as floats (4 -> 4.0). */
export function configJsonText(raw: Record<string | symbol, unknown>): string {
  const keys = raw[FLOAT_LITERAL_KEYS] as Set<string> | undefined;
  let text = JSON.stringify(raw, null, 2) + '\n';
  if (keys?.size) {
    text = text.replace(/^(\s*)"([^"\\]+)": (-?\d+)(,?)$/gm, (all, ind, k, v, comma) => (keys.has(k) ? `${ind}"${k}": ${v}.0${comma}` : all));
  }
  return text;
}
