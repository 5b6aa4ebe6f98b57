/**
 * Network fixtures for the TCP tests: a network namespace of the test's own
 * joined to the root namespace by a veth pair, nftables tables, free ports,
 * the kernel's TCP MIB counters and `ss` socket details, and the
 * deterministic traffic tool run inside test cgroups.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import assert from 'node:assert/strict';
import { ROOT, bpfUnavailable } from './env.js';
import { waitFor, waitForPoll } from './wait.js';

export { waitFor };
import { TestCgroup } from './cgroup.js';
import { find, parseExposition, value, type Sample } from './exposition.js';
import { startExporter, type Exporter } from './exporter.js';

export const TRAFFIC = path.join(ROOT, 'test/helpers/tcp_traffic.py');

export function sh(cmd: string[]): string {
  // ss on a busy host prints megabytes.
  return execFileSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
}

/** Resolves when the child prints a line equal to `word`; rejects if it exits first. */
export function waitForLine(child: ChildProcess, word: string, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no "${word}" from child in ${timeoutMs} ms`)), timeoutMs);
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.split('\n').includes(word)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (!buf.split('\n').includes(word)) reject(new Error(`child exited with ${code} before "${word}"`));
    });
  });
}

export function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
}

let counter = 0;

/** A netns "kt<pid>n<k>" with a veth to the root namespace: host side .1, namespace side .2 of a /30. */
export class TestNetns {
  readonly name: string;
  readonly hostIf: string;
  readonly nsIf: string;
  readonly hostAddr: string;
  readonly nsAddr: string;

  constructor() {
    const k = (process.pid % 200) * 4 + (counter++ % 4);
    this.name = `kt${process.pid}n${counter}`;
    this.hostIf = `kth${process.pid % 10000}${counter}`;
    this.nsIf = `ktn${process.pid % 10000}${counter}`;
    const a = Math.floor(k / 64);
    const b = (k % 64) * 4;
    this.hostAddr = `10.213.${a}.${b + 1}`;
    this.nsAddr = `10.213.${a}.${b + 2}`;
    sh(['ip', 'netns', 'add', this.name]);
    sh(['ip', 'link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', this.nsIf]);
    sh(['ip', 'link', 'set', this.nsIf, 'netns', this.name]);
    sh(['ip', 'addr', 'add', `${this.hostAddr}/30`, 'dev', this.hostIf]);
    sh(['ip', 'link', 'set', this.hostIf, 'up']);
    this.exec(['ip', 'addr', 'add', `${this.nsAddr}/30`, 'dev', this.nsIf]);
    this.exec(['ip', 'link', 'set', this.nsIf, 'up']);
    this.exec(['ip', 'link', 'set', 'lo', 'up']);
  }

  exec(cmd: string[]): string {
    return sh(['ip', 'netns', 'exec', this.name, ...cmd]);
  }

  /** Prefix for a shell command to run inside the namespace. */
  get prefix(): string {
    return `ip netns exec ${this.name}`;
  }

  destroy(): void {
    try { sh(['ip', 'link', 'del', this.hostIf]); } catch { /* gone with the namespace */ }
    try { sh(['ip', 'netns', 'del', this.name]); } catch { /* already gone */ }
  }
}

/** One section of a /proc/net MIB file (a line of names, then a line of values) of the root or a test namespace. */
function mib(file: string, section: string, ns?: TestNetns): Record<string, number> {
  const text = ns ? ns.exec(['cat', file]) : sh(['cat', file]);
  const lines = text.split('\n').filter((l) => l.startsWith(`${section}:`));
  const names = lines[0]!.split(/\s+/).slice(1);
  const values = lines[1]!.split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(names.map((n, i) => [n, values[i]!]));
}

/** TCP MIB counters (/proc/net/snmp "Tcp:" lines) of the root or a test namespace. */
export function tcpMib(ns?: TestNetns): Record<string, number> {
  return mib('/proc/net/snmp', 'Tcp', ns);
}

/** Linux TCP counters (/proc/net/netstat "TcpExt:" lines: TCPSynRetrans, TCPAbortOnData…). */
export function tcpExtMib(ns?: TestNetns): Record<string, number> {
  return mib('/proc/net/netstat', 'TcpExt', ns);
}

export interface SsSocket {
  local: string;
  peer: string;
  bytesAcked: number;
  bytesReceived: number;
  rttMs: number;
}

/**
 * Established TCP sockets with `port` at either end, as `ss -tin` reports
 * them (optionally in a namespace). The filter keeps the output small on a
 * machine with many connections.
 */
export function ssSockets(port: number, ns?: TestNetns): SsSocket[] {
  const cmd = ['ss', '-tinH', 'state', 'established', `( sport = :${port} or dport = :${port} )`];
  const out = (ns ? ns.exec(cmd) : sh(cmd)).split('\n');
  const sockets: SsSocket[] = [];
  for (let i = 0; i < out.length; i++) {
    const head = out[i]!.trim().split(/\s+/);
    if (head.length < 4 || !/\d/.test(head[0]!)) continue;
    const info = out[i + 1] ?? '';
    const num = (re: RegExp) => Number(re.exec(info)?.[1] ?? 0);
    sockets.push({
      local: head[2]!,
      peer: head[3]!,
      bytesAcked: num(/bytes_acked:(\d+)/),
      bytesReceived: num(/bytes_received:(\d+)/),
      rttMs: num(/\brtt:([\d.]+)\//),
    });
    i++;
  }
  return sockets;
}

/** The client ends of connections to an IPv4 server at host:port, as ssSockets sees them. */
export function ssClients(host: string, port: number, ns?: TestNetns): SsSocket[] {
  return ssSockets(port, ns).filter((x) => x.peer === `${host}:${port}`);
}

export function haveNft(): boolean {
  try {
    sh(['nft', '--version']);
    return true;
  } catch {
    return false;
  }
}

let tables = 0;

/** An nftables table of the test's own, in the root namespace; destroy() removes it with its chains and rules. */
export class NftTable {
  readonly name = `kt${process.pid}t${tables++}`;

  constructor(readonly family: 'netdev' | 'inet') {
    sh(['nft', 'add', 'table', family, this.name]);
  }

  /** `spec` is the chain's base definition, e.g. "{ type filter hook input priority 0; }". */
  chain(chain: string, spec: string): void {
    sh(['nft', 'add', 'chain', this.family, this.name, chain, spec]);
  }

  rule(chain: string, rule: string[]): void {
    sh(['nft', 'add', 'rule', this.family, this.name, chain, ...rule]);
  }

  /** Packets counted by the first `counter` statement of the chain. */
  counted(chain: string): number {
    return Number(/counter packets (\d+)/.exec(sh(['nft', 'list', 'chain', this.family, this.name, chain]))?.[1] ?? 0);
  }

  destroy(): void {
    try { sh(['nft', 'delete', 'table', this.family, this.name]); } catch { /* already gone */ }
  }
}

/** What a test file created, undone in reverse order by run() (call it from after()). */
export class Cleanups {
  private readonly undo: (() => unknown)[] = [];

  add(undo: () => unknown): void {
    this.undo.push(undo);
  }

  cgroup(prefix: string): TestCgroup {
    const cg = TestCgroup.unique(prefix);
    this.add(() => cg.destroy());
    return cg;
  }

  netns(): TestNetns {
    const ns = new TestNetns();
    this.add(() => ns.destroy());
    return ns;
  }

  /** A path in the temp directory, unique to this process and `tag`, that does not exist yet; removed at the end. */
  tempPath(prefix: string, tag: string | number): string {
    const file = path.join(tmpdir(), `${prefix}-${process.pid}-${tag}`);
    this.add(() => rmSync(file, { force: true }));
    return file;
  }

  nft(family: 'netdev' | 'inet'): NftTable {
    const table = new NftTable(family);
    this.add(() => table.destroy());
    return table;
  }

  /** Undoes everything, even past a step that fails; the failures are rethrown at the end. */
  async run(): Promise<void> {
    const failed: unknown[] = [];
    for (const undo of this.undo.reverse()) await Promise.resolve().then(undo).catch((err: unknown) => failed.push(err));
    this.undo.length = 0;
    if (failed.length === 1) throw failed[0];
    if (failed.length > 1) throw new AggregateError(failed, `${failed.length} cleanups failed`);
  }
}

/**
 * The one default exporter (500 ms polls) of a test file: started before the
 * file's tests where BPF can run (requireBpf() in each test reports why not
 * otherwise), stopped after them. A start that fails fails the file, with
 * kerntap's own error.
 */
export function fileExporter(before: (fn: () => Promise<void>) => void, after: (fn: () => Promise<void>) => void): () => Exporter {
  let exporter: Exporter | undefined;
  before(async () => {
    if (!bpfUnavailable()) exporter = await startExporter([]);
  });
  after(async () => {
    await exporter?.stop();
  });
  return () => {
    if (!exporter) throw new Error('the file\'s exporter did not start');
    return exporter;
  };
}

/**
 * The fixtures and the default exporter of a TCP test file; everything is
 * undone after the file's tests. settled() waits for a poll that started
 * after the call, so everything that happened before is in its scrape.
 */
export function tcpTestFile(before: (fn: () => Promise<void>) => void, after: (fn: () => Promise<void>) => void) {
  const fixtures = new Cleanups();
  after(() => fixtures.run());
  const exporter = fileExporter(before, after);
  return {
    fixtures,
    exporter,
    scrape: async (e: Exporter = exporter()): Promise<Sample[]> => parseExposition(await e.scrape()),
    settled: (e: Exporter = exporter()): Promise<Sample[]> => waitForPoll(e),
  };
}

/**
 * Waits until no socket with `port` at either end (in the namespace, if
 * given) is in a state that may still send: only TIME-WAIT, or nothing, is left.
 */
export function waitForTcpQuiet(port: number, ns?: TestNetns): Promise<true> {
  const cmd = ['ss', '-tanH', 'state', 'connected', 'exclude', 'time-wait', `( sport = :${port} or dport = :${port} )`];
  return waitFor(`connections on port ${port} to finish`, () => (ns ? ns.exec(cmd) : sh(cmd)).trim() === '' || undefined);
}

const givenPorts = new Set<number>();

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host: '::' }, () => srv.close(() => resolve(true)));
  });
}

/**
 * A free port for a test server, below the default ephemeral range so that
 * server_port shows the number (ports the kernel picks for listen(0) would be
 * folded into "ephemeral"). Never the same twice in one process.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (givenPorts.has(port)) continue;
    givenPorts.add(port);
    if (await canListen(port)) return port;
  }
}

/** Sum of the samples of `name` matching `labels`; no such sample fails the test (a renamed metric must not pass as 0). */
export function total(samples: Sample[], name: string, labels: Record<string, string>): number {
  const found = find(samples, name, labels);
  if (found.length === 0) throw new Error(`no ${name} series matches ${JSON.stringify(labels)}`);
  return found.reduce((s, x) => s + x.value, 0);
}

/**
 * What a failed wait on a scrape needs to be read afterwards: kerntap's own
 * trouble counters (poll errors, recursion misses, map overflows), when they
 * are not 0, and every tcp series of these cgroups or of a cgroup kerntap
 * could not name yet.
 */
export function scrapeState(samples: Sample[], cgroups: string[]): string {
  const trouble = ['kerntap_poll_errors_total', 'kerntap_bpf_program_recursion_misses_total', 'kerntap_map_overflow_total'];
  const show = (x: Sample) => `${x.name}{${Object.entries(x.labels).filter(([, v]) => v !== '').map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(',')}} ${x.value}`;
  const lines = samples.filter((x) =>
    (trouble.includes(x.name) && x.value !== 0) ||
    (x.name.startsWith('kerntap_tcp_') && !x.name.endsWith('_bucket') && !x.name.endsWith('_sum') &&
      (cgroups.includes(x.labels.cgroup ?? '') || (x.labels.cgroup ?? '').startsWith('unknown_cgroup_id:'))));
  return `polls ${value(samples, 'kerntap_polls_total') ?? 'missing'}; ${lines.map(show).join('; ') || 'no such series'}`;
}

/**
 * total(), for series that may rightly be absent (nothing of the kind
 * happened there): 0 then. The metric itself must be in the scrape.
 */
export function totalOrZero(samples: Sample[], name: string, labels: Record<string, string>): number {
  if (find(samples, name).length === 0) throw new Error(`no ${name} series at all in the scrape`);
  return find(samples, name, labels).reduce((s, x) => s + x.value, 0);
}

/** Starts `tcp_traffic.py <args>` (a server mode) in the cgroup; resolves once it listens. */
export async function startServer(cg: TestCgroup, args: string, prefix = ''): Promise<ChildProcess> {
  const server = cg.run(`${prefix} python3 ${TRAFFIC} ${args}`, 'pipe');
  await waitForLine(server, 'ready');
  return server;
}

/**
 * Runs `tcp_traffic.py <args>` (a client mode) in the cgroup, optionally in
 * a namespace (`prefix`), to success; resolves with what it printed.
 */
export async function runClient(cg: TestCgroup, args: string, prefix = ''): Promise<string> {
  const child = cg.run(`${prefix} python3 ${TRAFFIC} ${args}`, 'pipe');
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const code = await exited(child);
  assert.equal(code, 0, `tcp_traffic.py ${args} succeeded`);
  return out;
}
