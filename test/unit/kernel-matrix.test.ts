/**
 * README's kernel table is generated from the committed matrix results
 * (docs/kernel-matrix.json, written by `scripts/vm-test.sh --update-docs`):
 * it must equal the rendering of that file. The renderer also turns a run
 * that left no result (a hung or crashed guest) into a failure saying why.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT } from '../helpers/env.js';

interface Run { name: string; release: string; checks: { check: string; status: string; reason: string }[] }
interface Table {
  BEGIN: string;
  END: string;
  renderReadme(readme: string, summary: unknown): string;
  renderTable(summary: unknown): string;
  readRun(dir: string, name: string): Run;
  summarize(runs: Run[]): { kernels: { kernel: string; checks: Record<string, { status: string }> }[] };
}
const table = (await import(path.join(ROOT, 'scripts/kernel-table.mjs'))) as Table;

test('README kernel table = rendering of docs/kernel-matrix.json', () => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const summary = JSON.parse(readFileSync(path.join(ROOT, 'docs/kernel-matrix.json'), 'utf8')) as unknown;
  assert.ok(readme.includes(table.BEGIN) && readme.includes(table.END), 'README has the kernel-matrix markers');
  assert.equal(readme, table.renderReadme(readme, summary), 'README is up to date: run node scripts/kernel-table.mjs readme --docs docs/kernel-matrix.json --readme README.md');
});

test('the table has one row per kernel, the memory-192 boot folded into 6.1, and lists every non-pass reason', () => {
  const runs: Run[] = [
    { name: '6.1', release: '6.1.0-57-cloud-amd64', checks: [{ check: 'cpu', status: 'pass', reason: 'ok' }] },
    { name: 'memory-192', release: '6.1.0-57-cloud-amd64', checks: [{ check: 'memory-192', status: 'fail', reason: 'OOM-killed | badly' }] },
    { name: 'host', release: '6.18.3', checks: [{ check: 'cpu', status: 'skip', reason: 'why' }] },
  ];
  const summary = table.summarize(runs);
  assert.deepEqual(summary.kernels.map((k) => k.kernel), ['6.1', '6.18 (host)']);
  assert.equal(summary.kernels[0]!.checks['memory-192']!.status, 'fail');
  const text = table.renderTable(summary);
  assert.match(text, /^\| kernel \| release \| cpu \| memory-192 \|$/m);
  assert.match(text, /^\| 6\.1 \| 6\.1\.0-57-cloud-amd64 \| pass \| \*\*FAIL\*\* \|$/m);
  assert.match(text, /^\| 6\.18 \(host\) \| 6\.18\.3 \| skip \| – \|$/m);
  assert.match(text, /^- 6\.1, memory-192: fail: OOM-killed \\\| badly$/m);
  assert.match(text, /^- 6\.18 \(host\), cpu: skip: why$/m);
});

test('a guest that left no result is a failure naming the timeout or the console\'s last line', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'kt-matrix-'));
  mkdirSync(path.join(dir, '5.10'));
  writeFileSync(path.join(dir, '5.10/timeout'), 'timeout after 420s\n');
  mkdirSync(path.join(dir, '6.12'));
  writeFileSync(path.join(dir, '6.12/console.log'), 'booting\nKernel panic - not syncing: VFS\n\n');
  assert.deepEqual(table.readRun(dir, '5.10').checks, [{ check: 'run', status: 'fail', reason: 'timeout after 420s' }]);
  assert.equal(table.readRun(dir, '6.12').checks[0]!.reason, 'no result; console: Kernel panic - not syncing: VFS');
});

test('a guest that stopped mid-run fails the check it was in, keeps the checks before it, and a second boot is noted', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'kt-matrix-'));
  mkdirSync(path.join(dir, '6.12'));
  const partial = { kernel: '6.12', release: '6.12.57', checks: [{ check: 'collectors', status: 'pass', reason: 'all on' }], incomplete: true, running: 'sigterm' };
  writeFileSync(path.join(dir, '6.12/result.json'), JSON.stringify(partial));
  writeFileSync(path.join(dir, '6.12/timeout'), 'timeout after 420s\n');
  assert.deepEqual(table.readRun(dir, '6.12').checks, [
    { check: 'collectors', status: 'pass', reason: 'all on' },
    { check: 'sigterm', status: 'fail', reason: 'the guest stopped during this check: timeout after 420s' },
  ]);
  mkdirSync(path.join(dir, '6.1'));
  writeFileSync(path.join(dir, '6.1/first-boot.result.json'), JSON.stringify({ ...partial, running: 'retransmits' }));
  writeFileSync(path.join(dir, '6.1/first-boot.console.log'), 'check rtt: pass\n');
  writeFileSync(path.join(dir, '6.1/result.json'), JSON.stringify({ kernel: '6.1', release: '6.1.0', checks: [] }));
  const run = table.readRun(dir, '6.1') as Run & { first_boot?: string };
  assert.equal(run.first_boot, 'stopped during check retransmits; console: check rtt: pass');
});
