// peft-ts merge: fold an adapter into its base model and save a plain Hugging Face checkpoint.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { savePretrained } from '../../models/save.js';
import type { HFModel } from '../../models/base.js';
import { PeftModel } from '../../peft/model.js';
import { UsageError, str } from '../args.js';
import { Flags, checkKnown, commandFlags, loadWithAdapter } from '../common.js';

export const MERGE_HELP = `peft-ts merge: base model + LoRA adapter -> merged checkpoint (mergeAndUnload)

  --adapter DIR        adapter folder                                             [required]
  --output-dir DIR     where config.json, model.safetensors and the tokenizer go  [required]
  --model DIR|ID       base model (default: the adapter's base_model_name_or_path, else assets/default-model)
  --revision REV  --adapter-revision REV   Hub branch, tag or commit of --model / --adapter`;

export async function mergeCommand(argv: string[]): Promise<void> {
  const flags: Flags = commandFlags(argv, ['help']);
  if (flags.help) { console.log(MERGE_HELP); return; }
  checkKnown(flags, ['adapter', 'outputDir', 'model', 'task', 'seed', 'revision', 'adapterRevision'], 'merge');
  if (!str(flags, 'adapter')) throw new UsageError('merge: --adapter is required');
  const out = str(flags, 'outputDir');
  if (!out) throw new UsageError('merge: --output-dir is required');
  const { model, mapping, baseDir } = await loadWithAdapter(flags);
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
  console.log(`merged ${str(flags, 'adapter')} into ${baseDir}; saved to ${out}`);
}
