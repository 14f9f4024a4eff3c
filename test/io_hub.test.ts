import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import {
  resolveModelPath, resolveLocalModelPath, hubCacheDir, repoCacheFolder, findCachedSnapshot,
} from '../src/io/hub.js';
import { loadCheckpointDir, writeSafetensors } from '../src/io/safetensors.js';
import { tensor } from '../src/tensor/ops/basic.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'io-hub-'));
process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }));
const COMMIT = 'a'.repeat(40);
const COMMIT2 = '0123456789abcdef0123456789abcdef01234567';

/** No test may reach the network: any fetch that is not the fake one fails loudly. */
const noNetwork = (async () => { throw new Error('network disabled in tests'); }) as unknown as typeof fetch;

function withEnv<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const old: Record<string, string | undefined> = {};
  for (const k of Object.keys(vars)) { old[k] = process.env[k]; if (vars[k] === undefined) delete process.env[k]; else process.env[k] = vars[k]; }
  try { return fn(); } finally {
    for (const k of Object.keys(vars)) { if (old[k] === undefined) delete process.env[k]; else process.env[k] = old[k]; }
  }
}

/** Builds the huggingface_hub cache layout by hand: blobs, snapshot symlinks, refs/main. */
function fakeCache(cacheDir: string, repo: string, commit: string, files: Record<string, string>, ref = 'main'): string {
  const repoDir = repoCacheFolder(repo, cacheDir);
  const snap = path.join(repoDir, 'snapshots', commit);
  fs.mkdirSync(path.join(repoDir, 'blobs'), { recursive: true });
  fs.mkdirSync(snap, { recursive: true });
  let i = 0;
  for (const [name, body] of Object.entries(files)) {
    const blob = path.join(repoDir, 'blobs', `etag${commit.slice(0, 4)}${i++}`);
    fs.writeFileSync(blob, body);
    fs.symlinkSync(path.relative(snap, blob), path.join(snap, name));
  }
  if (ref) { fs.mkdirSync(path.join(repoDir, 'refs'), { recursive: true }); fs.writeFileSync(path.join(repoDir, 'refs', ref), commit); }
  return snap;
}

test('a local folder with config.json is used as is', async () => {
  const d = path.join(root, 'local-model');
  fs.mkdirSync(d);
  fs.writeFileSync(path.join(d, 'config.json'), '{}');
  assert.equal(await resolveModelPath(d, { fetch: noNetwork }), path.resolve(d));
  assert.equal(resolveLocalModelPath(d), path.resolve(d));
  const empty = path.join(root, 'empty-folder');
  fs.mkdirSync(empty);
  await assert.rejects(resolveModelPath(empty, { fetch: noNetwork }), /folder .*empty-folder has no config\.json/);
  await assert.rejects(resolveModelPath('./no/such/folder/here', { fetch: noNetwork }), /neither an existing folder nor a Hub model id/);
});

test('fake cache layout: refs/main, explicit commit, other branch', async () => {
  const cache = path.join(root, 'cache1');
  const snap = fakeCache(cache, 'org/tiny', COMMIT, { 'config.json': '{"model_type":"gpt2"}', 'tokenizer.json': '{}' });
  fakeCache(cache, 'org/tiny', COMMIT2, { 'config.json': '{"v":2}' }, 'dev');
  assert.equal(await resolveModelPath('org/tiny', { cacheDir: cache, fetch: noNetwork }), snap);
  assert.equal(resolveLocalModelPath('org/tiny', { cacheDir: cache, revision: COMMIT2 }), path.join(repoCacheFolder('org/tiny', cache), 'snapshots', COMMIT2));
  assert.equal(resolveLocalModelPath('org/tiny', { cacheDir: cache, revision: 'dev' }).endsWith(COMMIT2), true);
  assert.equal(fs.readFileSync(path.join(snap, 'config.json'), 'utf8'), '{"model_type":"gpt2"}');
  assert.equal(findCachedSnapshot('org/other', { cacheDir: cache }), null);
  // Cache folder from the environment, as huggingface_hub reads it.
  withEnv({ HF_HUB_CACHE: cache, HUGGINGFACE_HUB_CACHE: undefined, HF_HOME: undefined }, () => {
    assert.equal(hubCacheDir(), cache);
    assert.equal(resolveLocalModelPath('org/tiny'), snap);
  });
  withEnv({ HF_HUB_CACHE: undefined, HUGGINGFACE_HUB_CACHE: undefined, HF_HOME: '/x/hf' }, () => assert.equal(hubCacheDir(), path.join('/x/hf', 'hub')));
  withEnv({ HF_HUB_CACHE: undefined, HUGGINGFACE_HUB_CACHE: undefined, HF_HOME: undefined, XDG_CACHE_HOME: undefined },
    () => assert.equal(hubCacheDir(), path.join(os.homedir(), '.cache', 'huggingface', 'hub')));
});

