#!/usr/bin/env node
// Compiles the TypeScript, then runs the unit tests (in parallel) and the
// integration tests (one file at a time: they load BPF programs and measure
// CPU, so they must not compete with each other).
// Usage: node scripts/run-tests.mjs [unit|integration|<file filter>...]
import { spawnSync } from 'node:child_process';
import { readdirSync, existsSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);

const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit' });
if (tsc.status !== 0) process.exit(tsc.status ?? 1);

function files(dir) {
  const abs = path.join(root, 'dist/test', dir);
  if (!existsSync(abs)) return [];
  return readdirSync(abs).filter((f) => f.endsWith('.test.js')).sort().map((f) => path.join(abs, f));
}

const suites = [];
const want = (s) => args.length === 0 || args.includes(s);
const filters = args.filter((a) => a !== 'unit' && a !== 'integration');
const pick = (list) => (filters.length ? list.filter((f) => filters.some((x) => f.includes(x))) : list);
if (want('unit') || filters.length) suites.push({ name: 'unit', files: pick(files('unit')), concurrency: 2 });
if (want('integration') || filters.length) suites.push({ name: 'integration', files: pick(files('integration')), concurrency: 1 });

let failed = 0;
for (const suite of suites) {
  if (suite.files.length === 0) continue;
  console.log(`\n== ${suite.name} tests (${suite.files.length} files) ==`);
  const r = spawnSync(process.execPath, ['--test', `--test-concurrency=${suite.concurrency}`, ...suite.files], {
    stdio: 'inherit',
    cwd: root,
    env: { ...process.env, KERNTAP_TEST_ROOT: root },
  });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
