// The safetensors format (https://github.com/huggingface/safetensors): 8-byte little-endian
// header length N, N bytes of JSON header (padded with spaces to a multiple of 8), then the
// raw little-endian tensor bytes. We read tensor by tensor with positioned reads on an fd so
// a multi-GB checkpoint is never held twice, and write files byte-identical to the Python
// library's for the same tensors (same ordering, same JSON, same padding).
//
// dtype mapping on read:
//   F32 -> float32; F16 -> float16, BF16 -> bfloat16 (float32 when toFloat32, the default);
//   F64 -> float32 always (there is no float64 Tensor);
//   I64, U64, I32, U32, I16, U16, I8, U8, BOOL -> int32 (widened; 64/32-bit unsigned values
//   are range-checked and a value outside int32 is an error naming the tensor).
//   For raw access to packed bytes (e.g. 4-bit weights stored as U8) use readTensorBytes().
import * as fs from 'node:fs';
import { openRegularFile, readJsonObject, specialFileKind } from './files.js';
import * as path from 'node:path';
import { Tensor } from '../tensor/tensor.js';
import { f32ToBf16, f32ToF16 } from './half.js';
import { DTYPE_SIZE, FLOAT_FILE_DTYPES, decodeTensor, floatBytesToF32, readBfloat16ViaF32, type TensorFileReader } from './tensor_file.js';
import { TorchBinReader } from './torchbin.js';

export interface TensorInfo { dtype: string; shape: number[]; dataOffsets: [number, number] }

export interface SafetensorsHeader {
  tensors: Record<string, TensorInfo>;
  metadata: Record<string, string>;
  /** Byte offset in the file where the data region begins (8 + header length). */
  dataStart: number;
}

export interface ReadOptions {
  /** Only these tensors (error if one is missing). Default: all. */
  names?: string[];
  /** Convert F16 / BF16 to float32 (default true). F64 always becomes float32. */
  toFloat32?: boolean;
}

export interface WriteOptions {
  /** Store floating tensors in this dtype (converting, round to nearest even). int32 tensors are kept. */
  dtype?: 'float32' | 'bfloat16' | 'float16';
  /** int32 tensors whose name passes this test are stored as U8 (values must be 0..255):
   * bitsandbytes' packed 4-bit weights and quant state are uint8 on disk. */
  uint8Keys?: (name: string) => boolean;
}

// The Rust crate sorts tensors by dtype (its enum order, largest first) and then by name.
const DTYPE_RANK: Record<string, number> = {
  BOOL: 0, U8: 1, I8: 2, F8_E5M2: 3, F8_E4M3: 4, F8_E8M0: 5, I16: 6, U16: 7, F16: 8, BF16: 9,
  I32: 10, U32: 11, F32: 12, C64: 13, F64: 14, I64: 15, U64: 16,
};

/** The Rust crate refuses headers above 100 MB; so do we (a corrupt length is usually huge). */
const MAX_HEADER = 100_000_000;
/**
 * Entries a header may list. Real files hold at most tens of thousands of tensors; a header
 * of a million tiny entries (under the byte cap) would take tens of seconds and GBs to parse,
 * so the entries are counted on the raw bytes first.
 */
export const MAX_TENSORS = 1 << 18;

function countByte(buf: Uint8Array, byte: number, stopAt: number): number {
  let n = 0;
  for (let i = buf.indexOf(byte); i >= 0 && n <= stopAt; i = buf.indexOf(byte, i + 1)) n++;
  return n;
}

function fail(file: string, msg: string): never {
  throw new Error(`safetensors ${file}: ${msg}`);
}

function readFully(fd: number, buf: Uint8Array, position: number, file: string): void {
  const CHUNK = 1 << 30; // readSync takes at most ~2 GB per call
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, Math.min(CHUNK, buf.length - done), position + done);
    if (n === 0) fail(file, `unexpected end of file at byte ${position + done}`);
    done += n;
  }
}

