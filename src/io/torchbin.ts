// PyTorch checkpoints written by torch.save (pytorch_model.bin, its shards, peft's
// adapter_model.bin): a zip archive holding <archive>/data.pkl (the state dict pickled, each
// tensor a torch._utils._rebuild_tensor_v2 call on a persistent storage id) and one raw
// little-endian file <archive>/data/<key> per storage. The pickle is read by the restricted
// unpickler (no code runs); tensor data is read by position like safetensors, honouring
// storage offsets and strides (tensors sharing a storage, e.g. tied weights, or views).
// Only the zip format (torch >= 1.6) is read; the older tar/raw-pickle format is refused.
import * as fs from 'node:fs';
import { openRegularFile, specialFileKind } from './files.js';
import type { Tensor } from '../tensor/tensor.js';
import { PyDict, PyGlobal, UnpicklingError, unpickle } from './pickle.js';
import { looksLikeZip, readZipDirectory, type ZipEntry } from './zip.js';
import { DTYPE_SIZE, FLOAT_FILE_DTYPES, decodeTensor, floatBytesToF32, readBfloat16ViaF32, type TensorFileReader, type TensorMeta } from './tensor_file.js';

/** torch storage classes -> file dtype (safetensors' names). */
const STORAGE_DTYPES: Record<string, string> = {
  FloatStorage: 'F32', HalfStorage: 'F16', BFloat16Storage: 'BF16', DoubleStorage: 'F64',
  LongStorage: 'I64', IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8', ByteStorage: 'U8', BoolStorage: 'BOOL',
};

interface StorageRef { key: string; dtype: string; numel: number; entry: ZipEntry }

export interface TorchTensorInfo extends TensorMeta {
  storage: StorageRef;
  /** Offset into the storage, in elements. */
  offset: number;
  stride: number[];
}

class TensorRef {
  constructor(readonly info: TorchTensorInfo) {}
}

function isIntList(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0);
}

export class TorchBinReader implements TensorFileReader {
  private fd: number | null = null;
  private tensors = new Map<string, TorchTensorInfo>();

  constructor(readonly file: string) {
    const fail = this.fail;
    if (specialFileKind(file) === 'a folder') fail('is a folder, not a file');
    // O_NONBLOCK + fstat: a FIFO or a device is refused, never read from.
    try { this.fd = openRegularFile(file).fd; } catch (e) {
      const m = (e as Error).message;
      fail(m.startsWith(file + ': ') ? m.slice(file.length + 2).replace('no such file', 'file not found') : m);
    }
    try { this.parse(this.fd as number); } catch (e) { this.close(); throw e; }
  }

  private fail = (msg: string): never => { throw new Error(`torch checkpoint ${this.file}: ${msg}`); };

  private parse(fd: number): void {
    const fail = this.fail;
    if (!looksLikeZip(fd)) fail('not a zip archive: only the torch.save format of torch >= 1.6 is supported (re-save it with a recent torch, or as safetensors)');
    const entries = readZipDirectory(fd, fail);
    const pkls = [...entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pkls.length !== 1) fail(`expected one <archive>/data.pkl, found ${pkls.length ? pkls.join(', ') : 'none'}`);
    const prefix = pkls[0].slice(0, -'data.pkl'.length);
    const bo = entries.get(prefix + 'byteorder');
    if (bo && this.read(bo.dataStart, bo.size).toString() !== 'little') fail('storages are big-endian; only little-endian checkpoints are supported');
    const pkl = entries.get(pkls[0])!;
    const storages = new Map<string, StorageRef>();
    const persistentLoad = (pid: unknown): StorageRef => {
      if (!Array.isArray(pid) || pid.length !== 5 || pid[0] !== 'storage') fail(`unsupported persistent id ${JSON.stringify(pid)}`);
      const [, type, key, , numel] = pid as unknown[];
      if (!(type instanceof PyGlobal) || !type.qualname.startsWith('torch.')) fail('storage type is not a torch storage class');
      const dtype = STORAGE_DTYPES[(type as PyGlobal).qualname.slice('torch.'.length)];
      if (!dtype) fail(`storage type ${(type as PyGlobal).qualname} is not supported`);
      if (typeof key !== 'string' || typeof numel !== 'number') fail('malformed storage id');
      const k = key as string;
      const known = storages.get(k);
      if (known) return known;
      const entry = entries.get(`${prefix}data/${k}`);
      if (!entry) fail(`storage ${k} has no data/${k} entry`);
      if (entry!.size < (numel as number) * DTYPE_SIZE[dtype]) fail(`storage ${k} holds ${entry!.size} bytes, fewer than its ${numel} ${dtype} elements`);
      const s = { key: k, dtype, numel: numel as number, entry: entry! };
      storages.set(k, s);
      return s;
    };
    const rebuild = (args: unknown[]): TensorRef => {
      const [storage, offset, size, stride] = args;
      if (!(storage && typeof storage === 'object' && 'entry' in storage)) fail('tensor without a storage');
      if (typeof offset !== 'number' || !isIntList(size) || !isIntList(stride) || size.length !== stride.length) fail('malformed tensor (offset, size, stride)');
      const st = storage as StorageRef;
      const sz = size as number[], sd = stride as number[];
      const n = sz.reduce((a, b) => a * b, 1);
      const last = n === 0 ? 0 : sz.reduce((a, s, i) => a + (s - 1) * sd[i], 0);
      if (n > 0 && (offset as number) + last >= st.numel) fail(`a tensor reaches past the end of storage ${st.key}`);
      return new TensorRef({ dtype: st.dtype, shape: sz.slice(), stride: sd.slice(), offset: offset as number, storage: st });
    };
    const g = (q: string, call?: (a: unknown[]) => unknown) => [q, new PyGlobal(q, call)] as const;
    const globals = Object.fromEntries([
      g('collections.OrderedDict', () => new PyDict()),
      g('torch._utils._rebuild_tensor_v2', rebuild),
      g('torch._utils._rebuild_tensor', rebuild),
      g('torch._utils._rebuild_parameter', (a) => a[0]),
      ...Object.keys(STORAGE_DTYPES).map((s) => g(`torch.${s}`)),
    ]);
    let root: unknown;
    try { root = unpickle(this.read(pkl.dataStart, pkl.size), { globals, persistentLoad }); } catch (e) {
      if (e instanceof UnpicklingError) fail(e.message); // name the file
      throw e;
    }
    if (!(root instanceof PyDict)) fail('the pickled object is not a state dict');
    for (const [k, v] of (root as PyDict).map) {
      // Non-tensor entries (none in transformers / peft files) are left out, as safetensors cannot hold them.
      if (typeof k === 'string' && v instanceof TensorRef) this.tensors.set(k, v.info);
    }
  }

