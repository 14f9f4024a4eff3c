// A small in-memory table of rows (like datasets.Dataset): load from JSONL / JSON / CSV,
// map, filter, shuffle, split. Every row keeps where it came from (file and line) so that
// later errors (tokenization, labels) can point at it.
import * as fs from 'node:fs';
import { readTextFile } from '../io/files.js';
import * as path from 'node:path';
import { Rng } from '../tensor/random.js';
import { parseCsv } from './csv.js';

export type Row = Record<string, unknown>;

export class Dataset<R extends Row = Row> {
  readonly rows: R[];
  /** Per row: "file:line" or "row i" (used in error messages). */
  readonly origins: string[];

  constructor(rows: R[], origins?: string[]) {
    this.rows = rows;
    this.origins = origins ?? rows.map((_, i) => `row ${i}`);
    if (this.origins.length !== rows.length) throw new Error('Dataset: origins and rows differ in length');
  }

  static fromList<R extends Row>(rows: R[]): Dataset<R> { return new Dataset(rows.slice()); }

  get length(): number { return this.rows.length; }
  get numRows(): number { return this.rows.length; }
  at(i: number): R {
    if (i < 0 || i >= this.rows.length) throw new RangeError(`row ${i} out of range (dataset has ${this.rows.length} rows)`);
    return this.rows[i];
  }
  /** Where row i came from, for messages. */
  where(i: number): string { return this.origins[i]; }
  [Symbol.iterator](): Iterator<R> { return this.rows[Symbol.iterator](); }

  /** Column names (union over rows, in first-seen order). */
  get columnNames(): string[] {
    const s = new Set<string>();
    for (const r of this.rows) for (const k of Object.keys(r)) s.add(k);
    return [...s];
  }

  column<K extends keyof R>(name: K): R[K][] { return this.rows.map((r) => r[name]); }

  /** fn errors are re-thrown naming the row. */
  map<S extends Row>(fn: (row: R, i: number) => S): Dataset<S> {
    return new Dataset(this.rows.map((r, i) => withOrigin(this.origins[i], () => fn(r, i))), this.origins.slice());
  }

  /** Like map, but fn returns any number of rows (used by packing). */
  flatMap<S extends Row>(fn: (row: R, i: number) => S[]): Dataset<S> {
    const rows: S[] = [], origins: string[] = [];
    this.rows.forEach((r, i) => { for (const s of withOrigin(this.origins[i], () => fn(r, i))) { rows.push(s); origins.push(this.origins[i]); } });
    return new Dataset(rows, origins);
  }

  filter(fn: (row: R, i: number) => boolean): Dataset<R> {
    const keep = this.rows.map((r, i) => fn(r, i));
    return new Dataset(this.rows.filter((_, i) => keep[i]), this.origins.filter((_, i) => keep[i]));
  }

  select(indices: number[]): Dataset<R> {
    return new Dataset(indices.map((i) => this.at(i)), indices.map((i) => this.origins[i]));
  }

  shuffle(seed = 42): Dataset<R> {
    return this.select(new Rng(seed).shuffle([...this.rows.keys()]));
  }

  removeColumns(names: string[]): Dataset<Row> {
    return this.map((r) => { const o: Row = { ...r }; for (const n of names) delete o[n]; return o; });
  }

  trainTestSplit(opts: SplitOptions): { train: Dataset<R>; test: Dataset<R> } { return trainTestSplit(this, opts); }

  /** Throws (naming the first row that lacks one) unless every row has these columns. */
  requireColumns(names: string[]): void {
    for (let i = 0; i < this.rows.length; i++) {
      for (const n of names) {
        const v = this.rows[i][n];
        if (v === undefined || v === null) {
          throw new Error(`${this.origins[i]}: missing column '${n}' (columns here: ${Object.keys(this.rows[i]).join(', ') || 'none'})`);
        }
      }
    }
  }
}

function withOrigin<T>(origin: string, fn: () => T): T {
  try { return fn(); } catch (e) {
    const err = e as Error;
    if (err && typeof err.message === 'string' && !err.message.startsWith(origin)) err.message = `${origin}: ${err.message}`;
    throw err;
  }
}

