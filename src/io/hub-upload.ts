// push_to_hub: a folder written by savePretrained goes to a Hub model repo in one commit, with
// @huggingface/hub doing the protocol (create repo, preupload, LFS upload of the weights,
// commit). The repo is created when missing (an existing one is reused), as huggingface_hub's
// create_repo(exist_ok=True); a revision other than main is created as a branch first.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { hubEndpoint, hubToken, hubTokenPath } from './hub-env.js';

export interface PushToHubOptions {
  /** Write token (default HF_TOKEN, else the token file: see hub-env.ts). */
  token?: string;
  /** Create the repo private (only when it does not exist yet). */
  private?: boolean;
  /** Commit title (default "Upload <what>"). */
  commitMessage?: string;
  /** Branch to commit to (default main); created from main when missing. */
  revision?: string;
  /** The Hub's URL (default HF_ENDPOINT, else huggingface.co). */
  hubUrl?: string;
  /** Replaces global fetch (proxies; tests). */
  fetch?: typeof fetch;
}

export interface PushResult { repoId: string; commitOid: string; commitUrl: string; files: string[] }

const REPO_ID = /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/;

/** Files of dir, recursively, as repo paths with "/" (what savePretrained wrote). */
function listFolder(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...listFolder(path.join(dir, e.name), rel));
    else if (e.isFile()) out.push(rel);
  }
  return out;
}

function isStatus(e: unknown, code: number): boolean {
  return !!e && typeof e === 'object' && (e as { statusCode?: number }).statusCode === code;
}

/** Uploads every file of dir to repoId (one commit). */
export async function uploadFolder(repoId: string, dir: string, opts: PushToHubOptions & { what?: string } = {}): Promise<PushResult> {
  if (!REPO_ID.test(repoId) || repoId.includes('..')) throw new Error(`pushToHub: "${repoId}" is not a Hub repo id of the form "user-or-org/name"`);
  const accessToken = hubToken(opts.token);
  if (!accessToken) {
    throw new Error(`pushToHub needs a write token: pass { token }, set HF_TOKEN, or log in (\`huggingface-cli login\` writes ${hubTokenPath()})`);
  }
  const hub = await import('@huggingface/hub');
  const creds = { accessToken, hubUrl: hubEndpoint(opts.hubUrl), fetch: opts.fetch };
  const repo = { type: 'model' as const, name: repoId };
  try {
    await hub.createRepo({ repo, private: opts.private, ...creds });
  } catch (e) {
    if (!isStatus(e, 409)) throw new Error(`pushToHub: cannot create ${repoId}: ${(e as Error).message}`);
  }
  const branch = opts.revision && opts.revision !== 'main' ? opts.revision : undefined;
  if (branch) {
    try { await hub.createBranch({ repo, branch, ...creds }); } catch (e) {
      if (!isStatus(e, 409)) throw new Error(`pushToHub: cannot create branch ${branch} of ${repoId}: ${(e as Error).message}`);
    }
  }
  const files = listFolder(dir);
  if (!files.length) throw new Error(`pushToHub: nothing to upload in ${dir}`);
  const res = await hub.uploadFiles({
    repo, branch, ...creds,
    files: files.map((f) => ({ path: f, content: new Blob([fs.readFileSync(path.join(dir, ...f.split('/')))]) })),
    commitTitle: opts.commitMessage ?? `Upload ${opts.what ?? 'model'}`,
    // Plain LFS (no Xet): what every Hub server and mirror speaks.
    useXet: false,
  });
  if (!res?.commit?.oid) throw new Error(`pushToHub: the Hub gave no commit for ${repoId}`);
  return { repoId, commitOid: res.commit.oid, commitUrl: res.commit.url, files };
}

/** Runs write(dir) into a fresh temporary folder, uploads it, and removes it. */
export async function pushFolder(repoId: string, write: (dir: string) => void, opts: PushToHubOptions & { what?: string } = {}): Promise<PushResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-push-'));
  try {
    write(dir);
    return await uploadFolder(repoId, dir, opts);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
