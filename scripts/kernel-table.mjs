#!/usr/bin/env node
// The kernel matrix's results, gathered and rendered (used by scripts/vm-test.sh).
//
//   node scripts/kernel-table.mjs matrix --results DIR --out FILE [--docs FILE --readme README.md] NAME...
//       reads DIR/NAME/result.json of each run, prints the table kernel x check,
//       writes every result to FILE; exits 1 if any check failed (or a run gave no result).
//       With --docs, also writes the committed summary and README's kernel table.
//   node scripts/kernel-table.mjs sweep --results DIR --out FILE NAME...
//       the many-CPUs sweep, one row per boot, to FILE.
//   node scripts/kernel-table.mjs readme --docs FILE --readme README.md
//       re-renders README's kernel table from the committed summary.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

export const BEGIN = '<!-- kernel-matrix:begin -->';
export const END = '<!-- kernel-matrix:end -->';
const CHECK_ORDER = ['collectors', 'cpu', 'bytes', 'live', 'connects', 'rtt', 'listeners', 'retransmits', 'top', 'sigterm', 'memory-192'];
/** The memory-192 boot is the 6.1 kernel with 192 possible CPUs: its check joins the 6.1 row. */
const rowOf = (name) => (name === 'memory-192' ? '6.1' : name);

function lastLine(file) {
  if (!existsSync(file)) return '';
  return readFileSync(file, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean).slice(-1)[0] ?? '';
}

/** Why vm-test.sh booted a guest twice (its first boot left no final result), or undefined. */
function firstBootOf(base) {
  const console = path.join(base, 'first-boot.console.log');
  if (!existsSync(console)) return undefined;
  const result = path.join(base, 'first-boot.result.json');
  const running = existsSync(result) ? JSON.parse(readFileSync(result, 'utf8')).running : undefined;
  return `${running ? `stopped during check ${running}` : 'no result'}; console: ${lastLine(console).slice(0, 200) || 'empty'}`;
}

/** One run's result; a run that wrote none (hang, crash, boot failure) becomes a failure saying so. */
export function readRun(dir, name) {
  const base = path.join(dir, name);
  const seconds = Number(existsSync(path.join(base, 'seconds')) ? readFileSync(path.join(base, 'seconds'), 'utf8') : NaN);
  const file = path.join(base, 'result.json');
  const timeout = existsSync(path.join(base, 'timeout')) ? readFileSync(path.join(base, 'timeout'), 'utf8').trim() : '';
  const why = timeout || `no result; console: ${lastLine(path.join(base, 'console.log')).slice(0, 200) || 'empty'}`;
  const firstBoot = firstBootOf(base);
  if (existsSync(file)) {
    const run = { name, wall_seconds: seconds, ...JSON.parse(readFileSync(file, 'utf8')), ...(firstBoot ? { first_boot: firstBoot } : {}) };
    // Written at the start of every check: the guest stopped during `running`.
    if (run.incomplete) run.checks = [...run.checks, { check: run.running, status: 'fail', reason: `the guest stopped during this check: ${why}` }];
    return run;
  }
  return { name, wall_seconds: seconds, kernel: name, release: '?', checks: [{ check: name === 'memory-192' ? 'memory-192' : 'run', status: 'fail', reason: why }] };
}

/** Rows of kernels (series, release), each with its checks by name. */
export function summarize(runs) {
  const rows = new Map();
  for (const run of runs) {
    const key = rowOf(run.name);
    const row = rows.get(key) ?? { kernel: key === 'host' ? `${run.release.split('.').slice(0, 2).join('.')} (host)` : key, release: run.release, checks: {} };
    if (run.name === key || row.release === '?') row.release = run.release;
    for (const c of run.checks) row.checks[c.check] = { status: c.status, reason: c.reason };
    rows.set(key, row);
  }
  return { kernels: [...rows.values()] };
}

function checksOf(summary) {
  const all = new Set(summary.kernels.flatMap((k) => Object.keys(k.checks)));
  return [...CHECK_ORDER.filter((c) => all.has(c)), ...[...all].filter((c) => !CHECK_ORDER.includes(c)).sort()];
}

const MARK = { pass: 'pass', fail: '**FAIL**', skip: 'skip' };

