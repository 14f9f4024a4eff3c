// peft-ts demo: the main job on the embedded model and data, a few minutes on 2 cores.
// (1) the untrained classifier (pretrained body + fresh head) on the verse-section test set;
// (2) LoRA fine-tuning (default targets + the head via modules_to_save) with evaluation during
// training; (3) before/after table; (4) a few predictions with scores; (5) a short causal-LM
// LoRA fine-tune on verse completion, generations before vs after. Numbers -> summary.json.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { generateText } from '../../generate/text.js';
import type { CausalLM } from '../../generate/generate.js';
import { bool, num, str } from '../args.js';
import { Flags, assetPath, checkKnown, commandFlags, defaultModelDir, fmtPct, loadBaseModel, loadTokenizer } from '../common.js';
import { columnsFrom, featuresFor, load } from '../data.js';
import { evaluateModel } from './eval.js';
import { classify, formatPrediction } from './predict.js';
import { runTrain } from './train.js';

export const DEMO_HELP = `peft-ts demo: LoRA fine-tuning of the embedded KJV GPT-2 (1.35 M params), before vs after

  --output-dir DIR       (runs/demo) adapters, logs, charts and summary.json go here
  --cls-steps N          classifier training steps (default 400)
  --clm-steps N          causal-LM training steps (default 250)
  --lr X                 learning rate of both runs (default 2e-3)
  --r N                  LoRA rank (default 16)
  --seed N               (42)
  --skip-clm             only the classification part`;

const line = (s = '') => console.log(s);

export async function demoCommand(argv: string[]): Promise<void> {
  const flags: Flags = commandFlags(argv, ['help', 'skipClm']);
  if (flags.help) { console.log(DEMO_HELP); return; }
  checkKnown(flags, ['outputDir', 'clsSteps', 'clmSteps', 'lr', 'r', 'seed', 'skipClm', 'batchSize'], 'demo');
  const t0 = Date.now();
  const out = str(flags, 'outputDir', 'runs/demo')!;
  const seed = num(flags, 'seed', 42)!;
  const lr = num(flags, 'lr', 2e-3)!;
  const r = num(flags, 'r', 16)!;
  const modelDir = defaultModelDir();
  const tok = loadTokenizer(modelDir);
  const secTrain = assetPath('data', 'kjv_section_train.jsonl'), secTest = assetPath('data', 'kjv_section_test.jsonl');
  const compTrain = assetPath('data', 'kjv_complete_train.jsonl'), compTest = assetPath('data', 'kjv_complete_test.jsonl');
  const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(0)} s`;
  fs.mkdirSync(out, { recursive: true });

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
  const clsSteps = num(flags, 'clsSteps', 400)!;
  const tcls = Date.now();
  const cls = await runTrain({
    data: secTrain, evalData: secTest, task: 'seq-cls', outputDir: clsDir, maxSteps: String(clsSteps), lr: String(lr),
    r: String(r), loraAlpha: String(2 * r), loraDropout: '0.05', targetModules: 'c_attn,c_proj,c_fc', batchSize: String(num(flags, 'batchSize', 16)),
    evalSteps: String(Math.max(1, Math.round(clsSteps / 4))), loggingSteps: '20', warmupRatio: '0.06', scheduler: 'cosine',
    weightDecay: '0.01', seed: String(seed), maxLength: '64',
  });
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

  if (!bool(flags, 'skipClm')) {
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
    const clmSteps = num(flags, 'clmSteps', 250)!;
    const tclm = Date.now();
    const clm = await runTrain({
      data: compTrain, evalData: compTest, task: 'causal-lm', outputDir: clmDir, maxSteps: String(clmSteps), lr: String(lr),
      r: String(r), loraAlpha: String(2 * r), loraDropout: '0.05', targetModules: 'c_attn,c_proj,c_fc', batchSize: String(num(flags, 'batchSize', 16)),
      evalSteps: String(Math.max(1, Math.round(clmSteps / 3))), loggingSteps: '10', warmupRatio: '0.06', scheduler: 'cosine', seed: String(seed), maxLength: '96',
    });
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
