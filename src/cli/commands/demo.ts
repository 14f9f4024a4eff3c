// peft-ts demo: the main job on the embedded model and data, a few minutes on 2 cores.
// (1) the untrained classifier (pretrained body + fresh head) on the verse-section test set;
// (2) LoRA fine-tuning (default targets + the head via modules_to_save) with evaluation during
// training; (3) before/after table; (4) a few predictions with scores; (5) a short causal-LM
// LoRA fine-tune on verse completion, generations before vs after. Numbers -> summary.json.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { makeDirs } from '../../io/files.js';
import { generateText } from '../../generate/text.js';
import type { CausalLM } from '../../generate/generate.js';
import { type CommandDef, flag, helpText, int, num, parseCommand, str } from '../args.js';
import { assetPath, defaultModelDir, fmtPct, loadBaseModel, loadTokenizer } from '../common.js';
import { columnsFrom, featuresFor, load } from '../data.js';
import { evaluateModel } from './eval.js';
import { classify, formatPrediction } from './predict.js';
import { runTrain, trainOptions } from './train.js';

const DEMO_OPTIONS = {
  'output-dir': str('adapters, logs, charts and summary.json go here', { metavar: 'DIR', default: 'runs/demo' }),
  'cls-steps': int('classifier training steps', { min: 1, default: 400 }),
  'clm-steps': int('causal-LM training steps', { min: 1, default: 250 }),
  'learning-rate': num('learning rate of both runs', { min: 0, max: 10, default: 2e-3, alias: ['lr'] }),
  r: int('LoRA rank', { min: 1, max: 8192, default: 16 }),
  'per-device-train-batch-size': int('examples per step', { min: 1, max: 1 << 16, default: 16, alias: ['batch-size'] }),
  seed: int('seed', { min: 0, max: 2 ** 32 - 1, default: 42 }),
  'skip-clm': flag('only the classification part'),
} as const;

export const DEMO: CommandDef<typeof DEMO_OPTIONS> = {
  name: 'demo', summary: 'LoRA fine-tuning of the embedded KJV GPT-2 (1.35 M params), before vs after', options: DEMO_OPTIONS,
};

const line = (s = '') => console.log(s);

