// Trainer: the transformers training loop (gradient accumulation, clipping, AdamW + schedule,
// logging / evaluation / saving by steps or epochs, best-model tracking, exact resume) over
// this library's models. One micro-batch = one tidy() scope, so memory stays flat.
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tensor, noGrad } from '../tensor/tensor.js';
import { tidy } from '../tensor/memory.js';
import { autocast } from '../tensor/autocast.js';
import { mulScalar, zeros } from '../tensor/ops/basic.js';
import { Rng, defaultRng } from '../tensor/random.js';
import { AbortError, yieldToEventLoop } from '../tensor/yield.js';
import type { Module } from '../nn/module.js';
import type { ModelInputs, ModelOutput } from '../models/types.js';
import { Dataset, Row } from '../data/dataset.js';
import { Batch, DataCollator, DataCollatorForLanguageModeling, DataCollatorForSeq2Seq, DataCollatorWithPadding } from '../data/collators.js';
import type { TokenizerLike } from '../data/tokenizer.js';
import { TrainingArguments, TrainingArgumentsInit } from './args.js';
import { AdamW, clipGradNorm, paramGroups } from './optim.js';
import { LRScheduler, warmupStepsFor } from './schedulers.js';
import { CallbackArgs, EarlyStoppingCallback, LogEntry, ProgressCallback, TrainerCallback, TrainerControl, TrainerState } from './callbacks.js';
import {
  RNG_FILE, listCheckpoints, prepareOutputDir, SCHEDULER_FILE, STATE_FILE, SavableModel, lastCheckpoint, loadCheckpointWeights,
  loadOptimizerState, readJson, rotateCheckpoints, saveCheckpoint,
} from './checkpoint.js';
import { softmaxRows } from './metrics.js';
import { trainingCurvesSvg } from './curves.js';
import { makeDirs } from '../io/files.js';
import { Collective, allReduceGradients, broadcastJson, getCollective, shardOrder } from './distributed.js';

/** What the trainer needs from a model: transformers' forward contract (+ optional savePretrained). */
export interface TrainableModel extends SavableModel {
  forward(inputs: ModelInputs): ModelOutput;
  task?: string;
}

export interface EvalPrediction {
  /** Logits, flattened; shape in predictionsShape ([N, C] or [N, T, C]). */
  predictions: Float32Array;
  predictionsShape: number[];
  /** Labels flattened ([N] or [N, T], -100 where padded). */
  labels: Int32Array;
  numLabels: number;
}

export interface PredictionOutput {
  predictions: Float32Array;
  predictionsShape: number[];
  /** Softmax over the last dim of the predictions (classification). */
  scores: Float32Array | null;
  labels: Int32Array | null;
  metrics: LogEntry;
}

export interface TrainOutput { globalStep: number; trainingLoss: number; metrics: LogEntry }

export interface TrainOptions {
  /** true: the latest checkpoint-<step> in outputDir; a string: that checkpoint folder. */
  resumeFromCheckpoint?: string | boolean | null;
  /**
   * Stops training at the next optimizer-step boundary (or evaluation batch): a checkpoint of
   * the last finished step is saved first, then train() rejects with an AbortError whose
   * `checkpoint` names it; `train({ resumeFromCheckpoint: true })` continues exactly.
   */
  signal?: AbortSignal;
}

/** Emitted as 'progress' after every optimizer step. */
export interface TrainProgress {
  globalStep: number;
  maxSteps: number;
  epoch: number;
  /** Loss of the last logged window (null before the first log). */
  loss: number | null;
  /** Seconds since train() started. */
  elapsed: number;
}

/** The AbortError train() rejects with: the checkpoint it saved (null when no step had finished). */
export class TrainingAbortedError extends AbortError {
  constructor(readonly checkpoint: string | null, readonly globalStep: number, cause?: unknown) {
    super(`training was aborted at step ${globalStep}${checkpoint ? `; resumable checkpoint: ${checkpoint}` : ''}`, { cause });
  }
}

/**
 * Events (besides TrainerCallback hooks): 'progress' (TrainProgress, every optimizer step),
 * 'log' (LogEntry), 'evaluate' (eval metrics), 'save' (checkpoint folder).
 */
export interface TrainerEvents {
  progress: [TrainProgress];
  log: [LogEntry];
  evaluate: [LogEntry];
  save: [string];
}

export interface TrainerOptions {
  model: TrainableModel;
  args: TrainingArguments | TrainingArgumentsInit;
  trainDataset?: Dataset | Row[];
  evalDataset?: Dataset | Row[];
  dataCollator?: DataCollator;
  computeMetrics?: (p: EvalPrediction) => Record<string, number>;
  callbacks?: TrainerCallback[];
  tokenizer?: TokenizerLike;
  /** Where progress goes (default process.stderr). */
  progressStream?: { write(s: string): unknown; isTTY?: boolean };
  /** The processes of a data-parallel job (default: MPI under mpirun, else this process alone). */
  collective?: Collective;
}

const asDataset = (d: Dataset | Row[] | undefined): Dataset | undefined => (d === undefined ? undefined : d instanceof Dataset ? d : new Dataset(d));

