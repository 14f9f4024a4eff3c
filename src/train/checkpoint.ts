// Trainer checkpoints: outputDir/checkpoint-<step>/ holding the weights (the adapter through
// model.savePretrained when the model has it, plus the trainable parameters under their own
// names for exact resume), optimizer moments, scheduler, trainer state, RNG states and the
// arguments. A checkpoint is built in a temp folder and renamed into place, so a crash never
// leaves a half-written checkpoint-<step> and the previous one is never touched first.
import * as fs from 'node:fs';
import { makeDirs, readJsonObject } from '../io/files.js';
import * as path from 'node:path';
import { Tensor } from '../tensor/tensor.js';
import { tensor } from '../tensor/ops/basic.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { Module } from '../nn/module.js';
import type { AdamW } from './optim.js';
import type { LRScheduler } from './schedulers.js';
import { TrainerState } from './callbacks.js';

export const PREFIX = 'checkpoint-';
export const TRAINABLE_FILE = 'trainable_params.safetensors';
export const MODEL_FILE = 'model.safetensors';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const OPTIMIZER_META = 'optimizer.json';
export const SCHEDULER_FILE = 'scheduler.json';
export const STATE_FILE = 'trainer_state.json';
export const RNG_FILE = 'rng_state.json';
export const ARGS_FILE = 'training_args.json';

export interface SavableModel extends Module { savePretrained?(dir: string): unknown }

export interface CheckpointParts {
  model: SavableModel;
  optimizer: AdamW;
  scheduler: LRScheduler;
  state: TrainerState;
  rng: Record<string, number[]>;
  args: Record<string, unknown>;
}

function trainable(model: Module): Map<string, Tensor> {
  const m = new Map<string, Tensor>();
  for (const [n, p] of model.namedParameters()) if (p.requiresGrad) m.set(n, p);
  return m;
}

function writeJson(file: string, v: unknown): void { fs.writeFileSync(file, JSON.stringify(v, null, 2) + '\n'); }

function fsyncDir(dir: string): void {
  try { const fd = fs.openSync(dir, 'r'); try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); } } catch { /* not supported everywhere */ }
}

/** Writes outputDir/checkpoint-<step> atomically; returns its path. */
export async function saveCheckpoint(outputDir: string, parts: CheckpointParts): Promise<string> {
  const step = parts.state.globalStep;
  const final = path.join(outputDir, `${PREFIX}${step}`);
  const tmp = path.join(outputDir, `.tmp-${PREFIX}${step}-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const model = parts.model;
  const params = trainable(model);
  if (typeof model.savePretrained === 'function') {
    await model.savePretrained(tmp);
    writeSafetensors(path.join(tmp, TRAINABLE_FILE), params);
  } else {
    writeSafetensors(path.join(tmp, MODEL_FILE), params);
  }
  const st = parts.optimizer.stateDict();
  const opt = new Map<string, Tensor>();
  for (const [n, m] of st.m) opt.set(`exp_avg.${n}`, tensor(m));
  for (const [n, v] of st.v) opt.set(`exp_avg_sq.${n}`, tensor(v));
  writeSafetensors(path.join(tmp, OPTIMIZER_FILE), opt);
  writeJson(path.join(tmp, OPTIMIZER_META), {
    step: st.step, lr: parts.optimizer.lr, betas: [parts.optimizer.beta1, parts.optimizer.beta2], eps: parts.optimizer.eps,
    groups: parts.optimizer.groups.map((g) => ({ weight_decay: g.weightDecay, params: g.params.map(([n]) => n) })),
  });
  writeJson(path.join(tmp, SCHEDULER_FILE), parts.scheduler.stateDict());
  writeJson(path.join(tmp, STATE_FILE), parts.state.toJSON());
  writeJson(path.join(tmp, RNG_FILE), parts.rng);
  writeJson(path.join(tmp, ARGS_FILE), parts.args);
  for (const f of fs.readdirSync(tmp)) {
    const p = path.join(tmp, f);
    if (fs.statSync(p).isFile()) { const fd = fs.openSync(p, 'r'); try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); } }
  }
  fsyncDir(tmp);
  if (fs.existsSync(final)) {
    // Same step saved again (e.g. end of training right after a step save): swap in the new one.
    const old = `${tmp}.old`;
    fs.renameSync(final, old);
    fs.renameSync(tmp, final);
    fs.rmSync(old, { recursive: true, force: true });
  } else fs.renameSync(tmp, final);
  fsyncDir(outputDir);
  return final;
}

/** checkpoint-<n> folders in outputDir (complete ones only), oldest step first. */
export function listCheckpoints(outputDir: string): string[] {
  if (!fs.existsSync(outputDir)) return [];
  return fs.readdirSync(outputDir)
    .filter((d) => new RegExp(`^${PREFIX}\\d+$`).test(d) && fs.existsSync(path.join(outputDir, d, STATE_FILE)))
    .map((d) => [Number(d.slice(PREFIX.length)), path.join(outputDir, d)] as const)
    .sort((a, b) => a[0] - b[0]).map(([, p]) => p);
}

export function lastCheckpoint(outputDir: string): string | null {
  const l = listCheckpoints(outputDir);
  return l.length ? l[l.length - 1] : null;
}

/**
 * transformers' _rotate_checkpoints: keep the newest `limit`, but the best checkpoint is moved
 * just before the newest so it survives (with limit 1 and a best that is not the newest, two stay).
 */
export function rotateCheckpoints(outputDir: string, limit: number | null, best: string | null): string[] {
  if (!limit || limit <= 0) return [];
  const sorted = listCheckpoints(outputDir);
  const bi = best ? sorted.findIndex((p) => path.resolve(p) === path.resolve(best)) : -1;
  if (bi >= 0 && bi < sorted.length - 1) { const [b] = sorted.splice(bi, 1); sorted.splice(sorted.length - 1, 0, b); }
  const keep = limit === 1 && bi >= 0 && path.resolve(sorted[sorted.length - 1]) !== path.resolve(best!) ? 2 : limit;
  const del = sorted.slice(0, Math.max(0, sorted.length - keep));
  for (const d of del) fs.rmSync(d, { recursive: true, force: true });
  return del;
}

/** Loads trainable weights saved by saveCheckpoint into the model (names must match). */
export function loadCheckpointWeights(dir: string, model: Module): void {
  const file = fs.existsSync(path.join(dir, TRAINABLE_FILE)) ? path.join(dir, TRAINABLE_FILE) : path.join(dir, MODEL_FILE);
  if (!fs.existsSync(file)) throw new Error(`checkpoint ${dir} has neither ${TRAINABLE_FILE} nor ${MODEL_FILE}`);
  const saved = readSafetensors(file);
  const params = new Map(model.namedParameters());
  for (const [n, t] of saved) {
    const p = params.get(n);
    if (!p) throw new Error(`checkpoint ${file} has '${n}', which this model does not have`);
    if (p.size !== t.size) throw new Error(`checkpoint ${file}: '${n}' has ${t.size} values, the model's has ${p.size}`);
    p.data.set(t.data);
    t.dispose();
  }
  for (const [n, p] of params) if (p.requiresGrad && !saved.has(n)) throw new Error(`checkpoint ${file} lacks trainable parameter '${n}'`);
}

