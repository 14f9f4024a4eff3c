// Turning a data file into model features for a CLI task (classification or causal LM).
import { Dataset, Row, loadDataset } from '../data/dataset.js';
import { tokenizeCausalLM, tokenizeClassification } from '../data/tokenize.js';
import { formatAlpaca } from '../data/templates.js';
import type { Tokenizer } from '../io/tokenizer.js';
import { UsageError, num, str } from './args.js';
import type { CliTask, Flags } from './common.js';

export interface Columns { text: string; label: string; prompt: string; completion: string; template: 'alpaca' | 'chat' | 'none' }

export function columnsFrom(flags: Flags): Columns {
  const template = str(flags, 'template', 'none')!;
  if (!['alpaca', 'chat', 'none'].includes(template)) throw new UsageError(`--template must be alpaca, chat or none, got '${template}'`);
  return {
    text: str(flags, 'textColumn', 'text')!, label: str(flags, 'labelColumn', 'label')!,
    prompt: str(flags, 'promptColumn', 'prompt')!, completion: str(flags, 'completionColumn', 'completion')!,
    template: template as Columns['template'],
  };
}

/** seq-cls when the data has the label column, else causal-lm (what `train` does without --task). */
export function guessTask(ds: Dataset, c: Columns): CliTask {
  return ds.columnNames.includes(c.label) ? 'seq-cls' : 'causal-lm';
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
export function featuresFor(task: CliTask, ds: Dataset, tok: Tokenizer, c: Columns, flags: Flags,
  label2id?: Record<string, number>): Features {
  const maxLength = num(flags, 'maxLength', task === 'causal-lm' ? 256 : 128);
  if (task === 'seq-cls') {
    const numLabels = label2id ? Object.keys(label2id).length : num(flags, 'numLabels');
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
  throw new UsageError('token-cls training from the command line needs pre-tokenized data; use the library API (Trainer with DataCollatorForTokenClassification)');
}

export function load(file: string): Dataset<Row> { return loadDataset(file); }