/** Fixed-length rows stacked as-is (transformers' default_data_collator). */
export function defaultDataCollator(rows: Row[]): Batch {
  const pad = DataCollatorForLanguageModeling({ padTokenId: 0 });
  const lens = new Set(rows.map((r) => (r.inputIds as unknown[] | undefined)?.length));
  if (lens.size !== 1) throw new Error('defaultDataCollator: sequences differ in length; pass a tokenizer or a padding dataCollator');
  if (typeof rows[0].labels === 'number') return DataCollatorWithPadding({ padTokenId: 0 })(rows);
  return pad(rows);
}

/** The model's config pad_token_id (under a PeftModel too), else 0. */
function modelPadId(model: TrainableModel): number {
  const m = model as unknown as { config?: { raw?: Record<string, unknown> }; getBaseModel?: () => { config?: { raw?: Record<string, unknown> } } };
  const p = (m.config ?? m.getBaseModel?.()?.config)?.raw?.pad_token_id;
  return typeof p === 'number' ? p : 0;
}

export class Trainer extends EventEmitter<TrainerEvents> {
  readonly model: TrainableModel;
  readonly args: TrainingArguments;
  trainDataset?: Dataset;
  evalDataset?: Dataset;
  readonly dataCollator: DataCollator;
  readonly computeMetrics?: (p: EvalPrediction) => Record<string, number>;
  readonly callbacks: TrainerCallback[];
  readonly tokenizer?: TokenizerLike;
  state = new TrainerState();
  control = new TrainerControl();
  optimizer: AdamW | null = null;
  lrScheduler: LRScheduler | null = null;
  private logFile: string | null = null;
  private signal: AbortSignal | null = null;
  /** The last evaluation made while training and the step it was made at. */
  private lastEval: { step: number; metrics: LogEntry } | null = null;
  private lastLoss: number | null = null;
  private runStartStep = 0;
  private lastSavedStep = -1;
  private progressStream?: { write(s: string): unknown };
  /** The job's processes (one unless launched by mpirun); rank 0 logs, evaluates and writes. */
  readonly collective: Collective;

  constructor(o: TrainerOptions) {
    super();
    if (!o.model || typeof o.model.forward !== 'function') throw new Error('Trainer: model must have forward({inputIds, attentionMask, labels})');
    this.model = o.model;
    this.args = o.args instanceof TrainingArguments ? o.args : new TrainingArguments(o.args);
    this.trainDataset = asDataset(o.trainDataset);
    this.evalDataset = asDataset(o.evalDataset);
    this.tokenizer = o.tokenizer;
    this.computeMetrics = o.computeMetrics;
    this.dataCollator = o.dataCollator ?? (o.tokenizer
      ? (o.model.task === 'CAUSAL_LM' ? DataCollatorForLanguageModeling({ tokenizer: o.tokenizer })
        : o.model.task === 'SEQ_2_SEQ_LM' ? DataCollatorForSeq2Seq({ tokenizer: o.tokenizer }) : DataCollatorWithPadding({ tokenizer: o.tokenizer }))
      : o.model.task === 'SEQ_2_SEQ_LM' ? DataCollatorForSeq2Seq({ padTokenId: modelPadId(o.model) }) : defaultDataCollator);
    this.collective = o.collective ?? getCollective();
    // Only the main process reports progress (as transformers' is_world_process_zero).
    const progress = this.collective.rank === 0 ? o.progressStream : { write: () => true };
    this.callbacks = [new ProgressCallback(progress), ...(o.callbacks ?? [])];
    this.progressStream = progress;
    const note = this.args.computeDtypeNote;
    if (note) process.emitWarning(note);
  }

  addCallback(cb: TrainerCallback): void { this.callbacks.push(cb); }

  private progress(s: string): void { (this.progressStream ?? process.stderr).write(s); }

  private fire(ev: 'onTrainBegin' | 'onEpochBegin' | 'onStepBegin' | 'onStepEnd' | 'onEpochEnd' | 'onTrainEnd', extra: object = {}): void {
    const a = { args: this.args, state: this.state, control: this.control, ...extra } as CallbackArgs;
    for (const cb of this.callbacks) cb[ev]?.(a);
  }

  private batches(ds: Dataset, bs: number, order: number[], dropLast: boolean): number[][] {
    const out: number[][] = [];
    for (let i = 0; i < order.length; i += bs) {
      const b = order.slice(i, i + bs);
      if (dropLast && b.length < bs) break;
      out.push(b);
    }
    return out;
  }

  /** Data order of an epoch: a permutation seeded by (dataSeed, epoch), so a resume can redo it. */
  private epochOrder(n: number, epoch: number): number[] {
    const seed = (this.args.dataSeed ?? this.args.seed) >>> 0;
    return new Rng((seed ^ Math.imul(epoch + 1, 0x9e3779b1)) >>> 0).shuffle([...Array(n).keys()]);
  }

  /** needLogits false lets causal LMs skip the [B, T, V] logits (fused head + loss). */
  private forward(batch: Batch, needLogits = true): ModelOutput {
    const inputs: ModelInputs & Record<string, unknown> = { ...batch } as ModelInputs & Record<string, unknown>;
    if (!needLogits) inputs.returnLogits = false;
    // bf16: autocast for the forward; each op keeps the setting for its backward.
    return autocast(this.args.bf16 ? 'bfloat16' : null, () => this.model.forward(inputs));
  }

  private trainableParams(): [string, Tensor][] {
    return [...this.model.namedParameters()].filter(([, p]) => p.requiresGrad);
  }