  private read(position: number, length: number): Buffer {
    if (this.fd === null) this.fail('reader was closed');
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = fs.readSync(this.fd!, buf, done, Math.min(1 << 30, length - done), position + done);
      if (n === 0) this.fail(`unexpected end of file at byte ${position + done}`);
      done += n;
    }
    return buf;
  }

  /** Tensor names in state-dict order. */
  names(): string[] { return [...this.tensors.keys()]; }

  has(name: string): boolean { return this.tensors.has(name); }

  info(name: string): TorchTensorInfo {
    const i = this.tensors.get(name);
    if (!i) this.fail(`no tensor named "${name}"`);
    return i!;
  }

  /** Whether the tensor's elements lie in row-major order in its storage. */
  private contiguous(i: TorchTensorInfo): boolean {
    let expect = 1;
    for (let d = i.shape.length - 1; d >= 0; d--) {
      if (i.shape[d] !== 1 && i.stride[d] !== expect) return false;
      expect *= i.shape[d];
    }
    return true;
  }

  /** Raw bytes of elements [start, start + count) in row-major order, in a fresh aligned buffer. */
  private raw(name: string, start: number, count: number): Uint8Array {
    const i = this.info(name);
    const es = DTYPE_SIZE[i.dtype];
    const base = i.storage.entry.dataStart;
    const out = new Uint8Array(new ArrayBuffer(count * es));
    if (count === 0) return out;
    if (this.contiguous(i)) {
      out.set(this.read(base + (i.offset + start) * es, count * es));
      return out;
    }
    // A strided view: read the storage span it touches once, then gather element by element.
    const idx = new Array<number>(i.shape.length).fill(0);
    let rest = start;
    for (let d = i.shape.length - 1; d >= 0; d--) { idx[d] = rest % i.shape[d]; rest = Math.floor(rest / i.shape[d]); }
    const span = i.shape.reduce((a, s, d) => a + (s - 1) * i.stride[d], 0) + 1;
    const src = this.read(base + i.offset * es, span * es);
    for (let k = 0; k < count; k++) {
      let at = 0;
      for (let d = 0; d < idx.length; d++) at += idx[d] * i.stride[d];
      src.copy(out, k * es, at * es, at * es + es);
      for (let d = idx.length - 1; d >= 0; d--) { if (++idx[d] < i.shape[d]) break; idx[d] = 0; }
    }
    return out;
  }

  private numel(i: TensorMeta): number { return i.shape.reduce((a, s) => a * s, 1); }

  tensor(name: string, toFloat32 = true): Tensor {
    const i = this.info(name);
    const t = decodeTensor(this.raw(name, 0, this.numel(i)), i, name, this.fail, toFloat32);
    t.name = name;
    return t;
  }

  bytes(name: string): Uint8Array { return this.raw(name, 0, this.numel(this.info(name))); }

  readBfloat16(name: string, start: number, out: Uint16Array): void { readBfloat16ViaF32(this, name, start, out); }

  readFloat32(name: string, start: number, out: Float32Array): void {
    const i = this.info(name);
    const n = this.numel(i);
    if (!FLOAT_FILE_DTYPES.has(i.dtype)) this.fail(`tensor "${name}" is ${i.dtype}, not a floating point tensor`);
    if (start < 0 || start + out.length > n) this.fail(`tensor "${name}": range [${start}, ${start + out.length}) outside its ${n} elements`);
    const CHUNK = 1 << 20;
    for (let done = 0; done < out.length; done += CHUNK) {
      const m = Math.min(CHUNK, out.length - done);
      floatBytesToF32(i.dtype, this.raw(name, start + done, m), m, out.subarray(done, done + m));
    }
  }

  close(): void {
    if (this.fd !== null) { fs.closeSync(this.fd); this.fd = null; }
  }
}
