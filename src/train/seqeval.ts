// Entity-level precision / recall / F1 over BIO (IOB2) tag sequences, as seqeval computes them
// in its default (conlleval) mode, plus the token-classification computeMetrics built on it.
import { argmax } from './metrics.js';

export interface Entity { type: string; start: number; end: number }

function split(tag: string): { prefix: string; type: string } {
  if (tag === 'O' || tag === '') return { prefix: 'O', type: '' };
  const m = /^([BIESL])[-_](.*)$/.exec(tag);
  // A tag without a prefix is an entity type of its own, continued like I- (conlleval).
  return m ? { prefix: m[1] === 'L' ? 'E' : m[1], type: m[2] } : { prefix: 'I', type: tag };
}

/**
 * Entity spans [start, end] (inclusive) of one tag sequence. conlleval's rules: a chunk ends
 * before B/S/O or a type change, and after E/S; an I- that follows O or another type starts
 * a chunk (seqeval's default, lenient mode).
 */
export function getEntities(tags: string[]): Entity[] {
  const out: Entity[] = [];
  let prev = { prefix: 'O', type: '' }, start = -1;
  const close = (end: number) => { if (start >= 0) out.push({ type: prev.type, start, end }); start = -1; };
  tags.forEach((tag, i) => {
    const cur = split(tag);
    const endsBefore = prev.prefix === 'E' || prev.prefix === 'S'
      || (prev.prefix !== 'O' && (cur.prefix === 'B' || cur.prefix === 'S' || cur.prefix === 'O' || cur.type !== prev.type));
    if (endsBefore) close(i - 1);
    const starts = cur.prefix === 'B' || cur.prefix === 'S'
      || (cur.prefix !== 'O' && (prev.prefix === 'O' || prev.prefix === 'E' || prev.prefix === 'S' || cur.type !== prev.type));
    if (starts) { close(i - 1); start = i; }
    prev = cur;
  });
  close(tags.length - 1);
  return out;
}

export interface EntityScores { precision: number; recall: number; f1: number; perType: Record<string, { precision: number; recall: number; f1: number; support: number }> }

const prf = (tp: number, np: number, nt: number) => {
  const precision = np ? tp / np : 0, recall = nt ? tp / nt : 0;
  return { precision, recall, f1: precision + recall ? (2 * precision * recall) / (precision + recall) : 0 };
};

/** Micro-averaged entity scores over sentences (seqeval's classification_report "micro avg"). */
export function entityScores(trueSeqs: string[][], predSeqs: string[][]): EntityScores {
  if (trueSeqs.length !== predSeqs.length) throw new Error(`entityScores: ${trueSeqs.length} true sequences but ${predSeqs.length} predicted`);
  let tp = 0, np = 0, nt = 0;
  const byType: Record<string, { tp: number; np: number; nt: number }> = {};
  const t = (k: string) => (byType[k] ??= { tp: 0, np: 0, nt: 0 });
  trueSeqs.forEach((ts, s) => {
    if (ts.length !== predSeqs[s].length) throw new Error(`entityScores: sequence ${s} has ${ts.length} true tags but ${predSeqs[s].length} predicted`);
    const key = (e: Entity) => `${e.type}\u0000${e.start}\u0000${e.end}`;
    const te = getEntities(ts), pe = getEntities(predSeqs[s]);
    const trueKeys = new Set(te.map(key));
    for (const e of te) t(e.type).nt++;
    for (const e of pe) { t(e.type).np++; if (trueKeys.has(key(e))) { t(e.type).tp++; tp++; } }
    np += pe.length; nt += te.length;
  });
  const perType: EntityScores['perType'] = {};
  for (const [k, v] of Object.entries(byType).sort()) perType[k] = { ...prf(v.tp, v.np, v.nt), support: v.nt };
  return { ...prf(tp, np, nt), perType };
}

/** True when the label names look like BIO tags, so entity scores mean something. */
export const isBioScheme = (names: string[]): boolean => names.some((n) => /^[BI][-_]/.test(n));

/**
 * computeMetrics for token classification ([N, T, C] logits, [N, T] labels, -100 ignored):
 * token accuracy, and with BIO label names seqeval's entity-level precision / recall / F1.
 */
export function tokenClassificationMetrics(id2label: Record<string, string> | string[]) {
  const name = (i: number) => (Array.isArray(id2label) ? id2label[i] : id2label[String(i)]) ?? `LABEL_${i}`;
  const names = Array.isArray(id2label) ? id2label : Object.values(id2label);
  return (p: { predictions: Float32Array; predictionsShape?: number[]; labels: Int32Array; numLabels: number }): Record<string, number> => {
    const C = p.numLabels;
    const pred = argmax(p.predictions, C);
    if (pred.length !== p.labels.length) throw new Error(`tokenClassificationMetrics: ${pred.length} predicted tokens but ${p.labels.length} labels`);
    const T = p.predictionsShape && p.predictionsShape.length === 3 ? p.predictionsShape[1] : p.labels.length;
    let right = 0, total = 0;
    const trueSeqs: string[][] = [], predSeqs: string[][] = [];
    for (let s = 0; s < p.labels.length / T; s++) {
      const ts: string[] = [], ps: string[] = [];
      for (let j = s * T; j < (s + 1) * T; j++) {
        if (p.labels[j] === -100) continue;
        total++; if (pred[j] === p.labels[j]) right++;
        ts.push(name(p.labels[j])); ps.push(name(pred[j]));
      }
      trueSeqs.push(ts); predSeqs.push(ps);
    }
    const out: Record<string, number> = { accuracy: total ? right / total : 0 };
    if (isBioScheme(names)) {
      const e = entityScores(trueSeqs, predSeqs);
      Object.assign(out, { precision: e.precision, recall: e.recall, f1: e.f1 });
    }
    return out;
  };
}
