// Classification metrics (as scikit-learn computes them) and perplexity.

function check(pred: ArrayLike<number>, labels: ArrayLike<number>): void {
  if (pred.length !== labels.length) throw new Error(`metrics: ${pred.length} predictions but ${labels.length} labels`);
  if (pred.length === 0) throw new Error('metrics: no examples');
}

export function accuracy(pred: ArrayLike<number>, labels: ArrayLike<number>): number {
  check(pred, labels);
  let ok = 0;
  for (let i = 0; i < pred.length; i++) if (pred[i] === labels[i]) ok++;
  return ok / pred.length;
}

export type Average = 'binary' | 'macro' | 'micro' | 'weighted';

export interface PRF { precision: number; recall: number; f1: number }

/** sklearn's precision_recall_fscore_support with zero_division=0. */
export function precisionRecallF1(pred: ArrayLike<number>, labels: ArrayLike<number>,
  opts: { average?: Average; posLabel?: number } = {}): PRF {
  check(pred, labels);
  const average = opts.average ?? 'binary';
  const classes = [...new Set([...Array.from(pred), ...Array.from(labels)])].sort((a, b) => a - b);
  const stats = (c: number) => {
    let tp = 0, fp = 0, fn = 0, support = 0;
    for (let i = 0; i < pred.length; i++) {
      if (labels[i] === c) support++;
      if (pred[i] === c && labels[i] === c) tp++;
      else if (pred[i] === c) fp++;
      else if (labels[i] === c) fn++;
    }
    return { tp, fp, fn, support };
  };
  const div = (a: number, b: number) => (b === 0 ? 0 : a / b);
  const prf = (tp: number, fp: number, fn: number): PRF => {
    const p = div(tp, tp + fp), r = div(tp, tp + fn);
    return { precision: p, recall: r, f1: div(2 * p * r, p + r) };
  };
  if (average === 'binary') {
    const pos = opts.posLabel ?? 1;
    if (classes.some((c) => c !== 0 && c !== 1 && c !== pos)) throw new Error(`metrics: average 'binary' needs two classes, found ${classes.join(', ')}; use average 'macro'`);
    const s = stats(pos);
    return prf(s.tp, s.fp, s.fn);
  }
  const per = classes.map((c) => ({ ...stats(c) }));
  if (average === 'micro') {
    const t = per.reduce((a, s) => ({ tp: a.tp + s.tp, fp: a.fp + s.fp, fn: a.fn + s.fn }), { tp: 0, fp: 0, fn: 0 });
    return prf(t.tp, t.fp, t.fn);
  }
  const each = per.map((s) => ({ ...prf(s.tp, s.fp, s.fn), support: s.support }));
  const total = each.reduce((a, e) => a + e.support, 0);
  const w = (e: { support: number }) => (average === 'weighted' ? div(e.support, total) : 1 / each.length);
  return {
    precision: each.reduce((a, e) => a + w(e) * e.precision, 0),
    recall: each.reduce((a, e) => a + w(e) * e.recall, 0),
    f1: each.reduce((a, e) => a + w(e) * e.f1, 0),
  };
}

export const f1Score = (p: ArrayLike<number>, l: ArrayLike<number>, average: Average = 'binary') => precisionRecallF1(p, l, { average }).f1;
export const precisionScore = (p: ArrayLike<number>, l: ArrayLike<number>, average: Average = 'binary') => precisionRecallF1(p, l, { average }).precision;
export const recallScore = (p: ArrayLike<number>, l: ArrayLike<number>, average: Average = 'binary') => precisionRecallF1(p, l, { average }).recall;

/** exp(mean token cross-entropy); eval_loss of a causal LM is already that mean. */
export function perplexity(meanLoss: number): number { return Math.exp(meanLoss); }

/** Row-wise argmax of [N, C] logits. */
export function argmax(logits: Float32Array, cols: number): Int32Array {
  const n = logits.length / cols;
  const out = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    let best = 0;
    for (let c = 1; c < cols; c++) if (logits[r * cols + c] > logits[r * cols + best]) best = c;
    out[r] = best;
  }
  return out;
}

/** Row-wise softmax of [N, C] logits (float64 inside). */
export function softmaxRows(logits: Float32Array, cols: number): Float32Array {
  const out = new Float32Array(logits.length);
  for (let r = 0; r < logits.length / cols; r++) {
    let m = -Infinity;
    for (let c = 0; c < cols; c++) m = Math.max(m, logits[r * cols + c]);
    let s = 0;
    for (let c = 0; c < cols; c++) s += Math.exp(logits[r * cols + c] - m);
    for (let c = 0; c < cols; c++) out[r * cols + c] = Math.exp(logits[r * cols + c] - m) / s;
  }
  return out;
}

/** A computeMetrics for classification: accuracy and macro/binary F1. */
export function classificationMetrics(p: { predictions: Float32Array; labels: Int32Array; numLabels: number }): Record<string, number> {
  const pred = argmax(p.predictions, p.numLabels);
  const avg: Average = p.numLabels === 2 ? 'binary' : 'macro';
  return { accuracy: accuracy(pred, p.labels), f1: f1Score(pred, p.labels, avg) };
}
