// TrainingArguments: transformers' names in camelCase, the same defaults, validated once.
import type { SchedulerType } from './schedulers.js';
import { SCHEDULER_TYPES } from './schedulers.js';
import { launcherWorld } from './distributed.js';

export type IntervalStrategy = 'no' | 'steps' | 'epoch';

export interface TrainingArgumentsInit {
  outputDir: string;
  overwriteOutputDir?: boolean;
  perDeviceTrainBatchSize?: number;
  perDeviceEvalBatchSize?: number;
  gradientAccumulationSteps?: number;
  numTrainEpochs?: number;
  /** > 0 overrides numTrainEpochs. */
  maxSteps?: number;
  learningRate?: number;
  weightDecay?: number;
  adamBeta1?: number;
  adamBeta2?: number;
  adamEpsilon?: number;
  maxGradNorm?: number;
  lrSchedulerType?: SchedulerType;
  lrSchedulerKwargs?: Record<string, number>;
  /** A count (>= 1) or, as in transformers 5, a ratio of the total steps (< 1). */
  warmupSteps?: number;
  warmupRatio?: number;
  loggingSteps?: number;
  loggingFirstStep?: boolean;
  evalStrategy?: IntervalStrategy;
  evalSteps?: number;
  saveStrategy?: IntervalStrategy;
  saveSteps?: number;
  saveTotalLimit?: number | null;
  loadBestModelAtEnd?: boolean;
  metricForBestModel?: string;
  greaterIsBetter?: boolean;
  seed?: number;
  dataSeed?: number;
  gradientCheckpointing?: boolean;
  /**
   * Mixed precision as transformers' bf16=True (torch.autocast bfloat16): the GEMMs of the
   * forward and backward (training, evaluate, predict) take bf16 operands and accumulate in
   * float32; weights, optimizer state, norms, softmax and the loss stay float32.
   */
  bf16?: boolean;
  /** Accepted and recorded; compute stays float32 (no fp16 autocast here). */
  fp16?: boolean;
  resumeFromCheckpoint?: string | boolean | null;
  /** 'jsonl' writes outputDir/trainer_log.jsonl (also the default); 'none' turns it off. */
  reportTo?: ('jsonl' | 'none')[] | 'jsonl' | 'none';
  disableTqdm?: boolean;
  dataloaderDropLast?: boolean;
  removeUnusedColumns?: boolean;
  /** SVG chart of loss / eval metrics in outputDir (default true). */
  plotCurves?: boolean;
  /** Names the run in the chart's title (transformers' run_name; default: the output folder's name). */
  runName?: string | null;
  /** A NaN / Inf loss or gradient norm: 'error' stops training (default), 'skip' skips that update. */
  nonFiniteAction?: 'error' | 'skip';
}

export class TrainingArguments {
  outputDir: string;
  overwriteOutputDir = false;
  perDeviceTrainBatchSize = 8;
  perDeviceEvalBatchSize = 8;
  gradientAccumulationSteps = 1;
  numTrainEpochs = 3;
  maxSteps = -1;
  learningRate = 5e-5;
  weightDecay = 0;
  adamBeta1 = 0.9;
  adamBeta2 = 0.999;
  adamEpsilon = 1e-8;
  maxGradNorm = 1.0;
  lrSchedulerType: SchedulerType = 'linear';
  lrSchedulerKwargs: Record<string, number> = {};
  warmupSteps = 0;
  warmupRatio = 0;
  loggingSteps = 500;
  loggingFirstStep = false;
  evalStrategy: IntervalStrategy = 'no';
  evalSteps = 0;
  saveStrategy: IntervalStrategy = 'steps';
  saveSteps = 500;
  saveTotalLimit: number | null = null;
  loadBestModelAtEnd = false;
  metricForBestModel = '';
  greaterIsBetter = false;
  seed = 42;
  dataSeed: number | null = null;
  gradientCheckpointing = false;
  bf16 = false;
  fp16 = false;
  resumeFromCheckpoint: string | boolean | null = null;
  reportTo: ('jsonl' | 'none')[] = ['jsonl'];
  disableTqdm = false;
  dataloaderDropLast = false;
  removeUnusedColumns = true;
  plotCurves = true;
  runName: string | null = null;
  nonFiniteAction: 'error' | 'skip' = 'error';

