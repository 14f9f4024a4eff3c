// The label names of a classification adapter, wherever they were saved: the CLI's
// label_mapping.json, a config.json beside the adapter (what savePretrained writes for SEQ_CLS /
// TOKEN_CLS, as transformers saves a model's config), or, for adapters saved by Python peft
// (which writes neither), the label count read off the saved classifier weight.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { labelsOf } from '../io/config.js';
import { openTensorFile } from '../io/safetensors.js';
import { ADAPTER_WEIGHTS_BIN_NAME, ADAPTER_WEIGHTS_NAME } from './save.js';

export const LABEL_MAPPING_FILE = 'label_mapping.json';

export interface AdapterLabels {
  id2label: Record<string, string>;
  label2id: Record<string, number>;
  /** Where they came from: names from a file, or only the count from the classifier's shape. */
  source: 'label_mapping.json' | 'config.json' | 'weights';
}

function readJson(file: string): Record<string, unknown> | null {
  if (!fs.existsSync(file)) return null;
  let v: unknown;
  try { v = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { throw new Error(`${file}: invalid JSON (${(e as Error).message})`); }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${file}: expected a JSON object`);
  return v as Record<string, unknown>;
}

// The classification heads peft saves as modules_to_save (score: decoders; classifier: BERT,
// DistilBERT; classifier.out_proj: RoBERTa), old files with ".modules_to_save.<name>" too.
const HEAD_WEIGHT = /^base_model\.model\.(?:score|classifier(?:\.out_proj)?)(?:\.modules_to_save\.[^.]+)?\.weight$/;

/** Rows of the classifier weight saved in the adapter file, or null when it holds no head. */
export function savedHeadSize(dir: string): number | null {
  const file = [ADAPTER_WEIGHTS_NAME, ADAPTER_WEIGHTS_BIN_NAME].map((f) => path.join(dir, f)).find((f) => fs.existsSync(f));
  if (!file) return null;
  const r = openTensorFile(file);
  try {
    const heads = r.names().filter((n) => HEAD_WEIGHT.test(n)).sort((a, b) => b.length - a.length); // out_proj before classifier
    for (const n of heads) {
      const s = r.info(n).shape;
      if (s.length === 2) return s[0];
    }
    return null;
  } finally { r.close(); }
}

/** The labels of the classifier adapter in dir, or null when nothing says (no head saved either). */
export function readAdapterLabels(dir: string): AdapterLabels | null {
  const mapping = readJson(path.join(dir, LABEL_MAPPING_FILE));
  if (mapping && mapping.id2label && typeof mapping.id2label === 'object' && Object.keys(mapping.id2label).length) {
    const l = labelsOf({ id2label: mapping.id2label, label2id: mapping.label2id }, path.join(dir, LABEL_MAPPING_FILE));
    return { id2label: l.id2label, label2id: l.label2id, source: 'label_mapping.json' };
  }
  const config = readJson(path.join(dir, 'config.json'));
  if (config && (config.id2label || config.num_labels)) {
    const l = labelsOf(config, path.join(dir, 'config.json'));
    return { id2label: l.id2label, label2id: l.label2id, source: 'config.json' };
  }
  const n = savedHeadSize(dir);
  if (n === null) return null;
  const l = labelsOf({ num_labels: n });
  return { id2label: l.id2label, label2id: l.label2id, source: 'weights' };
}
