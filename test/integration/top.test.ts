/**
 * `kerntap top` against the real kernel: its programs run in a network
 * namespace of the test's own (iter/tcp walks the namespace of the process
 * that runs it), with peers of known behaviour (test/helpers/top_peer.py),
 * compared with `ss -tin` and the namespace's /proc/net/snmp. The view is
 * driven in tmux: keys in, screen out.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { BIN, ROOT, bpfProgramsOf, hasTool, requireBpf, requireTool } from '../helpers/env.js';
import { Cleanups, exited, haveNft, sh, ssSockets, tcpMib, type TestNetns } from '../helpers/net.js';
import { waitFor } from '../helpers/wait.js';
import { startExporter } from '../helpers/exporter.js';
import type { Snapshot, Connection, TopEvent } from '../../src/top/model.js';

const PEER = path.join(ROOT, 'test/helpers/top_peer.py');
const fixtures = new Cleanups();
after(() => fixtures.run());

/** A command in the test's network namespace only (`ip netns exec` also remounts /sys, which hides cgroupfs and tracefs). */
function inNs(ns: TestNetns, cmd: string[]): [string, string[]] {
  return ['nsenter', [`--net=/run/netns/${ns.name}`, '--', ...cmd]];
}

/**
 * Tracefs holds the syscall tracepoints top attaches to for accept(); mounted
 * for the test if the host has not (`scripts/dev.sh` mounts it too), and left
 * mounted: unmounting it would take it from anything else running.
 */
function ensureTracefs(): void {
  if (existsSync('/sys/kernel/tracing/events/syscalls') || existsSync('/sys/kernel/debug/tracing/events/syscalls')) return;
  sh(['mount', '-t', 'tracefs', 'nodev', '/sys/kernel/tracing']);
}

let portBase = 7000 + (process.pid % 500) * 4;
const nextPort = () => portBase++;

/** A child's stdout as lines, and a wait for a line that passes a test. */
class Lines {
  readonly lines: string[] = [];
  private buf = '';
  constructor(readonly child: ChildProcess, readonly what: string) {
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      this.buf += d;
      const parts = this.buf.split('\n');
      this.buf = parts.pop()!;
      this.lines.push(...parts);
    });
    fixtures.add(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited(child);
    });
  }

  async line(pick: (l: string) => boolean, timeoutMs = 30_000): Promise<string> {
    return waitFor(`${this.what}: a line`, () => {
      const found = this.lines.find(pick);
      if (found === undefined && this.child.exitCode !== null) throw new Error(`${this.what} exited with ${this.child.exitCode}`);
      return found;
    }, timeoutMs);
  }
}

/** A peer in the namespace; resolves once it printed `ready` (or `word`), with its pid. */
async function peer(ns: TestNetns, args: string[], word: string): Promise<{ pid: number; child: ChildProcess }> {
  const child = spawn(...inNs(ns, ['python3', PEER, ...args]), { stdio: ['ignore', 'pipe', 'inherit'] });
  const out = new Lines(child, `peer ${args[0]}`);
  const pid = Number((await out.line((l) => l.startsWith('pid '))).slice(4));
  await out.line((l) => l === word, 60_000);
  return { pid, child };
}

/**
 * A peer run from a shell that first moves itself into the cgroup (so its
 * sockets are created there), then execs the peer in the namespace.
 */