  constructor(init: TrainingArgumentsInit) {
    const unknown = Object.keys(init).filter((k) => !(k in this) && k !== 'outputDir');
    if (unknown.length) throw new Error(`TrainingArguments: unknown option(s) ${unknown.join(', ')}`);
    Object.assign(this, init);
    this.outputDir = init.outputDir;
    if (typeof init.reportTo === 'string') this.reportTo = [init.reportTo];
    if (!this.outputDir) throw new Error('TrainingArguments: outputDir is required');
    const posInt = (n: string, v: number) => { if (!Number.isInteger(v) || v < 1) throw new Error(`TrainingArguments: ${n} must be a positive integer, got ${v}`); };
    posInt('perDeviceTrainBatchSize', this.perDeviceTrainBatchSize);
    posInt('perDeviceEvalBatchSize', this.perDeviceEvalBatchSize);
    posInt('gradientAccumulationSteps', this.gradientAccumulationSteps);
    if (!(this.learningRate >= 0)) throw new Error(`TrainingArguments: learningRate must be >= 0, got ${this.learningRate}`);
    if (!SCHEDULER_TYPES.includes(this.lrSchedulerType)) throw new Error(`TrainingArguments: unknown lrSchedulerType '${this.lrSchedulerType}' (known: ${SCHEDULER_TYPES.join(', ')})`);
    if (this.warmupSteps < 0 || this.warmupRatio < 0 || this.warmupRatio > 1) throw new Error('TrainingArguments: warmupSteps must be >= 0 and warmupRatio in [0, 1]');
    if (this.maxSteps <= 0 && !(this.numTrainEpochs > 0)) throw new Error('TrainingArguments: set numTrainEpochs > 0 or maxSteps > 0');
    for (const [n, v] of [['evalStrategy', this.evalStrategy], ['saveStrategy', this.saveStrategy]] as const) {
      if (!['no', 'steps', 'epoch'].includes(v)) throw new Error(`TrainingArguments: ${n} must be 'no', 'steps' or 'epoch', got '${v}'`);
    }
    // transformers: eval_steps defaults to logging_steps when evaluating by steps.
    if (this.evalStrategy === 'steps' && !this.evalSteps) this.evalSteps = this.loggingSteps;
    if (this.loadBestModelAtEnd) {
      if (this.evalStrategy === 'no') throw new Error('TrainingArguments: loadBestModelAtEnd needs an evalStrategy other than "no"');
      if (this.saveStrategy !== this.evalStrategy) throw new Error(`TrainingArguments: loadBestModelAtEnd needs saveStrategy (${this.saveStrategy}) to match evalStrategy (${this.evalStrategy})`);
      if (this.saveStrategy === 'steps' && this.saveSteps % this.evalSteps !== 0) throw new Error(`TrainingArguments: loadBestModelAtEnd needs saveSteps (${this.saveSteps}) to be a multiple of evalSteps (${this.evalSteps})`);
      if (!this.metricForBestModel) this.metricForBestModel = 'loss';
    }
    if (this.metricForBestModel && init.greaterIsBetter === undefined) {
      const m = this.metricForBestModel.replace(/^eval_/, '');
      this.greaterIsBetter = !(m === 'loss' || m.endsWith('loss'));
    }
    if (this.saveTotalLimit !== null && !(Number.isInteger(this.saveTotalLimit) && this.saveTotalLimit >= 1)) {
      throw new Error(`TrainingArguments: saveTotalLimit must be a positive integer or null, got ${this.saveTotalLimit}`);
    }
    if (this.nonFiniteAction !== 'error' && this.nonFiniteAction !== 'skip') throw new Error(`TrainingArguments: nonFiniteAction must be 'error' or 'skip', got '${String(this.nonFiniteAction)}'`);
    for (const [n, v] of [['learningRate', this.learningRate], ['weightDecay', this.weightDecay], ['maxGradNorm', this.maxGradNorm], ['numTrainEpochs', this.numTrainEpochs], ['maxSteps', this.maxSteps]] as const) {
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`TrainingArguments: ${n} must be a finite number, got ${String(v)}`);
    }
    if (this.bf16 && this.fp16) throw new Error('TrainingArguments: bf16 and fp16 cannot both be set');
  }

  /** A warning when a precision flag is not honoured (fp16: compute stays float32); null otherwise. */
  get computeDtypeNote(): string | null {
    return this.fp16 ? 'fp16 requested: compute stays float32 (use bf16 for mixed precision); the flag is recorded' : null;
  }

  /** Processes in the job (mpirun -np N), read from the launcher's environment as transformers does. */
  get worldSize(): number { return launcherWorld()?.size ?? 1; }
  /** This process's rank in the job (0 alone). */
  get processIndex(): number { return launcherWorld()?.rank ?? 0; }
  /** Its rank among the processes of its machine. */
  get localProcessIndex(): number { return launcherWorld()?.localRank ?? 0; }
  /** The one process that logs and writes. */
  get shouldSave(): boolean { return this.processIndex === 0; }
  /** Samples per optimizer step over the whole job: per-device batch x world size x accumulation. */
  get globalBatchSize(): number { return this.perDeviceTrainBatchSize * this.worldSize * this.gradientAccumulationSteps; }

  toJSON(): Record<string, unknown> {
    const o: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(this)) o[k] = v;
    return o;
  }
}
