// Every ```ts block of the README and docs/guide.md is a complete program: each is written
// out, type-checked against the package as a user imports it ('peft-ts' and its subpaths,
// resolved through package.json "exports"), compiled and run in a scratch folder. A sample
// that no longer compiles or runs fails here, so the docs cannot drift from the API.
// ```ts check blocks (the Hub: they need a network and an account) are type-checked only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = [path.resolve(here, '../..'), process.cwd()].find((p) => fs.existsSync(path.join(p, 'docs', 'guide.md')))!;
const DOCS = ['README.md', 'docs/guide.md'];

interface Sample { doc: string; line: number; code: string; file: string; run: boolean }

function extract(doc: string): Omit<Sample, 'file'>[] {
  const text = fs.readFileSync(path.join(root, doc), 'utf8');
  const out: Omit<Sample, 'file'>[] = [];
  for (const m of text.matchAll(/^```ts( check)?\n([\s\S]*?)^```$/gm)) out.push({ doc, line: text.slice(0, m.index).split('\n').length, code: m[2], run: !m[1] });
  return out;
}

// Inside the package folder, so that 'peft-ts' resolves to this checkout (a package may import itself by name).
const dir = path.join(root, 'dist', 'docs-samples');
fs.rmSync(dir, { recursive: true, force: true });
fs.mkdirSync(dir, { recursive: true });
const samples: Sample[] = DOCS.flatMap((d) => extract(d)).map((s, i) => {
  const file = path.join(dir, `${path.basename(s.doc, '.md').toLowerCase()}-${s.line}.ts`);
  fs.writeFileSync(file, s.code);
  return { ...s, file, i };
});

test('the docs have samples to check', () => {
  assert.ok(samples.filter((s) => s.doc === 'docs/guide.md').length >= 5, 'docs/guide.md samples');
  assert.ok(samples.some((s) => s.doc === 'README.md'), 'README sample');
});

test('every sample type-checks against the package exports', () => {
  const program = ts.createProgram(samples.map((s) => s.file), {
    module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022,
    strict: true, noEmit: true, skipLibCheck: true, types: ['node'],
  });
  const diags = ts.getPreEmitDiagnostics(program).filter((d) => d.file && samples.some((s) => s.file === d.file!.fileName));
  const msgs = diags.map((d) => {
    const s = samples.find((x) => x.file === d.file!.fileName)!;
    const { line } = d.file!.getLineAndCharacterOfPosition(d.start ?? 0);
    return `${s.doc}:${s.line + 1 + line}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
  });
  assert.deepEqual(msgs, []);
});

// Once per suite: the deferred-backend rerun of npm test checks kernels, not prose.
const skip = process.env.PEFT_TS_BACKEND === 'deferred' ? 'runs in the cpu pass' : false;
for (const s of samples.filter((x) => x.run)) {
  test(`${s.doc} sample at line ${s.line} runs`, { skip }, () => {
    const js = s.file.replace(/\.ts$/, '.js');
    fs.writeFileSync(js, ts.transpileModule(s.code, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText);
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'docs-sample-'));
    const r = spawnSync(process.execPath, [js], { cwd, encoding: 'utf8', timeout: 120_000 });
    fs.rmSync(cwd, { recursive: true, force: true });
    assert.equal(r.status, 0, `${s.doc}:${s.line} exited ${r.status}\n${r.stdout}\n${r.stderr}`);
    assert.ok(r.stdout.trim().length > 0, 'the sample prints its result');
  });
}
