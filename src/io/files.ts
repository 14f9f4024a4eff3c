// Reading input files defensively: only regular files (a FIFO, /dev/zero or a folder named
// config.json must not block or eat memory), opened with O_NONBLOCK and checked with fstat
// before a byte is read; a size cap per kind of file; UTF-8 decoded strictly (a BOM is
// accepted, invalid bytes are an error naming the file and line, never replaced silently).
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Caps: far above any real file of the kind, far below what would exhaust memory. */
export const MAX_CONFIG_BYTES = 16 << 20;
export const MAX_TOKENIZER_BYTES = 512 << 20;
/** V8 strings stop at ~512 M characters; data files beyond that need streaming. */
export const MAX_TEXT_BYTES = 500 << 20;

export interface ReadOptions {
  /** Largest accepted size in bytes. */
  maxBytes?: number;
  /** What the file is, for messages ("--config", "tokenizer"). */
  what?: string;
}

const label = (file: string, what?: string) => (what ? `${what} ${file}` : file);

function describe(st: fs.Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

export function openError(file: string, e: unknown, what?: string): Error {
  const code = (e as NodeJS.ErrnoException).code;
  const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' || code === 'EPERM' ? `permission denied (${code})`
    : code === 'EISDIR' ? 'is a folder, not a file' : code === 'ELOOP' ? 'too many levels of symbolic links' : `cannot open (${code ?? (e as Error).message})`;
  return new Error(`${label(file, what)}: ${why}`);
}

/**
 * Opens a regular file for reading without ever blocking (O_NONBLOCK: a FIFO opens at once and
 * is then refused), after checking what it is and its size. Returns the fd and size.
 */
export function openRegularFile(file: string, opts: ReadOptions = {}): { fd: number; size: number } {
  let fd: number;
  try { fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK); } catch (e) { throw openError(file, e, opts.what); }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new Error(`${label(file, opts.what)}: is ${describe(st)}, not a regular file`);
    if (opts.maxBytes !== undefined && st.size > opts.maxBytes) {
      throw new Error(`${label(file, opts.what)}: ${st.size} bytes is more than the ${opts.maxBytes} this kind of file may have`);
    }
    return { fd, size: st.size };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** The bytes of a regular file (size-capped). */
export function readFileChecked(file: string, opts: ReadOptions = {}): Buffer {
  const { fd, size } = openRegularFile(file, opts);
  try {
    const buf = Buffer.allocUnsafe(size);
    let off = 0;
    while (off < size) {
      const n = fs.readSync(fd, buf, off, Math.min(size - off, 1 << 30), off);
      if (n === 0) break;
      off += n;
    }
    return off === size ? buf : buf.subarray(0, off);
  } finally { fs.closeSync(fd); }
}

/** Byte offset of the first invalid UTF-8 sequence (-1 when valid). */
export function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  const n = b.length;
  while (i < n) {
    const c = b[i];
    if (c < 0x80) { i++; continue; }
    let len: number, min: number;
    if (c >= 0xc2 && c <= 0xdf) { len = 2; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { len = 3; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; min = 0x10000; }
    else return i;
    if (i + len > n) return i;
    let cp = c & (0xff >> (len + 1));
    for (let k = 1; k < len; k++) {
      const d = b[i + k];
      if ((d & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += len;
  }
  return -1;
}

/** Strict UTF-8 (BOM dropped); an invalid byte is an error naming the file, line and byte. */
export function decodeUtf8(buf: Uint8Array, file: string, what?: string): string {
  const body = buf.length >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf ? buf.subarray(3) : buf;
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(body);
  } catch {
    const at = firstInvalidUtf8(body);
    let line = 1;
    for (let i = 0; i < at; i++) if (body[i] === 0x0a) line++;
    const off = at + (body === buf ? 0 : 3);
    throw new Error(`${label(file, what)}:${line}: invalid UTF-8 (byte 0x${buf[off]?.toString(16).padStart(2, '0')} at offset ${off}); save the file as UTF-8`);
  }
}

export function readTextFile(file: string, opts: ReadOptions = {}): string {
  return decodeUtf8(readFileChecked(file, { maxBytes: MAX_TEXT_BYTES, ...opts }), file, opts.what);
}

/** A JSON file (default cap: config size); errors name the file. */
export function readJsonFile(file: string, opts: ReadOptions = {}): unknown {
  const text = readTextFile(file, { maxBytes: MAX_CONFIG_BYTES, ...opts });
  if (!text.trim()) throw new Error(`${label(file, opts.what)}: empty file (expected JSON)`);
  try { return JSON.parse(text); } catch (e) { throw new Error(`${label(file, opts.what)}: invalid JSON (${(e as Error).message})`); }
}

/** A JSON file that must hold an object. */
export function readJsonObject(file: string, opts: ReadOptions = {}): Record<string, unknown> {
  const v = readJsonFile(file, opts);
  if (!v || typeof v !== 'object' || Array.isArray(v)) {
    throw new Error(`${label(file, opts.what)}: expected a JSON object, got ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v}`);
  }
  return v as Record<string, unknown>;
}

/** A short description of a path that is not a regular file (null when it is one, or absent). */
export function specialFileKind(file: string): string | null {
  try { const st = fs.statSync(file); return st.isFile() ? null : describe(st); } catch { return null; }
}

/**
 * mkdir -p that fails with a clear message instead of looping or saying ENOENT: Node's
 * recursive mkdir spins forever on /proc/x (mkdir answers ENOENT under an existing parent),
 * and reports a read-only parent as ENOENT. Each missing level is made on its own here.
 */
export function makeDirs(dir: string, what = 'output folder'): void {
  const abs = path.resolve(dir);
  const missing: string[] = [];
  let p = abs;
  for (;;) {
    let st: fs.Stats | null = null;
    try { st = fs.statSync(p); } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') throw new Error(`${what} ${dir}: cannot use ${p} (${errnoText(code)})`);
    }
    if (st) {
      if (!st.isDirectory()) throw new Error(`${what} ${dir}: ${p} is ${describe(st)}, not a folder`);
      break;
    }
    missing.unshift(p);
    const up = path.dirname(p);
    if (up === p) break;
    p = up;
  }
  for (const m of missing) {
    try { fs.mkdirSync(m); } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && fs.statSync(m).isDirectory()) continue;
      throw new Error(`${what} ${dir}: cannot create ${m} (${errnoText(code)})`);
    }
  }
  try { fs.accessSync(abs, fs.constants.W_OK); } catch (e) {
    throw new Error(`${what} ${dir}: cannot write there (${errnoText((e as NodeJS.ErrnoException).code)})`);
  }
}

function errnoText(code: string | undefined): string {
  switch (code) {
    case 'EACCES': case 'EPERM': return `permission denied, ${code}`;
    case 'EROFS': return 'read-only file system, EROFS';
    case 'ENOENT': return 'the file system does not allow creating it there, ENOENT';
    case 'ENOTDIR': return 'a path component is not a folder, ENOTDIR';
    case 'ENOSPC': return 'no space left on the device, ENOSPC';
    default: return code ?? 'unknown error';
  }
}
