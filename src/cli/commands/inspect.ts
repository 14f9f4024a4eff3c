// peft-ts inspect: the linear and embedding layers LoRA can target, and the trainable-parameter line for LoRA flags.
import { getPeftModel } from '../../peft/model.js';
import { defaultTargetsFor, inspectModules } from '../../peft/inject.js';
import { num, str } from '../args.js';
import { Flags, checkKnown, commandFlags, loadBaseModel, loraConfigFrom, modelDir, taskOf } from '../common.js';
import { LORA_FLAGS } from './train.js';

export const INSPECT_HELP = `peft-ts inspect: targetable linear and embedding modules of a model, and what LoRA would train

  --model DIR|ID          model (default: assets/default-model)  --revision REV (Hub ids)
  --task T                causal-lm (default) | seq-cls | token-cls
  --num-labels N          classes for classifier heads (default 2)
  LoRA flags (--r, --lora-alpha, --target-modules, --use-dora, --modules-to-save, ...) as in train:
  prints peft's "trainable params: ..." line for that configuration.`;

export async function inspectCommand(argv: string[]): Promise<void> {
  const flags: Flags = commandFlags(argv, ['help', 'useDora', 'useRslora', 'loadIn4bit']);
  if (flags.help) { console.log(INSPECT_HELP); return; }
  checkKnown(flags, ['model', 'revision', 'task', 'numLabels', 'loadIn4bit', ...LORA_FLAGS], 'inspect');
  const task = taskOf(str(flags, 'task')) ?? 'causal-lm';
  const dir = await modelDir(flags);
  const model = loadBaseModel(task, dir, { numLabels: task === 'causal-lm' ? undefined : num(flags, 'numLabels', 2), quiet: true, load4bit: flags.loadIn4bit === true });
  const mods = inspectModules(model);
  console.log(`${model.architecture} from ${dir}: ${mods.length} targetable modules (linear and embedding)`);
  const w = Math.max(4, ...mods.map((m) => m.name.length));
  console.log(`${'name'.padEnd(w)}  ${'type'.padEnd(10)}  in -> out`);
  for (const m of mods) console.log(`${m.name.padEnd(w)}  ${m.type.padEnd(10)}  ${m.inFeatures} -> ${m.outFeatures}`);
  const defaults = defaultTargetsFor(model);
  console.log(defaults ? `default LoRA targets: ${defaults.join(', ')}` : `default LoRA targets: none for model_type '${model.config.modelType}' (pass --target-modules)`);
  const peft = getPeftModel(model, loraConfigFrom(flags, task, model));
  const targeted = peft.loraLayers().map(([p]) => p);
  console.log(`LoRA layers (${targeted.length}): ${targeted.join(', ')}`);
  console.log(peft.trainableParametersString());
}
