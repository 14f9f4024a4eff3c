// Trainer state, the control object callbacks steer it with, and the stock callbacks
// (early stopping, progress display). Names follow transformers' TrainerCallback.
import type { TrainingArguments } from './args.js';

export type LogEntry = Record<string, number>;

export class TrainerState {
  globalStep = 0;
  epoch = 0;
  maxSteps = 0;
  numTrainEpochs = 0;
  logHistory: LogEntry[] = [];
  bestMetric: number | null = null;
  bestGlobalStep: number | null = null;
  bestModelCheckpoint: string | null = null;
  trainBatchSize = 0;
  numInputTokensSeen = 0;
  /** Updates skipped for a non-finite loss or gradient (nonFiniteAction 'skip'); not saved. */
  skippedSteps = 0;
  /** Callback states saved with checkpoints (e.g. early stopping patience counter). */
  statefulCallbacks: Record<string, unknown> = {};

  toJSON(): Record<string, unknown> {
    return {
      global_step: this.globalStep, epoch: this.epoch, max_steps: this.maxSteps, num_train_epochs: this.numTrainEpochs,
      log_history: this.logHistory, best_metric: this.bestMetric, best_global_step: this.bestGlobalStep,
      best_model_checkpoint: this.bestModelCheckpoint, train_batch_size: this.trainBatchSize,
      num_input_tokens_seen: this.numInputTokensSeen, stateful_callbacks: this.statefulCallbacks,
    };
  }

  static fromJSON(o: Record<string, unknown>): TrainerState {
    const s = new TrainerState();
    s.globalStep = Number(o.global_step ?? 0);
    s.epoch = Number(o.epoch ?? 0);
    s.maxSteps = Number(o.max_steps ?? 0);
    s.numTrainEpochs = Number(o.num_train_epochs ?? 0);
    s.logHistory = (o.log_history as LogEntry[]) ?? [];
    s.bestMetric = (o.best_metric as number | null) ?? null;
    s.bestGlobalStep = (o.best_global_step as number | null) ?? null;
    s.bestModelCheckpoint = (o.best_model_checkpoint as string | null) ?? null;
    s.trainBatchSize = Number(o.train_batch_size ?? 0);
    s.numInputTokensSeen = Number(o.num_input_tokens_seen ?? 0);
    s.statefulCallbacks = (o.stateful_callbacks as Record<string, unknown>) ?? {};
    return s;
  }
}

export class TrainerControl {
  shouldTrainingStop = false;
  shouldEpochStop = false;
  shouldSave = false;
  shouldEvaluate = false;
  shouldLog = false;
  /** Short aliases the brief's callers may use. */
  get shouldStop(): boolean { return this.shouldTrainingStop; }
  set shouldStop(v: boolean) { this.shouldTrainingStop = v; }
}

export interface CallbackArgs {
  args: TrainingArguments;
  state: TrainerState;
  control: TrainerControl;
}

export interface TrainerCallback {
  /** Used as the key for saved callback state. */
  readonly name?: string;
  onTrainBegin?(a: CallbackArgs): void;
  onEpochBegin?(a: CallbackArgs): void;
  onStepBegin?(a: CallbackArgs): void;
  onStepEnd?(a: CallbackArgs): void;
  onEpochEnd?(a: CallbackArgs): void;
  onLog?(a: CallbackArgs & { logs: LogEntry }): void;
  onEvaluate?(a: CallbackArgs & { metrics: LogEntry }): void;
  /** After each evaluation / prediction batch: rows done so far of total. */
  onPredictionStep?(a: CallbackArgs & { step: number; total: number }): void;
  onSave?(a: CallbackArgs & { checkpoint: string }): void;
  onTrainEnd?(a: CallbackArgs): void;
  /** Saved into trainer_state.json and given back on resume. */
  getState?(): unknown;
  setState?(s: unknown): void;
}

/**
 * transformers' EarlyStoppingCallback: stops when metricForBestModel has not improved by more
 * than threshold for `patience` evaluations in a row.
 */
export class EarlyStoppingCallback implements TrainerCallback {
  readonly name = 'EarlyStoppingCallback';
  private bad = 0;
  constructor(readonly patience = 1, readonly threshold = 0) {
    if (!Number.isInteger(patience) || patience < 1) throw new Error(`EarlyStoppingCallback: patience must be a positive integer, got ${patience}`);
  }
  onTrainBegin({ args }: CallbackArgs): void {
    if (!args.metricForBestModel) throw new Error('EarlyStoppingCallback needs metricForBestModel (or loadBestModelAtEnd)');
    if (args.evalStrategy === 'no') throw new Error('EarlyStoppingCallback needs an evalStrategy other than "no"');
  }
  onEvaluate({ args, state, control, metrics }: CallbackArgs & { metrics: LogEntry }): void {
    const key = args.metricForBestModel.startsWith('eval_') ? args.metricForBestModel : `eval_${args.metricForBestModel}`;
    const v = metrics[key];
    if (v === undefined) throw new Error(`EarlyStoppingCallback: metric '${key}' not in the evaluation results (${Object.keys(metrics).join(', ')})`);
    const better = (a: number, b: number) => (args.greaterIsBetter ? a > b : a < b);
    // Compared with the best seen before this evaluation (the trainer updates it afterwards).
    if (state.bestMetric === null || (better(v, state.bestMetric) && Math.abs(v - state.bestMetric) > this.threshold)) this.bad = 0;
    else this.bad++;
    if (this.bad >= this.patience) control.shouldTrainingStop = true;
  }
  getState(): unknown { return { patienceCounter: this.bad }; }
  setState(s: unknown): void { this.bad = (s as { patienceCounter?: number })?.patienceCounter ?? 0; }
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '?';
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return `${h ? h + ':' : ''}${String(m).padStart(h ? 2 : 1, '0')}:${String(sec).padStart(2, '0')}`;
}