export function loadOptimizerState(dir: string, opt: AdamW): void {
  const meta = readJsonObject(path.join(dir, OPTIMIZER_META)) as { step: number };
  const ts = readSafetensors(path.join(dir, OPTIMIZER_FILE));
  const m = new Map<string, Float32Array>(), v = new Map<string, Float32Array>();
  for (const [k, t] of ts) {
    if (k.startsWith('exp_avg_sq.')) v.set(k.slice('exp_avg_sq.'.length), t.data.slice());
    else if (k.startsWith('exp_avg.')) m.set(k.slice('exp_avg.'.length), t.data.slice());
    t.dispose();
  }
  opt.loadStateDict({ step: meta.step, m, v });
}

export function readJson<T>(dir: string, file: string): T {
  const p = path.join(dir, file);
  if (!fs.existsSync(p)) throw new Error(`checkpoint ${dir} is missing ${file}`);
  return readJsonObject(p) as T;
}

const TMP_CHECKPOINT = new RegExp(`^\\.tmp-${PREFIX}\\d+-(\\d+)(\\.old)?$`);

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

/**
 * Makes the output folder (with a clear error when it cannot be written), removes the
 * .tmp-checkpoint-* folders a crashed run left (those of live processes are kept), and refuses
 * a fresh run into a folder holding another run's checkpoint-<step> folders unless told to
 * overwrite (they are then deleted, so rotation and a later resume see only this run's) or resume.
 */
export function prepareOutputDir(outputDir: string, o: { resume: boolean; overwrite: boolean }): { removedTemp: string[]; removedCheckpoints: string[] } {
  makeDirs(outputDir);
  const removedTemp: string[] = [];
  for (const d of fs.readdirSync(outputDir)) {
    const m = TMP_CHECKPOINT.exec(d);
    if (m && !processAlive(Number(m[1]))) { fs.rmSync(path.join(outputDir, d), { recursive: true, force: true }); removedTemp.push(d); }
  }
  const existing = listCheckpoints(outputDir);
  if (o.resume || !existing.length) return { removedTemp, removedCheckpoints: [] };
  if (!o.overwrite) {
    throw new Error(`output folder ${outputDir} already holds checkpoints of another run (${existing.map((p) => path.basename(p)).slice(-3).join(', ')}): `
      + 'resume it (resumeFromCheckpoint / --resume), or start over with overwriteOutputDir (--overwrite-output-dir, deletes them), or choose another folder');
  }
  for (const c of existing) fs.rmSync(c, { recursive: true, force: true });
  return { removedTemp, removedCheckpoints: existing };
}
