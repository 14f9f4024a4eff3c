// Turning a data file into model features for a CLI task (classification or causal LM).
import { Dataset, Row, loadDataset } from '../data/dataset.js';
import { tokenizeCausalLM, tokenizeClassification, tokenizeSeq2Seq, tokenizeTokenClassification } from '../data/tokenize.js';
import { loadConfig, labelNames } from '../io/config.js';
import { formatAlpaca } from '../data/templates.js';
import type { Tokenizer } from '../io/tokenizer.js';
import { UsageError } from './args.js';
import type { CliTask, ColumnOptions } from './options.js';

export interface Columns {
  text: string; label: string; prompt: string; completion: string; template: 'alpaca' | 'chat' | 'none';
  /** token-cls: words and their tags (datasets' NER layout). */
  tokens: string; tags: string;
  /** seq2seq-lm: encoder texts and target texts. */
  source: string; target: string;
}

export function columnsFrom(o: Partial<ColumnOptions>): Columns {
  return {
    text: o.textColumn ?? 'text', label: o.labelColumn ?? 'label', prompt: o.promptColumn ?? 'prompt', completion: o.completionColumn ?? 'completion',
    template: o.template ?? 'none', tokens: o.tokensColumn ?? 'tokens', tags: o.tagsColumn ?? 'ner_tags',
    source: o.sourceColumn ?? 'source', target: o.targetColumn ?? 'target',
  };
}

/**
 * seq-cls when the data has the label column, token-cls when it has word lists and their tags,
 * seq2seq-lm when it has source and target columns, else causal-lm (what `train` and `eval`
 * do without --task).
 */
export function guessTask(ds: Dataset, c: Columns): CliTask {
  if (ds.columnNames.includes(c.label)) return 'seq-cls';
  if (ds.columnNames.includes(c.source) && ds.columnNames.includes(c.target)) return 'seq2seq-lm';
  if (ds.columnNames.includes(c.tokens) && ds.columnNames.includes(c.tags)) return 'token-cls';
  return 'causal-lm';
}

const isDefaultName = (n: string, i: number) => n === `LABEL_${i}`;

/**
 * token-cls label names, first found of: --labels a,b,c; the model's config.json id2label
 * (when it names its labels, through the one config parser); the tag names in the data,
 * sorted (transformers' run_ner does the same for string tags). Integer tags need names from
 * one of the first two.
 */
export function tokenClsLabels(ds: Dataset, c: Columns, given: string[] | undefined, modelDir: string): { label2id: Record<string, number>; id2label: Record<string, string>; source: string } {
  const make = (names: string[], source: string) => {
    if (new Set(names).size !== names.length) throw new UsageError(`${source}: label names repeat (${names.join(', ')})`);
    return { label2id: Object.fromEntries(names.map((n, i) => [n, i])), id2label: Object.fromEntries(names.map((n, i) => [String(i), n])), source };
  };
  if (given?.length) return make(given, '--labels');
  const cfg = loadConfig(modelDir);
  const fromModel = labelNames(cfg);
  if (!fromModel.every(isDefaultName)) return make(fromModel, `${modelDir}/config.json id2label`);
  ds.requireColumns([c.tags]);
  const seen = new Set<string>();
  let ints = false;
  ds.rows.forEach((r, i) => {
    const tags = r[c.tags];
    if (!Array.isArray(tags)) throw new Error(`${ds.where(i)}: column '${c.tags}' must be a list of tags`);
    for (const t of tags) { if (typeof t === 'number') ints = true; else seen.add(String(t)); }
  });
  if (ints) throw new UsageError(`'${c.tags}' holds tag ids and neither --labels nor the model's config.json names them: pass --labels O,B-PER,I-PER,...`);
  return make([...seen].sort(), `the tags in the data`);
}

/** prompt/response rows for causal-LM training, through the chosen template. */
function promptRows(ds: Dataset, tok: Tokenizer, c: Columns): Dataset {
  if (c.template === 'alpaca') {
    ds.requireColumns(['instruction']);
    return ds.map((r) => formatAlpaca({ instruction: r.instruction as string, input: r.input as string | undefined, output: (r.output ?? r[c.completion]) as string | undefined }));
  }
  ds.requireColumns([c.prompt, c.completion]);
  if (c.template === 'chat') {
    return ds.map((r) => ({ prompt: tok.applyChatTemplate([{ role: 'user', content: String(r[c.prompt]) }], { addGenerationPrompt: true }), response: r[c.completion] }));
  }
  return ds.map((r) => ({ prompt: r[c.prompt], response: r[c.completion] }));
}

export interface Features { dataset: Dataset; label2id?: Record<string, number>; id2label?: Record<string, string> }

/** Tokenized features; classification labels go through label2id (built from the data when not given). */
export function featuresFor(task: CliTask, ds: Dataset, tok: Tokenizer, c: Columns, o: { maxLength?: number; numLabels?: number; maxTargetLength?: number },
  label2id?: Record<string, number>): Features {
  const maxLength = o.maxLength ?? defaultMaxLength(task);
  if (task === 'seq-cls') {
    // A missing label column would reach the loss as label -1: name the column instead.
    ds.requireColumns([c.text, c.label]);
    const numLabels = label2id ? Object.keys(label2id).length : o.numLabels;
    const out = tokenizeClassification(ds, tok, { textColumn: c.text, labelColumn: c.label, maxLength, label2id, numLabels });
    const m = out.labelMapping;
    return { dataset: out, label2id: m?.label2id, id2label: m ? Object.fromEntries(Object.entries(m.id2label).map(([k, v]) => [String(k), v])) : undefined };
  }
  if (task === 'causal-lm') {
    const hasText = ds.columnNames.includes(c.text) && !ds.columnNames.includes(c.prompt) && c.template === 'none';
    const f = hasText
      ? tokenizeCausalLM(ds, tok, { textColumn: c.text, maxLength })
      : tokenizeCausalLM(promptRows(ds, tok, c), tok, { promptColumn: 'prompt', responseColumn: 'response', maxLength });
    return { dataset: f };
  }
  if (task === 'seq2seq-lm') {
    return { dataset: tokenizeSeq2Seq(ds, tok, { sourceColumn: c.source, targetColumn: c.target, maxLength, maxTargetLength: o.maxTargetLength ?? maxLength }) };
  }
  if (!label2id) throw new Error('featuresFor: token-cls needs label2id (tokenClsLabels)');
  const tok2 = tok as Tokenizer;
  if (typeof tok2.encodeWords !== 'function') throw new Error('token-cls needs a tokenizer with encodeWords');
  const out = tokenizeTokenClassification(ds, tok2, { tokensColumn: c.tokens, tagsColumn: c.tags, label2id, maxLength, labelAllTokens: false });
  return { dataset: out, label2id, id2label: Object.fromEntries(Object.entries(label2id).map(([k, v]) => [String(v), k])) };
}

export const defaultMaxLength = (task: CliTask) => (task === 'causal-lm' ? 256 : 128);

export function load(file: string): Dataset<Row> { return loadDataset(file); }
