// A reader for the zip archives torch.save writes: every entry is stored (not compressed),
// sizes live in the central directory (local headers carry a data descriptor flag and zero
// sizes), and zip64 records appear once the archive or an entry passes 4 GiB. We read only
// the directory and each entry's local header; entry data is read later by position.
import * as fs from 'node:fs';

export interface ZipEntry {
  name: string;
  /** Absolute byte offset of the entry's data in the archive. */
  dataStart: number;
  size: number;
}

const EOCD_SIG = 0x06054b50, ZIP64_LOCATOR_SIG = 0x07064b50, ZIP64_EOCD_SIG = 0x06064b50;
const CENTRAL_SIG = 0x02014b50, LOCAL_SIG = 0x04034b50;
const U32_MAX = 0xffffffff, U16_MAX = 0xffff;

function readAt(fd: number, position: number, length: number, fail: (m: string) => never): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buf, done, length - done, position + done);
    if (n === 0) fail(`unexpected end of file at byte ${position + done}`);
    done += n;
  }
  return buf;
}

function u64(b: Buffer, at: number, fail: (m: string) => never): number {
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`zip64 field ${v} is too large`);
  return Number(v);
}

/** True when the file starts like a zip archive (a local file header). */
export function looksLikeZip(fd: number): boolean {
  const b = Buffer.alloc(4);
  return fs.readSync(fd, b, 0, 4, 0) === 4 && b.readUInt32LE(0) === LOCAL_SIG;
}

/** The archive's entries by name. Compressed entries are an error (torch never writes them). */
export function readZipDirectory(fd: number, fail: (m: string) => never): Map<string, ZipEntry> {
  const size = fs.fstatSync(fd).size;
  if (size < 22) fail('too small to be a zip archive');
  // The end-of-central-directory record is in the last 22 + 65535 (comment) bytes.
  const tailLen = Math.min(size, 22 + U16_MAX);
  const tail = readAt(fd, size - tailLen, tailLen, fail);
  let e = -1;
  for (let i = tailLen - 22; i >= 0; i--) if (tail.readUInt32LE(i) === EOCD_SIG) { e = i; break; }
  if (e < 0) fail('no zip end-of-central-directory record (not a zip archive, or truncated)');
  let count = tail.readUInt16LE(e + 10);
  let cdSize = tail.readUInt32LE(e + 12);
  let cdOffset = tail.readUInt32LE(e + 16);
  if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
    const locAt = e - 20;
    if (locAt < 0 || tail.readUInt32LE(locAt) !== ZIP64_LOCATOR_SIG) fail('zip64 end-of-central-directory locator missing');
    const z64At = u64(tail, locAt + 8, fail);
    const z = readAt(fd, z64At, 56, fail);
    if (z.readUInt32LE(0) !== ZIP64_EOCD_SIG) fail('bad zip64 end-of-central-directory record');
    count = u64(z, 32, fail);
    cdSize = u64(z, 40, fail);
    cdOffset = u64(z, 48, fail);
  }
  if (cdOffset + cdSize > size) fail('central directory goes beyond the end of the file');
  const cd = readAt(fd, cdOffset, cdSize, fail);
  const out = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== CENTRAL_SIG) fail(`central directory entry ${i} is corrupt`);
    const method = cd.readUInt16LE(p + 10);
    let compSize = cd.readUInt32LE(p + 20);
    let rawSize = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28), extraLen = cd.readUInt16LE(p + 30), commentLen = cd.readUInt16LE(p + 32);
    let localOffset = cd.readUInt32LE(p + 42);
    const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
    // zip64 extended information (id 1): 8-byte values for the fields saturated above, in order.
    let x = p + 46 + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = cd.readUInt16LE(x), len = cd.readUInt16LE(x + 2);
      if (id === 1) {
        let q = x + 4;
        if (rawSize === U32_MAX) { rawSize = u64(cd, q, fail); q += 8; }
        if (compSize === U32_MAX) { compSize = u64(cd, q, fail); q += 8; }
        if (localOffset === U32_MAX) { localOffset = u64(cd, q, fail); q += 8; }
      }
      x += 4 + len;
    }
    p = xEnd + commentLen;
    if (method !== 0) fail(`entry "${name}" is compressed (method ${method}); torch.save archives store entries uncompressed`);
    if (compSize !== rawSize) fail(`entry "${name}": stored sizes differ (${compSize} vs ${rawSize})`);
    const local = readAt(fd, localOffset, 30, fail);
    if (local.readUInt32LE(0) !== LOCAL_SIG) fail(`entry "${name}": bad local header at byte ${localOffset}`);
    const dataStart = localOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
    if (dataStart + rawSize > size) fail(`entry "${name}" goes beyond the end of the file`);
    out.set(name, { name, dataStart, size: rawSize });
  }
  return out;
}