export interface SplitOptions {
  /** Fraction (0..1) or a row count. */
  testSize: number;
  seed?: number;
  shuffle?: boolean;
}

/** datasets' train_test_split: shuffle (seeded) and cut; the test part gets ceil(n * testSize) rows. */
export function trainTestSplit<R extends Row>(ds: Dataset<R>, opts: SplitOptions): { train: Dataset<R>; test: Dataset<R> } {
  const n = ds.length;
  const nTest = opts.testSize < 1 ? Math.ceil(n * opts.testSize) : Math.floor(opts.testSize);
  if (!(opts.testSize > 0) || nTest >= n || nTest < 1) {
    throw new Error(`trainTestSplit: testSize ${opts.testSize} leaves no rows for ${nTest < 1 ? 'test' : 'train'} (dataset has ${n} rows)`);
  }
  const idx = [...Array(n).keys()];
  if (opts.shuffle !== false) new Rng(opts.seed ?? 42).shuffle(idx);
  return { test: ds.select(idx.slice(0, nTest)), train: ds.select(idx.slice(nTest)) };
}

export type DataFormat = 'jsonl' | 'json' | 'csv' | 'tsv';

export interface LoadOptions {
  format?: DataFormat;
  /** For 'json' files shaped {"data": [...]}: the key holding the rows. */
  field?: string;
}

/** Loads rows from a .jsonl / .json / .csv / .tsv file (format from the extension unless given). */
export function loadDataset(file: string, opts: LoadOptions = {}): Dataset {
  if (!fs.existsSync(file)) throw new Error(`loadDataset: no such file ${file}`);
  const ext = path.extname(file).toLowerCase().slice(1);
  const format = opts.format ?? (ext === 'jsonl' || ext === 'ndjson' ? 'jsonl' : ext === 'json' ? 'json' : ext === 'csv' ? 'csv' : ext === 'tsv' ? 'tsv' : null);
  if (!format) throw new Error(`loadDataset: cannot tell the format of ${file} from its extension; pass {format: 'jsonl' | 'json' | 'csv'}`);
  const text = readTextFile(file);
  let ds: Dataset;
  if (format === 'jsonl') ds = fromJsonl(text, file);
  else if (format === 'json') ds = fromJson(text, file, opts.field);
  else ds = fromCsv(text, file, format === 'tsv' ? '\t' : ',');
  if (ds.length === 0) throw new Error(`loadDataset: ${file} holds no rows`);
  return ds;
}

