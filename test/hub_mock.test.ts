// The Hub both ways against a mock Hub on 127.0.0.1 (test/helpers/mock-hub.ts), reached through
// HF_ENDPOINT with the token from $HF_HOME/token: pushToHub for adapters, merged models and
// tokenizers (repo created, model card written, private repos, branches), then the same repos
// downloaded by id into the cache (library and CLI), offline reuse, and clear errors.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tensor, tidy, noGrad } from '../src/tensor/index.js';
import { AutoModelForCausalLM, type HFModel } from '../src/models/index.js';
import { Tokenizer } from '../src/io/index.js';
import { hubToken, hubEndpoint } from '../src/io/hub-env.js';
import { uploadFolder } from '../src/io/hub-upload.js';
import { resolveModelPath } from '../src/io/hub.js';
import { AutoPeftModelForCausalLM, LoraConfig, captureWarnings, getPeftModel } from '../src/peft/index.js';
import { startMockHub } from './helpers/mock-hub.js';
import { assertClose } from './helpers/compare.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = [path.resolve(here, '../..'), path.resolve(here, '..'), process.cwd()].find((p) => fs.existsSync(path.join(p, 'test', 'fixtures', 'autopeft')))!;
process.chdir(root);
const FIX = 'test/fixtures/autopeft';
const CLI = path.resolve(here, '../src/cli/main.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-ts-hub-'));
const hub = await startMockHub();
after(async () => { await hub.close(); fs.rmSync(tmp, { recursive: true, force: true }); });

// The environment a logged-in user has: HF_HOME with the token file, HF_ENDPOINT at our server.
const HF_HOME = path.join(tmp, 'hf-home');
fs.mkdirSync(HF_HOME, { recursive: true });
fs.writeFileSync(path.join(HF_HOME, 'token'), `${hub.token}\n`);
for (const k of ['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_TOKEN_PATH', 'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE']) delete process.env[k];
process.env.HF_HOME = HF_HOME;
process.env.HF_ENDPOINT = hub.url;

const IDS = [[1, 5, 9, 3, 7, 2]];
function run(model: { forward(i: { inputIds: ReturnType<typeof tensor> }): { logits: ReturnType<typeof tensor> } }): Float32Array {
  return tidy(() => noGrad(() => model.forward({ inputIds: tensor(Int32Array.from(IDS.flat()), [1, IDS[0].length]) }).logits.toFloat32Array()));
}
const quiet = { logger: () => {} };
function adapterModel() {
  const base = captureWarnings(() => AutoModelForCausalLM.fromPretrained(`${FIX}/gpt2_base`, quiet)).result;
  return getPeftModel(base, new LoraConfig({ r: 2, loraAlpha: 4, targetModules: ['c_attn'], taskType: 'CAUSAL_LM', initLoraWeights: false }));
}

test('token and endpoint come from the environment as huggingface_hub reads them', () => {
  assert.equal(hubToken(), hub.token, '$HF_HOME/token');
  process.env.HF_TOKEN = 'hf_from_env';
  try { assert.equal(hubToken(), 'hf_from_env', 'HF_TOKEN wins over the file'); } finally { delete process.env.HF_TOKEN; }
  assert.equal(hubToken('explicit'), 'explicit');
  process.env.HF_TOKEN_PATH = path.join(tmp, 'no-such-token');
  try { assert.equal(hubToken(), undefined); } finally { delete process.env.HF_TOKEN_PATH; }
  assert.equal(hubEndpoint(), hub.url);
  assert.equal(hubEndpoint('http://mirror.example/'), 'http://mirror.example');
  assert.throws(() => hubEndpoint('ftp://x'), /must be http\(s\)/);
});

test('PeftModel.pushToHub: repo created, adapter + peft model card committed; downloaded back by id with AutoPeftModel', async () => {
  const pm = adapterModel();
  const res = await captureWarnings(() => pm.pushToHub('me/tiny-lora')).result;
  assert.match(res.commitOid, /^[0-9a-f]{40}$/);
  assert.deepEqual(res.files, ['README.md', 'adapter_config.json', 'adapter_model.safetensors']);
  const files = hub.files('me/tiny-lora')!;
  assert.ok(files.has('adapter_model.safetensors') && files.has('.gitattributes'));
  const card = files.get('README.md')!.toString();
  assert.match(card, /^---\nbase_model: test\/fixtures\/autopeft\/gpt2_base\nlibrary_name: peft\npipeline_tag: text-generation\n/);
  assert.equal(JSON.parse(files.get('adapter_config.json')!.toString()).base_model_name_or_path, `${FIX}/gpt2_base`);
  assert.equal(hub.commitTitles.at(-1), 'Upload adapter');
  assert.ok(hub.requests.some((r) => r.startsWith('POST /me/tiny-lora.git/info/lfs/objects/batch')), 'the weights went through LFS');
  // pushing again reuses the repo (409 from create is fine), with the given commit message
  await captureWarnings(() => pm.pushToHub('me/tiny-lora', { commitMessage: 'second push' })).result;
  assert.equal(hub.commitTitles.at(-1), 'second push');

  const cacheDir = path.join(tmp, 'cache-a');
  const back = await captureWarnings(() => AutoPeftModelForCausalLM.fromPretrainedAsync('me/tiny-lora', { ...quiet, cacheDir })).result;
  assertClose(run(back), run(pm.eval()), { atol: 1e-6, msg: 'adapter downloaded by id' });
  // offline: the cache serves it with no request at all; a repo never downloaded is a clear error
  const n = hub.requests.length;
  process.env.HF_HUB_OFFLINE = '1';
  try {
    const again = captureWarnings(() => AutoPeftModelForCausalLM.fromPretrained('me/tiny-lora', { ...quiet, cacheDir })).result;
    assertClose(run(again), run(pm), { atol: 1e-6 });
    await assert.rejects(AutoPeftModelForCausalLM.fromPretrainedAsync('me/never-downloaded', { cacheDir }),
      /cannot find model "me\/never-downloaded" \(revision main\): it is not in the local cache and offline mode is on/);
  } finally { delete process.env.HF_HUB_OFFLINE; }
  assert.equal(hub.requests.length, n, 'offline made no request');
});

