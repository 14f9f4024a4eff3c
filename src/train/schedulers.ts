// Learning-rate schedules with the formulas of transformers.get_scheduler: the lr at
// optimizer step s (0-based, the lr used for that step) is baseLr * lambda(s).

export type SchedulerType = 'linear' | 'cosine' | 'cosine_with_restarts' | 'polynomial' | 'constant'
  | 'constant_with_warmup' | 'inverse_sqrt' | 'cosine_with_min_lr';

export const SCHEDULER_TYPES: SchedulerType[] = ['linear', 'cosine', 'cosine_with_restarts', 'polynomial',
  'constant', 'constant_with_warmup', 'inverse_sqrt', 'cosine_with_min_lr'];

export interface SchedulerOptions {
  numWarmupSteps?: number;
  numTrainingSteps?: number;
  /** cosine: 0.5 (half a wave); cosine_with_restarts: 1. */
  numCycles?: number;
  /** polynomial */
  power?: number;
  lrEnd?: number;
  /** inverse_sqrt */
  timescale?: number;
  /** cosine_with_min_lr: minimum as a fraction of the base lr. */
  minLrRate?: number;
  minLr?: number;
}

/** The multiplier lambda(step) for a schedule. */
export function lrLambda(type: SchedulerType, baseLr: number, o: SchedulerOptions): (step: number) => number {
  const W = o.numWarmupSteps ?? 0;
  const needT = (): number => {
    if (o.numTrainingSteps === undefined) throw new Error(`scheduler '${type}' needs numTrainingSteps`);
    return o.numTrainingSteps;
  };
  const warm = (s: number) => s / Math.max(1, W);
  switch (type) {
    case 'constant': return () => 1;
    case 'constant_with_warmup': return (s) => (s < W ? warm(s) : 1);
    case 'linear': {
      const T = needT();
      return (s) => (s < W ? warm(s) : Math.max(0, (T - s) / Math.max(1, T - W)));
    }
    case 'cosine':
    case 'cosine_with_min_lr': {
      const T = needT();
      const cycles = o.numCycles ?? 0.5;
      let minRate = 0;
      if (type === 'cosine_with_min_lr') {
        if (o.minLr !== undefined) minRate = o.minLr / baseLr;
        else if (o.minLrRate !== undefined) minRate = o.minLrRate;
        else throw new Error("cosine_with_min_lr needs minLr or minLrRate");
      }
      return (s) => {
        if (s < W) return warm(s);
        const progress = (s - W) / Math.max(1, T - W);
        const f = 0.5 * (1 + Math.cos(Math.PI * cycles * 2 * progress));
        return Math.max(0, f * (1 - minRate) + minRate);
      };
    }
    case 'cosine_with_restarts': {
      const T = needT();
      const cycles = o.numCycles ?? 1;
      return (s) => {
        if (s < W) return warm(s);
        const progress = (s - W) / Math.max(1, T - W);
        if (progress >= 1) return 0;
        return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * ((cycles * progress) % 1))));
      };
    }
    case 'polynomial': {
      const T = needT();
      const power = o.power ?? 1, lrEnd = o.lrEnd ?? 1e-7;
      if (!(baseLr > lrEnd)) throw new Error(`polynomial schedule: lrEnd (${lrEnd}) must be smaller than the learning rate (${baseLr})`);
      return (s) => {
        if (s < W) return warm(s);
        if (s > T) return lrEnd / baseLr;
        const pct = 1 - (s - W) / (T - W);
        return ((baseLr - lrEnd) * pct ** power + lrEnd) / baseLr;
      };
    }
    case 'inverse_sqrt': {
      const ts = o.timescale ?? (W || 10000);
      return (s) => {
        if (s < W) return warm(s);
        const shift = ts - W;
        return 1 / Math.sqrt((s + shift) / ts);
      };
    }
    default:
      throw new Error(`unknown lrSchedulerType '${type as string}' (known: ${SCHEDULER_TYPES.join(', ')})`);
  }
}

/** torch LambdaLR over one base lr: lr() is the lr for the next optimizer step. */
export class LRScheduler {
  lastStep = 0;
  private readonly f: (s: number) => number;
  constructor(readonly type: SchedulerType, readonly baseLr: number, readonly options: SchedulerOptions = {}) {
    this.f = lrLambda(type, baseLr, options);
  }
  lr(): number { return this.baseLr * this.f(this.lastStep); }
  step(): void { this.lastStep++; }
  stateDict(): { lastStep: number; type: SchedulerType; baseLr: number } { return { lastStep: this.lastStep, type: this.type, baseLr: this.baseLr }; }
  loadStateDict(s: { lastStep: number }): void { this.lastStep = s.lastStep; }
}

/** transformers TrainingArguments.get_warmup_steps: warmupSteps >= 1 is a count, < 1 a ratio. */
export function warmupStepsFor(totalSteps: number, warmupSteps = 0, warmupRatio = 0): number {
  if (warmupSteps >= 1) return Math.floor(warmupSteps);
  const r = warmupSteps > 0 ? warmupSteps : warmupRatio;
  return Math.ceil(totalSteps * r);
}
