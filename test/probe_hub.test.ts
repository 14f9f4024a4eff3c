// Probes of Hub downloads against a hostile server on 127.0.0.1: ids, revisions, file names,
// sizes and contents from the server are checked before they become paths or cache files,
// and nothing is ever written outside the cache folder.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { checkRevision, downloadSnapshot, repoCacheFolder, resolveModelPath } from '../src/io/hub.js';

const COMMIT = 'c'.repeat(40);
const gitOid = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface Entry { path: string; body: Buffer; oid?: string; lfs?: { oid: string; size: number }; size?: number; send?: Buffer }
interface Scenario { sha?: unknown; entries: Entry[] }

let scenario: Scenario = { entries: [] };
const server = http.createServer((req, res) => {
  const url = new URL(req.url!, 'http://x');
  const json = (v: unknown) => { res.writeHead(200, { 'content-type': 'application/json' }); res.end(JSON.stringify(v)); };
  if (/^\/api\/models\/[^/]+\/[^/]+\/revision\//.test(url.pathname)) {
    return json({ _id: 'x', id: 'org/m', sha: scenario.sha ?? COMMIT, private: false, downloads: 0, likes: 0, lastModified: '2024-01-01T00:00:00Z' });
  }
  if (/^\/api\/models\/[^/]+\/[^/]+\/tree\//.test(url.pathname)) {
    return json(scenario.entries.map((e) => ({
      type: 'file', path: e.path, size: e.size ?? e.body.length, oid: e.oid ?? gitOid(e.body), ...(e.lfs ? { lfs: { ...e.lfs, pointerSize: 100 } } : {}),
    })));
  }
  const m = url.pathname.match(/^\/[^/]+\/[^/]+\/resolve\/[^/]+\/(.+)$/);
  const e = m && scenario.entries.find((x) => x.path === decodeURIComponent(m[1]));
  if (e) {
    const body = e.send ?? e.body;
    if (req.headers.range === 'bytes=0-0') { res.writeHead(206, { 'content-range': `bytes 0-0/${body.length}`, etag: '"e"' }); res.end(body.subarray(0, 1)); return; }
    res.writeHead(200, { 'content-length': String(body.length) }); res.end(body); return;
  }
  res.writeHead(404); res.end('not found');
});
const ready = new Promise<string>((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
after(() => server.close());

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-probe-hub-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
const cfg = Buffer.from('{"model_type":"gpt2"}');

/** Every file under dir (a hostile answer must leave nothing outside the cache). */
function allFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((d) => !d.isDirectory()).map((d) => path.join(d.parentPath ?? (d as unknown as { path: string }).path, d.name));
}

async function attempt(name: string, s: Scenario, opts: { revision?: string } = {}): Promise<{ err: Error | null; cache: string; outside: string[] }> {
  scenario = s;
  const hubUrl = await ready;
  const sandbox = path.join(tmp, name);
  const cache = path.join(sandbox, 'cache');
  fs.mkdirSync(cache, { recursive: true });
  let err: Error | null = null;
  try { await downloadSnapshot('org/m', { cacheDir: cache, hubUrl, revision: opts.revision }); } catch (e) { err = e as Error; }
  const outside = allFiles(sandbox).filter((f) => !path.resolve(f).startsWith(path.resolve(cache) + path.sep));
  return { err, cache, outside };
}

test('a well-behaved server: files land in the cache, ids verified', async () => {
  const w = Buffer.from('weights-bytes');
  const { err, cache } = await attempt('good', { entries: [{ path: 'config.json', body: cfg }, { path: 'model.safetensors', body: w, lfs: { oid: sha256(w), size: w.length } }] });
  assert.equal(err, null);
  const snap = path.join(repoCacheFolder('org/m', cache), 'snapshots', COMMIT);
  assert.equal(fs.readFileSync(path.join(snap, 'config.json'), 'utf8'), cfg.toString());
  assert.ok(fs.existsSync(path.join(repoCacheFolder('org/m', cache), 'blobs', sha256(w))));
});

test('hostile ids, names, revisions, sizes and contents are refused; nothing is written outside the cache', async () => {
  const w = Buffer.from('weights');
  const cases: [string, Scenario, RegExp, { revision?: string }?][] = [
    ['oid-traversal', { entries: [{ path: 'config.json', body: cfg, oid: '../../../../evil' }] }, /config\.json no valid id/],
    ['lfs-traversal', { entries: [{ path: 'config.json', body: cfg }, { path: 'model.safetensors', body: w, lfs: { oid: '../../../evil', size: w.length } }] }, /model\.safetensors no valid id/],
    ['lfs-absolute', { entries: [{ path: 'config.json', body: cfg }, { path: 'model.safetensors', body: w, lfs: { oid: '/tmp/evil', size: w.length } }] }, /no valid id/],
    ['sha-traversal', { sha: '../../evil', entries: [{ path: 'config.json', body: cfg }] }, /no valid commit hash/],
    ['sha-missing', { sha: 12, entries: [{ path: 'config.json', body: cfg }] }, /no valid commit hash/],
    ['dot-name', { entries: [{ path: 'config.json', body: cfg }, { path: '.safetensors', body: w, lfs: { oid: sha256(w), size: w.length } }] }, /unsafe name "\.safetensors"/],
    ['tampered', { entries: [{ path: 'config.json', body: cfg, send: Buffer.from('{"model_type":"evil"}') }] }, /config\.json: (content hash .* does not match|got 21 bytes)/],
    ['same-size-tampered', { entries: [{ path: 'config.json', body: cfg, send: Buffer.from('{"model_type":"gpt3"}') }] }, /content hash [0-9a-f]+ does not match/],
    ['oversize', { entries: [{ path: 'config.json', body: cfg, send: Buffer.concat([cfg, Buffer.alloc(1 << 20)]) }] }, /sent more than the 21 bytes/],
    ['bad-size', { entries: [{ path: 'config.json', body: cfg, size: -5 }] }, /invalid size -5/],
    ['revision-traversal', { entries: [{ path: 'config.json', body: cfg }] }, /invalid revision "\.\.\/\.\.\/\.\.\/escape"/, { revision: '../../../escape' }],
    ['revision-commit-mismatch', { entries: [{ path: 'config.json', body: cfg }] }, /answered commit c{40} for revision d{40}/, { revision: 'd'.repeat(40) }],
  ];
  for (const [name, s, re, opts] of cases) {
    const { err, cache, outside } = await attempt(name, s, opts);
    assert.ok(err, `${name}: refused`);
    assert.match(err!.message, re, name);
    assert.deepEqual(outside, [], `${name}: nothing outside the cache`);
    assert.deepEqual(allFiles(cache).filter((f) => /incomplete|evil/.test(f)), [], `${name}: no partial or hostile file left`);
  }
  // Names with a path in them are never fetched (a folder in the repo, or a traversal attempt).
  const { err, outside, cache } = await attempt('path-names', { entries: [{ path: 'config.json', body: cfg }, { path: '../../x.safetensors', body: w, lfs: { oid: sha256(w), size: w.length } }] });
  assert.equal(err, null);
  assert.deepEqual(outside, []);
  assert.ok(!allFiles(cache).some((f) => f.endsWith('x.safetensors')));
});

test('revisions are checked before use, in the cache too', async () => {
  for (const ok of ['main', 'v1.0', 'refs/pr/1', 'a'.repeat(40)]) assert.equal(checkRevision(ok), ok);
  for (const bad of ['', '..', '../x', 'a/../../b', '/abs', 'a//b', 'x\0', 'a b', 'x.lock']) assert.throws(() => checkRevision(bad), /invalid revision/);
  await assert.rejects(resolveModelPath('org/m', { cacheDir: path.join(tmp, 'c2'), revision: '../../etc', offline: true }), /invalid revision/);
  // A refs file that does not hold a commit hash is not followed.
  const repo = repoCacheFolder('org/r', path.join(tmp, 'c3'));
  fs.mkdirSync(path.join(repo, 'refs'), { recursive: true });
  fs.writeFileSync(path.join(repo, 'refs', 'main'), '../../../../etc');
  await assert.rejects(resolveModelPath('org/r', { cacheDir: path.join(tmp, 'c3'), offline: true }), /refs\/main: not a commit hash/);
});