/** README's kernel table (between the markers) from the committed summary. */
export function renderTable(summary) {
  const checks = checksOf(summary);
  const lines = [
    `| kernel | release | ${checks.join(' | ')} |`,
    `|---|---|${checks.map(() => '---').join('|')}|`,
  ];
  const notes = [];
  for (const k of summary.kernels) {
    lines.push(`| ${k.kernel} | ${k.release} | ${checks.map((c) => (k.checks[c] ? MARK[k.checks[c].status] : '–')).join(' | ')} |`);
    for (const c of checks) {
      const r = k.checks[c];
      if (r && r.status !== 'pass') notes.push(`- ${k.kernel}, ${c}: ${r.status}: ${r.reason.replace(/\|/g, '\\|')}`);
    }
  }
  return [...lines, ...(notes.length ? ['', ...notes] : [])].join('\n');
}

export function renderReadme(readme, summary) {
  const a = readme.indexOf(BEGIN);
  const b = readme.indexOf(END);
  if (a < 0 || b < a) throw new Error(`README has no ${BEGIN} … ${END} section`);
  return `${readme.slice(0, a + BEGIN.length)}\n${renderTable(summary)}\n${readme.slice(b)}`;
}

function pad(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n');
}

function matrix(values, names) {
  const runs = names.map((n) => readRun(values.results, n));
  const rows = [['KERNEL', 'CHECK', 'RESULT', 'REASON']];
  for (const run of runs) {
    for (const c of run.checks) rows.push([`${run.name} (${run.release})`, c.check, c.status.toUpperCase(), c.reason]);
  }
  console.log(pad(rows));
  for (const run of runs) if (run.first_boot) console.log(`\nnote: ${run.name} was booted twice; its first boot ${run.first_boot}`);
  console.log(`\ntime per kernel: ${runs.map((r) => `${r.name} ${r.wall_seconds} s`).join(', ')}`);
  writeFileSync(values.out, `${JSON.stringify({ runs }, null, 2)}\n`);
  if (values.docs) {
    const summary = summarize(runs);
    writeFileSync(values.docs, `${JSON.stringify(summary, null, 2)}\n`);
    writeFileSync(values.readme, renderReadme(readFileSync(values.readme, 'utf8'), summary));
  }
  const failed = runs.flatMap((r) => r.checks.filter((c) => c.status === 'fail').map((c) => `${r.name}/${c.check}`));
  if (failed.length) {
    console.log(`\nfailed: ${failed.join(', ')}`);
    process.exitCode = 1;
  }
}

function sweep(values, names) {
  const rows = names.map((n) => readRun(values.results, n)).map((r) => ({
    possible_cpus: r.possible_cpus,
    release: r.release,
    idle: r.idle,
    loaded: r.loaded,
    serves_under_limit: r.serves_under_limit ?? false,
    limit_bytes: r.limit_bytes,
    cgroup_memory_peak_bytes: r.cgroup_memory_peak_bytes,
    checks: r.checks,
    wall_seconds: r.wall_seconds,
  }));
  const mb = (b) => (b === undefined ? '?' : (b / 1e6).toFixed(1));
  console.log(pad([['CPUS', 'MAP MEMLOCK MB', 'RSS MB', 'SERVES UNDER 192Mi', 'LOADED (1k cgroups, 10k flows)'],
    ...rows.map((r) => [String(r.possible_cpus ?? '?'), mb(r.idle?.memlock_bytes), mb(r.idle?.rss_bytes), String(r.serves_under_limit),
      r.loaded ? `maps ${mb(r.loaded.memlock_bytes)} MB, RSS ${mb(r.loaded.rss_bytes)} MB` : '']), ]));
  writeFileSync(values.out, `${JSON.stringify({ kernel: '6.1', rows }, null, 2)}\n`);
  if (rows.some((r) => r.idle === undefined)) process.exitCode = 1;
}

function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { results: { type: 'string' }, out: { type: 'string' }, docs: { type: 'string' }, readme: { type: 'string' } },
  });
  const [command, ...names] = positionals;
  if (command === 'matrix') matrix(values, names);
  else if (command === 'sweep') sweep(values, names);
  else if (command === 'readme') writeFileSync(values.readme, renderReadme(readFileSync(values.readme, 'utf8'), JSON.parse(readFileSync(values.docs, 'utf8'))));
  else {
    console.error('usage: kernel-table.mjs matrix|sweep|readme …');
    process.exitCode = 2;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) main();
