// A small SVG line chart of the training log: training loss and eval loss against step in one
// panel, each other eval metric in a panel below. No dependencies.
import type { LogEntry } from './callbacks.js';

interface Series { name: string; color: string; pts: [number, number][] }

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (hi === lo) { hi = lo + 1; lo = lo - 1; }
  const step0 = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? step0;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function panel(series: Series[], title: string, y0: number, W: number, H: number, xr: [number, number]): string {
  const pts = series.flatMap((s) => s.pts);
  if (!pts.length) return '';
  const L = 60, R = 20, T = 28, B = 30;
  let [xmin, xmax] = xr;
  let [ymin, ymax] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  if (xmin === xmax) { xmin -= 1; xmax += 1; }
  if (ymin === ymax) { ymin -= Math.abs(ymin) * 0.1 || 1; ymax += Math.abs(ymax) * 0.1 || 1; }
  const X = (x: number) => L + ((x - xmin) / (xmax - xmin)) * (W - L - R);
  const Y = (y: number) => y0 + T + (1 - (y - ymin) / (ymax - ymin)) * (H - T - B);
  const g: string[] = [`<text x="${L}" y="${y0 + 18}" font-size="14">${esc(title)}</text>`];
  g.push(`<rect x="${L}" y="${y0 + T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#999"/>`);
  for (const t of niceTicks(ymin, ymax)) g.push(`<text x="${L - 4}" y="${Y(t) + 4}" text-anchor="end" font-size="10">${t}</text><line x1="${L}" x2="${W - R}" y1="${Y(t)}" y2="${Y(t)}" stroke="#eee"/>`);
  for (const t of niceTicks(xmin, xmax)) g.push(`<text x="${X(t)}" y="${y0 + H - B + 14}" text-anchor="middle" font-size="10">${t}</text>`);
  g.push(`<text x="${W - R}" y="${y0 + H - 2}" text-anchor="end" font-size="10">step</text>`);
  // The legend sits in the header row, right-aligned, outside the plot area: it never covers a line.
  let lx = W - R;
  for (const s of [...series].reverse()) {
    if (!s.pts.length) continue;
    g.push(`<text x="${lx}" y="${y0 + 18}" text-anchor="end" font-size="11" fill="${s.color}" class="legend">${esc(s.name)}</text>`);
    lx -= 7 * s.name.length + 24;
    g.push(`<line x1="${lx + 4}" x2="${lx + 18}" y1="${y0 + 14}" y2="${y0 + 14}" stroke="${s.color}" stroke-width="2"/>`);
    lx -= 8;
  }
  for (const s of series) {
    if (!s.pts.length) continue;
    const d = s.pts.map((p, k) => `${k ? 'L' : 'M'}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ');
    g.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.5"/>`);
    if (s.pts.length < 40) for (const p of s.pts) g.push(`<circle cx="${X(p[0]).toFixed(1)}" cy="${Y(p[1]).toFixed(1)}" r="2" fill="${s.color}"/>`);
  }
  return g.join('\n');
}

export interface CurvesOptions {
  /** First heading line (e.g. run name and model). */
  title?: string;
  /** Second heading line (e.g. the main hyperparameters). */
  subtitle?: string;
  /** Last step of the run: every panel's x axis spans [0, maxSteps] (default: the last logged step). */
  maxSteps?: number;
}

/**
 * SVG text for the log history (loss panel + one panel per eval metric). Every panel shares
 * one x axis range, so a step lines up across panels.
 */
export function trainingCurvesSvg(history: LogEntry[], opts: CurvesOptions = {}): string {
  const get = (k: string): [number, number][] => history.filter((h) => typeof h[k] === 'number' && Number.isFinite(h[k]) && h.step !== undefined).map((h) => [h.step, h[k]]);
  const W = 640, H = 260;
  const steps = history.map((h) => h.step).filter((s) => typeof s === 'number' && Number.isFinite(s));
  const xr: [number, number] = [0, Math.max(opts.maxSteps ?? 0, ...steps, 1)];
  const head = [opts.title, opts.subtitle].filter((t): t is string => Boolean(t));
  const top = head.length ? 10 + 18 * head.length : 0;
  const panels: string[] = head.map((t, i) => `<text x="${W / 2}" y="${20 + 18 * i}" text-anchor="middle" font-size="${i ? 12 : 15}"${i ? '' : ' font-weight="bold"'} class="${i ? 'subtitle' : 'title'}">${esc(t)}</text>`);
  const loss = [{ name: 'train loss', color: COLORS[0], pts: get('loss') }, { name: 'eval loss', color: COLORS[1], pts: get('eval_loss') }];
  panels.push(panel(loss, 'loss', top, W, H, xr));
  const skip = new Set(['eval_loss', 'eval_runtime', 'eval_samples_per_second', 'eval_steps_per_second']);
  const metrics = [...new Set(history.flatMap((h) => Object.keys(h)))].filter((k) => k.startsWith('eval_') && !skip.has(k));
  metrics.forEach((m, i) => panels.push(panel([{ name: m, color: COLORS[(i + 2) % COLORS.length], pts: get(m) }], m, top + H * (i + 1), W, H, xr)));
  const total = top + H * (metrics.length + 1);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${total}" viewBox="0 0 ${W} ${total}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${panels.join('\n')}\n</svg>\n`;
}
