// peft-ts merge: fold an adapter into its base model and save a plain Hugging Face checkpoint.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { savePretrained } from '../../models/save.js';
import { makeDirs } from '../../io/files.js';
import type { HFModel } from '../../models/base.js';
import { PeftModel } from '../../peft/model.js';
import { type CommandDef, UsageError, helpText, int, oneOf, parseCommand, str } from '../args.js';
import { BASE_FROM_ADAPTER, TASKS } from '../options.js';
import { loadWithAdapter, modelDir } from '../common.js';

const MERGE_OPTIONS = {
  adapter: str('adapter folder or Hub id', { metavar: 'DIR|ID', required: true }),
  'adapter-revision': str('Hub branch, tag or commit of --adapter', { metavar: 'REV' }),
  'output-dir': str('where config.json, model.safetensors and the tokenizer go (a new folder: never the base model or the adapter)', { metavar: 'DIR', required: true }),
  model: str('base model: a folder or a Hub id', { metavar: 'DIR|ID', defaultText: BASE_FROM_ADAPTER }),
  revision: str('Hub branch, tag or commit of --model', { metavar: 'REV' }),
  task: oneOf(TASKS, 'the adapter task', { defaultText: "the adapter's label_mapping.json" }),
  seed: int('seed of a classifier head the adapter does not hold', { min: 0, max: 2 ** 32 - 1, default: 42 }),
} as const;

export const MERGE: CommandDef<typeof MERGE_OPTIONS> = { name: 'merge', summary: 'base model + LoRA adapter -> merged checkpoint (mergeAndUnload)', options: MERGE_OPTIONS };

const inside = (child: string, parent: string) => { const r = path.relative(parent, child); return r === '' || (!r.startsWith('..') && !path.isAbsolute(r)); };
const real = (p: string) => { try { return fs.realpathSync(p); } catch { return path.resolve(p); } };

export async function mergeCommand(argv: string[]): Promise<void> {
  const o = parseCommand(MERGE, argv);
  if (o.help) { console.log(helpText(MERGE)); return; }
  const out = o.outputDir;
  // Never write over the inputs (checked before anything loads): the merged checkpoint would
  // replace the base model's weights.
  // Without --model the base is the adapter's base_model_name_or_path: checked once loaded too.
  const inputs: [string, string][] = [['--adapter', o.adapter]];
  if (o.model !== undefined || !fs.existsSync(path.join(o.adapter, 'adapter_config.json'))) inputs.push(['--model', await modelDir(o)]);
  const refuse = (what: string, dir: string) => {
    if (inside(real(out), real(dir)) || inside(real(dir), real(out))) throw new UsageError(`merge: --output-dir ${out} is (or holds, or is inside) ${what} ${dir}; write the merged model to a new folder`);
  };
  for (const [what, dir] of inputs) refuse(what, dir);
  if (fs.existsSync(path.join(out, 'config.json')) || fs.existsSync(path.join(out, 'model.safetensors'))) {
    throw new UsageError(`merge: --output-dir ${out} already holds a model (config.json / model.safetensors); remove it or choose a new folder`);
  }
  const { model, mapping, baseDir } = await loadWithAdapter({ ...o, dtype: 'float32', loadIn4bit: false });
  refuse('the base model', baseDir);
  makeDirs(out);
  const merged = (model as PeftModel).mergeAndUnload() as HFModel;
  // Classifier labels travel in config.json, as transformers stores them.
  if (mapping && Object.keys(mapping.id2label).length) {
    const raw = (merged as unknown as { config: { raw: Record<string, unknown> } }).config.raw;
    raw.id2label = mapping.id2label;
  }
  savePretrained(merged, out);
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt', 'generation_config.json']) {
    if (fs.existsSync(path.join(baseDir, f))) fs.copyFileSync(path.join(baseDir, f), path.join(out, f));
  }
  console.log(`merged ${o.adapter} into ${baseDir}; saved to ${out}`);
}