  private setGradientCheckpointing(on: boolean): void {
    for (const [, m] of this.model.namedModules()) {
      if ('gradientCheckpointing' in m) (m as unknown as { gradientCheckpointing: boolean }).gradientCheckpointing = on;
    }
  }

  private get isMain(): boolean { return this.collective.rank === 0; }

  /**
   * Runs the training loop. resumeFromCheckpoint: true (latest in outputDir) or a checkpoint folder.
   * Under mpirun every rank calls it: each trains on its shard of every global batch, gradients
   * are averaged, rank 0 logs, evaluates and writes. An error on one rank ends the whole job.
   */
  async train(opts: TrainOptions = {}): Promise<TrainOutput> {
    if (!this.trainDataset || this.trainDataset.length === 0) throw new Error('Trainer.train: no trainDataset (or it is empty)');
    if (opts.signal?.aborted) throw new TrainingAbortedError(null, this.state.globalStep, opts.signal.reason);
    this.signal = opts.signal ?? null;
    this.lastEval = null;
    this.lastLoss = null;
    this.lastSavedStep = -1;
    try {
      return await this.trainOnRanks(opts);
    } finally {
      this.signal = null;
    }
  }

  private async trainOnRanks(opts: TrainOptions): Promise<TrainOutput> {
    const c = this.collective;
    if (c.worldSize === 1) return this.trainAbortable(opts);
    const onTerm = () => {
      process.stderr.write(`[rank ${c.rank}/${c.worldSize}] stopped: the job was terminated (another rank failed or the launcher was interrupted)\n`);
      process.exit(143);
    };
    process.once('SIGTERM', onTerm);
    try {
      return await this.trainAbortable(opts);
    } catch (e) {
      process.stderr.write(`[rank ${c.rank}/${c.worldSize}] training failed: ${(e as Error)?.stack ?? e}\n` +
        `[rank ${c.rank}/${c.worldSize}] ending every rank of the job (checkpoints already written are complete)\n`);
      return c.abort(1);
    } finally {
      process.removeListener('SIGTERM', onTerm);
    }
  }

  /** The training loop; an abort (signal) ends it with a checkpoint of the last finished step. */
  private async trainAbortable(opts: TrainOptions): Promise<TrainOutput> {
    try {
      return await this.trainLoop(opts);
    } catch (e) {
      if (!(e instanceof AbortError) || e instanceof TrainingAbortedError || !this.signal?.aborted) throw e;
      // Stopped between steps: a checkpoint of the last finished step lets a resume redo the rest exactly.
      let ckpt: string | null = null;
      const step = this.state.globalStep;
      if (step > this.runStartStep || this.lastSavedStep === step) {
        if (this.lastSavedStep !== step) await this.saveCheckpoint(null);
        ckpt = path.join(this.args.outputDir, `checkpoint-${step}`);
      }
      if (this.args.gradientCheckpointing) this.setGradientCheckpointing(false);
      throw new TrainingAbortedError(ckpt, step, this.signal.reason);
    }
  }

