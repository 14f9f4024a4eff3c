// peft-ts sft: supervised fine-tuning as TRL's `trl sft` does it (SFTTrainer + a LoRA config):
// text rows, prompt-completion rows (completion-only loss), Alpaca instruction rows, and chat
// rows (messages / conversations) through the tokenizer's chat template, optionally packed.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Row } from '../../data/dataset.js';
import { formatAlpaca } from '../../data/templates.js';
import { SFTConfig, SFTConfigInit, SFTTrainer } from '../../train/sft.js';
import type { SchedulerType } from '../../train/schedulers.js';
import type { PackingStrategy } from '../../data/sft.js';
import { UsageError, bool, num, str } from '../args.js';
import { Flags, checkKnown, commandFlags, dtypeFlag, loadBaseModel, loadTokenizer, loraConfigFrom, modelDir, requireFile } from '../common.js';
import { load } from '../data.js';
import { LORA_FLAGS, printMetrics } from './train.js';

const BOOLEANS = ['packing', 'assistantOnlyLoss', 'gradientCheckpointing', 'useDora', 'useRslora', 'quiet', 'help'];
const KNOWN = [
  'model', 'revision', 'data', 'evalData', 'testSize', 'datasetTextField', 'maxLength', 'maxSeqLength', 'packing', 'packingStrategy',
  'completionOnlyLoss', 'assistantOnlyLoss', 'chatTemplatePath', 'eosToken', 'template', ...LORA_FLAGS,
  'outputDir', 'epochs', 'maxSteps', 'lr', 'batchSize', 'evalBatchSize', 'gradAccum', 'warmupSteps', 'warmupRatio', 'scheduler',
  'weightDecay', 'loggingSteps', 'saveSteps', 'seed', 'gradientCheckpointing', 'dtype', 'quiet',
];

export const SFT_HELP = `peft-ts sft: supervised fine-tuning of a causal LM with LoRA (TRL's SFTTrainer)

Data (one JSON object per line; the layout picks the loss)
  {"text": ...}                           language modeling, loss on every token
  {"prompt": ..., "completion": ...}      loss on the completion only (--completion-only-loss false: all)
  {"instruction", "input", "output"}      Alpaca rows: the Alpaca prompt, loss on the output
  {"messages": [{"role", "content"}...]}  the tokenizer's chat template; --assistant-only-loss: loss on
                                          assistant turns only (template needs {% generation %} markers)
  --model DIR|ID            base causal LM (default: the embedded assets/default-model); --revision R
  --data FILE  [--eval-data FILE | --test-size F]
  --dataset-text-field C    text column (text)
  --max-length N            truncation length / packed block length (1024; alias --max-seq-length)
  --packing                 pack rows into blocks of --max-length; --packing-strategy bfd|bfd_split|wrapped (bfd)
  --chat-template-path F    a .jinja chat template (or tokenizer folder) instead of the tokenizer's
  --eos-token T             token appended to text / completions (default the tokenizer's eos)
LoRA
  --r N (8)  --lora-alpha N (16)  --lora-dropout P (0.05)  --target-modules a,b|all-linear  --use-dora  --use-rslora
Training (SFTConfig: TRL's defaults, lr 2e-5 unless --lr)
  --output-dir DIR (runs/sft)  --epochs N (3)  --max-steps N  --lr X  --batch-size N (8)  --grad-accum N (1)
  --warmup-steps N | --warmup-ratio F  --scheduler S  --weight-decay X  --logging-steps N (10)  --save-steps N
  --seed N (42)  --gradient-checkpointing  --dtype float32|bfloat16  --config FILE.json

Writes the adapter (peft format), tokenizer files and trainer_log.jsonl to the output dir.`;

/** Alpaca rows -> prompt / completion, so the loss falls on the response (as Stanford Alpaca trains). */
function alpacaRows(rows: Row[]): Row[] {
  return rows.map((r) => {
    const { prompt, response } = formatAlpaca(r as { instruction: string; input?: string; output?: string });
    return { prompt, completion: response };
  });
}

