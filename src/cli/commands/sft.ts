// peft-ts sft: supervised fine-tuning as TRL's `trl sft` does it (SFTTrainer + a LoRA config):
// text rows, prompt-completion rows (completion-only loss), Alpaca instruction rows, and chat
// rows (messages / conversations) through the tokenizer's chat template, optionally packed.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Row } from '../../data/dataset.js';
import { formatAlpaca } from '../../data/templates.js';
import { SFTConfig, SFTConfigInit, SFTTrainer } from '../../train/sft.js';
import type { PackingStrategy } from '../../data/sft.js';
import { type CommandDef, UsageError, flag, helpText, int, num, oneOf, parseCommand, str } from '../args.js';
import { LORA, MODEL, TRAINING } from '../options.js';
import { dtypeOf, loadBaseModel, loadTokenizer, loraConfigFrom, modelDir, requireFile } from '../common.js';
import { load } from '../data.js';
import { printMetrics } from './train.js';

const S = 'Data (one JSON object per line; the layout picks the loss)';
const SFT_OPTIONS = {
  data: str('training data', { metavar: 'FILE', required: true, group: S }),
  'eval-data': str('evaluation data', { metavar: 'FILE', group: S }),
  'test-size': num('or split evaluation data off --data: a fraction (< 1) or a row count', { gt: 0, group: S }),
  'dataset-text-field': str('text column', { metavar: 'C', default: 'text', group: S }),
  'max-length': str('truncation length / packed block length, or none', { metavar: 'N|none', default: '1024', alias: ['max-seq-length'], group: S }),
  packing: flag('pack rows into blocks of --max-length', { group: S }),
  'packing-strategy': oneOf(['bfd', 'bfd_split', 'wrapped'], 'how rows are packed', { default: 'bfd', group: S }),
  'completion-only-loss': flag('prompt-completion rows: loss on the completion only (default; --no-completion-only-loss: all tokens)', { group: S }),
  'assistant-only-loss': flag('chat rows: loss on assistant turns only (the template needs {% generation %} markers)', { group: S }),
  'chat-template-path': str('a .jinja chat template (or tokenizer folder) instead of the tokenizer\'s', { metavar: 'FILE', group: S }),
  'eos-token': str('token appended to text / completions', { metavar: 'T', defaultText: "the tokenizer's eos", group: S }),
  template: oneOf(['none', 'alpaca'], 'alpaca: Alpaca instruction rows (found by their columns when not given)', { group: S }),
  ...MODEL,
  ...LORA,
  ...TRAINING,
  'output-dir': { ...TRAINING['output-dir'], default: 'runs/sft' },
  'learning-rate': { ...TRAINING['learning-rate'], default: 2e-5 },
  'per-device-eval-batch-size': { ...TRAINING['per-device-eval-batch-size'], default: 8 },
  quiet: flag('less output'),
} as const;

export const SFT: CommandDef<typeof SFT_OPTIONS> = {
  name: 'sft', summary: "supervised fine-tuning of a causal LM with LoRA (TRL's SFTTrainer)", options: SFT_OPTIONS,
  usage: '--data FILE [--eval-data FILE] [--packing] [flags]',
  epilog: `Rows: {"text"} language modeling (loss on every token); {"prompt", "completion"} loss on the completion;
{"instruction", "input", "output"} Alpaca rows (loss on the output); {"messages": [{"role", "content"}...]}
the tokenizer's chat template. Writes the adapter (peft format), tokenizer files and trainer_log.jsonl.`,
};

/** Alpaca rows -> prompt / completion, so the loss falls on the response (as Stanford Alpaca trains). */
function alpacaRows(rows: Row[]): Row[] {
  return rows.map((r) => {
    const { prompt, response } = formatAlpaca(r as { instruction: string; input?: string; output?: string });
    return { prompt, completion: response };
  });
}

const isAlpaca = (r: Row | undefined) => !!r && 'instruction' in r && 'output' in r && !('text' in r) && !('prompt' in r) && !('messages' in r);