test('private repos need the token; a branch (revision) is created and read back', async () => {
  const pm = adapterModel();
  await captureWarnings(() => pm.pushToHub('me/private-lora', { private: true, revision: 'dev' })).result;
  assert.equal(hub.repos.get('me/private-lora')!.private, true);
  assert.ok(hub.files('me/private-lora', 'dev')!.has('adapter_config.json'));
  assert.ok(!hub.files('me/private-lora', 'main')!.has('adapter_config.json'), 'main untouched');
  // without a token (empty token file) the private repo is not visible
  fs.writeFileSync(path.join(HF_HOME, 'token'), '');
  try {
    await assert.rejects(resolveModelPath('me/private-lora', { cacheDir: path.join(tmp, 'cache-b'), revision: 'dev', requiredFile: 'adapter_config.json' }),
      /download failed \(.*(Repository not found|404).*\)/);
    await assert.rejects(pm.pushToHub('me/another'), /pushToHub needs a write token: pass \{ token \}, set HF_TOKEN, or log in/);
    // an explicit token works without the file
    const dir = await resolveModelPath('me/private-lora', { cacheDir: path.join(tmp, 'cache-b'), revision: 'dev', requiredFile: 'adapter_config.json', token: hub.token });
    assert.ok(fs.existsSync(path.join(dir, 'adapter_model.safetensors')));
    assert.equal(fs.readFileSync(path.join(tmp, 'cache-b', 'models--me--private-lora', 'refs', 'dev'), 'utf8'), hub.repos.get('me/private-lora')!.branches.get('dev'));
  } finally { fs.writeFileSync(path.join(HF_HOME, 'token'), hub.token); }
  await assert.rejects(pm.pushToHub('not a repo id'), /is not a Hub repo id/);
});

test('merged model and tokenizer pushed to one repo load back with fromPretrainedAsync', async () => {
  const pm = adapterModel();
  const want = run(pm.eval());
  const merged = pm.mergeAndUnload() as unknown as HFModel;
  await merged.pushToHub('me/merged');
  const tok = Tokenizer.fromFile(`${FIX}/bert_base`);
  await tok.pushToHub('me/merged', { commitMessage: 'tokenizer' });
  const files = hub.files('me/merged')!;
  for (const f of ['config.json', 'model.safetensors', 'README.md', 'tokenizer.json', 'tokenizer_config.json']) assert.ok(files.has(f), f);
  assert.match(files.get('README.md')!.toString(), /library_name: transformers/);
  const cacheDir = path.join(tmp, 'cache-c');
  const back = await AutoModelForCausalLM.fromPretrainedAsync('me/merged', { ...quiet, cacheDir });
  assert.equal(back.nameOrPath, 'me/merged');
  assertClose(run(back), want, { atol: 1e-5, msg: 'merged model from the Hub' });
  const snap = await resolveModelPath('me/merged', { cacheDir });
  assert.deepEqual(Tokenizer.fromFile(snap).encode('and the lord said'), tok.encode('and the lord said'));
});

test('CLI: --adapter by Hub id (base from its config), downloaded with the token file through HF_ENDPOINT', async () => {
  await uploadFolder('me/py-seqcls', `${FIX}/seqcls_adapter`, {});
  const out = path.join(tmp, 'pred.jsonl');
  const env = { ...process.env, HF_HUB_CACHE: path.join(tmp, 'cache-cli'), PEFT_TS_DEBUG: '' };
  const r = await new Promise<{ code: number; stderr: string }>((ok) => {
    execFile(process.execPath, [CLI, 'predict', '--adapter', 'me/py-seqcls', '--text', 'and the lord said', '--output', out], { cwd: root, env },
      (err, _stdout, stderr) => ok({ code: err ? (err as { code?: number }).code ?? 1 : 0, stderr }));
  });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(Object.keys(JSON.parse(fs.readFileSync(out, 'utf8')).scores), ['LABEL_0', 'LABEL_1', 'LABEL_2']);
  const bad = await new Promise<{ code: number; stderr: string }>((ok) => {
    execFile(process.execPath, [CLI, 'predict', '--adapter', 'me/py-seqcls', '--adapter-revision', 'nope', '--text', 'x'], { cwd: root, env },
      (err, _stdout, stderr) => ok({ code: err ? (err as { code?: number }).code ?? 1 : 0, stderr }));
  });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--adapter me\/py-seqcls: cannot find model "me\/py-seqcls" \(revision nope\)/);
});