async function peerIn(ns: TestNetns, procs: string, args: string[], word: string): Promise<{ pid: number; child: ChildProcess }> {
  const quoted = args.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const child = spawn('sh', ['-c', `echo $$ > ${procs} && exec nsenter --net=/run/netns/${ns.name} -- python3 ${PEER} ${quoted}`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const out = new Lines(child, args[0]!);
  const pid = Number((await out.line((l) => l.startsWith('pid '))).slice(4));
  await out.line((l) => l === word, 60_000);
  return { pid, child };
}

function topJson(ns: TestNetns, args: string[]): Snapshot {
  const r = spawnSync(...inNs(ns, [process.execPath, BIN, 'top', '--once', '--output', 'json', ...args]), { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `kerntap top exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Snapshot;
}

const SHOWN = ['pid', 'comm', 'owner_source', 'container', 'cgroup', 'local', 'local_port', 'peer', 'peer_port', 'role', 'state', 'bytes_sent', 'bytes_received'] as const;
const shown = (c: Connection) => Object.fromEntries(SHOWN.map((k) => [k, c[k]]));

test('known connections: the pid and comm that opened them, and exact bytes, equal to ss -tin; a forked child shows its parent', async (t) => {
  if (!requireBpf(t)) return;
  ensureTracefs();
  const ns = fixtures.netns();
  const srvCg = fixtures.cgroup('kt-top-srv');
  const cliCg = fixtures.cgroup('kt-top-cli');
  const port = nextPort();
  const addr = ns.nsAddr;
  const [OUT, IN] = [1000, 5000];
  // One top runs before the connections exist (owners from the kernel), one starts after (owners from /proc/<pid>/fd).
  const live = spawn(...inNs(ns, [process.execPath, BIN, 'top', '--output', 'json', '--interval', '300ms', '--filter', `port:${port}`]), { stdio: ['ignore', 'pipe', 'inherit'] });
  const liveOut = new Lines(live, 'kerntap top');
  await liveOut.line((l) => l.startsWith('{'), 60_000);
  const server = await peerIn(ns, `${srvCg.abs}/cgroup.procs`, ['server', addr, String(port), 'kt-srv', String(OUT), String(IN)], 'listening');
  const plain = await peerIn(ns, `${cliCg.abs}/cgroup.procs`, ['client', addr, String(port), 'kt-cli', String(OUT), String(IN), '2', '-1'], 'ready');
  const forked = await peerIn(ns, `${cliCg.abs}/cgroup.procs`, ['client', addr, String(port), 'kt-par', String(OUT), String(IN), '1', '-1', 'kt-kid'], 'ready');

  const snap = topJson(ns, ['--interval', '300ms']);
  const ss = ssSockets(port, ns);
  const n0 = liveOut.lines.length;
  const liveSnap = JSON.parse(await liveOut.line((l, i = liveOut.lines.indexOf(l)) => i >= n0 && l.startsWith('{'))) as Snapshot;
  live.kill('SIGTERM');
  assert.equal(await exited(live), 0);
  assert.equal(ss.length, 6, `ss shows 3 connections, both ends: ${JSON.stringify(ss)}`);
  for (const [from, s] of [['kernel', liveSnap], ['fd', snap]] as const) {
  const clients = s.connections.filter((c) => c.peer_port === port);
  const servers = s.connections.filter((c) => c.local_port === port);
  assert.equal(clients.length, 3, JSON.stringify(s.connections));
  assert.equal(servers.length, 3);

  const ssOf = (c: Connection) => {
    const s = ss.find((x) => x.local === `${c.local}:${c.local_port}` && x.peer === `${c.peer}:${c.peer_port}`);
    assert.ok(s, `ss has ${c.local}:${c.local_port} -> ${c.peer}:${c.peer_port}`);
    return s;
  };
  for (const c of clients) {
    const owner = c.comm === 'kt-par' ? forked.pid : plain.pid;
    assert.deepEqual(shown(c), {
      pid: owner, comm: owner === forked.pid ? 'kt-par' : 'kt-cli', owner_source: from === 'kernel' ? 'connect' : 'fd',
      container: cliCg.label, cgroup: cliCg.label,
      local: addr, local_port: c.local_port, peer: addr, peer_port: port, role: 'client', state: 'ESTABLISHED',
      bytes_sent: OUT, bytes_received: IN,
    });
    const k = ssOf(c);
    // bytes_acked counts the SYN of an active open; top shows data bytes.
    assert.equal(c.bytes_sent, k.bytesAcked - 1, 'sent = ss bytes_acked - SYN');
    assert.equal(c.bytes_received, k.bytesReceived, 'received = ss bytes_received');
    if (from === 'kernel') assert.ok(c.age_s !== null && c.age_s > 0 && c.age_s < 120, `age ${c.age_s}`);
    else assert.equal(c.age_s, null, 'established before this top started: age unknown');
    assert.ok(c.srtt_us > 0);
  }
  assert.deepEqual(clients.map((c) => c.comm).sort(), ['kt-cli', 'kt-cli', 'kt-par'], 'the forked child (kt-kid) did the I/O; its parent made the socket');
  for (const c of servers) {
    assert.deepEqual(shown(c), {
      pid: server.pid, comm: 'kt-srv', owner_source: from === 'kernel' ? 'accept' : 'fd', container: srvCg.label, cgroup: srvCg.label,
      local: addr, local_port: port, peer: addr, peer_port: c.peer_port, role: 'server', state: 'ESTABLISHED',
      bytes_sent: IN, bytes_received: OUT,
    });
    const k = ssOf(c);
    assert.equal(c.bytes_sent, k.bytesAcked, 'sent = ss bytes_acked');
    assert.equal(c.bytes_received, k.bytesReceived, 'received = ss bytes_received');
  }
  }
  // The snapshot's other parts, by value.
  assert.deepEqual(snap.drops, { events: 0, owners: 0 });
  assert.ok(snap.interval_ms >= 300 && snap.interval_ms < 10_000, `interval ${snap.interval_ms}`);
  assert.ok(Math.abs(Date.parse(snap.time) - Date.now()) < 60_000);
  assert.deepEqual(snap.notes, []);
  // Filters apply to --once too.
  const filtered = topJson(ns, ['--interval', '100ms', '--filter', 'comm:kt-par']);
  assert.deepEqual(filtered.connections.map((c) => [c.comm, c.pid]), [['kt-par', forked.pid]]);
  const byPort = topJson(ns, ['--interval', '100ms', '--filter', `port:${port}`, '--sort', 'age']);
  assert.equal(byPort.connections.length, 6);
  const ages = byPort.connections.map((c) => c.age_s!);
  assert.deepEqual(ages, [...ages].sort((a, b) => b - a), 'oldest first');
  for (const p of [plain, forked, server]) p.child.kill('SIGKILL');
});

test('events: exactly the connects, accepts, closes (with bytes), refused and timed-out connects made, as /proc/net/snmp counts them', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'nft', haveNft())) return;
  ensureTracefs();
  const ns = fixtures.netns();
  const addr = ns.nsAddr;
  const [port, closed, dropped] = [nextPort(), nextPort(), nextPort()];
  const [M, R, T, OUT, IN] = [4, 3, 2, 1234, 4321];
  ns.exec(['sysctl', '-qw', 'net.ipv4.tcp_syn_retries=1']); // ETIMEDOUT after 3 s, not 127
  ns.exec(['nft', 'add', 'table', 'inet', 'kttop']);
  ns.exec(['nft', 'add', 'chain', 'inet', 'kttop', 'in', '{ type filter hook input priority 0; }']);
  ns.exec(['nft', 'add', 'rule', 'inet', 'kttop', 'in', 'tcp', 'dport', String(dropped), 'drop']);

  const top = spawn(...inNs(ns, [process.execPath, BIN, 'top', '--output', 'json', '--interval', '300ms', '--filter', `peer:${addr}`]), { stdio: ['ignore', 'pipe', 'inherit'] });
  const out = new Lines(top, 'kerntap top');
  await out.line((l) => l.startsWith('{'), 60_000); // attached: the first refresh is out
  const server = await peer(ns, ['server', addr, String(port), 'kt-srv2', String(OUT), String(IN)], 'listening');
  const mib0 = tcpMib(ns);
  const client = await peer(ns, ['client', addr, String(port), 'kt-cli2', String(OUT), String(IN), String(M), '0'], 'ready');
  await exited(client.child);
  await peer(ns, ['refused', addr, String(closed), String(R)], 'done');
  await peer(ns, ['timeout', addr, String(dropped), String(T)], 'done');
  const mib1 = tcpMib(ns);
  assert.equal(mib1.ActiveOpens! - mib0.ActiveOpens!, M + R + T, 'the kernel counted the connects');
  assert.equal(mib1.PassiveOpens! - mib0.PassiveOpens!, M);
  assert.equal(mib1.AttemptFails! - mib0.AttemptFails!, R + T);

  const kinds = (events: TopEvent[]) => ({
    connect: events.filter((e) => e.type === 'connect' && e.peer_port === port),
    accept: events.filter((e) => e.type === 'accept' && e.local_port === port),
    closeClient: events.filter((e) => e.type === 'close' && e.peer_port === port && e.role === 'client'),
    closeServer: events.filter((e) => e.type === 'close' && e.local_port === port && e.role === 'server'),
    refused: events.filter((e) => e.type === 'failed' && e.peer_port === closed),
    timeout: events.filter((e) => e.type === 'failed' && e.peer_port === dropped),
  });
  const want = { connect: M, accept: M, closeClient: M, closeServer: M, refused: R, timeout: T };
  const count = (s: Snapshot) => Object.fromEntries(Object.entries(kinds(s.events)).map(([k, v]) => [k, v.length]));
  const n0 = out.lines.length;
  await out.line((l, i = out.lines.indexOf(l)) => i >= n0 && l.startsWith('{') && JSON.stringify(count(JSON.parse(l) as Snapshot)) === JSON.stringify(want), 60_000)
    .catch((err: Error) => {
      throw new Error(`${err.message}; last counts ${JSON.stringify(count(JSON.parse(out.lines.at(-1)!) as Snapshot))}, want ${JSON.stringify(want)}`);
    });
  // One refresh more: nothing extra shows up.
  const n1 = out.lines.length;
  const last = JSON.parse(await out.line((l, i = out.lines.indexOf(l)) => i > n1 && l.startsWith('{'))) as Snapshot;
  assert.deepEqual(count(last), want);
  const k = kinds(last.events);
  for (const e of [...k.connect, ...k.closeClient]) assert.deepEqual([e.pid, e.comm], [client.pid, 'kt-cli2']);
  for (const e of [...k.accept, ...k.closeServer]) assert.deepEqual([e.pid, e.comm], [server.pid, 'kt-srv2']);
  for (const e of k.closeClient) assert.deepEqual([e.bytes_sent, e.bytes_received], [OUT, IN], 'client close: data bytes');
  for (const e of k.closeServer) assert.deepEqual([e.bytes_sent, e.bytes_received], [IN, OUT], 'server close: data bytes');
  for (const e of [...k.closeClient, ...k.closeServer]) assert.ok(e.local_port > 0 && e.duration_ms > 0, JSON.stringify(e));
  for (const e of k.refused) assert.deepEqual([e.reason, e.role], ['refused', 'client']);
  for (const e of k.timeout) {
    assert.equal(e.reason, 'timeout');
    assert.ok(e.duration_ms >= 2500, `a timed-out connect took ${e.duration_ms} ms (SYN + 1 retry)`);
  }
  assert.deepEqual(last.drops, { events: 0, owners: 0 });

  const programs = bpfProgramsOf(top.pid!);
  top.kill('SIGTERM');
  assert.equal(await exited(top), 0, 'SIGTERM: clean exit');
  server.child.kill('SIGKILL');
  const loaded = new Set((JSON.parse(sh(['bpftool', 'prog', 'show', '-j'])) as { id: number }[]).map((p) => p.id));
  assert.deepEqual(programs.filter((id) => loaded.has(id)), [], 'top\'s programs are gone with it');
});

const tmuxSocket = `kt-top-${process.pid}`;
function tmux(...args: string[]): string {
  return sh(['tmux', '-L', tmuxSocket, ...args]);
}
const screen = () => tmux('capture-pane', '-p', '-t', 'top');

test('the view in tmux: sorting, filtering, keys; a comm made of escape sequences is shown escaped and changes nothing', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'tmux', hasTool('tmux'))) return;
  ensureTracefs();
  const ns = fixtures.netns();
  const addr = ns.nsAddr;
  const port = nextPort();
  fixtures.add(() => spawnSync('tmux', ['-L', tmuxSocket, 'kill-server']));
  tmux('new-session', '-d', '-s', 'top', '-x', '220', '-y', '50', `nsenter --net=/run/netns/${ns.name} -- ${process.execPath} ${BIN} top --interval 300ms`);
  tmux('select-pane', '-t', 'top', '-T', 'kt-title');
  await waitFor('the view', () => screen().includes('sort: rate↓'), 60_000);
  const server = await peer(ns, ['server', addr, String(port), 'kt-srv3', '100', '100'], 'listening');
  const big = await peer(ns, ['client', addr, String(port), 'kt-big', '300000', '100', '1', '-1'], 'ready');
  const small = await peer(ns, ['client', addr, String(port), 'kt-small', '100', '100', '1', '-1'], 'ready');
  // ESC ] 2 ; PWN BEL sets the window title; ESC [ 3 1 m turns text red.
  const hostile = await peer(ns, ['client', addr, String(port), '\\x1b]2;PWN\\x07\\x1b[31m', '100', '100', '1', '-1'], 'ready');
  assert.equal(readFileSync(`/proc/${hostile.pid}/comm`, 'latin1'), '\u001b]2;PWN\u0007\u001b[31m\n', 'the kernel holds the raw bytes');
  const rowOf = (s: string, comm: string) => s.split('\n').findIndex((l) => l.includes(` ${comm} `) && l.includes('ESTABLISHED'));
  await waitFor('the view with the test connections', () => {
    const s = screen();
    return s.includes('kt-big') && s.includes('kt-small') && s.includes('\\e]2;PWN') && s;
  }, 60_000);

  // Hostile name: printed as escapes, the terminal untouched.
  const s0 = screen();
  assert.ok(s0.includes('\\e]2;PWN\\x07\\e[…'), `escaped comm on screen:\n${s0}`);
  assert.equal(tmux('display-message', '-p', '-t', 'top', '#{pane_title}').trim(), 'kt-title', 'the title was not set');
  assert.ok(!tmux('capture-pane', '-p', '-e', '-t', 'top').includes('\u001b[31m'), 'no red text: no SGR got through');

  tmux('send-keys', '-t', 'top', 'b');
  const byBytes = await waitFor('sort: bytes', () => { const s = screen(); return s.includes('sort: bytes↓') && s; });
  assert.ok(rowOf(byBytes, 'kt-big') >= 0 && rowOf(byBytes, 'kt-big') < rowOf(byBytes, 'kt-small'), `kt-big above kt-small by bytes:\n${byBytes}`);
  tmux('send-keys', '-t', 'top', 'I');
  const inverted = await waitFor('inverted', () => { const s = screen(); return s.includes('sort: bytes↑') && s; });
  assert.ok(rowOf(inverted, 'kt-small') < rowOf(inverted, 'kt-big'), `inverted:\n${inverted}`);
  tmux('send-keys', '-t', 'top', 'I', 'a');
  const byAge = await waitFor('sort: age', () => { const s = screen(); return s.includes('sort: age↓') && s; });
  assert.ok(rowOf(byAge, 'kt-big') < rowOf(byAge, 'kt-small'), `oldest (kt-big) first:\n${byAge}`);

  tmux('send-keys', '-t', 'top', '/');
  tmux('send-keys', '-t', 'top', '-l', 'comm:kt-small');
  await waitFor('the filter being typed', () => screen().includes('filter: comm:kt-small_'));
  tmux('send-keys', '-t', 'top', 'Enter');
  const filtered = await waitFor('filtered', () => { const s = screen(); return /filter: comm:kt-small$/m.test(s) && !s.includes('kt-big') && s; });
  assert.ok(rowOf(filtered, 'kt-small') >= 0);
  assert.match(filtered, /connections: 1\/\d+/);
  tmux('send-keys', '-t', 'top', 'f');
  tmux('send-keys', '-t', 'top', '-l', `port:${port}`);
  tmux('send-keys', '-t', 'top', 'Enter');
  const byPort = await waitFor('port filter', () => { const s = screen(); return s.includes(`filter: port:${port}`) && /connections: 6\//.test(s) && s; });
  assert.ok(rowOf(byPort, 'kt-big') >= 0 && rowOf(byPort, 'kt-srv3') >= 0);
  tmux('send-keys', '-t', 'top', 'Escape');
  await waitFor('filter cleared', () => screen().includes('filter: none'));

  tmux('send-keys', '-t', 'top', 'q');
  await waitFor('top to quit on q', () => spawnSync('tmux', ['-L', tmuxSocket, 'has-session', '-t', 'top']).status !== 0, 20_000);
  for (const p of [big, small, hostile, server]) p.child.kill('SIGKILL');
});

test('the exporter is unchanged: it loads none of top\'s programs, and top needs no exporter', async (t) => {
  if (!requireBpf(t)) return;
  const exporter = await startExporter([]);
  try {
    const ids = bpfProgramsOf(exporter.pid);
    const names = ids.map((id) => (JSON.parse(sh(['bpftool', 'prog', 'show', 'id', String(id), '-j'])) as { name: string }).name);
    assert.ok(names.length > 0);
    assert.deepEqual(names.filter((n) => n.startsWith('top_')), [], `exporter programs: ${names.join(', ')}`);
  } finally {
    await exporter.stop();
  }
});