  private async trainLoop(opts: TrainOptions): Promise<TrainOutput> {
    const args = this.args;
    const { rank, worldSize } = this.collective;
    const ds = this.trainDataset;
    if (!ds || ds.length === 0) throw new Error('Trainer.train: no trainDataset (or it is empty)');
    let resume = opts.resumeFromCheckpoint ?? args.resumeFromCheckpoint;
    // A fresh run never mixes with another run's checkpoints (they would be rotated with ours and
    // picked up by a later resume): refused unless overwriteOutputDir (which removes them) or resume.
    // Only the main process touches the folder's contents.
    if (this.isMain) prepareOutputDir(args.outputDir, { resume: resume !== null && resume !== undefined && resume !== false, overwrite: args.overwriteOutputDir });
    else makeDirs(args.outputDir);
    this.logFile = args.reportTo.includes('jsonl') && this.isMain ? path.join(args.outputDir, 'trainer_log.jsonl') : null;

    if (resume === true) {
      const last = lastCheckpoint(args.outputDir);
      if (!last) throw new Error(`resumeFromCheckpoint: no checkpoint-<step> folder in ${args.outputDir}`);
      resume = last;
    }
    if (resume === false) resume = null;
    if (typeof resume === 'string' && !fs.existsSync(path.join(resume, STATE_FILE))) throw new Error(`resumeFromCheckpoint: ${resume} is not a checkpoint (no ${STATE_FILE})`);

    // set_seed: reseed the shared generator in place (modules hold references to it).
    defaultRng().setState(new Rng(args.seed).getState());
    if (args.gradientCheckpointing) this.setGradientCheckpointing(true);

    const bs = args.perDeviceTrainBatchSize, gas = args.gradientAccumulationSteps;
    const shardLen = shardOrder([...Array(ds.length).keys()], rank, worldSize, args.dataloaderDropLast).length;
    const stepsInEpoch = args.dataloaderDropLast ? Math.floor(shardLen / bs) : Math.ceil(shardLen / bs);
    if (stepsInEpoch === 0) throw new Error(`Trainer.train: ${ds.length} rows make no full batch of ${bs} with dataloaderDropLast`);
    const updatesPerEpoch = Math.max(Math.floor(stepsInEpoch / gas) + (stepsInEpoch % gas > 0 ? 1 : 0), 1);
    let maxSteps: number, numEpochs: number;
    if (args.maxSteps > 0) { maxSteps = args.maxSteps; numEpochs = Math.ceil(maxSteps / updatesPerEpoch); }
    else { maxSteps = Math.ceil(args.numTrainEpochs * updatesPerEpoch); numEpochs = Math.ceil(args.numTrainEpochs); }

    this.optimizer = new AdamW(paramGroups(this.model, args.weightDecay), { lr: args.learningRate, betas: [args.adamBeta1, args.adamBeta2], eps: args.adamEpsilon });
    this.lrScheduler = new LRScheduler(args.lrSchedulerType, args.learningRate, {
      numWarmupSteps: warmupStepsFor(maxSteps, args.warmupSteps, args.warmupRatio), numTrainingSteps: maxSteps, ...args.lrSchedulerKwargs,
    });
    this.state = new TrainerState();
    this.control = new TrainerControl();
    let epochsTrained = 0, skipBatches = 0;
    if (typeof resume === 'string') {
      loadCheckpointWeights(resume, this.model);
      loadOptimizerState(resume, this.optimizer);
      this.lrScheduler.loadStateDict(readJson(resume, SCHEDULER_FILE));
      this.state = TrainerState.fromJSON(readJson(resume, STATE_FILE));
      if (this.state.bestModelCheckpoint && !fs.existsSync(this.state.bestModelCheckpoint)) this.state.bestModelCheckpoint = null;
      this.restoreRngStates(readJson<Record<string, number[]>>(resume, RNG_FILE));
      for (const cb of this.callbacks) if (cb.name && cb.setState && this.state.statefulCallbacks[cb.name] !== undefined) cb.setState(this.state.statefulCallbacks[cb.name]);
      epochsTrained = Math.floor(this.state.globalStep / updatesPerEpoch);
      skipBatches = (this.state.globalStep % updatesPerEpoch) * gas;
      // Drop log lines past the checkpoint that an interrupted run may have written.
      this.truncateLog(this.state.globalStep);
    } else if (this.logFile) fs.writeFileSync(this.logFile, '');
    this.state.maxSteps = maxSteps;
    this.state.numTrainEpochs = numEpochs;
    this.state.trainBatchSize = bs;

    // A finished run resumed trains no further (the loop below would redo the last epoch's tail).
    const alreadyDone = this.state.globalStep >= maxSteps;
    if (alreadyDone) this.progress(`resumed at step ${this.state.globalStep}, which reaches maxSteps ${maxSteps}: nothing left to train\n`);
    const params = this.trainableParams();
    const tensors = params.map(([, p]) => p);
    // DDP: every rank starts from rank 0's trainable weights.
    if (worldSize > 1) for (const p of tensors) await this.collective.broadcast(p.data, 0);
    this.model.train();
    this.optimizer.zeroGrad();
    const start = Date.now();
    const startStep = this.state.globalStep;
    this.runStartStep = startStep;
    let trLoss = 0, stepsSinceLog = 0, totalLoss = 0, lastGradNorm = NaN, lastLr = NaN;
    let tokensSinceLog = 0, logClock = Date.now();
    this.fire('onTrainBegin');

    for (let epoch = epochsTrained; !alreadyDone && epoch < numEpochs && !this.control.shouldTrainingStop; epoch++) {
      const order = shardOrder(this.epochOrder(ds.length, epoch), rank, worldSize, args.dataloaderDropLast);
      const all = this.batches(ds, bs, order, args.dataloaderDropLast);
      this.fire('onEpochBegin');
      let step = -1;
      const remainder = stepsInEpoch % gas || gas;
      const firstUpdate = epoch === epochsTrained ? skipBatches / gas : 0;
      step = firstUpdate * gas - 1;
      for (let u = firstUpdate; u < updatesPerEpoch; u++) {
        const nb = u === updatesPerEpoch - 1 ? remainder : gas;
        const group = all.slice(u * gas, u * gas + nb);
        this.fire('onStepBegin');
        let badLoss: number | null = null;
        let groupTokens = 0;
        for (const idx of group) {
          step++;
          const rows = idx.map((i) => ds.rows[i]);
          const { loss, tokens } = tidy(() => {
            const batch = this.dataCollator(rows);
            const out = this.forward(batch, false);
            if (!out.loss) throw new Error('Trainer: the model returned no loss (are labels in the batch?)');
            const scaled = mulScalar(out.loss, 1 / group.length);
            scaled.backward();
            let tokens = 0;
            const am = batch.attentionMask;
            if (am) for (const v of am.ints) tokens += v; else tokens = batch.inputIds.size;
            return { loss: scaled.item(), tokens };
          });
          // transformers' logging_nan_inf_filter: a non-finite loss counts as the running average.
          if (!Number.isFinite(loss)) { badLoss = loss; trLoss += trLoss / (1 + stepsSinceLog); }
          else trLoss += loss;
          groupTokens += tokens;
          await yieldToEventLoop();
        }
        if (worldSize > 1) {
          // The non-finite flag travels with the gradients, so every rank takes the same decision.
          const extra = new Float64Array([groupTokens, badLoss === null ? 0 : 1]);
          // A device collective (NCCL) takes the buffers in stream order: no wait for the backward.
          const grads = tensors.map((p) => (p.grad ??= zeros(p.shape)));
          await allReduceGradients(this.collective, grads.map((g) => (this.collective.averageGradients ? g.buf : g.data)), extra);
          groupTokens = extra[0];
          if (extra[1] > 0 && badLoss === null) badLoss = NaN;
        }
        this.state.numInputTokensSeen += groupTokens;
        tokensSinceLog += groupTokens;
        const gradNorm = clipGradNorm(tensors, args.maxGradNorm);
        lastLr = this.lrScheduler.lr();
        this.optimizer.lr = lastLr;
        // A NaN / Inf loss or gradient would be written into every trainable weight by the
        // optimizer (and saved): stop with a clear error, or with nonFiniteAction 'skip' leave
        // the weights as they are for this step.
        const nonFinite = badLoss !== null ? `loss ${badLoss}` : !Number.isFinite(gradNorm) ? `gradient norm ${gradNorm}` : null;
        if (nonFinite && args.nonFiniteAction === 'error') {
          throw new Error(`Trainer: non-finite ${nonFinite} at step ${this.state.globalStep + 1} (epoch ${epoch}); the weights are left as they were after step ${this.state.globalStep}. `
            + `Lower the learning rate, check the data and weights, or skip such steps with nonFiniteAction 'skip' (--non-finite-action skip)`);
        }
        if (nonFinite) {
          this.state.skippedSteps = (this.state.skippedSteps ?? 0) + 1;
          this.progress(`step ${this.state.globalStep + 1}: non-finite ${nonFinite}, update skipped (nonFiniteAction 'skip')\n`);
        } else {
          lastGradNorm = gradNorm;
          this.optimizer.step();
        }
        this.lrScheduler.step();
        this.optimizer.zeroGrad();
        this.state.globalStep++;
        this.state.epoch = epoch + (step + 1) / stepsInEpoch;
        stepsSinceLog++;
        this.stepFlow(epoch);
        this.fire('onStepEnd');
        const r = await this.maybeLogSaveEvaluate({ trLoss, stepsSinceLog, gradNorm: lastGradNorm, lr: lastLr, tokensSinceLog, logClock });
        if (r.logged) { totalLoss += r.lossSum; trLoss = 0; stepsSinceLog = 0; tokensSinceLog = 0; logClock = Date.now(); }
        this.emit('progress', { globalStep: this.state.globalStep, maxSteps, epoch: this.state.epoch, loss: this.lastLoss, elapsed: (Date.now() - start) / 1000 });
        if (this.signal?.aborted) throw new AbortError('aborted', { cause: this.signal.reason });
        if (this.control.shouldEpochStop || this.control.shouldTrainingStop) break;
      }
      this.control.shouldEpochStop = false;
      this.epochFlow();
      this.fire('onEpochEnd');
      const r = await this.maybeLogSaveEvaluate({ trLoss, stepsSinceLog, gradNorm: lastGradNorm, lr: lastLr, tokensSinceLog, logClock });
      if (r.logged) { totalLoss += r.lossSum; trLoss = 0; stepsSinceLog = 0; tokensSinceLog = 0; logClock = Date.now(); }
    }
    totalLoss += await this.meanOverRanks(trLoss);
    const runtime = (Date.now() - start) / 1000;
    const done = this.state.globalStep - startStep;
    const trainLoss = totalLoss / Math.max(done, 0.001);
    const metrics: LogEntry = {
      train_runtime: runtime, train_samples_per_second: (done * bs * gas * worldSize) / Math.max(runtime, 1e-9),
      train_steps_per_second: done / Math.max(runtime, 1e-9), train_loss: trainLoss,
      train_tokens_per_second: this.state.numInputTokensSeen / Math.max(runtime, 1e-9), epoch: this.state.epoch,
    };
    this.log(metrics);
    await this.collective.barrier();
    if (args.loadBestModelAtEnd && this.state.bestModelCheckpoint) {
      loadCheckpointWeights(this.state.bestModelCheckpoint, this.model);
    }
    // transformers: with saveTotalLimit 1, only the best checkpoint is left at the end.
    if (args.saveTotalLimit === 1 && this.state.bestModelCheckpoint && this.isMain) {
      for (const c of listCheckpoints(args.outputDir)) if (path.resolve(c) !== path.resolve(this.state.bestModelCheckpoint)) fs.rmSync(c, { recursive: true, force: true });
    }
    if (args.plotCurves && this.isMain) this.writeCurves();
    if (args.gradientCheckpointing) this.setGradientCheckpointing(false);
    this.fire('onTrainEnd');
    return { globalStep: this.state.globalStep, trainingLoss: trainLoss, metrics };
  }