test('offline: the error names the exact folder to fill', async () => {
  const cache = path.join(root, 'cache-empty');
  const repoDir = path.join(cache, 'models--org--missing');
  await withEnv({ HF_HUB_OFFLINE: '1' }, async () => {
    await assert.rejects(resolveModelPath('org/missing', { cacheDir: cache, fetch: noNetwork }), (e: Error) => {
      assert.match(e.message, /cannot find model "org\/missing" \(revision main\): it is not in the local cache and offline mode is on/);
      assert.ok(e.message.includes(path.join(repoDir, 'snapshots', '<commit-hash>')), e.message);
      assert.ok(e.message.includes(path.join(repoDir, 'refs', 'main')), e.message);
      return true;
    });
  });
  await assert.rejects(resolveModelPath('org/missing', { cacheDir: cache, offline: true, revision: COMMIT }),
    (e: Error) => e.message.includes(path.join(repoDir, 'snapshots', COMMIT)));
  // A network failure gives the same guidance, with the cause.
  await withEnv({ HF_HUB_OFFLINE: undefined, TRANSFORMERS_OFFLINE: undefined }, async () => {
    await assert.rejects(resolveModelPath('org/missing', { cacheDir: cache, fetch: noNetwork }),
      /download failed \(network disabled in tests\)[\s\S]*models--org--missing/);
  });
});

/** The ids the Hub lists: git's blob sha1, and sha256 for LFS files. */
export const gitOid = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

// A tiny in-memory Hub answering the endpoints @huggingface/hub calls.
function fakeHub(repo: string, commit: string, files: Record<string, Buffer>): { fetch: typeof fetch; calls: string[] } {
  const calls: string[] = [];
  const f = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
    calls.push(url.pathname);
    const json = (v: unknown) => new Response(JSON.stringify(v), { status: 200, headers: { 'content-type': 'application/json' } });
    if (url.pathname === `/api/models/${repo}/revision/main`) {
      return json({ _id: 'x', id: repo, sha: commit, private: false, downloads: 0, likes: 0, lastModified: '2024-01-01T00:00:00Z' });
    }
    if (url.pathname === `/api/models/${repo}/tree/${commit}`) {
      return json(Object.entries(files).map(([p, b]) => ({
        type: 'file', path: p, size: b.length, oid: gitOid(b),
        ...(p.endsWith('.safetensors') ? { lfs: { oid: sha256(b), size: b.length, pointerSize: 100 } } : {}),
      })).concat([{ type: 'file', path: 'README.md', size: 1, oid: gitOid(Buffer.from('r')) } as never]));
    }
    const m = url.pathname.match(new RegExp(`^/${repo}/resolve/${commit}/(.+)$`));
    if (m && files[m[1]]) {
      const body = files[m[1]];
      const range = new Headers(init?.headers).get('Range');
      if (range === 'bytes=0-0') return new Response(new Uint8Array(body.subarray(0, 1)), { status: 206, headers: { 'content-range': `bytes 0-0/${body.length}`, etag: `"e-${m[1]}"` } });
      return new Response(new Uint8Array(body), { status: 200 });
    }
    return new Response('not found', { status: 404 });
  };
  return { fetch: f as typeof fetch, calls };
}

test('download into the cache layout (fake Hub), then reuse offline', async () => {
  const cache = path.join(root, 'cache-dl');
  const src = path.join(root, 'src-model');
  writeSafetensors(path.join(src, 'model.safetensors'), { 'w': tensor([1, 2, 3]) }, { format: 'pt' });
  const files = {
    'config.json': Buffer.from('{"model_type":"gpt2"}'),
    'tokenizer.json': Buffer.from('{"model":{}}'),
    'model.safetensors': fs.readFileSync(path.join(src, 'model.safetensors')),
  };
  const hub = fakeHub('org/dl', COMMIT, files);
  const snap = await withEnv({ HF_HUB_OFFLINE: undefined, TRANSFORMERS_OFFLINE: undefined },
    () => resolveModelPath('org/dl', { cacheDir: cache, fetch: hub.fetch }));
  const repoDir = repoCacheFolder('org/dl', cache);
  assert.equal(snap, path.join(repoDir, 'snapshots', COMMIT));
  assert.equal(fs.readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8'), COMMIT);
  assert.deepEqual(fs.readdirSync(snap).sort(), ['config.json', 'model.safetensors', 'tokenizer.json']); // README.md not fetched
  assert.ok(fs.lstatSync(path.join(snap, 'model.safetensors')).isSymbolicLink());
  assert.ok(fs.existsSync(path.join(repoDir, 'blobs', sha256(files['model.safetensors']))));
  assert.deepEqual(fs.readdirSync(path.join(repoDir, 'blobs')).filter((f) => f.includes('incomplete')), []);
  assert.deepEqual(Array.from(loadCheckpointDir(snap).get('w')!.data), [1, 2, 3]);
  // Second time: found in the cache, no request at all, even offline.
  const n = hub.calls.length;
  assert.equal(await resolveModelPath('org/dl', { cacheDir: cache, fetch: hub.fetch, offline: true }), snap);
  assert.equal(hub.calls.length, n);
});
