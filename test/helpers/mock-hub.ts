// A small Hugging Face Hub on 127.0.0.1 for tests: the endpoints @huggingface/hub calls for
// model repos (create repo, branch, preupload, LFS batch + upload, commit, revision info, tree,
// resolve with ranges), with a bearer token, private repos and git-style commit ids. Nothing
// leaves the machine.
import * as http from 'node:http';
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';

interface Repo { private: boolean; branches: Map<string, string>; commits: Map<string, Map<string, Buffer>> }

export interface MockHub {
  url: string;
  token: string;
  repos: Map<string, Repo>;
  /** "METHOD /path" of every request, in order. */
  requests: string[];
  /** Files of repoId at a branch or commit. */
  files(repoId: string, rev?: string): Map<string, Buffer> | undefined;
  /** Commit messages of the commits made through the commit endpoint. */
  commitTitles: string[];
  /** Adds a repo holding these files (one commit on main); returns the commit id. */
  seed(repoId: string, files: Record<string, Buffer | string>, opts?: { private?: boolean }): string;
  close(): Promise<void>;
}

const sha1 = (b: Buffer | string) => createHash('sha1').update(b).digest('hex');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const isLfs = (p: string, size: number) => /\.(safetensors|bin)$/.test(p) || size > 10 * 1024 * 1024;