  /** DefaultFlowCallback.on_step_end */
  private stepFlow(_epoch: number): void {
    const a = this.args, s = this.state, c = this.control;
    if (s.globalStep === 1 && a.loggingFirstStep) c.shouldLog = true;
    if (a.loggingSteps > 0 && s.globalStep % a.loggingSteps === 0) c.shouldLog = true;
    if (a.evalStrategy === 'steps' && a.evalSteps > 0 && s.globalStep % a.evalSteps === 0) c.shouldEvaluate = true;
    if (a.saveStrategy === 'steps' && a.saveSteps > 0 && s.globalStep % a.saveSteps === 0) c.shouldSave = true;
    if (s.globalStep >= s.maxSteps) {
      c.shouldTrainingStop = true;
      if (a.saveStrategy === 'steps') c.shouldSave = true;
    }
  }

  /** DefaultFlowCallback.on_epoch_end */
  private epochFlow(): void {
    if (this.args.evalStrategy === 'epoch') this.control.shouldEvaluate = true;
    if (this.args.saveStrategy === 'epoch') this.control.shouldSave = true;
  }

  private async maybeLogSaveEvaluate(s: { trLoss: number; stepsSinceLog: number; gradNorm: number; lr: number; tokensSinceLog: number; logClock: number }): Promise<{ logged: boolean; lossSum: number }> {
    const c = this.control;
    let logged = false, lossSum = s.trLoss;
    if (c.shouldLog && s.stepsSinceLog > 0) {
      const dt = Math.max((Date.now() - s.logClock) / 1000, 1e-9);
      // The logged loss is the mean over ranks (each rank's loss is over its own shard).
      lossSum = await this.meanOverRanks(s.trLoss);
      const logs: LogEntry = { loss: lossSum / s.stepsSinceLog, grad_norm: s.gradNorm, learning_rate: s.lr, tokens_per_second: s.tokensSinceLog / dt };
      this.log(logs);
      logged = true;
    }
    c.shouldLog = false;
    let metrics: LogEntry | null = null;
    if (c.shouldEvaluate) {
      c.shouldEvaluate = false;
      metrics = await this.evaluateOnMain();
      this.lastEval = { step: this.state.globalStep, metrics };
      this.determineBestMetric(metrics);
    }
    if (c.shouldSave) {
      c.shouldSave = false;
      await this.saveCheckpoint(metrics);
    }
    return { logged, lossSum };
  }

