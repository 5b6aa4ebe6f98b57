/** Any non-empty CI value means CI, for the test helpers and for scripts/test-deps.sh alike. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT, inCi } from '../helpers/env.js';

test('inCi: every non-empty CI value counts', () => {
  for (const v of ['true', '1', 'yes', 'woodpecker']) assert.equal(inCi({ CI: v }), true, `CI=${v}`);
  assert.equal(inCi({ CI: '' }), false);
  assert.equal(inCi({}), false);
});

test('test-deps.sh fails without a usable Go under any CI value, and only warns outside CI', () => {
  // A copy of the script in a tree whose venv already "works" (a stub), so only the Go check runs.
  const dir = mkdtempSync(path.join(tmpdir(), 'kt-deps-'));
  mkdirSync(path.join(dir, 'scripts'));
  copyFileSync(path.join(ROOT, 'scripts/test-deps.sh'), path.join(dir, 'scripts/test-deps.sh'));
  // The image base it also makes is not what this test is about.
  writeFileSync(path.join(dir, 'scripts/image-bases.sh'), 'exit 0\n');
  mkdirSync(path.join(dir, '.tools/venv/bin'), { recursive: true });
  writeFileSync(path.join(dir, '.tools/venv/bin/python'), '#!/bin/sh\nexit 0\n');
  chmodSync(path.join(dir, '.tools/venv/bin/python'), 0o755);
  const run = (ci: string) => spawnSync('bash', [path.join(dir, 'scripts/test-deps.sh')], { encoding: 'utf8', env: { ...process.env, GO: '/bin/false', CI: ci } });
  for (const ci of ['1', 'yes', 'true']) {
    const r = run(ci);
    assert.equal(r.status, 1, `CI=${ci}: ${r.stderr}`);
    assert.match(r.stderr, /Go 1\.21 or later is needed/);
  }
  const local = run('');
  assert.equal(local.status, 0, local.stderr);
  assert.match(local.stderr, /its test will be skipped/);
});
