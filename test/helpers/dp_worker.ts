// One rank of a data-parallel test job (run under mpirun by test/distributed.test.ts, or
// alone): LoRA on the embedded default model's classifier, no dropout, so that a job of N
// ranks with batch B and one process with batch N*B train to the same adapter.
// argv[2]: JSON { out, steps, bs, saveSteps?, resume?, die?: { rank, step, how: 'throw' | 'kill' } }
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AutoModelForSequenceClassification, DataCollatorWithPadding, Dataset, LoraConfig, Tokenizer, Trainer, getPeftModel,
  tokenizeClassification,
} from '../../src/index.js';
import { getCollective } from '../../src/train/distributed.js';
import type { TrainerCallback } from '../../src/train/callbacks.js';

interface Job { out: string; steps: number; bs: number; saveSteps?: number; resume?: boolean; die?: { rank: number; step: number; how: 'throw' | 'kill' } }
const job = JSON.parse(process.argv[2]) as Job;
const root = process.env.PEFT_TS_ROOT ?? process.cwd();
const modelDir = join(root, 'assets', 'default-model');
const tok = Tokenizer.fromFile(modelDir);
const raw = readFileSync(join(root, 'assets', 'data', 'kjv_section_train.jsonl'), 'utf8').trim().split('\n').slice(0, 96);
const rows = tokenizeClassification(new Dataset(raw.map((l) => JSON.parse(l) as Record<string, unknown>)), tok, { textColumn: 'text', maxLength: 32 });

const model = AutoModelForSequenceClassification.fromPretrainedSync(modelDir, { numLabels: 4 });
const peft = getPeftModel(model, new LoraConfig({ r: 4, loraAlpha: 8, loraDropout: 0, taskType: 'SEQ_CLS', targetModules: ['c_attn'] }));
const { rank, worldSize, name } = getCollective();
console.log(`dp-worker rank ${rank}/${worldSize} collective ${name}`);
const die: TrainerCallback = {
  onStepBegin: ({ state }) => {
    if (!job.die || job.die.rank !== rank || state.globalStep + 1 !== job.die.step) return;
    if (job.die.how === 'kill') process.kill(process.pid, 'SIGKILL');
    throw new Error(`injected failure at step ${job.die.step}`);
  },
};
const trainer = new Trainer({
  model: peft, trainDataset: rows, dataCollator: DataCollatorWithPadding({ tokenizer: tok }), callbacks: [die],
  args: {
    outputDir: job.out, maxSteps: job.steps, perDeviceTrainBatchSize: job.bs, learningRate: 5e-3, loggingSteps: 1,
    saveStrategy: job.saveSteps ? 'steps' : 'no', saveSteps: job.saveSteps ?? 500, seed: 7, plotCurves: false, disableTqdm: true,
  },
});
await trainer.train({ resumeFromCheckpoint: job.resume ? true : null });
await trainer.saveModel(job.out);