  /** Mean of a per-rank value over the job (the logged loss, as transformers gathers it). */
  private async meanOverRanks(v: number): Promise<number> {
    if (this.collective.worldSize === 1) return v;
    const b = new Float64Array([v]);
    await this.collective.allReduceSum(b);
    return b[0] / this.collective.worldSize;
  }

  /** Evaluation during training: rank 0 runs it; the others receive its metrics, log and fire callbacks. */
  private async evaluateOnMain(): Promise<LogEntry> {
    const c = this.collective;
    if (c.worldSize === 1) return this.evaluate();
    const mine = this.isMain ? await this.evaluate() : undefined;
    await c.barrier(); // the others sleep here (not spin in MPI) while rank 0 evaluates
    const metrics = await broadcastJson(c, mine, 0);
    if (!this.isMain) {
      this.log(metrics);
      for (const cb of this.callbacks) cb.onEvaluate?.({ args: this.args, state: this.state, control: this.control, metrics });
    }
    return metrics;
  }

  /** Adds an entry to the log history (with epoch and step), the jsonl file and callbacks. */
  log(logs: LogEntry): void {
    const entry: LogEntry = { ...logs, epoch: Number(this.state.epoch.toFixed(4)), step: this.state.globalStep };
    this.state.logHistory.push(entry);
    if (this.logFile) fs.appendFileSync(this.logFile, JSON.stringify(entry) + '\n');
    for (const cb of this.callbacks) cb.onLog?.({ args: this.args, state: this.state, control: this.control, logs: entry });
    if (logs.loss !== undefined) this.lastLoss = logs.loss;
    this.emit('log', entry);
  }

  /**
   * The metrics of the evaluation train() made at its last step, when the weights are still
   * those it evaluated (null otherwise): callers that report a final evaluation reuse it
   * instead of running (and logging) the same evaluation twice.
   */
  finalEvaluation(): LogEntry | null {
    const e = this.lastEval;
    if (!e || e.step !== this.state.globalStep) return null;
    if (this.args.loadBestModelAtEnd && this.state.bestGlobalStep !== null && this.state.bestGlobalStep !== e.step) return null;
    return e.metrics;
  }

  private truncateLog(step: number): void {
    if (!this.logFile || !fs.existsSync(this.logFile)) return;
    const keep = fs.readFileSync(this.logFile, 'utf8').split('\n').filter((l) => {
      if (!l.trim()) return false;
      try { return (JSON.parse(l) as LogEntry).step <= step; } catch { return false; }
    });
    fs.writeFileSync(this.logFile, keep.map((l) => l + '\n').join(''));
  }

  private writeCurves(): void {
    fs.writeFileSync(path.join(this.args.outputDir, 'training_curves.svg'), trainingCurvesSvg(this.state.logHistory, { ...this.curvesHeading(), maxSteps: this.state.maxSteps }));
  }

  /** The chart's heading: run and model, then the hyperparameters that shape the curves. */
  private curvesHeading(): { title: string; subtitle: string } {
    const a = this.args;
    const m = this.model as unknown as { getBaseModel?(): unknown; activePeftConfig?: { r: number; loraAlpha: number; useDora?: boolean; targetModules?: unknown } };
    const base = (m.getBaseModel?.() ?? m) as { nameOrPath?: string; architecture?: string; constructor: { name: string } };
    const model = base.nameOrPath ?? base.architecture ?? base.constructor.name;
    const hp = [`lr ${a.learningRate.toExponential(1)} (${a.lrSchedulerType})`, `batch ${a.perDeviceTrainBatchSize}${a.gradientAccumulationSteps > 1 ? `x${a.gradientAccumulationSteps}` : ''}`, `${this.state.maxSteps} steps`];
    const lora = m.activePeftConfig;
    if (lora) hp.push(`${lora.useDora ? 'DoRA' : 'LoRA'} r=${lora.r} alpha=${lora.loraAlpha}`);
    if (a.weightDecay) hp.push(`wd ${a.weightDecay}`);
    hp.push(`seed ${a.seed}`);
    return { title: `${a.runName ?? path.basename(path.resolve(a.outputDir))} · ${model}`, subtitle: hp.join(', ') };
  }