function writeFully(fd: number, buf: Uint8Array): void {
  let done = 0;
  while (done < buf.length) done += fs.writeSync(fd, buf, done, Math.min(1 << 30, buf.length - done));
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function parseHeader(fd: number, file: string): SafetensorsHeader {
  const size = fs.fstatSync(fd).size;
  if (size < 8) fail(file, `file is ${size} bytes, too small for the 8-byte header length`);
  const lenBuf = Buffer.alloc(8);
  readFully(fd, lenBuf, 0, file);
  const n64 = lenBuf.readBigUInt64LE(0);
  if (n64 > BigInt(MAX_HEADER)) fail(file, `header length ${n64} is absurd (limit ${MAX_HEADER}); not a safetensors file or corrupt`);
  const n = Number(n64);
  if (8 + n > size) fail(file, `header length ${n} goes beyond the end of the file (${size} bytes)`);
  const hbuf = Buffer.alloc(n);
  readFully(fd, hbuf, 8, file);
  // Each entry is one {...} object: more braces than MAX_TENSORS (+ the outer one and
  // __metadata__) cannot be a real file.
  if (countByte(hbuf, 0x7b, MAX_TENSORS + 2) > MAX_TENSORS + 2) fail(file, `header lists more than ${MAX_TENSORS} entries (${n} bytes); refusing to parse it (not a model file, or corrupt)`);
  let text: string;
  try { text = new TextDecoder('utf-8', { fatal: true }).decode(hbuf); } catch { fail(file, 'header is not valid UTF-8'); }
  if (!text.startsWith('{')) fail(file, 'header does not start with "{"');
  let json: unknown;
  try { json = JSON.parse(text); } catch (e) { fail(file, `header is not valid JSON (${(e as Error).message})`); }
  if (!json || typeof json !== 'object' || Array.isArray(json)) fail(file, 'header JSON is not an object');
  const dataStart = 8 + n;
  const dataLen = size - dataStart;
  const tensors: Record<string, TensorInfo> = {};
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (!v || typeof v !== 'object' || Array.isArray(v)) fail(file, '__metadata__ must be an object of strings');
      for (const [k, s] of Object.entries(v)) if (typeof s !== 'string') fail(file, `__metadata__["${k}"] is not a string`);
      metadata = { ...(v as Record<string, string>) };
      continue;
    }
    if (!v || typeof v !== 'object') fail(file, `tensor "${name}": entry is not an object`);
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e.dtype !== 'string') fail(file, `tensor "${name}": missing dtype`);
    const esize = DTYPE_SIZE[e.dtype];
    if (esize === undefined) fail(file, `tensor "${name}": unknown dtype "${e.dtype}"`);
    if (!Array.isArray(e.shape) || !e.shape.every(isNonNegInt)) fail(file, `tensor "${name}": shape must be a list of non-negative integers`);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every(isNonNegInt) || off[1] < off[0]) {
      fail(file, `tensor "${name}": data_offsets must be [begin, end] with 0 <= begin <= end`);
    }
    const [b, en] = off as [number, number];
    if (en > dataLen) fail(file, `tensor "${name}": data_offsets [${b},${en}] out of range (data region is ${dataLen} bytes)`);
    const shape = e.shape as number[];
    const nbytes = shape.reduce((a, s) => a * s, 1) * esize;
    if (nbytes !== en - b) fail(file, `tensor "${name}": data_offsets [${b},${en}] span ${en - b} bytes but ${e.dtype}${JSON.stringify(shape)} needs ${nbytes}`);
    tensors[name] = { dtype: e.dtype, shape: shape.slice(), dataOffsets: [b, en] };
  }
  // The tensors must tile the data region exactly: no overlap, no gap, nothing left over.
  const byStart = Object.entries(tensors).sort((x, y) => x[1].dataOffsets[0] - y[1].dataOffsets[0] || x[1].dataOffsets[1] - y[1].dataOffsets[1]);
  let end = 0, prev = '';
  for (const [name, info] of byStart) {
    const [b, en] = info.dataOffsets;
    if (b < end) fail(file, `tensors "${prev}" and "${name}" overlap (byte ${b} < ${end})`);
    if (b > end) fail(file, `data region bytes [${end},${b}) are not covered by any tensor (before "${name}")`);
    end = en;
    prev = name;
  }
  if (end !== dataLen) fail(file, `data region is ${dataLen} bytes but tensors cover only ${end}`);
  return { tensors, metadata, dataStart };
}

/** Parses and validates the header (reads only the first 8 + N bytes). */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = openOrFail(file);
  try { return parseHeader(fd, file); } finally { fs.closeSync(fd); }
}

function openOrFail(file: string): number {
  if (specialFileKind(file) === 'a folder') fail(file, 'is a folder, not a file (use loadCheckpointDir for checkpoint folders)');
  // O_NONBLOCK + fstat: a FIFO or a device named *.safetensors is refused, never read from.
  try { return openRegularFile(file).fd; } catch (e) {
    const m = (e as Error).message;
    fail(file, m.startsWith(file + ': ') ? m.slice(file.length + 2).replace('no such file', 'file not found') : m);
  }
}