export async function startMockHub(token = 'hf_test_token'): Promise<MockHub> {
  const repos = new Map<string, Repo>();
  const lfs = new Map<string, Buffer>();
  const requests: string[] = [];
  const commitTitles: string[] = [];
  let url = '';

  const newCommit = (repo: Repo, parent: string | null, files: Map<string, Buffer>, title: string): string => {
    const oid = sha1(`${parent}\n${title}\n${[...files].map(([p, b]) => `${p}:${sha1(b)}`).join('\n')}\n${repo.commits.size}`);
    repo.commits.set(oid, files);
    return oid;
  };
  const createRepo = (id: string, priv: boolean): Repo => {
    const repo: Repo = { private: priv, branches: new Map(), commits: new Map() };
    repo.branches.set('main', newCommit(repo, null, new Map([['.gitattributes', Buffer.from('*.safetensors filter=lfs diff=lfs merge=lfs -text\n')]]), 'initial commit'));
    repos.set(id, repo);
    return repo;
  };
  const resolveRev = (repo: Repo, rev: string): string | undefined => repo.branches.get(rev) ?? (repo.commits.has(rev) ? rev : undefined);

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try { handle(req, res, Buffer.concat(chunks)); } catch (e) { send(res, 500, { error: String(e) }); }
    });
  });

  function send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    if (Buffer.isBuffer(body)) { res.writeHead(status, headers); res.end(body); return; }
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  }

  function handle(req: http.IncomingMessage, res: http.ServerResponse, body: Buffer): void {
    const u = new URL(req.url ?? '/', url);
    const p = decodeURIComponent(u.pathname);
    requests.push(`${req.method} ${u.pathname}`);
    const authed = req.headers.authorization === `Bearer ${token}`;
    const needAuth = () => { send(res, 401, { error: 'Invalid credentials in Authorization header' }); };
    const repoOr404 = (id: string): Repo | null => {
      const r = repos.get(id);
      if (!r || (r.private && !authed)) { send(res, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' }); return null; }
      return r;
    };
    let m: RegExpMatchArray | null;
    if (req.method === 'POST' && p === '/api/repos/create') {
      if (!authed) return needAuth();
      const j = JSON.parse(body.toString());
      const id = `${j.organization}/${j.name}`;
      if (repos.has(id)) return send(res, 409, { error: 'You already created this model repo', url: `${url}/${id}` });
      createRepo(id, j.visibility === 'private' || j.private === true);
      return send(res, 200, { url: `${url}/${id}`, id });
    }
    if ((m = p.match(/^\/api\/models\/([^/]+\/[^/]+)\/branch\/(.+)$/)) && req.method === 'POST') {
      if (!authed) return needAuth();
      const repo = repoOr404(m[1]); if (!repo) return;
      if (repo.branches.has(m[2])) return send(res, 409, { error: 'Reference already exists' });
      repo.branches.set(m[2], repo.branches.get('main')!);
      return send(res, 200, {});
    }
    if ((m = p.match(/^\/api\/models\/([^/]+\/[^/]+)\/preupload\/(.+)$/)) && req.method === 'POST') {
      if (!authed) return needAuth();
      if (!repoOr404(m[1])) return;
      const j = JSON.parse(body.toString()) as { files: { path: string; size: number }[] };
      return send(res, 200, { files: j.files.map((f) => ({ path: f.path, uploadMode: isLfs(f.path, f.size) ? 'lfs' : 'regular', shouldIgnore: false })) });
    }
    if ((m = p.match(/^\/([^/]+\/[^/]+)\.git\/info\/lfs\/objects\/batch$/)) && req.method === 'POST') {
      if (!authed) return needAuth();
      if (!repoOr404(m[1])) return;
      const j = JSON.parse(body.toString()) as { objects: { oid: string; size: number }[] };
      return send(res, 200, {
        transfer: 'basic',
        objects: j.objects.map((o) => ({ oid: o.oid, size: o.size, ...(lfs.has(o.oid) ? {} : { actions: { upload: { href: `${url}/lfs-upload/${o.oid}` } } }) })),
      }, { 'content-type': 'application/vnd.git-lfs+json' });
    }
    if ((m = p.match(/^\/lfs-upload\/([0-9a-f]{64})$/)) && req.method === 'PUT') {
      if (sha256(body) !== m[1]) return send(res, 400, { error: 'sha256 mismatch' });
      lfs.set(m[1], body);
      return send(res, 200, {}, { ETag: `"${m[1]}"` });
    }
    if ((m = p.match(/^\/api\/models\/([^/]+\/[^/]+)\/commit\/(.+)$/)) && req.method === 'POST') {
      if (!authed) return needAuth();
      const repo = repoOr404(m[1]); if (!repo) return;
      const branch = m[2];
      const head = repo.branches.get(branch);
      if (!head) return send(res, 404, { error: `Invalid rev id: ${branch}` }, { 'X-Error-Code': 'RevisionNotFound' });
      const files = new Map(repo.commits.get(head)!);
      let title = '';
      for (const line of body.toString().split('\n').filter(Boolean)) {
        const { key, value } = JSON.parse(line);
        if (key === 'header') title = value.summary;
        else if (key === 'file') files.set(value.path, Buffer.from(value.content, value.encoding === 'base64' ? 'base64' : 'utf8'));
        else if (key === 'lfsFile') {
          const blob = lfs.get(value.oid);
          if (!blob) return send(res, 400, { error: `LFS object ${value.oid} was never uploaded` });
          files.set(value.path, blob);
        } else if (key === 'deletedFile') files.delete(value.path);
      }
      const oid = newCommit(repo, head, files, title);
      repo.branches.set(branch, oid);
      commitTitles.push(title);
      return send(res, 200, { commitOid: oid, commitUrl: `${url}/${m[1]}/commit/${oid}` });
    }
    if ((m = p.match(/^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/)) && req.method === 'GET') {
      const repo = repoOr404(m[1]); if (!repo) return;
      const sha = resolveRev(repo, m[2]);
      if (!sha) return send(res, 404, { error: `Invalid rev id: ${m[2]}` }, { 'X-Error-Code': 'RevisionNotFound' });
      return send(res, 200, { _id: m[1], id: m[1], sha, private: repo.private, downloads: 0, likes: 0, lastModified: '2026-01-01T00:00:00.000Z', gated: false, disabled: false, tags: [] });
    }
    if ((m = p.match(/^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)$/)) && req.method === 'GET') {
      const repo = repoOr404(m[1]); if (!repo) return;
      const sha = resolveRev(repo, m[2]);
      if (!sha) return send(res, 404, { error: 'Invalid rev id' }, { 'X-Error-Code': 'RevisionNotFound' });
      return send(res, 200, [...repo.commits.get(sha)!].map(([path, b]) => ({
        type: 'file', path, size: b.length, oid: sha1(`blob ${b.length}\0${b.toString('binary')}`),
        ...(isLfs(path, b.length) ? { lfs: { oid: sha256(b), size: b.length, pointerSize: 134 } } : {}),
      })));
    }
    if ((m = p.match(/^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/)) && (req.method === 'GET' || req.method === 'HEAD')) {
      const repo = repoOr404(m[1]); if (!repo) return;
      const sha = resolveRev(repo, m[2]);
      const b = sha ? repo.commits.get(sha)!.get(m[3]) : undefined;
      if (!b) return send(res, 404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound' });
      const etag = `"${isLfs(m[3], b.length) ? sha256(b) : sha1(b)}"`;
      const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''));
      if (range) {
        const a = Number(range[1]), z = range[2] ? Math.min(Number(range[2]), b.length - 1) : b.length - 1;
        return send(res, 206, b.subarray(a, z + 1), { 'content-range': `bytes ${a}-${z}/${b.length}`, etag, 'content-type': 'application/octet-stream', 'x-repo-commit': sha! });
      }
      return send(res, 200, b, { etag, 'content-type': 'application/octet-stream', 'x-repo-commit': sha! });
    }
    send(res, 404, { error: `mock hub: no route for ${req.method} ${p}` });
  }

  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url, token, repos, requests, commitTitles,
    files(repoId, rev = 'main') {
      const r = repos.get(repoId);
      const sha = r && resolveRev(r, rev);
      return sha ? r!.commits.get(sha) : undefined;
    },
    seed(repoId, files, opts = {}) {
      const repo = createRepo(repoId, !!opts.private);
      const all = new Map(repo.commits.get(repo.branches.get('main')!)!);
      for (const [p, b] of Object.entries(files)) all.set(p, Buffer.isBuffer(b) ? b : Buffer.from(b));
      const oid = newCommit(repo, repo.branches.get('main')!, all, 'seed');
      repo.branches.set('main', oid);
      return oid;
    },
    close: () => new Promise<void>((ok) => { server.closeAllConnections(); server.close(() => ok()); }),
  };
}
