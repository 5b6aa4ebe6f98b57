/**
 * The CLI as an operator meets it: bad input exits non-zero with one clear
 * line; without privileges it names the capability; --check prints the probe
 * table; SIGTERM detaches everything (nothing of kerntap stays loaded).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { BIN, loadedBpfPrograms, requireBpf } from '../helpers/env.js';
import { startExporter, stopAndWatchUnload, writeConfig } from '../helpers/exporter.js';
import { waitFor } from '../helpers/wait.js';

function run(args: string[], wrap: string[] = []) {
  const cmd = [...wrap, process.execPath, BIN, ...args];
  const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `exactly one line on stderr, got:\n${stderr}`);
  return lines[0]!;
}

test('bad config: exit 1 with one line naming the file and key', () => {
  const file = writeConfig('poll:\n  interval: 5 seconds\n');
  const r = run(['--config.file', file]);
  assert.equal(r.status, 1);
  assert.match(oneLine(r.stderr), new RegExp(`^kerntap: config file ${file}: key poll\\.interval: invalid duration`));
  const unknown = run(['--config.file', writeConfig('collectors:\n  cgroup_cpu:\n    max_cgroupz: 5\n')]);
  assert.equal(unknown.status, 1);
  assert.match(oneLine(unknown.stderr), /unknown key collectors\.cgroup_cpu\.max_cgroupz/);
  const missing = run(['--config.file', '/nonexistent/kerntap.yml']);
  assert.equal(missing.status, 1);
  assert.match(oneLine(missing.stderr), /config file \/nonexistent\/kerntap\.yml: cannot read \(ENOENT\)/);
});

test('unknown flag and bad flag values: exit non-zero with one line', () => {
  const r = run(['--web.listen-adress', ':1']);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr.trim().split('\n')[0]!, /^kerntap: unknown option '--web\.listen-adress'/);
  const bad = run(['--poll.interval', 'often']);
  assert.notEqual(bad.status, 0);
  assert.match(oneLine(bad.stderr), /--poll\.interval.*invalid duration "often"/);
  const addr = run(['--web.listen-address', 'nonsense']);
  assert.equal(addr.status, 1);
  assert.match(oneLine(addr.stderr), /--web\.listen-address "nonsense": expected \[host\]:port/);
});

test('--help and --version exit 0', () => {
  const help = run(['--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /--web\.listen-address/);
  const version = run(['--version']);
  assert.equal(version.status, 0);
  assert.match(version.stdout.trim(), /^\d+\.\d+\.\d+$/);
});

test('--check prints the probe table and exits 0 when every enabled collector can run', (t) => {
  if (!requireBpf(t)) return;
  const r = run(['--check']);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^COLLECTOR\s+STATE\s+HOOKS/m);
  assert.match(r.stdout, /^cgroup_cpu\s+on\s+tp_btf\/sched_switch/m);
  const off = run(['--check', '--config.file', writeConfig('collectors:\n  cgroup_cpu:\n    enabled: false\n')]);
  assert.match(off.stdout, /cgroup_cpu\s+off/);
  assert.match(off.stdout, /reason: disabled in config/);
});

test('a listen address in use: exit 1, the cause as the last line, nothing left loaded', async (t) => {
  if (!requireBpf(t)) return;
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => holder.close(() => resolve())));
  const address = `127.0.0.1:${(holder.address() as net.AddressInfo).port}`;
  const before = loadedBpfPrograms();
  const r = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [BIN, '--web.listen-address', address], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (status) => resolve({ status, stderr }));
  });
  assert.equal(r.status, 1);
  assert.equal(r.stderr.trim().split('\n').at(-1), `kerntap: cannot listen on ${address}: address already in use`);
  // The kernel frees a program after an RCU grace period.
  const newSince = () => [...loadedBpfPrograms()].filter((id) => !before.has(id));
  await waitFor('the programs it loaded to be released', () => newSince().length === 0, 2000, 20).catch(() => undefined);
  assert.deepEqual(newSince(), [], 'the programs it loaded were released');
});

test('without capabilities: exit 1 with one line naming CAP_BPF', (t) => {
  if (!requireBpf(t)) return;
  const r = run([], ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all']);
  assert.equal(r.status, 1);
  assert.match(oneLine(r.stderr), /^kerntap: missing capability CAP_BPF and CAP_PERFMON \(or CAP_SYS_ADMIN\)/);
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal} detaches every program and exits 0`, async (t) => {
    if (!requireBpf(t)) return;
    const { code, programs, exitMs, left, goneMs } = await stopAndWatchUnload(await startExporter(), signal);
    assert.ok(programs.length >= 1, 'bpftool lists the exporter\'s programs while it runs');
    assert.equal(code, 0);
    t.diagnostic(`exited after ${exitMs} ms, programs gone after ${goneMs} ms`);
    assert.ok(exitMs < 1000, `exits within 1 s (${exitMs} ms)`);
    assert.deepEqual(left, [], 'no kerntap program left loaded 1 s after the signal');
  });
}