  private metricKey(): string {
    const m = this.args.metricForBestModel;
    return m.startsWith('eval_') ? m : `eval_${m}`;
  }

  /**
   * Every generator that can change training: the shared default one plus any private Rng a
   * module holds as `rng` (dropout, LoRA dropout, a model built with its own Rng), by module path.
   */
  private rngOwners(): Map<string, Rng> {
    const out = new Map<string, Rng>([['default', defaultRng()]]);
    const seen = new Set<Rng>([defaultRng()]);
    for (const [name, m] of this.model.namedModules()) {
      const r = (m as unknown as { rng?: unknown }).rng;
      if (r instanceof Rng && !seen.has(r)) { seen.add(r); out.set(`module:${name}`, r); }
    }
    return out;
  }

  private rngStates(): Record<string, number[]> {
    return Object.fromEntries([...this.rngOwners()].map(([k, r]) => [k, r.getState()]));
  }

  private restoreRngStates(st: Record<string, number[]>): void {
    for (const [k, r] of this.rngOwners()) {
      if (st[k]) r.setState(st[k]);
      else throw new Error(`checkpoint rng_state.json has no state for ${k}; was it saved from a different model?`);
    }
  }

  /** transformers' _determine_best_metric: track the best eval metric and its step. */
  private determineBestMetric(metrics: LogEntry): void {
    const a = this.args;
    if (!a.metricForBestModel) return;
    const v = metrics[this.metricKey()];
    if (v === undefined) throw new Error(`metricForBestModel '${a.metricForBestModel}' is not among the evaluation metrics (${Object.keys(metrics).join(', ')})`);
    const b = this.state.bestMetric;
    if (b === null || (a.greaterIsBetter ? v > b : v < b)) {
      this.state.bestMetric = v;
      this.state.bestGlobalStep = this.state.globalStep;
    }
  }

  private async saveCheckpoint(_metrics: LogEntry | null): Promise<void> {
    const a = this.args;
    const dir = path.join(a.outputDir, `checkpoint-${this.state.globalStep}`);
    if (this.state.bestGlobalStep === this.state.globalStep) this.state.bestModelCheckpoint = dir;
    for (const cb of this.callbacks) if (cb.name && cb.getState) this.state.statefulCallbacks[cb.name] = cb.getState();
    // Rank 0 writes (atomically); the others wait so that no rank runs ahead of a checkpoint.
    if (this.isMain) {
      await saveCheckpoint(a.outputDir, {
        model: this.model, optimizer: this.optimizer!, scheduler: this.lrScheduler!, state: this.state,
        rng: this.rngStates(), args: { ...a.toJSON(), world_size: this.collective.worldSize },
      });
      rotateCheckpoints(a.outputDir, a.saveTotalLimit, this.state.bestModelCheckpoint);
    }
    await this.collective.barrier();
    this.lastSavedStep = this.state.globalStep;
    for (const cb of this.callbacks) cb.onSave?.({ args: this.args, state: this.state, control: this.control, checkpoint: dir });
    this.emit('save', dir);
  }

  /** Saves the final model (adapter via savePretrained, else trainable weights) to dir. */
  async saveModel(dir = this.args.outputDir): Promise<void> {
    if (!this.isMain) { await this.collective.barrier(); return; }
    try { await this.writeModel(dir); } finally { await this.collective.barrier(); }
  }

  private async writeModel(dir: string): Promise<void> {
    makeDirs(dir);
    if (typeof this.model.savePretrained === 'function') await this.model.savePretrained(dir);
    else {
      const { writeSafetensors } = await import('../io/safetensors.js');
      writeSafetensors(path.join(dir, 'model.safetensors'), new Map(this.trainableParams()));
    }
  }

  /** Runs the model over a dataset without gradients; loss is the example-weighted mean. */
  private async loop(ds: Dataset, wantOutputs: boolean, signal: AbortSignal | null): Promise<{ loss: number | null; logits: Float32Array | null; shape: number[]; labels: Int32Array | null }> {
    const bs = this.args.perDeviceEvalBatchSize;
    const wasTraining = this.model.training;
    this.model.eval();
    let lossSum = 0, n = 0, haveLoss = true;
    const logitParts: { data: Float32Array; shape: number[] }[] = [];
    const labelParts: { data: Int32Array; shape: number[] }[] = [];
    try {
      for (let i = 0; i < ds.length; i += bs) {
        const rows = ds.rows.slice(i, i + bs);
        tidy(() => noGrad(() => {
          const batch = this.dataCollator(rows);
          const out = this.forward(batch, wantOutputs);
          if (out.loss) { lossSum += out.loss.item() * rows.length; n += rows.length; } else haveLoss = false;
          if (wantOutputs) {
            logitParts.push({ data: out.logits.toFloat32Array(), shape: out.logits.shape.slice() });
            if (batch.labels) labelParts.push({ data: Int32Array.from(batch.labels.ints), shape: batch.labels.shape.slice() });
          }
        }));
        const a = { args: this.args, state: this.state, control: this.control, step: Math.min(i + bs, ds.length), total: ds.length };
        for (const cb of this.callbacks) cb.onPredictionStep?.(a);
        await yieldToEventLoop();
        if (signal?.aborted) throw new AbortError('evaluation was aborted', { cause: signal.reason });
      }
    } finally { this.model.train(wasTraining); }
    const loss = haveLoss && n ? lossSum / n : null;
    if (!wantOutputs) return { loss, logits: null, shape: [], labels: null };
    const logits = concatPadded(logitParts, -100);
    const labels = labelParts.length === logitParts.length && labelParts.length ? concatPaddedInt(labelParts, -100) : null;
    return { loss, logits: logits.data, shape: logits.shape, labels: labels?.data ?? null };
  }

