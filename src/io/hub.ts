// Finds a model folder: a local path, a snapshot already in the Hugging Face cache, or (when
// online) a download into that same cache layout, so Python and this library share files:
//   <cache>/models--org--name/refs/<revision>          (text: the commit hash)
//   <cache>/models--org--name/snapshots/<commit>/<file> (symlink to ../../blobs/<etag>)
//   <cache>/models--org--name/blobs/<etag>
import * as fs from 'node:fs';
import * as os from 'node:os';
import { readTextFile } from './files.js';
import * as path from 'node:path';
import { createHash, type Hash } from 'node:crypto';
import { hubEndpoint, hubToken } from './hub-env.js';

export interface ResolveOptions {
  /** Hub cache folder; default HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /** Branch, tag or commit hash (default "main"). */
  revision?: string;
  /** Never touch the network (also when HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1). */
  offline?: boolean;
  /** The file that marks a usable folder (default config.json; adapter_config.json for adapters). */
  requiredFile?: string;
  /** Access token for gated/private repos (default HF_TOKEN, else $HF_HOME/token: see hub-env.ts). */
  token?: string;
  /** The Hub's URL (default HF_ENDPOINT, else huggingface.co). */
  hubUrl?: string;
  /** Replaces global fetch (proxies; tests). */
  fetch?: typeof fetch;
}

export function hubCacheDir(explicit?: string): string {
  if (explicit) return explicit;
  const env = process.env;
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HUGGINGFACE_HUB_CACHE) return env.HUGGINGFACE_HUB_CACHE;
  const home = env.HF_HOME ?? path.join(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'huggingface');
  return path.join(home, 'hub');
}

export function isOffline(opts: ResolveOptions = {}): boolean {
  const on = (v?: string) => !!v && ['1', 'true', 'yes', 'on'].includes(v.toLowerCase());
  return !!opts.offline || on(process.env.HF_HUB_OFFLINE) || on(process.env.TRANSFORMERS_OFFLINE);
}

const HUB_ID = /^[A-Za-z0-9][\w.-]*(\/[\w.-]+)?$/;
const COMMIT = /^[0-9a-f]{40}$/;
/** A git blob id (sha1) or an LFS object id (sha256): the only names a blob file may get. */
const GIT_OID = /^[0-9a-f]{40}$/, LFS_OID = /^[0-9a-f]{64}$/;

/**
 * A revision names a file under refs/ (huggingface_hub writes refs/<revision>): branch and tag
 * names, "refs/pr/1", never "..", absolute paths or odd characters.
 */
export function checkRevision(rev: string): string {
  if (typeof rev !== 'string' || !rev || rev.length > 255 || !/^[\w.\-/]+$/.test(rev) || rev.startsWith('/') || rev.endsWith('/')
    || rev.split('/').some((seg) => seg === '' || seg === '.' || seg === '..' || seg.endsWith('.lock'))) {
    throw new Error(`invalid revision ${JSON.stringify(rev)}: a branch, tag or commit hash (letters, digits, . _ - /; no "..")`);
  }
  return rev;
}

/** p inside dir (after resolving); refuses what a hostile name could make escape. */
function inside(dir: string, p: string): string {
  const r = path.relative(path.resolve(dir), path.resolve(p));
  if (r === '' || r.startsWith('..') || path.isAbsolute(r)) throw new Error(`refusing to write ${p}: outside ${dir}`);
  return p;
}

/** A file name from the server that may become a path in the snapshot folder. */
function checkRemoteName(f: string): string {
  if (typeof f !== 'string' || !f || f.length > 255 || f === '.' || f === '..' || f.startsWith('.') || /[/\\\0]/.test(f)) {
    throw new Error(`the Hub listed a file with an unsafe name ${JSON.stringify(f)}`);
  }
  return f;
}

/** models--org--name, as huggingface_hub names a repo's cache folder. */
export function repoCacheFolder(repoId: string, cacheDir?: string): string {
  return path.join(hubCacheDir(cacheDir), `models--${repoId.split('/').join('--')}`);
}

function looksLikePath(s: string): boolean {
  return s.startsWith('.') || s.startsWith('/') || s.startsWith('~') || s.includes('\\') || s.split('/').length > 2 || /^[A-Za-z]:/.test(s);
}

/** The cached snapshot folder for repoId@revision holding requiredFile, or null. */
export function findCachedSnapshot(repoId: string, opts: ResolveOptions = {}): string | null {
  const repoDir = repoCacheFolder(repoId, opts.cacheDir);
  const rev = checkRevision(opts.revision ?? 'main');
  const required = opts.requiredFile ?? 'config.json';
  let commit: string | null = null;
  if (COMMIT.test(rev)) commit = rev;
  else {
    const ref = path.join(repoDir, 'refs', rev);
    if (fs.existsSync(ref)) {
      commit = readTextFile(ref, { maxBytes: 4096 }).trim();
      if (!COMMIT.test(commit)) throw new Error(`${ref}: not a commit hash (${JSON.stringify(commit.slice(0, 60))})`);
    }
    else if (rev === 'main') {
      // No ref file (a copied cache): a single snapshot is unambiguous.
      const snaps = fs.existsSync(path.join(repoDir, 'snapshots')) ? fs.readdirSync(path.join(repoDir, 'snapshots')) : [];
      if (snaps.length === 1 && COMMIT.test(snaps[0])) commit = snaps[0];
    }
  }
  if (!commit) return null;
  const snap = path.join(repoDir, 'snapshots', commit);
  return fs.existsSync(path.join(snap, required)) ? snap : null;
}