/** The raw bytes of one tensor (for dtypes we do not convert, or packed quantized data). */
export function readTensorBytes(file: string, name: string): { dtype: string; shape: number[]; bytes: Uint8Array } {
  const fd = openOrFail(file);
  try {
    const h = parseHeader(fd, file);
    const info = h.tensors[name];
    if (!info) fail(file, `no tensor named "${name}"`);
    const bytes = new Uint8Array(info.dataOffsets[1] - info.dataOffsets[0]);
    readFully(fd, bytes, h.dataStart + info.dataOffsets[0], file);
    return { dtype: info.dtype, shape: info.shape.slice(), bytes };
  } finally { fs.closeSync(fd); }
}

function readOne(fd: number, h: SafetensorsHeader, name: string, file: string, toF32: boolean): Tensor {
  const info = h.tensors[name];
  // Allocating per tensor keeps typed-array views aligned and lets each buffer be freed alone.
  const bytes = new Uint8Array(new ArrayBuffer(info.dataOffsets[1] - info.dataOffsets[0]));
  readFully(fd, bytes, h.dataStart + info.dataOffsets[0], file);
  const t = decodeTensor(bytes, info, name, (msg) => fail(file, msg), toF32);
  t.name = name;
  return t;
}

/**
 * An open safetensors file: tensors are read on demand, whole (tensor()) or, for floating
 * tensors, as float32 ranges converted chunk by chunk (readFloat32()), so a loader can put
 * values straight into their destination without a full-size temporary.
 */
export class SafetensorsReader implements TensorFileReader {
  readonly header: SafetensorsHeader;
  private fd: number | null;
  private scratch = new Uint8Array(0);

  constructor(readonly file: string) {
    this.fd = openOrFail(file);
    try { this.header = parseHeader(this.fd, file); } catch (e) { this.close(); throw e; }
  }

  /** Tensor names in data order (the order reading them sequentially is cheapest). */
  names(): string[] {
    const t = this.header.tensors;
    return Object.keys(t).sort((a, b) => t[a].dataOffsets[0] - t[b].dataOffsets[0]);
  }

  has(name: string): boolean { return Object.hasOwn(this.header.tensors, name); }

  info(name: string): TensorInfo {
    const i = this.header.tensors[name];
    if (!i) fail(this.file, `no tensor named "${name}"`);
    return i;
  }

  private open(): number {
    if (this.fd === null) fail(this.file, 'reader was closed');
    return this.fd;
  }

  /** The whole tensor, decoded as iterSafetensors does. */
  tensor(name: string, toFloat32 = true): Tensor {
    this.info(name);
    return readOne(this.open(), this.header, name, this.file, toFloat32);
  }

  /** The tensor's raw bytes (e.g. bitsandbytes' packed uint8 weights). */
  bytes(name: string): Uint8Array {
    const info = this.info(name);
    const out = new Uint8Array(info.dataOffsets[1] - info.dataOffsets[0]);
    readFully(this.open(), out, this.header.dataStart + info.dataOffsets[0], this.file);
    return out;
  }

  /**
   * Elements [start, start + out.length) of a floating tensor (F32, F16, BF16, F64) as
   * float32 into out. F32 is read in place; other dtypes through a small reused buffer.
   */
  readFloat32(name: string, start: number, out: Float32Array): void {
    const info = this.info(name);
    const esize = DTYPE_SIZE[info.dtype];
    const n = info.shape.reduce((a, s) => a * s, 1);
    if (!FLOAT_FILE_DTYPES.has(info.dtype)) fail(this.file, `tensor "${name}" is ${info.dtype}, not a floating point tensor`);
    if (start < 0 || start + out.length > n) fail(this.file, `tensor "${name}": range [${start}, ${start + out.length}) outside its ${n} elements`);
    const fd = this.open();
    const base = this.header.dataStart + info.dataOffsets[0] + start * esize;
    if (info.dtype === 'F32') {
      readFully(fd, new Uint8Array(out.buffer, out.byteOffset, out.byteLength), base, this.file);
      return;
    }
    const CHUNK = 1 << 20; // elements per read
    if (this.scratch.length < CHUNK * esize) this.scratch = new Uint8Array(CHUNK * esize);
    for (let done = 0; done < out.length; done += CHUNK) {
      const m = Math.min(CHUNK, out.length - done);
      const bytes = this.scratch.subarray(0, m * esize);
      readFully(fd, bytes, base + done * esize, this.file);
      floatBytesToF32(info.dtype, bytes, m, out.subarray(done, done + m));
    }
  }