/**
 * One log value as the console shows it, the same way every time: epoch with 2 decimals,
 * learning rate in exponent form, counts as integers, rates with 1 decimal, losses and
 * metrics with 4.
 */
export function formatLogValue(key: string, v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (key === 'epoch') return v.toFixed(2);
  if (key === 'step' || key.endsWith('_steps') || key === 'total_flos') return String(Math.round(v));
  if (key.includes('learning_rate')) return v.toExponential(2);
  if (key.endsWith('per_second')) return v.toFixed(1);
  if (key.endsWith('runtime')) return v.toFixed(2);
  return v.toFixed(4);
}

/** `k=v k=v ...` of a log entry (without step, which the caller prints). */
export function formatLogEntry(logs: LogEntry): string {
  return Object.entries(logs).filter(([k]) => k !== 'step').map(([k, v]) => `${k}=${formatLogValue(k, v)}`).join(' ');
}

/**
 * Progress on stderr. On a TTY: a bar redrawn in place (step/total, loss, it/s, tokens/s,
 * ETA) with every log line (training and evaluation) printed above it, and an
 * "evaluating rows/total" notice on the bar while evaluation runs. Elsewhere: one plain line
 * per log. disableTqdm silences both. it/s and the ETA count training-step time only, so an
 * evaluation does not make them jump.
 */
export class ProgressCallback implements TrainerCallback {
  readonly name = 'ProgressCallback';
  private stepStart = 0;
  private stepSeconds = 0;
  private startStep = 0;
  private tokensAtStart = 0;
  private lastLoss: number | null = null;
  private barShown = false;
  constructor(private readonly stream: NodeJS.WriteStream | { write(s: string): unknown; isTTY?: boolean } = process.stderr) {}
  private get tty(): boolean { return Boolean((this.stream as { isTTY?: boolean }).isTTY); }
  onTrainBegin({ state }: CallbackArgs): void {
    this.stepSeconds = 0; this.startStep = state.globalStep; this.tokensAtStart = state.numInputTokensSeen; this.barShown = false;
  }
  onStepBegin(): void { this.stepStart = performance.now(); }
  onStepEnd({ args, state }: CallbackArgs): void {
    this.stepSeconds += (performance.now() - this.stepStart) / 1000;
    if (args.disableTqdm || !this.tty) return;
    this.drawBar(state, this.stepsLine(state));
  }
  private bar(state: TrainerState): string {
    const frac = state.maxSteps ? state.globalStep / state.maxSteps : 0;
    const w = 24, fill = Math.round(frac * w);
    return `${'█'.repeat(fill)}${'░'.repeat(w - fill)} ${state.globalStep}/${state.maxSteps}`;
  }
  private stepsLine(state: TrainerState): string {
    const done = state.globalStep - this.startStep;
    const t = Math.max(this.stepSeconds, 1e-9);
    const rate = done / t;
    const tps = (state.numInputTokensSeen - this.tokensAtStart) / t;
    const loss = this.lastLoss === null ? '' : ` loss ${this.lastLoss.toFixed(4)}`;
    return `${loss} ${rate.toFixed(2)} it/s ${tps.toFixed(0)} tok/s ETA ${fmtTime((state.maxSteps - state.globalStep) / rate)}`;
  }
  private drawBar(state: TrainerState, tail: string): void {
    this.stream.write(`\r${this.bar(state)}${tail}\x1b[K`);
    this.barShown = true;
  }
  onPredictionStep({ args, state, step, total }: CallbackArgs & { step: number; total: number }): void {
    // Only while training: a standalone evaluate() has no bar to annotate.
    if (args.disableTqdm || !this.tty || !this.barShown) return;
    this.drawBar(state, ` evaluating ${step}/${total}…`);
  }
  onLog({ args, state, logs }: CallbackArgs & { logs: LogEntry }): void {
    if (logs.loss !== undefined) this.lastLoss = logs.loss;
    if (args.disableTqdm) return;
    const line = `[step ${state.globalStep}/${state.maxSteps}] ${formatLogEntry(logs)}`;
    if (!this.tty) { this.stream.write(line + '\n'); return; }
    // Above the bar: clear its line, print, redraw it underneath.
    this.stream.write(`\r\x1b[K${line}\n`);
    if (this.barShown) this.drawBar(state, this.stepsLine(state));
  }
  onTrainEnd({ args }: CallbackArgs): void {
    if (!args.disableTqdm && this.tty && this.barShown) this.stream.write('\n');
    this.barShown = false;
  }
}