function offlineError(repoId: string, opts: ResolveOptions, why: string): Error {
  const repoDir = repoCacheFolder(repoId, opts.cacheDir);
  const rev = opts.revision ?? 'main';
  return new Error(
    `cannot find model "${repoId}" (revision ${rev}): ${why}.\n` +
    `Put config.json, the tokenizer files (tokenizer.json, tokenizer_config.json) and the *.safetensors weights ` +
    `(plus model.safetensors.index.json when sharded; or pytorch_model*.bin) in\n  ${path.join(repoDir, 'snapshots', COMMIT.test(rev) ? rev : '<commit-hash>')}${path.sep}\n` +
    (COMMIT.test(rev) ? '' : `and write that <commit-hash> into ${path.join(repoDir, 'refs', rev)}\n`) +
    `or pass the path of a local folder that holds those files instead of "${repoId}".`);
}

/** Resolves without the network: a local folder or a cached snapshot, else a clear error. */
export function resolveLocalModelPath(idOrPath: string, opts: ResolveOptions = {}): string {
  const local = localFolder(idOrPath, opts);
  if (local) return local;
  const snap = findCachedSnapshot(idOrPath, opts);
  if (snap) return snap;
  throw offlineError(idOrPath, opts, 'it is not in the local cache');
}

function localFolder(idOrPath: string, opts: ResolveOptions): string | null {
  const required = opts.requiredFile ?? 'config.json';
  const p = idOrPath.startsWith('~') ? path.join(os.homedir(), idOrPath.slice(1)) : idOrPath;
  if (fs.existsSync(p) && fs.statSync(p).isDirectory()) {
    if (!fs.existsSync(path.join(p, required))) throw new Error(`folder ${path.resolve(p)} has no ${required}`);
    return path.resolve(p);
  }
  if (looksLikePath(idOrPath) || !HUB_ID.test(idOrPath)) {
    throw new Error(`"${idOrPath}" is neither an existing folder nor a Hub model id like "org/name"`);
  }
  return null;
}

/** PyTorch weight files, fetched only when a repo has no safetensors weights (transformers' fallback). */
export function isPytorchWeightFile(f: string): boolean {
  return !f.includes('/') && (/^(pytorch_model|adapter_model)(-\d+-of-\d+)?\.bin$/.test(f) || f === 'pytorch_model.bin.index.json');
}

/** Files we fetch from a model repo (weights as safetensors; see isPytorchWeightFile for .bin). */
export function wantedFile(f: string): boolean {
  if (f.includes('/')) return false;
  return f.endsWith('.safetensors') || f === 'model.safetensors.index.json' || [
    'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
    'chat_template.jinja', 'chat_template.json', 'added_tokens.json', 'vocab.json', 'vocab.txt', 'merges.txt',
    'tokenizer.model', 'adapter_config.json', 'label_mapping.json',
  ].includes(f);
}

/**
 * A local folder with config.json is used as is; a Hub id "org/name" is looked up in the
 * cache and, when online, downloaded into it. Returns the folder path.
 */
export async function resolveModelPath(idOrPath: string, opts: ResolveOptions = {}): Promise<string> {
  const local = localFolder(idOrPath, opts);
  if (local) return local;
  const cached = findCachedSnapshot(idOrPath, opts);
  if (cached) return cached;
  if (isOffline(opts)) throw offlineError(idOrPath, opts, 'it is not in the local cache and offline mode is on (HF_HUB_OFFLINE)');
  try {
    return await downloadSnapshot(idOrPath, opts);
  } catch (e) {
    const err = offlineError(idOrPath, opts, `download failed (${(e as Error).message})`);
    (err as Error & { cause?: unknown }).cause = e;
    throw err;
  }
}

