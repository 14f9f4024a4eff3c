// peft-ts inspect: the linear and embedding layers LoRA can target, and the trainable-parameter line for LoRA flags.
import { getPeftModel } from '../../peft/model.js';
import { defaultTargetsFor, inspectModules } from '../../peft/inject.js';
import { type CommandDef, helpText, int, oneOf, parseCommand } from '../args.js';
import { LORA, MODEL, TASKS } from '../options.js';
import { dtypeOf, isSeq2SeqModelDir, loadBaseModel, loraConfigFrom, modelDir } from '../common.js';

const INSPECT_OPTIONS = {
  ...MODEL,
  task: oneOf(TASKS, 'the head to build', { defaultText: 'causal-lm; seq2seq-lm for a T5 / BART model' }),
  'num-labels': int('classes for classifier heads', { min: 1, max: 1 << 20, default: 2 }),
  ...LORA,
} as const;

export const INSPECT: CommandDef<typeof INSPECT_OPTIONS> = {
  name: 'inspect', summary: 'targetable linear and embedding modules of a model, and what LoRA would train', options: INSPECT_OPTIONS,
  epilog: `With LoRA flags (--r, --lora-alpha, --target-modules, --use-dora, --modules-to-save, ...) as in train,
prints peft's "trainable params: ..." line for that configuration.`,
};

export async function inspectCommand(argv: string[]): Promise<void> {
  const o = parseCommand(INSPECT, argv);
  if (o.help) { console.log(helpText(INSPECT)); return; }
  const dir = await modelDir(o);
  const task = o.task ?? (isSeq2SeqModelDir(dir) ? 'seq2seq-lm' : 'causal-lm');
  const model = loadBaseModel(task, dir, { numLabels: task === 'causal-lm' || task === 'seq2seq-lm' ? undefined : o.numLabels, quiet: true, load4bit: o.loadIn4bit, dtype: dtypeOf(o) });
  const mods = inspectModules(model);
  console.log(`${model.architecture} from ${dir}: ${mods.length} targetable modules (linear and embedding)`);
  const w = Math.max(4, ...mods.map((m) => m.name.length));
  console.log(`${'name'.padEnd(w)}  ${'type'.padEnd(10)}  in -> out`);
  for (const m of mods) console.log(`${m.name.padEnd(w)}  ${m.type.padEnd(10)}  ${m.inFeatures} -> ${m.outFeatures}`);
  const defaults = defaultTargetsFor(model);
  console.log(defaults ? `default LoRA targets: ${defaults.join(', ')}` : `default LoRA targets: none for model_type '${model.config.modelType}' (pass --target-modules)`);
  const peft = getPeftModel(model, loraConfigFrom(o, task, model));
  const targeted = peft.loraLayers().map(([p]) => p);
  console.log(`LoRA layers (${targeted.length}): ${targeted.join(', ')}`);
  console.log(peft.trainableParametersString());
}
