// config.json -> ModelConfig. Architectures name the same quantity differently (GPT-2's
// n_embd, BERT's hidden_size, DistilBERT's dim); we map them per model_type and keep the raw
// object for everything architecture-specific.
import * as fs from 'node:fs';
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
};

function keysFor(modelType: string, field: Field): string[] {
  const own = BY_TYPE[modelType]?.[field] ?? [];
  // Every known alias as a fallback, so an unlisted model_type with GPT-2-style names still loads.
  const all = [...own, ...STANDARD[field]];
  for (const m of Object.values(BY_TYPE)) for (const k of m[field] ?? []) if (!all.includes(k)) all.push(k);
  return all;
}

/** Parses an already-read config.json object. `source` names it in errors. */
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
    throw new Error(`${source}: model_type "${modelType}" has none of ${keys.map((k) => `"${k}"`).join(', ')}`);
  };
  const cfg: ModelConfig = {
    modelType,
    raw,
    vocabSize: get('vocabSize'),
    hiddenSize: get('hiddenSize'),
    numLayers: get('numLayers'),
    numHeads: get('numHeads'),
    maxPositions: get('maxPositions'),
  };
  const n = numLabelsOf(raw, source);
  if (n !== undefined) cfg.numLabels = n;
  return cfg;
}

/** transformers derives num_labels from id2label when present. */
function numLabelsOf(raw: Record<string, unknown>, source: string): number | undefined {
  const id2label = raw.id2label;
  if (id2label && typeof id2label === 'object') return Object.keys(id2label).length;
  const n = raw.num_labels;
  if (n === undefined) return undefined;
  if (typeof n !== 'number' || !Number.isInteger(n) || n <= 0) throw new Error(`${source}: "num_labels" must be a positive integer`);
  return n;
}

/** Label names by id (id2label, else LABEL_0..LABEL_{n-1} as transformers does). */
export function labelNames(cfg: ModelConfig): string[] {
  const n = cfg.numLabels ?? 0;
  const m = (cfg.raw.id2label ?? {}) as Record<string, string>;
  return Array.from({ length: n }, (_, i) => m[String(i)] ?? `LABEL_${i}`);
}

/** Reads <dir>/config.json (or a path to a .json file). */
export function loadConfig(dirOrFile: string): ModelConfig {
  const file = dirOrFile.endsWith('.json') ? dirOrFile : path.join(dirOrFile, 'config.json');
  let text: string;
  try { text = fs.readFileSync(file, 'utf8'); } catch {
    throw new Error(`no config.json at ${file}`);
  }
  let raw: Record<string, unknown>;
  try { raw = JSON.parse(text); } catch (e) { throw new Error(`${file}: not valid JSON (${(e as Error).message})`); }
  return parseConfig(raw, file);
}