/** Downloads config, tokenizer and weight files (safetensors, else PyTorch .bin) of repoId@revision into the cache layout. */
export async function downloadSnapshot(repoId: string, opts: ResolveOptions = {}): Promise<string> {
  // Everything the server says is untrusted: the commit, file names, sizes and ids become paths
  // only after checks, and the bytes must hash to the id the listing gave.
  if (!HUB_ID.test(repoId) || repoId.split('/').some((s) => s === '.' || s === '..')) throw new Error(`invalid Hub model id ${JSON.stringify(repoId)}`);
  const hub = await import('@huggingface/hub');
  const creds = { accessToken: hubToken(opts.token), hubUrl: hubEndpoint(opts.hubUrl), fetch: opts.fetch };
  const rev = checkRevision(opts.revision ?? 'main');
  const info = await hub.modelInfo({ name: repoId, revision: rev, additionalFields: ['sha'], ...creds });
  const commit = (info as { sha?: unknown }).sha;
  if (typeof commit !== 'string' || !COMMIT.test(commit)) throw new Error(`the Hub gave no valid commit hash for ${repoId}@${rev} (got ${JSON.stringify(commit)?.slice(0, 80)})`);
  if (COMMIT.test(rev) && commit !== rev) throw new Error(`the Hub answered commit ${commit} for revision ${rev}`);
  const entries = [];
  for await (const e of hub.listFiles({ repo: repoId, revision: commit, ...creds })) if (e.type === 'file') entries.push(e);
  const hasSafetensors = entries.some((e) => !e.path.includes('/') && e.path.endsWith('.safetensors'));
  // As transformers: safetensors when the repo has them, else the PyTorch .bin weights.
  const files = entries.filter((e) => typeof e.path === 'string' && (wantedFile(e.path) || (!hasSafetensors && isPytorchWeightFile(e.path))));
  const names = files.map((e) => e.path);
  if (!names.includes(opts.requiredFile ?? 'config.json')) throw new Error(`${repoId} has no ${opts.requiredFile ?? 'config.json'}`);
  const cacheRoot = hubCacheDir(opts.cacheDir);
  const repoDir = inside(cacheRoot, repoCacheFolder(repoId, opts.cacheDir));
  const snap = inside(repoDir, path.join(repoDir, 'snapshots', commit));
  const plan = files.map((e) => {
    const name = checkRemoteName(e.path);
    const lfs = e.lfs?.oid, oid = e.oid;
    // huggingface_hub names a blob by its LFS sha256, else by its git blob id.
    const etag = typeof lfs === 'string' && LFS_OID.test(lfs) ? lfs : typeof oid === 'string' && GIT_OID.test(oid) && !e.lfs ? oid : null;
    if (!etag) throw new Error(`the Hub gave ${name} no valid id (oid ${JSON.stringify(oid)?.slice(0, 80)}, lfs oid ${JSON.stringify(lfs)?.slice(0, 80)})`);
    const size = e.lfs?.size ?? e.size;
    if (!Number.isSafeInteger(size) || size < 0) throw new Error(`the Hub gave ${name} an invalid size ${JSON.stringify(size)}`);
    return { name, etag, size, blob: inside(repoDir, path.join(repoDir, 'blobs', etag)), dest: inside(snap, path.join(snap, name)) };
  });
  fs.mkdirSync(path.join(repoDir, 'blobs'), { recursive: true });
  fs.mkdirSync(snap, { recursive: true });
  for (const f of plan) {
    if (!fs.existsSync(f.blob)) {
      const data = await hub.downloadFile({ repo: repoId, path: f.name, revision: commit, ...creds });
      if (!data) throw new Error(`${f.name} vanished from ${repoId}@${commit}`);
      await writeBlobAtomically(f.blob, data, f);
    }
    linkIntoSnapshot(f.blob, f.dest);
  }
  if (!COMMIT.test(rev)) {
    const ref = inside(path.join(repoDir, 'refs'), path.join(repoDir, 'refs', rev));
    fs.mkdirSync(path.dirname(ref), { recursive: true });
    writeFileAtomically(ref, commit);
  }
  return snap;
}

/**
 * Streams a download to dest through a temp file, checking as it goes: never more bytes than
 * the listing's size, and at the end exactly that many, hashing to the listed id (sha256 of the
 * content for LFS ids, git's sha1 of "blob <size>\0" + content otherwise).
 */
async function writeBlobAtomically(dest: string, blob: Blob, want: { name: string; etag: string; size: number }): Promise<void> {
  const tmp = `${dest}.incomplete-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  let hash: Hash;
  if (want.etag.length === 64) hash = createHash('sha256');
  else { hash = createHash('sha1'); hash.update(`blob ${want.size}\0`); }
  let n = 0;
  try {
    // Streamed chunk by chunk: a multi-GB weight file never sits in memory whole.
    const reader = blob.stream().getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      n += value.length;
      if (n > want.size) { await reader.cancel().catch(() => {}); throw new Error(`${want.name}: the Hub sent more than the ${want.size} bytes it listed`); }
      hash.update(value);
      let off = 0;
      while (off < value.length) off += fs.writeSync(fd, value, off);
    }
    if (n !== want.size) throw new Error(`${want.name}: got ${n} bytes, the Hub listed ${want.size}`);
    const got = hash.digest('hex');
    if (got !== want.etag) throw new Error(`${want.name}: content hash ${got} does not match the id ${want.etag} the Hub listed (corrupt or tampered download)`);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  } catch (e) {
    try { fs.closeSync(fd); } catch { /* closed */ }
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.renameSync(tmp, dest);
}

function writeFileAtomically(dest: string, text: string): void {
  const tmp = `${dest}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, dest);
}

/** Relative symlink as huggingface_hub makes; a copy where symlinks are not allowed. */
function linkIntoSnapshot(blob: string, dest: string): void {
  fs.rmSync(dest, { force: true });
  try {
    fs.symlinkSync(path.relative(path.dirname(dest), blob), dest);
  } catch {
    fs.copyFileSync(blob, dest);
  }
}
