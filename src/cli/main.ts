#!/usr/bin/env node
// peft-ts: the command line. One binary, one small file per subcommand under commands/.
// Usage errors exit 2, failures exit 1; both print a one-line message, no stack trace
// (set PEFT_TS_DEBUG=1 to see it).
import { initBackend } from '../backends/index.js';
import { UsageError } from './args.js';
import { trainCommand } from './commands/train.js';
import { evalCommand } from './commands/eval.js';
import { predictCommand } from './commands/predict.js';
import { generateCommand } from './commands/generate.js';
import { mergeCommand } from './commands/merge.js';
import { inspectCommand } from './commands/inspect.js';
import { demoCommand } from './commands/demo.js';
import { sftCommand } from './commands/sft.js';

const COMMANDS: Record<string, [(argv: string[]) => Promise<void>, string]> = {
  train: [trainCommand, 'LoRA fine-tune a model on a data file (classification or causal LM)'],
  sft: [sftCommand, 'supervised fine-tuning as TRL does it: text, prompt-completion, Alpaca or chat data'],
  eval: [evalCommand, 'evaluate a base model + adapter on a labelled file'],
  predict: [predictCommand, 'classify texts: label and softmax scores'],
  generate: [generateCommand, 'continue a prompt, streamed, with or without an adapter'],
  merge: [mergeCommand, 'merge an adapter into its base model and save the checkpoint'],
  inspect: [inspectCommand, 'list the linear and embedding modules LoRA can target and the trainable parameters'],
  demo: [demoCommand, 'the main job on the embedded model and data: before/after LoRA fine-tuning'],
};

export const HELP = `peft-ts: LoRA / QLoRA fine-tuning of Hugging Face models on Node.js

usage: peft-ts <command> [--flags]   (peft-ts <command> --help for its flags)

${Object.entries(COMMANDS).map(([n, [, d]]) => `  ${n.padEnd(10)} ${d}`).join('\n')}`;

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') { console.log(HELP); return cmd ? 0 : 2; }
  const entry = COMMANDS[cmd];
  if (!entry) { process.stderr.write(`peft-ts: unknown command '${cmd}'\n\n${HELP}\n`); return 2; }
  try {
    initBackend();
    await entry[0](rest.map((a) => (a === '-h' ? '--help' : a)));
    return 0;
  } catch (e) {
    const err = e as Error;
    if (process.env.PEFT_TS_DEBUG) process.stderr.write(String(err?.stack ?? err) + '\n');
    const msg = err?.message ?? String(e);
    process.stderr.write(`peft-ts ${cmd}: error: ${msg}\n`);
    return err instanceof UsageError ? 2 : 1;
  }
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