  /**
   * Evaluation loss and computeMetrics on evalDataset, keys prefixed "eval_". The event loop
   * runs between batches; opts.signal stops it (AbortError).
   */
  async evaluate(evalDataset?: Dataset | Row[], metricKeyPrefix = 'eval', opts: { signal?: AbortSignal } = {}): Promise<LogEntry> {
    const ds = asDataset(evalDataset) ?? this.evalDataset;
    if (!ds || ds.length === 0) throw new Error('Trainer.evaluate: no evalDataset');
    const t0 = Date.now();
    const r = await this.loop(ds, this.computeMetrics !== undefined, opts.signal ?? this.signal);
    const metrics: LogEntry = {};
    if (r.loss !== null) metrics[`${metricKeyPrefix}_loss`] = r.loss;
    if (this.computeMetrics && r.logits && r.labels) {
      const m = this.computeMetrics({ predictions: r.logits, predictionsShape: r.shape, labels: r.labels, numLabels: r.shape[r.shape.length - 1] });
      for (const [k, v] of Object.entries(m)) metrics[k.startsWith(`${metricKeyPrefix}_`) ? k : `${metricKeyPrefix}_${k}`] = v;
    }
    const rt = (Date.now() - t0) / 1000;
    metrics[`${metricKeyPrefix}_runtime`] = rt;
    metrics[`${metricKeyPrefix}_samples_per_second`] = ds.length / Math.max(rt, 1e-9);
    this.log(metrics);
    for (const cb of this.callbacks) cb.onEvaluate?.({ args: this.args, state: this.state, control: this.control, metrics });
    this.emit('evaluate', metrics);
    return metrics;
  }

  /** Logits (and softmax scores), labels and "test_" metrics over a dataset; the event loop runs between batches. */
  async predict(testDataset: Dataset | Row[], metricKeyPrefix = 'test', opts: { signal?: AbortSignal } = {}): Promise<PredictionOutput> {
    const ds = asDataset(testDataset);
    if (!ds || ds.length === 0) throw new Error('Trainer.predict: empty dataset');
    const r = await this.loop(ds, true, opts.signal ?? null);
    const C = r.shape[r.shape.length - 1];
    const metrics: LogEntry = {};
    if (r.loss !== null) metrics[`${metricKeyPrefix}_loss`] = r.loss;
    if (this.computeMetrics && r.labels) {
      for (const [k, v] of Object.entries(this.computeMetrics({ predictions: r.logits!, predictionsShape: r.shape, labels: r.labels, numLabels: C }))) metrics[`${metricKeyPrefix}_${k}`] = v;
    }
    return { predictions: r.logits!, predictionsShape: r.shape, scores: r.shape.length === 2 ? softmaxRows(r.logits!, C) : null, labels: r.labels, metrics };
  }
}

// Batches of [b, T_i, ...rest] joined along dim 0, padding T to the longest (transformers pads with -100).
function concatPadded(parts: { data: Float32Array; shape: number[] }[], pad: number): { data: Float32Array; shape: number[] } {
  if (parts[0].shape.length <= 1 || parts[0].shape.length === 2) {
    const N = parts.reduce((a, p) => a + p.shape[0], 0);
    const data = new Float32Array(N * (parts[0].shape[1] ?? 1));
    let o = 0;
    for (const p of parts) { data.set(p.data, o); o += p.data.length; }
    return { data, shape: parts[0].shape.length === 1 ? [N] : [N, parts[0].shape[1]] };
  }
  const T = Math.max(...parts.map((p) => p.shape[1]));
  const rest = parts[0].shape.slice(2).reduce((a, b) => a * b, 1);
  const N = parts.reduce((a, p) => a + p.shape[0], 0);
  const data = new Float32Array(N * T * rest).fill(pad);
  let row = 0;
  for (const p of parts) {
    for (let b = 0; b < p.shape[0]; b++, row++) data.set(p.data.subarray(b * p.shape[1] * rest, (b + 1) * p.shape[1] * rest), row * T * rest);
  }
  return { data, shape: [N, T, ...parts[0].shape.slice(2)] };
}

function concatPaddedInt(parts: { data: Int32Array; shape: number[] }[], pad: number): { data: Int32Array; shape: number[] } {
  const f = concatPadded(parts.map((p) => ({ data: Float32Array.from(p.data), shape: p.shape })), pad);
  return { data: Int32Array.from(f.data), shape: f.shape };
}

export { EarlyStoppingCallback };