  /**
   * Elements [start, start + out.length) of a floating tensor as bfloat16 bits into out: BF16
   * is read in place; other dtypes go through float32 chunks rounded to nearest even (as
   * torch's .to(torch.bfloat16)).
   */
  readBfloat16(name: string, start: number, out: Uint16Array): void {
    const info = this.info(name);
    if (info.dtype === 'BF16') {
      const n = info.shape.reduce((a, s) => a * s, 1);
      if (start < 0 || start + out.length > n) fail(this.file, `tensor "${name}": range [${start}, ${start + out.length}) outside its ${n} elements`);
      readFully(this.open(), new Uint8Array(out.buffer, out.byteOffset, out.byteLength), this.header.dataStart + info.dataOffsets[0] + start * 2, this.file);
      return;
    }
    readBfloat16ViaF32(this, name, start, out);
  }

  close(): void {
    if (this.fd !== null) { fs.closeSync(this.fd); this.fd = null; }
  }
}

/** Yields [name, Tensor] one at a time in file order; only one tensor is read per step. */
export function* iterSafetensors(file: string, opts: ReadOptions = {}): Generator<[string, Tensor]> {
  const r = new SafetensorsReader(file);
  try {
    const h = r.header;
    let names = r.names();
    if (opts.names) {
      const missing = opts.names.filter((x) => !(x in h.tensors));
      if (missing.length) fail(file, `no tensor named ${missing.map((m) => `"${m}"`).join(', ')}`);
      const want = new Set(opts.names);
      names = names.filter((x) => want.has(x));
    }
    for (const name of names) yield [name, r.tensor(name, opts.toFloat32 ?? true)];
  } finally { r.close(); }
}

export function readSafetensors(file: string, opts: ReadOptions = {}): Map<string, Tensor> {
  return new Map(iterSafetensors(file, opts));
}

// ---------- writing ----------

function fileDtype(t: Tensor, want: WriteOptions['dtype'], asU8 = false): string {
  if (t.dtype === 'int32') return asU8 ? 'U8' : 'I32';
  const d = want ?? t.dtype;
  return d === 'float32' ? 'F32' : d === 'bfloat16' ? 'BF16' : 'F16';
}