const isAlpaca = (r: Row | undefined) => !!r && 'instruction' in r && 'output' in r && !('text' in r) && !('prompt' in r) && !('messages' in r);

export async function sftCommand(argv: string[]): Promise<void> {
  const flags: Flags = commandFlags(argv, BOOLEANS);
  if (flags.help) { console.log(SFT_HELP); return; }
  checkKnown(flags, KNOWN, 'sft');
  const log = bool(flags, 'quiet') ? () => {} : (s: string) => console.log(s);
  const dir = await modelDir(flags);
  const tok = loadTokenizer(dir);
  let train = load(requireFile(str(flags, 'data'), '--data'));
  let evalDs = str(flags, 'evalData') ? load(requireFile(str(flags, 'evalData'), '--eval-data')) : undefined;
  if (!evalDs && flags.testSize !== undefined) {
    const s = train.trainTestSplit({ testSize: num(flags, 'testSize')!, seed: num(flags, 'seed', 42) });
    train = s.train; evalDs = s.test;
  }
  const template = str(flags, 'template');
  if (template !== undefined && template !== 'alpaca' && template !== 'none') throw new UsageError(`--template must be alpaca or none, got '${template}'`);
  if (template === 'alpaca' || (template === undefined && isAlpaca(train.rows[0]))) {
    log('Alpaca rows: prompt = the Alpaca instruction prompt, loss on the output');
    train = train.map((r) => alpacaRows([r])[0]);
    if (evalDs) evalDs = evalDs.map((r) => alpacaRows([r])[0]);
  }
  const col = flags.completionOnlyLoss;
  const completionOnlyLoss = col === undefined ? null : bool(flags, 'completionOnlyLoss');
  const ml = flags.maxLength ?? flags.maxSeqLength;
  const maxLength = ml === undefined ? 1024 : ml === 'none' ? null : num({ v: ml }, 'v')!;
  const init: SFTConfigInit = {
    outputDir: str(flags, 'outputDir', 'runs/sft')!, numTrainEpochs: num(flags, 'epochs', 3), maxSteps: num(flags, 'maxSteps', -1),
    perDeviceTrainBatchSize: num(flags, 'batchSize', 8), perDeviceEvalBatchSize: num(flags, 'evalBatchSize', 8),
    gradientAccumulationSteps: num(flags, 'gradAccum', 1), warmupSteps: num(flags, 'warmupSteps', 0), warmupRatio: num(flags, 'warmupRatio', 0),
    lrSchedulerType: str(flags, 'scheduler', 'linear') as SchedulerType, weightDecay: num(flags, 'weightDecay', 0),
    loggingSteps: num(flags, 'loggingSteps', 10), evalStrategy: evalDs ? 'epoch' : 'no',
    saveStrategy: flags.saveSteps !== undefined ? 'steps' : 'no', saveSteps: num(flags, 'saveSteps', 500),
    seed: num(flags, 'seed', 42), gradientCheckpointing: bool(flags, 'gradientCheckpointing'),
    datasetTextField: str(flags, 'datasetTextField', 'text'), maxLength, packing: bool(flags, 'packing'),
    packingStrategy: str(flags, 'packingStrategy', 'bfd') as PackingStrategy, completionOnlyLoss,
    assistantOnlyLoss: bool(flags, 'assistantOnlyLoss'), chatTemplatePath: str(flags, 'chatTemplatePath') ?? null,
    eosToken: str(flags, 'eosToken') ?? null, plotCurves: false,
  };
  if (flags.lr !== undefined) init.learningRate = num(flags, 'lr');
  const args = new SFTConfig(init);
  const model = loadBaseModel('causal-lm', dir, { seed: args.seed, dtype: dtypeFlag(flags), quiet: true });
  const trainer = new SFTTrainer({
    model, args, processingClass: tok, trainDataset: train, evalDataset: evalDs,
    peftConfig: loraConfigFrom(flags, 'causal-lm', model),
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
