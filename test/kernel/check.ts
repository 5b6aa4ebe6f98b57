/**
 * The kernel-facing checks of the kernel matrix (scripts/vm-test.sh), run in
 * a VM of each kernel and on the host. kerntap starts once (TCG is slow) and
 * every check compares it with the kernel's own accounting, reusing the
 * integration tests' fixtures. Each check ends pass, fail or skip with a
 * one-line reason; the result goes to --out as JSON.
 *
 *   node dist/test/kernel/check.js --mode matrix|memory192|sweep --kernel NAME --out FILE
 */
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { BIN, mapMemlock, possibleCpus } from '../helpers/env.js';
import { sleep, startExporter, stopAndWatchUnload, writeConfig, type Exporter } from '../helpers/exporter.js';
import { find, parseExposition, value, type Sample } from '../helpers/exposition.js';
import { Cleanups, TRAFFIC, exited, freePort, runClient, ssClients, startServer, tcpMib, totalOrZero, waitForLine } from '../helpers/net.js';
import { waitForPoll } from '../helpers/wait.js';
import { CgroupPool, ConnectionPool } from '../helpers/load.js';
import { TestCgroup } from '../helpers/cgroup.js';
import { detectCgroup2Root } from '../../src/cgroup/mount.js';
import { kernelAtLeast } from '../../src/privileges.js';
import { rssBytes } from '../../bench/common.js';

export type Status = 'pass' | 'fail' | 'skip';
export interface CheckResult { check: string; status: Status; reason: string; ms: number }

/** A failed comparison: the message is the check's reason. */
class Fail extends Error {}
/** The kernel cannot do what the check needs: reported as skip with why. */
class Skip extends Error {}

const fail = (why: string): never => { throw new Fail(why); };
function expect(ok: boolean, why: string): asserts ok {
  if (!ok) fail(why);
}

/**
 * Polls `read` until `done` holds (or `ms` pass); returns the last reading.
 * A read that throws (a series not there before the first poll) counts as
 * not done yet; if it still throws at the end, that error is the failure.
 */
async function until<T>(read: () => Promise<T> | T, done: (v: T) => boolean, ms = 45_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    let v: T | undefined;
    let error: unknown;
    try {
      v = await read();
    } catch (err) {
      error = err;
    }
    const over = Date.now() - t0 > ms;
    if (error === undefined && (done(v as T) || over)) return v as T;
    if (error !== undefined && over) throw error;
    await sleep(250);
  }
}

const MB = 1e6;
/** The memory goal of issue 10: with 192 possible CPUs, idle maps within 48 MB memlock. */
const MEMLOCK_GOAL = 48 * MB;
const DAEMONSET_LIMIT = '192Mi';
const DAEMONSET_LIMIT_BYTES = 192 * 1024 * 1024;
const DEFAULT_POLL = ['--poll.interval', '5s'];

/** The series of `name` whose labels pass `pick`, as "{labels} value" (for a failure's reason: where the counts went instead). */
function seenSeries(samples: Sample[], name: string, pick: (labels: Record<string, string>) => boolean): string {
  const seen = find(samples, name).filter((x) => pick(x.labels)).map((x) => `${JSON.stringify(x.labels)} ${x.value}`);
  return seen.length ? seen.slice(0, 6).join(', ') : 'none';
}