export async function sftCommand(argv: string[]): Promise<void> {
  const o = parseCommand(SFT, argv);
  if (o.help) { console.log(helpText(SFT)); return; }
  const log = o.quiet ? () => {} : (s: string) => console.log(s);
  const dir = await modelDir(o);
  const tok = loadTokenizer(dir);
  let train = load(requireFile(o.data, '--data'));
  let evalDs = o.evalData ? load(requireFile(o.evalData, '--eval-data')) : undefined;
  if (!evalDs && o.testSize !== undefined) {
    const s = train.trainTestSplit({ testSize: o.testSize, seed: o.seed });
    train = s.train; evalDs = s.test;
  }
  if (o.template === 'alpaca' || (o.template === undefined && isAlpaca(train.rows[0]))) {
    log('Alpaca rows: prompt = the Alpaca instruction prompt, loss on the output');
    train = train.map((r) => alpacaRows([r])[0]);
    if (evalDs) evalDs = evalDs.map((r) => alpacaRows([r])[0]);
  }
  const completionOnlyLoss = o.given.has('completionOnlyLoss') ? o.completionOnlyLoss : null;
  let maxLength: number | null = null;
  if (o.maxLength !== 'none') {
    maxLength = Number(o.maxLength);
    if (!Number.isInteger(maxLength) || maxLength < 1) throw new UsageError(`--max-length must be a positive integer or none, got '${o.maxLength}'`);
  }
  const init: SFTConfigInit = {
    outputDir: o.outputDir, overwriteOutputDir: o.overwriteOutputDir, numTrainEpochs: o.numTrainEpochs, maxSteps: o.maxSteps ?? -1,
    learningRate: o.learningRate, perDeviceTrainBatchSize: o.perDeviceTrainBatchSize, perDeviceEvalBatchSize: o.perDeviceEvalBatchSize,
    gradientAccumulationSteps: o.gradientAccumulationSteps, warmupSteps: o.warmupSteps, warmupRatio: o.warmupRatio,
    lrSchedulerType: o.lrSchedulerType, weightDecay: o.weightDecay, maxGradNorm: o.maxGradNorm,
    loggingSteps: o.loggingSteps, evalStrategy: evalDs ? 'epoch' : 'no',
    saveStrategy: o.saveSteps !== undefined ? 'steps' : 'no', saveSteps: o.saveSteps ?? 500,
    seed: o.seed, gradientCheckpointing: o.gradientCheckpointing, bf16: o.bf16, nonFiniteAction: o.nonFiniteAction,
    datasetTextField: o.datasetTextField, maxLength, packing: o.packing,
    packingStrategy: o.packingStrategy as PackingStrategy, completionOnlyLoss,
    assistantOnlyLoss: o.assistantOnlyLoss, chatTemplatePath: o.chatTemplatePath ?? null,
    eosToken: o.eosToken ?? null, plotCurves: false,
  };
  const args = new SFTConfig(init);
  const model = loadBaseModel('causal-lm', dir, { seed: args.seed, dtype: dtypeOf(o), quiet: true, load4bit: o.loadIn4bit });
  const trainer = new SFTTrainer({
    model, args, processingClass: tok, trainDataset: train, evalDataset: evalDs,
    peftConfig: loraConfigFrom(o, 'causal-lm', model),
  });
  log(`${trainer.trainDataset!.length} training rows${args.packing ? ` (packed, ${args.packingStrategy})` : ''}; loss on ${trainer.completionOnlyLoss ? 'completions' : args.assistantOnlyLoss ? 'assistant turns' : 'every token'}`);
  const pm = trainer.model as unknown as { trainableParametersString?: () => string };
  if (pm.trainableParametersString) log(pm.trainableParametersString());
  const out = await trainer.train();
  await trainer.saveModel(args.outputDir);
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja']) {
    if (fs.existsSync(path.join(dir, f))) fs.copyFileSync(path.join(dir, f), path.join(args.outputDir, f));
  }
  console.log(`saved the adapter to ${args.outputDir} (${out.globalStep} steps, train loss ${out.trainingLoss.toFixed(4)})`);
  if (evalDs) { console.log('final evaluation:'); printMetrics(await trainer.evaluate()); }
}
