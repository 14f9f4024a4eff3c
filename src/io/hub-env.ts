// Where the Hub is and who we are, read as huggingface_hub reads them: HF_ENDPOINT for the
// server, the token from HF_TOKEN, else the file `huggingface-cli login` writes
// (HF_TOKEN_PATH, else $HF_HOME/token, default ~/.cache/huggingface/token).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** $HF_HOME (default $XDG_CACHE_HOME/huggingface, ~/.cache/huggingface). */
export function hfHome(): string {
  const env = process.env;
  return env.HF_HOME ?? path.join(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'huggingface');
}

/** The token file huggingface_hub reads (and `huggingface-cli login` writes). */
export function hubTokenPath(): string {
  return process.env.HF_TOKEN_PATH ?? path.join(hfHome(), 'token');
}

/** An explicit token, else HF_TOKEN (or the older HUGGING_FACE_HUB_TOKEN), else the token file; undefined when none. */
export function hubToken(explicit?: string): string | undefined {
  const clean = (s: string | undefined) => (s ?? '').replace(/[\r\n]+/g, '').trim() || undefined;
  const t = clean(explicit) ?? clean(process.env.HF_TOKEN) ?? clean(process.env.HUGGING_FACE_HUB_TOKEN);
  if (t) return t;
  try { return clean(fs.readFileSync(hubTokenPath(), 'utf8')); } catch { return undefined; }
}

/** The Hub's base URL: explicit, else HF_ENDPOINT (mirrors, a local server), else the library default (huggingface.co). */
export function hubEndpoint(explicit?: string): string | undefined {
  const e = explicit ?? process.env.HF_ENDPOINT;
  if (!e) return undefined;
  let u: URL;
  try { u = new URL(e); } catch { throw new Error(`HF_ENDPOINT / hubUrl '${e}' is not a URL`); }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`HF_ENDPOINT / hubUrl '${e}' must be http(s)`);
  return e.replace(/\/+$/, '');
}