/** Why a collector is off, from kerntap's log ("collector off" lines), with the verifier's complaint if it printed one. */
function offReason(stderr: string, collector: string): string {
  let reason = '';
  for (const line of stderr.split('\n')) {
    try {
      const rec = JSON.parse(line) as { msg?: string; collector?: string; reason?: string };
      if (rec.msg === 'collector off' && rec.collector === collector) reason = rec.reason ?? '';
    } catch {
      // the probe table and libbpf lines are not JSON
    }
  }
  const verifier = /unknown func [\w#]+|invalid bpf_context access[^"\n|]*|helper call is not allowed[^"\n|]*|program of this type cannot use helper [\w#]+/.exec(stderr)?.[0];
  if (verifier && !reason.includes(verifier)) reason += ` (verifier: ${verifier})`;
  return reason || 'no reason in the log';
}

class Runner {
  readonly results: CheckResult[] = [];

  /** `progress(running)` records the results so far, so a guest that hangs or dies still names the check it died in. */
  constructor(private readonly progress: (running: string) => void = () => {}) {}

  async check(name: string, fn: () => Promise<string>): Promise<void> {
    const t0 = Date.now();
    this.progress(name);
    let status: Status = 'pass';
    let reason: string;
    try {
      reason = await fn();
    } catch (err) {
      status = err instanceof Skip ? 'skip' : 'fail';
      reason = (err as Error).message.split('\n')[0]!;
    }
    this.results.push({ check: name, status, reason, ms: Date.now() - t0 });
    process.stderr.write(`check ${name}: ${status}: ${reason}\n`);
  }

  /** Every check of `names` not yet run fails with `why` (kerntap did not start). */
  failRest(names: string[], why: string): void {
    for (const check of names) if (!this.results.some((r) => r.check === check)) this.results.push({ check, status: 'fail', reason: why, ms: 0 });
  }
}

/**
 * A network namespace of the check's own (its MIB counters see only the
 * check's traffic), a tcp_traffic.py server in a cgroup on the root side of
 * its veth, and a cgroup for the client that runs inside the namespace.
 */
async function nsServer(fixtures: Cleanups, mode: string, args = '') {
  const ns = fixtures.netns();
  const server = fixtures.cgroup('kt-k-nsrv');
  const client = fixtures.cgroup('kt-k-ncli');
  const port = await freePort();
  await startServer(server, `${mode} ${ns.hostAddr} ${port} ${args}`);
  return { ns, client, port };
}

export const MATRIX_CHECKS = ['collectors', 'cpu', 'bytes', 'live', 'connects', 'rtt', 'listeners', 'map-memory', 'retransmits', 'top', 'sigterm'];

/** Median wall time of a bare `node -e ""`: how fast this machine runs node, for time bounds under TCG. */
export function nodeStartMs(): number {
  const times = [0, 1, 2].map(() => {
    const t0 = process.hrtime.bigint();
    spawnSync(process.execPath, ['-e', '']);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  });
  return times.sort((a, b) => a - b)[1]!;
}

/** The host's nodeStartMs(), from --host-node-ms (vm-test.sh measures it before booting guests). */
let hostNodeMs = 0;

async function matrix(run: Runner, extra: Record<string, unknown>): Promise<void> {
  const checkRun = spawnSync(process.execPath, [BIN, '--check'], { encoding: 'utf8', timeout: 120_000 });
  extra.check_output = checkRun.stdout.trim();
  extra.check_status = checkRun.status;
  const fixtures = new Cleanups();
  let exporter: Exporter;
  try {
    // The opt-in collectors too: the matrix proves that every collector loads.
    exporter = await startExporter(['--config.file', writeConfig('collectors:\n  http:\n    enabled: true\n')], { timeoutMs: 180_000 });
  } catch (err) {
    run.failRest(MATRIX_CHECKS, `kerntap did not start: ${(err as Error).message.split('\n').filter(Boolean).slice(-1)[0]}`);
    return;
  }
  const scrape = async (): Promise<Sample[]> => parseExposition(await exporter.scrape());
  const off = new Map<string, string>();
  /** A check of a collector that is off fails at once, with the collector's reason (and saves waiting for values). */
  const needs = (collector: string) => {
    if (off.has(collector)) fail(`${collector} collector off: ${off.get(collector)}`);
  };
  try {
    await run.check('collectors', async () => {
      const states = find(await scrape(), 'kerntap_collector_enabled');
      expect(states.length > 0, 'no kerntap_collector_enabled series');
      const checkSays = (c: string) => new RegExp(`^${c}\\s+(\\S+)`, 'm').exec(String(extra.check_output))?.[1] ?? '?';
      for (const s of states) if (s.value !== 1) off.set(s.labels.collector!, offReason(exporter.stderr(), s.labels.collector!));
      if (off.size) fail([...off].map(([c, why]) => `${c} off: ${why}; --check said "${checkSays(c)}"`).join('; '));
      return `${states.map((s) => s.labels.collector).join(', ')} on`;
    });

    await run.check('cpu', async () => {
      needs('cgroup_cpu');
      const cg = fixtures.cgroup('kt-k-cpu');
      const busy = cg.run('while :; do :; done');
      // A second of CPU, however slow the machine (under TCG the shell alone can take seconds to start).
      await until(() => cg.usageUsec(), (v) => v >= 1e6, 60_000);
      busy.kill('SIGKILL');
      await exited(busy);
      const usage = cg.usageUsec() / 1e6;
      expect(usage >= 1, `the busy loop got ${usage} s of CPU in a minute`);
      const exported = await until(async () => value(await scrape(), 'kerntap_cgroup_cpu_time_seconds_total', { cgroup: cg.label }) ?? 0,
        (v) => Math.abs(v / usage - 1) < 0.02);
      const ratio = exported / usage;
      expect(Math.abs(ratio - 1) < 0.02, `exported ${exported.toFixed(4)} s vs cpu.stat ${usage.toFixed(4)} s (ratio ${ratio.toFixed(4)})`);
      return `exported ${exported.toFixed(3)} s = cpu.stat ${usage.toFixed(3)} s x ${ratio.toFixed(4)}`;
    });

    // Loopback traffic of known size; its server stays up for "listeners".
    const server = fixtures.cgroup('kt-k-srv');
    const client = fixtures.cgroup('kt-k-cli');
    const port = await freePort();
    const N = 100_000;
    const M = 10;
    let trafficRan = false;
    await run.check('bytes', async () => {
      needs('tcp');
      await startServer(server, `server 127.0.0.1 ${port} ${N}`);
      await runClient(client, `client 127.0.0.1 ${port} ${N} ${M}`);
      trafficRan = true;
      const cli = { cgroup: client.label, role: 'client', peer: '127.0.0.1', server_port: String(port) };
      const srv = { cgroup: server.label, role: 'server', peer: '127.0.0.1', server_port: String(port) };
      const read = async () => {
        const s = await scrape();
        return [cli, srv].flatMap((l) => [totalOrZero(s, 'kerntap_tcp_sent_bytes_total', l), totalOrZero(s, 'kerntap_tcp_received_bytes_total', l)]);
      };
      const got = await until(read, (v) => v.every((x) => x === M * N));
      if (!got.every((x) => x === M * N)) {
        fail(`want ${M * N} each; client sent/received ${got[0]}/${got[1]}, server sent/received ${got[2]}/${got[3]}; seen: ${seenSeries(await scrape(), 'kerntap_tcp_sent_bytes_total', (l) => l.server_port === String(port) || l.cgroup === server.label)}`);
      }
      return `${M} x ${N} B each way, client and server exact`;
    });

    // Live connections that go quiet, then send again: the socket walk passes
    // quiet ones over, and must still count the burst's last ACK at the next
    // poll. Before 5.15 the walk does not count (no socket lock): kerntap may
    // lag ss by that ACK while the connection is quiet, never exceed it.
    await run.check('live', async () => {
      needs('tcp');
      const walkCounts = kernelAtLeast(5, 15);
      const lp = await freePort();
      const lsrv = fixtures.cgroup('kt-k-lsrv');
      const lcli = fixtures.cgroup('kt-k-lcli');
      const K = 3;
      const go = fixtures.tempPath('kt-k-more', lp);
      await startServer(lsrv, `server 127.0.0.1 ${lp} ${N}`);
      const more = lcli.run(`python3 ${TRAFFIC} more 127.0.0.1 ${lp} ${N} ${K} ${go}`, 'pipe');
      await waitForLine(more, 'ready', 120_000);
      const cli = { cgroup: lcli.label, role: 'client', peer: '127.0.0.1', server_port: String(lp) };
      const sent = async () => totalOrZero(await scrape(), 'kerntap_tcp_sent_bytes_total', cli);
      // Three polls of quiet: the later walks pass these connections over.
      for (let i = 0; i < 3; i++) await waitForPoll(exporter, undefined, { timeoutMs: 60_000 });
      writeFileSync(go, '');
      await waitForLine(more, 'sent', 120_000);
      const acked = () => ssClients('127.0.0.1', lp).reduce((sum, x) => sum + x.bytesAcked - 1, 0);
      expect(await until(acked, (v) => v === 2 * K * N) === 2 * K * N, `ss never showed ${2 * K * N} bytes acked`);
      await waitForPoll(exporter, undefined, { timeoutMs: 60_000 });
      const got = await sent();
      if (walkCounts) {
        expect(got === 2 * K * N, `after a quiet spell and a burst: client sent ${got}, ss bytes_acked ${2 * K * N}`);
        return `${K} connections: ${N} B, three quiet polls, ${N} B more: exact at the next poll`;
      }
      expect(got > K * N && got <= 2 * K * N, `after a quiet spell and a burst: client sent ${got}, want (${K * N}, ${2 * K * N}]`);
      return `${K} connections: ${got} of ${2 * K * N} B while live (lags the last ACK before 5.15), never more than ss`;
    });

    await run.check('rtt', async () => {
      needs('tcp');
      expect(trafficRan, 'no traffic (bytes check failed early)');
      const count = await until(async () => totalOrZero(await scrape(), 'kerntap_tcp_rtt_seconds_count', { cgroup: client.label }), (v) => v > 0);
      expect(count > 0, 'kerntap_tcp_rtt_seconds_count stayed 0 for the client cgroup');
      return `${count} RTT samples`;
    });

    await run.check('listeners', async () => {
      needs('tcp');
      expect(trafficRan, 'no test listener (bytes check failed early)');
      const labels = { cgroup: server.label, port: String(port), comm: 'python3' };
      const n = await until(async () => totalOrZero(await scrape(), 'kerntap_tcp_listeners', labels), (v) => v === 1);
      expect(n === 1, `kerntap_tcp_listeners${JSON.stringify(labels)} = ${n}, want 1`);
      return `listener on :${port} seen`;
    });

    // sock_table's memory follows its entries on every kernel: the kernel's
    // own count from 6.4, computed from the entries kerntap counts before (a
    // capacity estimate there would be max_sockets x 112 B, ~14 MB).
    await run.check('map-memory', async () => {
      needs('tcp');
      const s = await scrape();
      const l = { collector: 'tcp', map: 'sock_table' };
      const [entries, capacity, bytes] = ['kerntap_bpf_map_entries', 'kerntap_bpf_map_capacity', 'kerntap_bpf_map_memory_bytes'].map((n) => value(s, n, l));
      expect(entries !== undefined && capacity !== undefined && bytes !== undefined, `sock_table: entries ${entries}, capacity ${capacity}, memory ${bytes}`);
      expect(entries! >= 1, `sock_table holds ${entries} entries, but the "bytes" check's listener is in it`);
      // Buckets are allocated at load (16 B per power-of-two slot), entries as used (< 256 B each).
      const ceiling = 16 * 2 ** Math.ceil(Math.log2(capacity!)) + 4096 + 256 * entries!;
      expect(bytes! <= ceiling, `sock_table: ${bytes} B reported for ${entries} entries, over ${ceiling} B (a capacity estimate?)`);
      return `sock_table: ${entries} entries, ${bytes} B (${kernelAtLeast(6, 4) ? 'the kernel\'s count' : 'computed from them'}; full: ${capacity! * 112} B)`;
    });

    await run.check('connects', async () => {
      needs('tcp');
      // In a namespace of its own, so its MIB counters see only this traffic.
      const { ns, client: cli, port: p } = await nsServer(fixtures, 'server', '1000');
      const closed = await freePort();
      const [Mc, K] = [8, 5];
      const mib0 = tcpMib(ns);
      const t0 = performance.now();
      await runClient(cli, `client ${ns.hostAddr} ${p} 1000 ${Mc}`, ns.prefix);
      const wallS = (performance.now() - t0) / 1000;
      await runClient(cli, `refused ${ns.hostAddr} ${closed} ${K}`, ns.prefix);
      const mib1 = tcpMib(ns);
      const opens = mib1.ActiveOpens! - mib0.ActiveOpens!;
      const fails = mib1.AttemptFails! - mib0.AttemptFails!;
      expect(opens === Mc + K && fails === K, `the kernel counted ActiveOpens +${opens}, AttemptFails +${fails}; want +${Mc + K}, +${K}`);
      // Until a poll has seen the refused connects, the failure metric may have
      // no series at all: read as 0 while waiting; the comparison below fails
      // if it never shows.
      const sum = (s: Sample[], name: string, labels: Record<string, string>) => find(s, name, labels).reduce((n, x) => n + x.value, 0);
      const read = async () => {
        const s = await scrape();
        return [sum(s, 'kerntap_tcp_connect_duration_seconds_count', { cgroup: cli.label }),
          sum(s, 'kerntap_tcp_connects_failed_total', { cgroup: cli.label, peer: ns.hostAddr, server_port: String(closed), reason: 'refused' })];
      };
      const [ok, refused] = await until(read, ([a, b]) => a === opens - fails && b === fails);
      if (ok !== opens - fails || refused !== fails) {
        fail(`kerntap: ${ok} connects, ${refused} refused; /proc/net/snmp: ${opens - fails} and ${fails}; failed connects seen: ${seenSeries(await scrape(), 'kerntap_tcp_connects_failed_total', (l) => l.server_port === String(closed))}`);
      }
      // The durations mix two readings of CLOCK_MONOTONIC (bpf_ktime_get_ns and
      // TCP's own tcp_mstamp): each must lie within the client's run.
      const s = await scrape();
      const connectS = sum(s, 'kerntap_tcp_connect_duration_seconds_sum', { cgroup: cli.label });
      const lifetimeS = sum(s, 'kerntap_tcp_connection_duration_seconds_sum', { cgroup: cli.label, role: 'client' });
      expect(connectS > 0 && connectS <= Mc * wallS, `connect durations sum to ${connectS} s, want (0, ${Mc} x ${wallS.toFixed(3)} s]`);
      expect(lifetimeS > 0 && lifetimeS <= Mc * wallS, `client connection lifetimes sum to ${lifetimeS} s, want (0, ${Mc} x ${wallS.toFixed(3)} s]`);
      return `${ok} connects and ${refused} refused = /proc/net/snmp deltas; durations within the run (connect ${(connectS * 1000 / Mc).toFixed(2)} ms, lifetime ${(lifetimeS * 1000 / Mc).toFixed(2)} ms mean)`;
    });

    await run.check('retransmits', async () => {
      needs('tcp');
      const { ns, client: lossy, port: p } = await nsServer(fixtures, 'sink');
      // 10% loss where the data arrives (root side of the veth): a drop in
      // the sender's own output path would be requeued, not retransmitted.
      let table;
      try {
        table = fixtures.nft('netdev');
        table.chain('in', `{ type filter hook ingress device ${ns.hostIf} priority 0; }`);
        table.rule('in', ['tcp', 'dport', String(p), 'numgen', 'random', 'mod', '10', '0', 'counter', 'drop']);
      } catch (err) {
        throw new Skip(`nft cannot drop at netdev ingress here: ${(err as Error).message.split('\n').find((l) => /Error|rror:/.test(l)) ?? (err as Error).message.split('\n')[0]}`);
      }
      const mib0 = tcpMib(ns);
      await runClient(lossy, `bulk ${ns.hostAddr} ${p} 3`, ns.prefix);
      await sleep(1500); // the sink closes; FIN retransmits, if any, happen now
      const kernel = tcpMib(ns).RetransSegs! - mib0.RetransSegs!;
      const dropped = table.counted('in');
      if (kernel === 0) throw new Skip(`no retransmits although nft dropped ${dropped} packets`);
      const ours = await until(async () => totalOrZero(await scrape(), 'kerntap_tcp_retransmits_total', { cgroup: lossy.label }), (v) => v === kernel);
      expect(ours === kernel, `kerntap ${ours} retransmits, RetransSegs delta ${kernel} (nft dropped ${dropped})`);
      return `${ours} retransmits = RetransSegs delta (nft dropped ${dropped})`;
    });
  } finally {
    await fixtures.run();
  }
  await run.check('top', async () => topCheck(fixtures));

  await run.check('sigterm', async () => {
    // 1 s on the host; under TCG everything is slower by about the factor
    // a bare node start-and-exit is slower than on the host.
    const slowdown = hostNodeMs ? Math.max(1, nodeStartMs() / hostNodeMs) : 1;
    const bound = Math.round(1000 * slowdown);
    const scaled = slowdown > 1 ? ` (1 s x ${slowdown.toFixed(1)}: node starts ${slowdown.toFixed(1)}x slower here than on the host)` : '';
    const d = await stopAndWatchUnload(exporter, 'SIGTERM', bound);
    extra.kerntap_log = exporter.stderr().split('\n').slice(-40).join('\n');
    expect(d.programs.length > 0, 'kerntap held no BPF programs');
    expect(d.code === 0, `exit code ${d.code}`);
    expect(d.exitMs < bound, `exited after ${d.exitMs} ms, over ${bound} ms${scaled}`);
    expect(d.left.length === 0, `${d.left.length} of ${d.programs.length} programs still loaded ${d.goneMs} ms after SIGTERM`);
    return `exited in ${d.exitMs} ms, ${d.programs.length} programs gone after ${d.goneMs} ms, within ${bound} ms${scaled}`;
  });
}

/** A cgroup with memory.max set, under the cgroup2 root (the memory controller enabled there). */
function limitedCgroup(fixtures: Cleanups, limitBytes: number): TestCgroup {
  const root = detectCgroup2Root();
  writeFileSync(path.join(root, 'cgroup.subtree_control'), '+memory');
  const cg = fixtures.cgroup('kt-k-limit');
  writeFileSync(path.join(cg.abs, 'memory.max'), String(limitBytes));
  return cg;
}

function oomKills(cg: TestCgroup): number {
  try {
    return Number(/^oom_kill (\d+)$/m.exec(readFileSync(path.join(cg.abs, 'memory.events'), 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

interface Footprint { memlock_bytes: number; maps: number; rss_bytes: number }

/** kerntap's maps and RSS once it has served two scrapes a poll apart. */
async function footprint(e: Exporter): Promise<Footprint> {
  await e.scrape();
  await sleep(5500);
  await e.scrape();
  const m = mapMemlock(e.pid);
  return { memlock_bytes: m.bytes, maps: m.maps, rss_bytes: rssBytes(e.pid) };
}

const fmt = (f: Footprint) => `maps ${(f.memlock_bytes / MB).toFixed(1)} MB memlock (${f.maps} maps), RSS ${(f.rss_bytes / MB).toFixed(0)} MB`;

/** Starts kerntap (default config) under memory.max; undefined and why when it does not serve. */
async function startLimited(fixtures: Cleanups): Promise<{ exporter?: Exporter; why?: string; cg: TestCgroup }> {
  const cg = limitedCgroup(fixtures, DAEMONSET_LIMIT_BYTES);
  try {
    const exporter = await startExporter(DEFAULT_POLL, { cgroup: cg.abs, timeoutMs: 240_000 });
    fixtures.add(() => exporter.stop());
    await exporter.scrape();
    return { exporter, cg };
  } catch (err) {
    const kills = oomKills(cg);
    const why = kills ? `OOM-killed under memory.max=${DAEMONSET_LIMIT} (memory.events oom_kill ${kills})` : `did not serve under memory.max=${DAEMONSET_LIMIT}: ${(err as Error).message.split('\n')[0]}`;
    return { why, cg };
  }
}

async function unlimitedFootprint(fixtures: Cleanups): Promise<{ exporter: Exporter; idle: Footprint }> {
  const exporter = await startExporter(DEFAULT_POLL, { timeoutMs: 240_000 });
  fixtures.add(() => exporter.stop());
  return { exporter, idle: await footprint(exporter) };
}

async function memory192(run: Runner, extra: Record<string, unknown>): Promise<void> {
  const fixtures = new Cleanups();
  try {
    await run.check('memory-192', async () => {
      const cpus = possibleCpus();
      expect(cpus >= 192, `only ${cpus} possible CPUs (the VM needs maxcpus=192)`);
      const limited = await startLimited(fixtures);
      let idle: Footprint;
      if (limited.exporter) {
        idle = await footprint(limited.exporter);
        await limited.exporter.stop();
      } else {
        // Measure what it wanted, without the limit, for the reason.
        idle = (await unlimitedFootprint(fixtures)).idle;
      }
      extra.idle = idle;
      expect(limited.exporter !== undefined, `${limited.why}; unlimited: ${fmt(idle)}`);
      expect(idle.memlock_bytes <= MEMLOCK_GOAL, `serves under memory.max=${DAEMONSET_LIMIT}, but ${fmt(idle)} > ${MEMLOCK_GOAL / MB} MB`);
      return `${cpus} possible CPUs: serves under memory.max=${DAEMONSET_LIMIT}; ${fmt(idle)}`;
    });
  } finally {
    await fixtures.run();
  }
}

/** One point of the CPU sweep: footprint idle, whether it serves under the DaemonSet's limit, and with 192 CPUs also under load. */
async function sweep(run: Runner, extra: Record<string, unknown>): Promise<void> {
  const cpus = possibleCpus();
  extra.possible_cpus = cpus;
  const fixtures = new Cleanups();
  try {
    await run.check('footprint', async () => {
      const { exporter, idle } = await unlimitedFootprint(fixtures);
      extra.idle = idle;
      if (cpus >= 192) {
        const cgroups = new CgroupPool();
        const conns = new ConnectionPool();
        fixtures.add(() => cgroups.destroy());
        fixtures.add(() => conns.close());
        await cgroups.grow(1000);
        await conns.grow(10_000);
        extra.loaded = { cgroups: cgroups.size, flows: conns.size, ...(await footprint(exporter)) };
      }
      await exporter.stop();
      return `${cpus} possible CPUs: ${fmt(idle)}`;
    });
    await run.check('serves-under-limit', async () => {
      const limited = await startLimited(fixtures);
      extra.serves_under_limit = limited.exporter !== undefined;
      extra.limit_bytes = DAEMONSET_LIMIT_BYTES;
      expect(limited.exporter !== undefined, limited.why ?? '');
      const peak = Number(readFileSync(path.join(limited.cg.abs, 'memory.peak'), 'utf8').trim() || 0);
      extra.cgroup_memory_peak_bytes = peak;
      await limited.exporter!.stop();
      return `serves under memory.max=${DAEMONSET_LIMIT} (cgroup peak ${(peak / MB).toFixed(0)} MB)`;
    });
  } finally {
    await fixtures.run();
  }
}

/**
 * `kerntap top` on this kernel: its own programs load and attach, and a
 * known exchange (3 connections of 1000 B out, 2000 B back, on loopback)
 * shows up as exactly 3 connects and 3 accepts with the peers' pids, and 3
 * client closes with their exact bytes; SIGTERM detaches and exits 0.
 */
async function topCheck(fixtures: Cleanups): Promise<string> {
  const peerPy = path.join(path.dirname(BIN), '..', 'test/helpers/top_peer.py');
  const port = await freePort();
  const spawnLines = (cmd: string, args: string[]) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    let err = '';
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      lines.push(...parts);
    });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    fixtures.add(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
    return { child, lines, stderr: () => err };
  };
  const line = (p: ReturnType<typeof spawnLines>, pick: (l: string) => boolean, what: string) =>
    until(() => { if (p.child.exitCode !== null && !p.lines.some(pick)) fail(`${what} exited ${p.child.exitCode}: ${p.stderr().split('\n').filter(Boolean).slice(-1)[0] ?? ''}`); return p.lines.find(pick); }, (l) => l !== undefined, 120_000);
  const top = spawnLines(process.execPath, [BIN, 'top', '--output', 'json', '--interval', '500ms', '--filter', `port:${port}`]);
  expect((await line(top, (l) => l.startsWith('{'), 'kerntap top')) !== undefined, 'kerntap top printed no snapshot');
  const first = JSON.parse(top.lines.find((l) => l.startsWith('{'))!) as { notes: string[] };
  const server = spawnLines('python3', [peerPy, 'server', '127.0.0.1', String(port), 'kt-ksrv', '1000', '2000']);
  expect((await line(server, (l) => l === 'listening', 'server')) !== undefined, 'server did not listen');
  const client = spawnLines('python3', [peerPy, 'client', '127.0.0.1', String(port), 'kt-kcli', '1000', '2000', '3', '0']);
  await exited(client.child);
  expect(client.child.exitCode === 0, `client failed: ${client.stderr()}`);
  const clientPid = Number(client.lines.find((l) => l.startsWith('pid '))?.slice(4));
  const serverPid = Number(server.lines.find((l) => l.startsWith('pid '))?.slice(4));
  type Ev = { type: string; pid: number; comm: string; role: string; local_port: number; peer_port: number; bytes_sent: number; bytes_received: number };
  const count = (l: string) => {
    const evs = (JSON.parse(l) as { events: Ev[] }).events;
    return {
      connect: evs.filter((e) => e.type === 'connect' && e.peer_port === port && e.pid === clientPid && e.comm === 'kt-kcli').length,
      accept: evs.filter((e) => e.type === 'accept' && e.local_port === port && e.pid === serverPid && e.comm === 'kt-ksrv').length,
      close: evs.filter((e) => e.type === 'close' && e.role === 'client' && e.peer_port === port && e.pid === clientPid && e.bytes_sent === 1000 && e.bytes_received === 2000).length,
    };
  };
  const want = JSON.stringify({ connect: 3, accept: 3, close: 3 });
  const got = await until(() => { const l = top.lines.filter((x) => x.startsWith('{')).at(-1)!; return JSON.stringify(count(l)); }, (c) => c === want, 60_000);
  server.child.kill('SIGKILL');
  top.child.kill('SIGTERM');
  const code = await exited(top.child);
  expect(got === want, `events ${got}, want ${want}`);
  expect(code === 0, `SIGTERM: exit ${code}`);
  return `3 connects, 3 accepts, 3 closes with exact bytes and pids${first.notes.length ? `; note: ${first.notes.join('; ')}` : ''}`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { mode: { type: 'string', default: 'matrix' }, kernel: { type: 'string', default: 'host' }, out: { type: 'string' }, 'host-node-ms': { type: 'string' } } });
  if (values.mode === 'node-start') {
    process.stdout.write(`${nodeStartMs().toFixed(1)}\n`);
    return;
  }
  hostNodeMs = Number(values['host-node-ms'] ?? 0);
  const t0 = Date.now();
  const extra: Record<string, unknown> = {};
  const modes: Record<string, (r: Runner, e: Record<string, unknown>) => Promise<void>> = { matrix, memory192, sweep };
  const mode = modes[values.mode!];
  if (!mode) throw new Error(`unknown --mode ${values.mode} (matrix, memory192, sweep)`);
  const result = (running?: string) => {
    const r = { kernel: values.kernel, release: release(), possible_cpus: possibleCpus(), mode: values.mode, seconds: (Date.now() - t0) / 1000, checks: run.results, ...extra };
    return `${JSON.stringify(running === undefined ? r : { ...r, incomplete: true, running }, null, 2)}\n`;
  };
  const out = values.out;
  const run = new Runner(out ? (running) => writeFileSync(out, result(running)) : undefined);
  await mode(run, extra);
  if (out) writeFileSync(out, result());
  else process.stdout.write(result());
  process.exitCode = run.results.every((r) => r.status !== 'fail') ? 0 : 1;
}

main().then(
  // Killed peers and closed sockets may still hold the event loop for a while.
  () => process.exit(),
  (err: Error) => {
    process.stderr.write(`kerntap kernel check: ${err.stack ?? err.message}\n`);
    process.exit(2);
  },
);