function tensorBytes(t: Tensor, dt: string): Uint8Array {
  const asBytes = (a: Float32Array | Int32Array | Uint16Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (dt === 'I32') return asBytes(t.ints);
  if (dt === 'U8') {
    const v = t.ints, out = new Uint8Array(v.length);
    for (let i = 0; i < v.length; i++) {
      if (v[i] < 0 || v[i] > 255) throw new RangeError(`tensor "${t.name || t.label()}" value ${v[i]} at ${i} does not fit U8`);
      out[i] = v[i];
    }
    return out;
  }
  if (dt === 'F32') return asBytes(t.dtype === 'float32' ? t.data : t.toFloat32Array());
  if ((dt === 'BF16' && t.dtype === 'bfloat16') || (dt === 'F16' && t.dtype === 'float16')) return asBytes(t.halfBits);
  const src = t.dtype === 'float32' ? t.data : t.toFloat32Array();
  const out = new Uint16Array(src.length);
  if (dt === 'BF16') f32ToBf16(src, out); else f32ToF16(src, out);
  return asBytes(out);
}

/** Byte-wise (UTF-8) name order, as Rust's String ordering. */
function cmpNames(a: string, b: string): number { return Buffer.compare(Buffer.from(a), Buffer.from(b)); }

/**
 * Writes a safetensors file atomically (temp file in the same folder, fsync, rename), so a
 * crash never leaves a half-written checkpoint under the final name.
 */
export function writeSafetensors(file: string, tensors: Map<string, Tensor> | Record<string, Tensor>,
  metadata?: Record<string, string>, opts: WriteOptions = {}): void {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  if (metadata) for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') throw new TypeError(`writeSafetensors ${file}: metadata["${k}"] must be a string`);
  }
  const items = entries.map(([name, t]) => {
    if (name === '__metadata__') throw new Error(`writeSafetensors ${file}: "__metadata__" is reserved and cannot name a tensor`);
    if (!(t instanceof Tensor)) throw new TypeError(`writeSafetensors ${file}: "${name}" is not a Tensor`);
    if (t.disposed) throw new Error(`writeSafetensors ${file}: tensor "${name}" was disposed`);
    return { name, t, dt: fileDtype(t, opts.dtype, opts.uint8Keys?.(name) ?? false) };
  });
  items.sort((a, b) => DTYPE_RANK[b.dt] - DTYPE_RANK[a.dt] || cmpNames(a.name, b.name));
  // Build the header by hand so the key order is exactly the Rust crate's.
  const parts: string[] = [];
  if (metadata) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  let off = 0;
  for (const it of items) {
    const nbytes = it.t.size * DTYPE_SIZE[it.dt];
    parts.push(`${JSON.stringify(it.name)}:{"dtype":"${it.dt}","shape":${JSON.stringify(it.t.shape)},"data_offsets":[${off},${off + nbytes}]}`);
    off += nbytes;
  }
  let header = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const pad = (8 - (header.length % 8)) % 8;
  if (pad) header = Buffer.concat([header, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));

  const dir = path.dirname(path.resolve(file));
  fs.mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${Date.now().toString(36)}`);
  const fd = fs.openSync(tmp, 'w');
  try {
    writeFully(fd, len);
    writeFully(fd, header);
    for (const it of items) writeFully(fd, tensorBytes(it.t, it.dt));
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  } catch (e) {
    try { fs.closeSync(fd); } catch { /* already closed */ }
    try { fs.unlinkSync(tmp); } catch { /* gone */ }
    throw e;
  }
  fs.renameSync(tmp, file);
  try { // make the rename durable too; not all platforms allow fsync on a folder
    const dfd = fs.openSync(dir, 'r');
    try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
  } catch { /* best effort */ }
}

// ---------- checkpoint folders ----------

export const SAFETENSORS_WEIGHTS = 'model.safetensors';
export const SAFETENSORS_INDEX = 'model.safetensors.index.json';
export const PYTORCH_WEIGHTS = 'pytorch_model.bin';
export const PYTORCH_INDEX = 'pytorch_model.bin.index.json';

/** Opens a weight file with the reader its format needs (.safetensors, else a torch.save zip). */
export function openTensorFile(file: string): TensorFileReader {
  return file.endsWith('.safetensors') ? new SafetensorsReader(file) : new TorchBinReader(file);
}

function readIndex(dir: string, indexName: string): { files: string[]; weightMap: Record<string, string> } {
  const indexPath = path.join(dir, indexName);
  const idx: { weight_map?: unknown } = readJsonObject(indexPath, { maxBytes: 256 << 20 });
  const wm = idx.weight_map;
  if (!wm || typeof wm !== 'object' || Array.isArray(wm)) throw new Error(`${indexPath}: missing "weight_map" object`);
  const weightMap = wm as Record<string, string>;
  const files = [...new Set(Object.values(weightMap))];
  for (const f of files) {
    if (typeof f !== 'string' || f.includes('/') || f.includes('\\') || f.startsWith('.')) throw new Error(`${indexPath}: bad shard file name ${JSON.stringify(f)}`);
    if (!fs.existsSync(path.join(dir, f))) throw new Error(`${indexPath}: shard ${f} is listed but ${path.join(dir, f)} does not exist`);
  }
  files.sort();
  return { files, weightMap };
}

/**
 * The weight files of a checkpoint folder and which tensor lives where. As transformers,
 * safetensors (sharded, then single) is preferred; PyTorch pytorch_model.bin (sharded, then
 * single) is the fallback.
 */
export function checkpointShards(dir: string): { files: string[]; weightMap: Record<string, string> | null } {
  if (fs.existsSync(path.join(dir, SAFETENSORS_INDEX))) return readIndex(dir, SAFETENSORS_INDEX);
  if (fs.existsSync(path.join(dir, SAFETENSORS_WEIGHTS))) return { files: [SAFETENSORS_WEIGHTS], weightMap: null };
  if (fs.existsSync(path.join(dir, PYTORCH_INDEX))) return readIndex(dir, PYTORCH_INDEX);
  if (fs.existsSync(path.join(dir, PYTORCH_WEIGHTS))) return { files: [PYTORCH_WEIGHTS], weightMap: null };
  let listing: string[] = [];
  try { listing = fs.readdirSync(dir); } catch { throw new Error(`checkpoint folder ${dir} does not exist`); }
  throw new Error(`no ${SAFETENSORS_WEIGHTS}, ${SAFETENSORS_INDEX}, ${PYTORCH_WEIGHTS} or ${PYTORCH_INDEX} in ${dir} (found: ${listing.join(', ') || 'nothing'})`);
}

/** The names of reader's tensors that the index assigns to its file (all when no index). */
function shardNames(r: TensorFileReader, f: string, weightMap: Record<string, string> | null): string[] {
  const names = r.names();
  if (!weightMap) return names;
  const want = Object.keys(weightMap).filter((k) => weightMap[k] === f);
  const missing = want.filter((x) => !r.has(x));
  if (missing.length) throw new Error(`${r.file.endsWith('.safetensors') ? 'safetensors' : 'torch checkpoint'} ${r.file}: no tensor named ${missing.map((m) => `"${m}"`).join(', ')}`);
  const set = new Set(want);
  return names.filter((x) => set.has(x));
}

/** Streams every tensor of a checkpoint folder (single file or shards), one at a time. */
export function* iterCheckpointDir(dir: string, opts: { toFloat32?: boolean } = {}): Generator<[string, Tensor]> {
  const { files, weightMap } = checkpointShards(dir);
  for (const f of files) {
    const r = openTensorFile(path.join(dir, f));
    try {
      // An index naming a tensor its shard lacks is an error.
      for (const n of shardNames(r, f, weightMap)) yield [n, r.tensor(n, opts.toFloat32 ?? true)];
    } finally { r.close(); }
  }
}

/**
 * Opens every shard of a checkpoint folder without reading tensors: each tensor name (in
 * shard and data order, filtered by the index as iterCheckpointDir does) with the reader of
 * its file. Call close() when done.
 */
export function openCheckpointDir(dir: string): { entries: [string, TensorFileReader][]; close(): void } {
  const { files, weightMap } = checkpointShards(dir);
  const readers: TensorFileReader[] = [];
  const close = () => { for (const r of readers) r.close(); };
  const entries: [string, TensorFileReader][] = [];
  try {
    for (const f of files) {
      const r = openTensorFile(path.join(dir, f));
      readers.push(r);
      for (const n of shardNames(r, f, weightMap)) entries.push([n, r]);
    }
  } catch (e) { close(); throw e; }
  return { entries, close };
}

export function loadCheckpointDir(dir: string, opts: { toFloat32?: boolean } = {}): Map<string, Tensor> {
  return new Map(iterCheckpointDir(dir, opts));
}

/**
 * Writes a checkpoint folder as transformers' save_pretrained does: model.safetensors, or
 * model-0000i-of-0000n.safetensors shards of at most maxShardBytes plus
 * model.safetensors.index.json when the tensors do not fit in one shard.
 */
export function saveCheckpointDir(dir: string, tensors: Map<string, Tensor> | Record<string, Tensor>,
  opts: WriteOptions & { maxShardBytes?: number; metadata?: Record<string, string> } = {}): string[] {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const max = opts.maxShardBytes ?? 5 * 1024 ** 3;
  const metadata = opts.metadata ?? { format: 'pt' };
  const bytesOf = (t: Tensor) => t.size * DTYPE_SIZE[fileDtype(t, opts.dtype)];
  const shards: [string, Tensor][][] = [[]];
  let cur = 0;
  for (const e of entries) {
    const b = bytesOf(e[1]);
    if (cur > 0 && cur + b > max) { shards.push([]); cur = 0; }
    shards[shards.length - 1].push(e);
    cur += b;
  }
  fs.mkdirSync(dir, { recursive: true });
  if (shards.length === 1) {
    writeSafetensors(path.join(dir, SAFETENSORS_WEIGHTS), new Map(shards[0]), metadata, opts);
    return [SAFETENSORS_WEIGHTS];
  }
  const n = shards.length, pad = (i: number) => String(i).padStart(5, '0');
  const names: string[] = [];
  const weightMap: Record<string, string> = {};
  let total = 0;
  shards.forEach((sh, i) => {
    const name = `model-${pad(i + 1)}-of-${pad(n)}.safetensors`;
    writeSafetensors(path.join(dir, name), new Map(sh), metadata, opts);
    for (const [k, t] of sh) { weightMap[k] = name; total += bytesOf(t); }
    names.push(name);
  });
  const sorted = Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]]));
  const indexText = JSON.stringify({ metadata: { total_size: total }, weight_map: sorted }, null, 2) + '\n';
  const tmp = path.join(dir, `.${SAFETENSORS_INDEX}.tmp-${process.pid}`);
  fs.writeFileSync(tmp, indexText);
  fs.renameSync(tmp, path.join(dir, SAFETENSORS_INDEX));
  return [...names, SAFETENSORS_INDEX];
}
