// A training process killed with SIGKILL after a checkpoint resumes from it and ends with
// an adapter byte-identical to an uninterrupted run (scripts/resume_check.sh does the work).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root = dirname(fileURLToPath(import.meta.url));
while (!existsSync(join(root, 'package.json'))) root = dirname(root);

test('killed training resumes to the same adapter as an uninterrupted run', { timeout: 300_000 }, () => {
  if (!existsSync(join(root, 'dist/src/cli/main.js'))) return;
  const out = mkdtempSync(join(tmpdir(), 'peft-ts-resume-'));
  try {
    const r = spawnSync('bash', [join(root, 'scripts/resume_check.sh'), out], { cwd: root, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /killed after: .*checkpoint-20/);
    assert.match(r.stdout, /IDENTICAL/);
    assert.ok(existsSync(join(out, 'killed', 'trainer_log.jsonl')));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