export async function demoCommand(argv: string[]): Promise<void> {
  const o = parseCommand(DEMO, argv);
  if (o.help) { console.log(helpText(DEMO)); return; }
  const t0 = Date.now();
  const out = o.outputDir;
  const seed = o.seed, lr = o.learningRate, r = o.r, batchSize = o.perDeviceTrainBatchSize;
  const modelDir = defaultModelDir();
  const tok = loadTokenizer(modelDir);
  const secTrain = assetPath('data', 'kjv_section_train.jsonl'), secTest = assetPath('data', 'kjv_section_test.jsonl');
  const compTrain = assetPath('data', 'kjv_complete_train.jsonl'), compTest = assetPath('data', 'kjv_complete_test.jsonl');
  const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(0)} s`;
  makeDirs(out);

  line('== peft-ts demo: LoRA on the embedded KJV GPT-2 (assets/README.md) ==');
  line(`model ${modelDir}`);
  line();
  line('-- 1. verse -> section of the Bible (law / wisdom / gospel / epistle), 4 classes --');
  const cols = columnsFrom({});
  const testDs = load(secTest);
  const testFeats = featuresFor('seq-cls', testDs, tok, cols, {});
  const id2label = testFeats.id2label!;
  const base = loadBaseModel('seq-cls', modelDir, { numLabels: 4, seed, quiet: true });
  const before = await evaluateModel(base, 'seq-cls', testFeats.dataset, tok);
  line(`untrained classifier (pretrained body, new head) on ${testDs.length} test verses: accuracy ${fmtPct(before.eval_accuracy)}, macro-F1 ${before.eval_f1.toFixed(3)}`);
  line();
  line('-- 2. LoRA fine-tuning (c_attn/c_proj/c_fc + score head as modules_to_save) --');
  const clsDir = path.join(out, 'classifier');
  const clsSteps = o.clsSteps;
  const tcls = Date.now();
  // The demo's runs are re-runnable: each starts over in its own folder.
  const cls = await runTrain(trainOptions({
    data: secTrain, evalData: secTest, task: 'seq-cls', outputDir: clsDir, overwriteOutputDir: true, maxSteps: clsSteps, learningRate: lr,
    r, loraAlpha: 2 * r, loraDropout: 0.05, targetModules: 'c_attn,c_proj,c_fc', perDeviceTrainBatchSize: batchSize,
    evalSteps: Math.max(1, Math.round(clsSteps / 4)), loggingSteps: 20, warmupRatio: 0.06, lrSchedulerType: 'cosine',
    weightDecay: 0.01, seed, maxLength: 64,
  }));
  const clsSeconds = (Date.now() - tcls) / 1000;
  const after = cls.evalMetrics!;
  line();
  line('-- 3. before / after (kjv_section_test, 800 verses) --');
  line('                 accuracy   macro-F1');
  line(`  before LoRA     ${fmtPct(before.eval_accuracy).padStart(6)}     ${before.eval_f1.toFixed(3)}`);
  line(`  after LoRA      ${fmtPct(after.eval_accuracy).padStart(6)}     ${after.eval_f1.toFixed(3)}`);
  line(`  (chance 25.0%; ${cls.globalStep} steps in ${clsSeconds.toFixed(0)} s; adapter in ${clsDir})`);
  line();
  line('-- 4. predictions of the fine-tuned classifier --');
  const sample = [0, 1, 2, 3, 4, 5].map((i) => testDs.rows[i * 97 % testDs.length]);
  const preds = classify(cls.peft, tok, sample.map((s) => s.text as string), id2label, 64);
  preds.forEach((p, i) => line(`${p.label === sample[i].label ? 'ok ' : 'MISS'} true=${String(sample[i].label).padEnd(7)} ${formatPrediction(p)}`));

  const summary: Record<string, unknown> = {
    model: 'assets/default-model',
    classification: {
      data: { train: 'assets/data/kjv_section_train.jsonl', test: 'assets/data/kjv_section_test.jsonl' },
      before: { accuracy: before.eval_accuracy, f1_macro: before.eval_f1, loss: before.eval_loss },
      after: { accuracy: after.eval_accuracy, f1_macro: after.eval_f1, loss: after.eval_loss },
      steps: cls.globalStep, seconds: clsSeconds, lr, r, adapter: clsDir,
      trainable: cls.peft.trainableParametersString(),
      predictions: preds.map((p, i) => ({ ...p, true: sample[i].label })),
    },
  };

  if (!o.skipClm) {
    line();
    line('-- 5. causal LM: finish a verse of Psalms / Proverbs (LoRA on c_attn/c_proj/c_fc) --');
    const compTestDs = load(compTest);
    const ccols = columnsFrom({});
    const lm = loadBaseModel('causal-lm', modelDir, { quiet: true });
    const clmFeats = featuresFor('causal-lm', compTestDs, tok, ccols, {});
    const lmBefore = await evaluateModel(lm, 'causal-lm', clmFeats.dataset, tok);
    const prompts = [0, 1, 2, 3].map((i) => compTestDs.rows[i * 23 % compTestDs.length]);
    const gen = async (m: CausalLM) => (await generateText(m, tok, prompts.map((p) => p.prompt as string), { maxNewTokens: 24, noRepeatNgramSize: 3 }))
      .map((s) => s.split('\n')[0]);
    const genBefore = await gen(lm);
    const clmDir = path.join(out, 'completion');
    const clmSteps = o.clmSteps;
    const tclm = Date.now();
    const clm = await runTrain(trainOptions({
      data: compTrain, evalData: compTest, task: 'causal-lm', outputDir: clmDir, overwriteOutputDir: true, maxSteps: clmSteps, learningRate: lr,
      r, loraAlpha: 2 * r, loraDropout: 0.05, targetModules: 'c_attn,c_proj,c_fc', perDeviceTrainBatchSize: batchSize,
      evalSteps: Math.max(1, Math.round(clmSteps / 3)), loggingSteps: 10, warmupRatio: 0.06, lrSchedulerType: 'cosine', seed, maxLength: 96,
    }));
    const clmSeconds = (Date.now() - tclm) / 1000;
    const genAfter = await gen(clm.peft);
    const lmAfter = clm.evalMetrics!;
    line();
    line(`completion loss on kjv_complete_test: ${lmBefore.eval_loss.toFixed(3)} (perplexity ${lmBefore.eval_perplexity.toFixed(1)}) -> ${lmAfter.eval_loss.toFixed(3)} (perplexity ${lmAfter.eval_perplexity.toFixed(1)}), ${clm.globalStep} steps in ${clmSeconds.toFixed(0)} s`);
    line('greedy continuations (no-repeat-ngram 3), before -> after:');
    prompts.forEach((p, i) => {
      line(`  prompt: ${p.prompt}`);
      line(`    truth : ${String(p.completion).trim()}`);
      line(`    before: ${genBefore[i].trim()}`);
      line(`    after : ${genAfter[i].trim()}`);
    });
    summary.causalLm = {
      data: { train: 'assets/data/kjv_complete_train.jsonl', test: 'assets/data/kjv_complete_test.jsonl' },
      before: { loss: lmBefore.eval_loss, perplexity: lmBefore.eval_perplexity },
      after: { loss: lmAfter.eval_loss, perplexity: lmAfter.eval_perplexity },
      steps: clm.globalStep, seconds: clmSeconds, adapter: clmDir,
      generations: prompts.map((p, i) => ({ prompt: p.prompt, truth: p.completion, before: genBefore[i], after: genAfter[i] })),
    };
  }
  summary.wallSeconds = (Date.now() - t0) / 1000;
  fs.writeFileSync(path.join(out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  line();
  line(`done in ${elapsed()}; numbers in ${path.join(out, 'summary.json')}`);
}