function fromJsonl(text: string, file: string): Dataset {
  const rows: Row[] = [], origins: string[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((l, i) => {
    if (!l.trim()) return;
    let v: unknown;
    try { v = JSON.parse(l); } catch (e) { throw new Error(`${file}:${i + 1}: invalid JSON (${(e as Error).message})`); }
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${file}:${i + 1}: each line must be a JSON object, got ${Array.isArray(v) ? 'an array' : typeof v}`);
    rows.push(v as Row); origins.push(`${file}:${i + 1}`);
  });
  return new Dataset(rows, origins);
}

function fromJson(text: string, file: string, field?: string): Dataset {
  let v: unknown;
  try { v = JSON.parse(text); } catch (e) { throw new Error(`${file}: invalid JSON (${(e as Error).message})`); }
  if (field !== undefined) {
    if (!v || typeof v !== 'object' || !(field in (v as object))) throw new Error(`${file}: no field '${field}' at the top level`);
    v = (v as Record<string, unknown>)[field];
  }
  if (Array.isArray(v)) {
    v.forEach((r, i) => { if (!r || typeof r !== 'object' || Array.isArray(r)) throw new Error(`${file}: row ${i} must be an object`); });
    return new Dataset(v as Row[], v.map((_, i) => `${file} row ${i}`));
  }
  if (v && typeof v === 'object') {
    // Columnar {"text": [...], "label": [...]}
    const cols = Object.entries(v as Record<string, unknown>);
    if (cols.every(([, c]) => Array.isArray(c))) {
      const n = (cols[0]?.[1] as unknown[] | undefined)?.length ?? 0;
      for (const [k, c] of cols) if ((c as unknown[]).length !== n) throw new Error(`${file}: column '${k}' has ${(c as unknown[]).length} values, '${cols[0][0]}' has ${n}`);
      const rows = [...Array(n).keys()].map((i) => Object.fromEntries(cols.map(([k, c]) => [k, (c as unknown[])[i]])));
      return new Dataset(rows, rows.map((_, i) => `${file} row ${i}`));
    }
  }
  throw new Error(`${file}: expected an array of objects or an object of columns`);
}

function fromCsv(text: string, file: string, delim: string): Dataset {
  const recs = parseCsv(text, file, delim);
  if (recs.length === 0) throw new Error(`loadDataset: ${file} is empty (no header row)`);
  const header = recs[0].fields.map((h) => h.trim());
  const dup = header.find((h, i) => header.indexOf(h) !== i);
  if (dup !== undefined) throw new Error(`${file}:${recs[0].line}: duplicate column '${dup}' in the header`);
  const body = recs.slice(1);
  for (const r of body) {
    if (r.fields.length !== header.length) throw new Error(`${file}:${r.line}: expected ${header.length} fields (${header.join(', ')}), found ${r.fields.length}`);
  }
  // Like pandas: a column whose every non-empty value is a number becomes numeric.
  const numeric = header.map((_, c) => body.length > 0 && body.every((r) => r.fields[c] === '' || isNum(r.fields[c])) && body.some((r) => r.fields[c] !== ''));
  const rows = body.map((r) => Object.fromEntries(header.map((h, c) => [h, numeric[c] ? (r.fields[c] === '' ? null : Number(r.fields[c])) : r.fields[c]])));
  return new Dataset(rows, body.map((r) => `${file}:${r.line}`));
}

function isNum(s: string): boolean { return /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/.test(s); }

export interface LabelMapping { label2id: Record<string, number>; id2label: Record<number, string> }

/**
 * Turns a label column into class ids. Strings go through label2id (built sorted from the data
 * when not given, as datasets' ClassLabel); integers must lie in [0, numLabels).
 */
export function encodeLabels<R extends Row>(ds: Dataset<R>, column: string,
  opts: { label2id?: Record<string, number>; numLabels?: number } = {}): { dataset: Dataset<Row>; mapping: LabelMapping } {
  ds.requireColumns([column]);
  let label2id = opts.label2id;
  const values = ds.column(column as keyof R) as unknown[];
  if (!label2id) {
    if (values.every((v) => typeof v === 'number')) {
      const n = opts.numLabels ?? Math.max(...(values as number[])) + 1;
      label2id = Object.fromEntries([...Array(n).keys()].map((i) => [String(i), i]));
    } else {
      const uniq = [...new Set(values.map(String))].sort();
      label2id = Object.fromEntries(uniq.map((s, i) => [s, i]));
    }
  }
  const ids = Object.values(label2id);
  const numLabels = opts.numLabels ?? (ids.length ? Math.max(...ids) + 1 : 0);
  const id2label: Record<number, string> = {};
  for (const [k, v] of Object.entries(label2id)) id2label[v] = k;
  const known = Object.keys(label2id);
  const dataset = ds.map((r, i) => {
    const v = r[column];
    let id: number;
    if (typeof v === 'number') {
      if (!Number.isInteger(v) || v < 0 || v >= numLabels) throw new Error(`${ds.where(i)}: label ${v} is out of range [0, ${numLabels})`);
      id = v;
    } else if (typeof v === 'string' && v in label2id!) id = label2id![v];
    else if (typeof v === 'string' && /^\d+$/.test(v.trim()) && Number(v) < numLabels && !known.some((k) => !/^\d+$/.test(k))) id = Number(v);
    else throw new Error(`${ds.where(i)}: unknown label ${JSON.stringify(v)} (known: ${known.slice(0, 20).join(', ')}${known.length > 20 ? ', ...' : ''})`);
    return { ...r, [column]: id } as Row;
  });
  return { dataset, mapping: { label2id, id2label } };
}
