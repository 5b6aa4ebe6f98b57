/**
 * kerntap benchmarks: `bash bench/run.sh [--smoke] [--only part,...]`.
 * Every figure that compares is a ratio taken in this one run: kerntap vs
 * bpftrace on the same hooks and workload, and the application with kerntap
 * attached vs detached in interleaved rounds. Results go to
 * bench/results/<full|smoke>.json (bench/plot.py draws the growth figure).
 *
 * For development, `--only ab --ab A,B [--rounds N] [--seconds S]
 * [--keep-alive]` compares two builds: bpf/out directories under this
 * checkout's exporter, or built checkouts: see abCompare(); `--only scaleAb
 * --ab A,B` does the same for the exporter's cost at scale; `--only
 * breakdown` says where the hot tcp hooks' ns go: see breakdown();
 * `--only appOverhead --sides off,on,idle,floor` picks the app-overhead
 * rounds' sides (`idle`: kerntap attached, not polling during the round).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadNative, type BpfObjectHandle } from '../src/bpf/native.js';
import { renderExposition } from '../src/exporters/prometheus.js';
import { renderProtobuf } from '../src/exporters/prometheus-proto.js';
import { defineMetric } from '../src/model/metric.js';
import { numberFamily, type Family, type RawFamily, type Snapshot } from '../src/model/snapshot.js';
import { SeriesTracker } from '../src/series.js';
import { TestCgroup } from '../test/helpers/cgroup.js';
import { CgroupPool, ConnectionPool } from '../test/helpers/load.js';
import { sleep, startExporter, writeConfig, type Exporter } from '../test/helpers/exporter.js';
import { bpfProgramsOf } from '../test/helpers/env.js';
import { find, parseExposition, value } from '../test/helpers/exposition.js';
import { freePort } from '../test/helpers/prometheus.js';
import { cpuTicks, rssBytes, writeNginxSite } from './common.js';
import { renderWithPromClient } from '../test/helpers/prom-client-render.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { values: ARGS } = parseArgs({
  options: {
    smoke: { type: 'boolean' }, only: { type: 'string' },
    // --only ab
    ab: { type: 'string' }, rounds: { type: 'string' }, seconds: { type: 'string' }, 'keep-alive': { type: 'boolean' },
    // --only appOverhead: which sides (default off,on,bpftrace,floor; `idle` is kerntap attached with no poll in the round)
    sides: { type: 'string' },
  },
});
const SMOKE = ARGS.smoke === true;
const P = SMOKE
  ? {
    workloadS: 2, kernelRounds: 1, rounds: 1, roundS: 1, conns: 200, cgroups: 20, scaleS: 3, settleS: 1, series: [1000, 10000], mapEntries: [1000, 10000],
    rateConnections: [1, 16], stepS: 1, exporterStepS: 1, connSteps: [0, 200], cgroupSteps: [0, 20],
  }
  : {
    workloadS: 8, kernelRounds: 6, rounds: 10, roundS: 5, conns: 10000, cgroups: 1000, scaleS: 60, settleS: 5, series: [1000, 10000, 100000], mapEntries: [1000, 10000, 100000],
    rateConnections: [1, 4, 16, 64], stepS: 5, exporterStepS: 10, connSteps: [0, 2500, 5000, 10000], cgroupSteps: [0, 250, 500, 1000],
  };

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

interface WrkOptions { seconds: number; close: boolean; connections?: number; cpus?: string; /** a command wrk runs under, e.g. perf record */ wrap?: string[] }
interface WrkResult { requestsPerS: number; requests: number; cpuUsPerRequest: number }

/**
 * The application: nginx on loopback and its wrk client, both in one cgroup
 * of their own, so the CPU they use per request (their own and the kernel
 * work done for them, BPF programs included) is read from its cpu.stat.
 */
class App {
  private constructor(
    readonly port: number,
    private readonly cgroup: TestCgroup,
    private readonly nginx: ChildProcess,
  ) {}

  static async start(): Promise<App> {
    const port = await freePort();
    const conf = writeNginxSite(port, { workers: 'auto', keepaliveRequests: 1_000_000 });
    const cgroup = TestCgroup.unique('kt-bench-app');
    const nginx = cgroup.run(`exec nginx -c ${conf}`);
    for (let i = 0; i < 50; i++) {
      if (await fetch(`http://127.0.0.1:${port}/`).then((r) => r.ok, () => false)) break;
      await sleep(100);
    }
    return new App(port, cgroup, nginx);
  }

  /** wrk in the app's cgroup. close: a new TCP connection per request. */
  wrk(o: WrkOptions): WrkResult {
    const connections = o.connections ?? 32;
    const cmd = [...(o.wrap ?? []), ...(o.cpus ? ['taskset', '-c', o.cpus] : []), 'wrk', '-t', String(Math.min(2, connections)), '-c', String(connections),
      '-d', `${o.seconds}s`, ...(o.close ? ['-H', 'Connection: close'] : []), `http://127.0.0.1:${this.port}/`];
    const usage0 = this.cgroup.usageUsec();
    const out = spawnSync('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', path.join(this.cgroup.abs, 'cgroup.procs'), ...cmd], { encoding: 'utf8' }).stdout;
    const usage = this.cgroup.usageUsec() - usage0;
    const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
    return { requestsPerS: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0), requests, cpuUsPerRequest: requests ? usage / requests : 0 };
  }

  /** Pins nginx (master and workers) to a CPU list. */
  pin(cpus: string): void {
    for (const pid of this.cgroup.procs()) spawnSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
  }

  async stop(): Promise<void> {
    this.nginx.kill('SIGQUIT');
    await this.cgroup.destroy();
  }
}

/**
 * Next to wrk: a fork per iteration (scheduling) that tries a closed
 * loopback port (a reset sent and one received).
 */
function schedAndResetLoad(seconds: number, closedPort: number): ChildProcess {
  return spawn('/bin/bash', ['-c', `end=$((SECONDS+${seconds})); while [ $SECONDS -lt $end ]; do (echo > /dev/tcp/127.0.0.1/${closedPort}) 2>/dev/null; done`], { stdio: 'ignore' });
}

/** kerntap program (function) name and bpftrace program name (15 chars) → hook. */
const HOOKS: Record<string, string> = {
  cgroup_cpu_switch: 'sched_switch', sched_switch: 'sched_switch',
  tcp_probe: 'tcp_probe',
  tcp_state: 'inet_sock_set_state', inet_sock_set_s: 'inet_sock_set_state',
  tcp_send_reset: 'tcp_send_reset',
  tcp_receive_reset: 'tcp_receive_reset', tcp_receive_res: 'tcp_receive_reset',
  tcp_retransmit_synack: 'tcp_retransmit_synack',
  // The floor: empty programs on the same hooks (test/fixtures/bpf/bench_floor.bpf.c).
  floor_sched_switch: 'sched_switch', floor_tcp_probe: 'tcp_probe', floor_inet_sock_set_state: 'inet_sock_set_state',
  floor_tcp_send_reset: 'tcp_send_reset', floor_tcp_receive_reset: 'tcp_receive_reset', floor_tcp_retransmit_synack: 'tcp_retransmit_synack',
};

type ProgCounters = Map<string, { runTimeNs: number; runs: number }>;
interface HookCost { nsPerEvent: number; events: number; eventsPerS: number; cpuPercentOfCore: number }

function hookCosts(before: ProgCounters, after: ProgCounters, seconds: number): Record<string, HookCost> {
  const out: Record<string, HookCost> = {};
  for (const [name, a] of after) {
    const hook = HOOKS[name];
    if (!hook) continue;
    const b = before.get(name) ?? { runTimeNs: 0, runs: 0 };
    const runs = a.runs - b.runs;
    const ns = a.runTimeNs - b.runTimeNs;
    out[hook] = { nsPerEvent: runs > 0 ? ns / runs : 0, events: runs, eventsPerS: runs / seconds, cpuPercentOfCore: (ns / 1e9 / seconds) * 100 };
  }
  return out;
}

/**
 * One kerntap's own per-program counters (kerntap_bpf_program_*), read from
 * its /metrics after the next poll: unlike `bpftool prog show`, they cannot
 * pick up another kerntap's programs of the same name.
 */
async function kerntapCounters(k: Exporter): Promise<ProgCounters> {
  await sleep(700); // the test exporter polls every 500 ms
  const samples = parseExposition(await k.scrape());
  const out: ProgCounters = new Map();
  for (const s of find(samples, 'kerntap_bpf_program_runs_total')) {
    const runTime = value(samples, 'kerntap_bpf_program_run_time_seconds_total', { program: s.labels.program! }) ?? 0;
    out.set(s.labels.program!, { runTimeNs: runTime * 1e9, runs: s.value });
  }
  return out;
}

/** The bench compares every collector's hooks: refuse to measure a kerntap with one of them off. */
async function requireAllCollectors(k: Exporter): Promise<void> {
  // Opt-in collectors left off by the config are not missing.
  const byConfig = (c: string) => k.stderr().split('\n').some((l) => l.includes('"collector off"') && l.includes(`"collector":"${c}"`) && l.includes('disabled in config'));
  const off = find(parseExposition(await k.scrape()), 'kerntap_collector_enabled').filter((s) => s.value !== 1 && !byConfig(s.labels.collector!));
  if (off.length > 0) {
    const reasons = k.stderr().split('\n').filter((l) => l.includes('"collector off"'));
    throw new Error(`kerntap collector(s) off: ${off.map((s) => s.labels.collector).join(', ')}\n${reasons.join('\n')}`);
  }
}

interface BpftoolProg { id: number; name: string; run_time_ns?: number; run_cnt?: number }
function bpftoolProgs(): BpftoolProg[] {
  return JSON.parse(spawnSync('bpftool', ['prog', 'show', '-j'], { encoding: 'utf8' }).stdout) as BpftoolProg[];
}
function bpftoolCounters(ids: Set<number>): ProgCounters {
  return new Map(bpftoolProgs().filter((p) => ids.has(p.id)).map((p) => [p.name, { runTimeNs: p.run_time_ns ?? 0, runs: p.run_cnt ?? 0 }]));
}

/** Perf event fds a process holds (bpftrace attaches tracepoints with them). */
function perfEventsOf(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:[perf_event]') n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

/** bench/bpftrace/equivalent.bt attached, and its programs' counters (from bpftool: bpftrace has no self-metrics). */
class Bpftrace {
  private constructor(private readonly child: ChildProcess, private readonly ids: Set<number>) {}

  static async start(): Promise<Bpftrace> {
    const child = spawn('bpftrace', [path.join(ROOT, 'bench/bpftrace/equivalent.bt')], { stdio: 'ignore' });
    // Its programs are the ones its own fds hold (bpftool's names are not
    // unique: kerntap's tcp_probe is a tcp_probe too). bpftrace loads every
    // probe, then attaches each one with a perf event: wait for five
    // programs and five perf events (which works with BPF stats off too).
    const alive = () => child.pid !== undefined && child.exitCode === null;
    const ids = () => new Set(alive() ? bpfProgramsOf(child.pid!) : []);
    const attached = () => (alive() ? perfEventsOf(child.pid!) : 0);
    for (let i = 0; i < 600 && (ids().size < 5 || attached() < 5) && alive(); i++) await sleep(100);
    const bt = new Bpftrace(child, ids());
    if (bt.ids.size < 5 || attached() < 5) {
      await bt.stop();
      throw new Error(`bpftrace did not load and attach its 5 probes in 60 s (${bt.ids.size} programs, ${attached()} attached)`);
    }
    return bt;
  }

  counters(): ProgCounters {
    return bpftoolCounters(this.ids);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.on('exit', r));
    this.child.kill('SIGINT');
    await exited;
  }
}

/** Empty programs on kerntap's hooks, loaded and attached by this process: the floor of what a hook costs. */
class Floor {
  private constructor(private readonly obj: BpfObjectHandle) {}

  static start(): Floor {
    const obj = new (loadNative().BpfObject)(path.join(ROOT, 'bpf/out/test/bench_floor.bpf.o'));
    obj.attach();
    return new Floor(obj);
  }

  counters(): ProgCounters {
    return new Map(this.obj.programs().map((p) => [p.name, { runTimeNs: Number(p.runTimeNs), runs: Number(p.runCount) }]));
  }

  stop(): void {
    this.obj.close();
  }
}

/** A 95% confidence interval of the median over rounds, by bootstrap (resampling the rounds). */
function bootstrapMedian(xs: number[], resamples = 2000): { median: number; low: number; high: number } {
  let seed = 12345; // fixed: the same rounds give the same interval
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const medians: number[] = [];
  for (let i = 0; i < resamples; i++) medians.push(median(Array.from(xs, () => xs[Math.floor(rand() * xs.length)]!)));
  medians.sort((a, b) => a - b);
  return { median: median(xs), low: medians[Math.floor(resamples * 0.025)]!, high: medians[Math.floor(resamples * 0.975)]! };
}

/** Rounds needed for a 95% interval of ±`delta` around a mean ratio, from the spread of the per-round ratios. */
function roundsFor(xs: number[], delta = 0.02): number {
  const mean = sum(xs) / xs.length;
  const sd = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, xs.length - 1));
  return Math.ceil(((1.96 * sd) / delta) ** 2);
}

/**
 * ns/event per hook on the same workload: kerntap, bpftrace, and the floor
 * (empty programs on the same hooks), in rounds whose order rotates (drift
 * favours no side); each round's ratios are taken from the sides of that
 * round. Every kerntap figure is then stated above the floor, as a ratio to
 * it and as a ratio to bpftrace.
 */
async function inKernelCost(app: App) {
  const closedPort = await freePort();
  const workload = (): number => {
    const load = schedAndResetLoad(P.workloadS, closedPort);
    const t0 = performance.now();
    app.wrk({ seconds: P.workloadS, close: true });
    load.kill();
    return (performance.now() - t0) / 1000;
  };
  const sides = {
    kerntap: async (): Promise<Record<string, HookCost>> => {
      const k = await startExporter(['--config.file', STATS_CONFIG]);
      try {
        await requireAllCollectors(k);
        const c0 = await kerntapCounters(k);
        const seconds = workload();
        return hookCosts(c0, await kerntapCounters(k), seconds);
      } finally {
        await k.stop();
      }
    },
    bpftrace: async (): Promise<Record<string, HookCost>> => {
      const bt = await Bpftrace.start();
      try {
        const c0 = bt.counters();
        const seconds = workload();
        return hookCosts(c0, bt.counters(), seconds);
      } finally {
        await bt.stop();
      }
    },
    floor: async (): Promise<Record<string, HookCost>> => {
      const floor = Floor.start();
      try {
        const c0 = floor.counters();
        const seconds = workload();
        return hookCosts(c0, floor.counters(), seconds);
      } finally {
        floor.stop();
      }
    },
  };
  type Side = keyof typeof sides;
  const all: Side[] = ['kerntap', 'bpftrace', 'floor'];
  const rounds: Record<Side, Record<string, HookCost>>[] = [];
  for (let r = 0; r < P.kernelRounds; r++) {
    const order = [...all.slice(r % 3), ...all.slice(0, r % 3)];
    const got: Partial<(typeof rounds)[number]> = {};
    for (const side of order) {
      log(`in-kernel cost round ${r + 1}: ${side}`);
      got[side] = await sides[side]();
    }
    rounds.push(got as (typeof rounds)[number]);
  }
  const hooks = [...new Set(rounds.flatMap((r) => Object.keys(r.kerntap)))].sort();
  const perRound = (hook: string, of: (r: (typeof rounds)[number]) => number | undefined) =>
    rounds.map(of).filter((x): x is number => x !== undefined && Number.isFinite(x));
  return hooks.map((hook) => {
    const ns = (r: (typeof rounds)[number], side: Side) => ((r[side][hook]?.events ?? 0) > 0 ? r[side][hook]!.nsPerEvent : undefined);
    const ratio = (num: Side, den: Side) => perRound(hook, (r) => {
      const [a, b] = [ns(r, num), ns(r, den)];
      return a !== undefined && b ? a / b : undefined;
    });
    const aboveFloor = perRound(hook, (r) => {
      const [a, f] = [ns(r, 'kerntap'), ns(r, 'floor')];
      return a !== undefined && f !== undefined ? a - f : undefined;
    });
    const toBpftrace = ratio('kerntap', 'bpftrace');
    const toFloor = ratio('kerntap', 'floor');
    return {
      hook,
      kerntapNs: median(perRound(hook, (r) => ns(r, 'kerntap'))),
      bpftraceNs: median(perRound(hook, (r) => ns(r, 'bpftrace'))),
      floorNs: median(perRound(hook, (r) => ns(r, 'floor'))),
      events: median(rounds.map((r) => r.kerntap[hook]?.events ?? 0)),
      bpftraceEvents: median(rounds.map((r) => r.bpftrace[hook]?.events ?? 0)),
      nsAboveFloor: aboveFloor.length ? spread(aboveFloor) : null,
      ratioToFloor: toFloor.length ? spread(toFloor) : null,
      ratio: toBpftrace.length ? spread(toBpftrace) : null,
      rounds: rounds.map((r) => ({ kerntap: r.kerntap[hook] ?? null, bpftrace: r.bpftrace[hook] ?? null, floor: r.floor[hook] ?? null })),
    };
  });
}

/**
 * BPF run-time stats, which the cost measurements need: held on by an fd
 * (BPF_ENABLE_STATS) rather than the sysctl, which other processes may flip.
 */
class BpfStats {
  private fd: number | undefined;
  private readonly sysctlBefore = readFileSync(STATS_SYSCTL, 'utf8').trim();

  on(): void {
    this.fd ??= loadNative().enableStats();
  }

  /** Off while `work` runs (as far as this process can: the sysctl to 0, our fd closed). */
  async offDuring<T>(work: () => Promise<T>): Promise<T> {
    if (this.fd !== undefined) loadNative().closeFd(this.fd);
    this.fd = undefined;
    writeFileSync(STATS_SYSCTL, '0');
    try {
      return await work();
    } finally {
      writeFileSync(STATS_SYSCTL, this.sysctlBefore);
      this.on();
    }
  }

  restore(): void {
    if (this.fd !== undefined) loadNative().closeFd(this.fd);
    this.fd = undefined;
    writeFileSync(STATS_SYSCTL, this.sysctlBefore);
  }
}
const STATS_SYSCTL = '/proc/sys/kernel/bpf_stats_enabled';
const stats = new BpfStats();

/** Exporter config for the measuring runs: kerntap exports its programs' run time (kerntap_bpf_program_*). */
const STATS_CONFIG = writeConfig('bpf:\n  stats: true\n');

const spread = (xs: number[]) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs) });

/**
 * wrk → nginx with kerntap attached, with nothing attached, and with the
 * equivalent bpftrace script attached, in interleaved rounds (the order
 * rotates every round, so drift favours no side). Two ratios per round:
 * requests/s (attached/detached), and the app's CPU per request
 * (detached/attached, from its cgroup): the second does not move when other
 * processes take CPU away from every side of a round, so it is the steadier
 * figure on a busy machine. The app's CPU per request includes everything
 * the kernel does for it, tracepoint overhead outside the BPF programs too,
 * so kerntap's and bpftrace's extra CPU per request compare their whole cost.
 */
async function appOverhead(app: App) {
  type Side = 'off' | 'on' | 'bpftrace' | 'floor' | 'idle';
  const result: Record<string, unknown> = {};
  const sides = (ARGS.sides?.split(',') ?? ['off', 'on', 'bpftrace', 'floor']) as Side[];
  const nRounds = positiveOption('rounds', ARGS.rounds, P.rounds);
  const roundS = positiveOption('seconds', ARGS.seconds, P.roundS);
  for (const close of ARGS['keep-alive'] ? [false] : ARGS.sides ? [true] : [true, false]) {
    const rounds: Record<Side, WrkResult>[] = [];
    for (let r = 0; r < nRounds; r++) {
      const order = [...sides.slice(r % sides.length), ...sides.slice(0, r % sides.length)];
      const got: Partial<Record<Side, WrkResult>> = {};
      for (const side of order) {
        if (side === 'on' || side === 'idle') {
          const k = await startExporter(['--poll.interval', side === 'on' ? '5s' : '1h']);
          try {
            await sleep(2000); // past start-up work (first poll, cgroup walk)
            got[side] = app.wrk({ seconds: roundS, close });
          } finally {
            await k.stop();
          }
        } else if (side === 'bpftrace') {
          const bt = await Bpftrace.start();
          try {
            got.bpftrace = app.wrk({ seconds: roundS, close });
          } finally {
            await bt.stop();
          }
        } else if (side === 'floor') {
          // Empty programs on the same hooks: what any program there costs the app.
          const floor = Floor.start();
          try {
            got.floor = app.wrk({ seconds: roundS, close });
          } finally {
            floor.stop();
          }
        } else {
          got.off = app.wrk({ seconds: roundS, close });
        }
      }
      const round = got as Record<Side, WrkResult>;
      rounds.push(round);
      const others = order.filter((side) => side !== 'off');
      log(`app overhead (${close ? 'new connection per request' : 'keep-alive'}) round ${r + 1}: `
        + others.map((side) => `${side} req/s ${(round[side].requestsPerS / round.off.requestsPerS).toFixed(3)}, +${(round[side].cpuUsPerRequest - round.off.cpuUsPerRequest).toFixed(2)} µs/request`).join('; '));
    }
    const extra = (r: Record<Side, WrkResult>, side: Side) => r[side].cpuUsPerRequest - r.off.cpuUsPerRequest;
    if (ARGS.sides) {
      // A development run with chosen sides: the same two figures for each.
      result[close ? 'connection_per_request' : 'keep_alive'] = {
        rounds, cpuUsPerRequestOff: median(rounds.map((r) => r.off.cpuUsPerRequest)),
        ...Object.fromEntries(sides.filter((side) => side !== 'off').map((side) => [side, {
          requestsPerS: bootstrapMedian(rounds.map((r) => r[side].requestsPerS / r.off.requestsPerS)),
          extraCpuUsPerRequest: bootstrapMedian(rounds.map((r) => extra(r, side))),
        }])),
      };
      continue;
    }
    result[close ? 'connection_per_request' : 'keep_alive'] = {
      rounds,
      requestsPerS: spread(rounds.map((r) => r.on.requestsPerS / r.off.requestsPerS)),
      /** Median over rounds with a 95% bootstrap interval; and the rounds a ±2% interval needs on this machine. */
      requestsPerSInterval: bootstrapMedian(rounds.map((r) => r.on.requestsPerS / r.off.requestsPerS)),
      cpuPerRequestInterval: bootstrapMedian(rounds.map((r) => r.off.cpuUsPerRequest / r.on.cpuUsPerRequest)),
      roundsFor2Percent: { requestsPerS: roundsFor(rounds.map((r) => r.on.requestsPerS / r.off.requestsPerS)), cpuPerRequest: roundsFor(rounds.map((r) => r.off.cpuUsPerRequest / r.on.cpuUsPerRequest)) },
      cpuPerRequest: spread(rounds.map((r) => r.off.cpuUsPerRequest / r.on.cpuUsPerRequest)),
      bpftraceRequestsPerS: spread(rounds.map((r) => r.bpftrace.requestsPerS / r.off.requestsPerS)),
      bpftraceCpuPerRequest: spread(rounds.map((r) => r.off.cpuUsPerRequest / r.bpftrace.cpuUsPerRequest)),
      floorRequestsPerS: spread(rounds.map((r) => r.floor.requestsPerS / r.off.requestsPerS)),
      floorCpuPerRequest: spread(rounds.map((r) => r.off.cpuUsPerRequest / r.floor.cpuUsPerRequest)),
      /** Extra app CPU per request (µs) with kerntap, bpftrace and the empty programs attached (medians over rounds). */
      extraCpuUsPerRequest: {
        kerntap: median(rounds.map((r) => extra(r, 'on'))), bpftrace: median(rounds.map((r) => extra(r, 'bpftrace'))),
        floor: median(rounds.map((r) => extra(r, 'floor'))),
        /** Within each round, kerntap's extra above the floor's, and as a ratio to bpftrace's extra above the floor. */
        kerntapAboveFloor: bootstrapMedian(rounds.map((r) => extra(r, 'on') - extra(r, 'floor'))),
        aboveFloorVsBpftrace: bootstrapMedian(rounds.map((r) => (extra(r, 'on') - extra(r, 'floor')) / (extra(r, 'bpftrace') - extra(r, 'floor')))),
      },
      rpsOff: median(rounds.map((r) => r.off.requestsPerS)), rpsOn: median(rounds.map((r) => r.on.requestsPerS)),
      rpsBpftrace: median(rounds.map((r) => r.bpftrace.requestsPerS)),
      cpuUsPerRequestOff: median(rounds.map((r) => r.off.cpuUsPerRequest)), cpuUsPerRequestOn: median(rounds.map((r) => r.on.cpuUsPerRequest)),
      cpuUsPerRequestBpftrace: median(rounds.map((r) => r.bpftrace.cpuUsPerRequest)),
    };
  }
  return result;
}

/**
 * 10k connections, 1k cgroups, the default 5 s poll and a scrape every 15 s:
 * CPU and RSS from /proc, over the first window after they appeared and over
 * the next (steady state).
 */
async function exporterAtScale(nodeOptions?: string, build?: AbSide) {
  log(`exporter at scale: ${P.conns} connections, ${P.cgroups} cgroups, ${P.scaleS}s, scrape every 15s${nodeOptions ? `, NODE_OPTIONS=${nodeOptions}` : ''}${build ? `, build ${build.label}` : ''}`);
  const cgroups = new CgroupPool();
  const conns = new ConnectionPool();
  try {
    // The exporter first, so the cgroups' CPU time and the connections are in its maps.
    const env = { ...(nodeOptions ? { NODE_OPTIONS: nodeOptions } : {}), ...(build ? { KERNTAP_BPF_DIR: build.bpfDir } : {}) };
    const k = await startExporter(['--poll.interval', '5s'], { env, bin: build?.bin });
    try {
      await cgroups.grow(P.cgroups);
      await conns.grow(P.conns);
      await sleep(P.settleS * 1000);
      let maxRss = 0;
      let scrapeMs = 0;
      let series = 0;
      // CPU % of a core over a window of P.scaleS, scraping every 15 s.
      const window = async (): Promise<number> => {
        const t0 = cpuTicks(k.pid);
        const start = Date.now();
        while (Date.now() - start < P.scaleS * 1000) {
          const s0 = performance.now();
          const body = await k.scrape();
          scrapeMs = Math.max(scrapeMs, performance.now() - s0);
          series = parseExposition(body).length;
          maxRss = Math.max(maxRss, rssBytes(k.pid));
          await sleep(Math.min(15_000, P.scaleS * 1000 - (Date.now() - start)));
        }
        return ((cpuTicks(k.pid) - t0) / 100 / ((Date.now() - start) / 1000)) * 100;
      };
      // The first window still holds start-up work (V8 compiling the hot
      // paths, the first sight of 1 000 new cgroups); the next one is the
      // steady state a node runs in, which the goal is about.
      const firstWindowCpuPct = await window();
      const cpuPct = await window();
      maxRss = Math.max(maxRss, rssBytes(k.pid));
      return {
        nodeOptions: nodeOptions ?? '', connections: conns.size, cgroups: cgroups.size, seconds: P.scaleS,
        cpuPercentOfCore: cpuPct, cpuPercentOfCoreFirstWindow: firstWindowCpuPct, maxRssMB: maxRss / 1e6, series, slowestScrapeMs: scrapeMs,
      };
    } finally {
      await k.stop();
    }
  } finally {
    conns.close();
    await cgroups.destroy();
  }
}

/**
 * Wall and CPU time of `work`, and the longest gap between 1 ms timer ticks
 * while it runs: the longest event-loop block (on a busy machine, time taken
 * by other processes counts in the wall time and the gap, not in the CPU time).
 */
async function longestBlock<T>(work: () => Promise<T>): Promise<{ result: T; ms: number; cpuMs: number; maxBlockMs: number }> {
  let last = performance.now();
  let maxBlockMs = 0;
  const tick = setInterval(() => {
    const now = performance.now();
    maxBlockMs = Math.max(maxBlockMs, now - last);
    last = now;
  }, 1);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const result = await work();
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  await sleep(3); // let the timer record a block that ended with the work
  clearInterval(tick);
  return { result, ms, cpuMs: (cpu.user + cpu.system) / 1000, maxBlockMs };
}

/**
 * Poll bookkeeping (SeriesTracker) and /metrics rendering for n series, as the
 * poller does it: counter families of up to 10k series (the default
 * limits.max_series_per_metric) with 4 labels, flow-like values; rendering
 * also through prom-client's Registry, the baseline (same bytes), and in the
 * protobuf exposition (counters with created timestamps). Medians of
 * three polls after the first (steady state: every series already tracked);
 * the longest block is the worst of the three.
 */
async function seriesCost() {
  const out = [];
  const perFamily = 10_000;
  for (const n of P.series) {
    const defs = Array.from({ length: Math.ceil(n / perFamily) }, (_, f) =>
      defineMetric({ name: `kerntap.bench.f${f}`, kind: 'counter', unit: 'By', help: 'bench', labels: ['cgroup', 'role', 'peer', 'server.port'] }));
    const poll = (round: number): RawFamily[] => defs.map((def, f) => numberFamily(def, Array.from({ length: Math.min(perFamily, n - f * perFamily) }, (_, j) => {
      const i = f * perFamily + j;
      return { labels: [`/kubepods.slice/pod${i % 997}/c${i}`, 'client', `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, '443'], value: i * 1.5 + round };
    })));
    const tracker = new SeriesTracker({ maxSeriesPerMetric: perFamily, maxLabelLength: 512, startMs: 0 });
    tracker.track(poll(0), 0);
    const runs = [];
    for (let round = 1; round <= 3; round++) {
      const raw = poll(round);
      // As the poller does it: one family at a time, yielding in between.
      const families: Family[] = [];
      let trackMs = 0;
      let trackBlockMs = 0;
      for (const fam of raw) {
        const t0 = performance.now();
        families.push(...tracker.track([fam], round));
        const ms = performance.now() - t0;
        trackMs += ms;
        trackBlockMs = Math.max(trackBlockMs, ms);
        await new Promise((resolve) => setImmediate(resolve));
      }
      const snapshot: Snapshot = { seq: round, timeMs: round, families };
      const render = await longestBlock(() => renderExposition(snapshot, 'text'));
      const baseline = await longestBlock(() => renderWithPromClient(snapshot, 'text'));
      if (baseline.result !== render.result.toString('utf8')) throw new Error(`render of ${n} series differs from prom-client's`);
      const proto = await longestBlock(() => renderProtobuf(snapshot));
      runs.push({
        trackMs, trackBlockMs, renderMs: render.ms, renderCpuMs: render.cpuMs, maxBlockMs: render.maxBlockMs, body: render.result,
        promClientMs: baseline.ms, promClientBlockMs: baseline.maxBlockMs,
        protobufMs: proto.ms, protobufBlockMs: proto.maxBlockMs, protobufBytes: proto.result.length,
      });
    }
    const body = runs.at(-1)!.body;
    const row = {
      series: n, trackMs: median(runs.map((r) => r.trackMs)), trackMaxBlockMs: Math.max(...runs.map((r) => r.trackBlockMs)), renderMs: median(runs.map((r) => r.renderMs)), renderCpuMs: median(runs.map((r) => r.renderCpuMs)),
      maxEventLoopBlockMs: Math.max(...runs.map((r) => r.maxBlockMs)),
      promClientRenderMs: median(runs.map((r) => r.promClientMs)), promClientMaxBlockMs: Math.max(...runs.map((r) => r.promClientBlockMs)),
      renderRatio: median(runs.map((r) => r.renderMs / r.promClientMs)), bytes: body.length, lines: parseExposition(body.toString('utf8')).length,
      protobufRenderMs: median(runs.map((r) => r.protobufMs)), protobufMaxBlockMs: Math.max(...runs.map((r) => r.protobufBlockMs)), protobufBytes: runs.at(-1)!.protobufBytes,
    };
    out.push(row);
    log(`series ${n}: bookkeeping ${row.trackMs.toFixed(0)} ms (longest block ${row.trackMaxBlockMs.toFixed(0)} ms), render ${row.renderMs.toFixed(0)} ms (${row.renderRatio.toFixed(2)}× prom-client's), longest block ${row.maxEventLoopBlockMs.toFixed(0)} ms; protobuf ${row.protobufRenderMs.toFixed(0)} ms, longest block ${row.protobufMaxBlockMs.toFixed(0)} ms`);
  }
  return out;
}

/** readMap of a per-CPU hash (u64 key and value) filled from JS, median of 5, at each size. */
async function batchRead() {
  const native = loadNative();
  const out = [];
  for (const entries of P.mapEntries) {
    const obj = new native.BpfObject(path.join(ROOT, 'bpf/out/test/bench_map.bpf.o'), { maxEntries: { bench_hash: entries } });
    try {
      const key = Buffer.alloc(8);
      const val = Buffer.alloc(8);
      for (let i = 0; i < entries; i++) {
        key.writeBigUInt64LE(BigInt(i));
        val.writeBigUInt64LE(BigInt(i));
        obj.updateElem('bench_hash', key, val);
      }
      const times = [];
      let count = 0;
      for (let i = 0; i < 5; i++) {
        const t0 = performance.now();
        count = (await obj.readMap('bench_hash')).count;
        times.push(performance.now() - t0);
      }
      out.push({ entries: count, cpus: native.numPossibleCpus(), medianMs: median(times) });
      log(`batch read ${count} entries: ${median(times).toFixed(1)} ms`);
    } finally {
      obj.close();
    }
  }
  return out;
}

/**
 * How the costs grow. In-kernel: ns/event and total BPF CPU against the event
 * rate (wrk connections) and against the CPUs the workload runs on. Exporter:
 * CPU per poll, poll duration and RSS against live connections and cgroups
 * (one exporter polling every second while they are added).
 */
async function growth(app: App) {
  const k = await startExporter(['--config.file', STATS_CONFIG]);
  const eventRate = [];
  const cpus = [];
  const exporter: { growing: string; connections: number; cgroups: number; cpuMsPerPoll: number; pollMs: number; rssMB: number }[] = [];
  const conns = new ConnectionPool();
  const cgroups = new CgroupPool();
  try {
    await requireAllCollectors(k);
    for (const connections of P.rateConnections) {
      const c0 = await kerntapCounters(k);
      const t0 = performance.now();
      const rps = app.wrk({ seconds: P.stepS, close: true, connections }).requestsPerS;
      const seconds = (performance.now() - t0) / 1000;
      const hooks = hookCosts(c0, await kerntapCounters(k), seconds);
      eventRate.push({ wrkConnections: connections, requestsPerS: rps, hooks });
      log(`growth: event rate at ${connections} wrk connections: ${rps.toFixed(0)} req/s`);
    }
    for (const set of ['0', '0-1']) {
      app.pin(set);
      const c0 = await kerntapCounters(k);
      const t0 = performance.now();
      const rps = app.wrk({ seconds: P.stepS, close: true, cpus: set }).requestsPerS;
      const seconds = (performance.now() - t0) / 1000;
      const hooks = hookCosts(c0, await kerntapCounters(k), seconds);
      cpus.push({ cpus: set.includes('-') ? 2 : 1, requestsPerS: rps, hooks });
      log(`growth: workload on CPUs ${set}: ${rps.toFixed(0)} req/s`);
    }
    app.pin(`0-${loadNative().numPossibleCpus() - 1}`);
    await k.stop();

    // Exporter cost: its own self-metrics, over a window of 1 s polls.
    const e = await startExporter(['--poll.interval', '1s']);
    const measure = async (growing: string) => {
      await sleep(P.settleS * 1000);
      const first = parseExposition(await e.scrape());
      const t0 = performance.now();
      const polls: number[] = [];
      for (let i = 0; i < P.exporterStepS; i++) {
        await sleep(1000);
        polls.push(value(parseExposition(await e.scrape()), 'kerntap_poll_duration_seconds')! * 1000);
      }
      const last = parseExposition(await e.scrape());
      const pollsInWindow = (performance.now() - t0) / 1000; // one poll a second
      const cpu = (s: typeof first) => value(s, 'kerntap_process_cpu_time_seconds_total')!;
      exporter.push({
        growing, connections: conns.size, cgroups: cgroups.size,
        cpuMsPerPoll: ((cpu(last) - cpu(first)) * 1000) / pollsInWindow,
        pollMs: median(polls), rssMB: value(last, 'kerntap_process_memory_rss_bytes')! / 1e6,
      });
      log(`growth: ${conns.size} connections, ${cgroups.size} cgroups: poll ${median(polls).toFixed(1)} ms`);
    };
    try {
      for (const n of P.connSteps) {
        await conns.grow(n);
        await measure('connections');
      }
      conns.close();
      for (const n of P.cgroupSteps) {
        await cgroups.grow(n);
        await measure('cgroups');
      }
    } finally {
      await e.stop();
    }
  } finally {
    await k.stop();
    conns.close();
    await cgroups.destroy();
  }
  return { eventRate, cpus, exporter };
}

/** The http collector is opt-in: these configs turn it on (with and without BPF stats). */
const HTTP_CONFIG = writeConfig('collectors:\n  http:\n    enabled: true\n');
const EMPTY_HTTP_OBJECT = path.join(ROOT, 'bpf/out/test/http_empty.bpf.o');
const HTTP_STATS_CONFIG = writeConfig('bpf:\n  stats: true\ncollectors:\n  http:\n    enabled: true\n');

/**
 * A syscall-heavy workload that is not HTTP: two dd moving 64-byte blocks
 * from /dev/zero through a pipe to /dev/null (four small reads and writes
 * per block), in a cgroup of their own. Returns syscalls per CPU-second
 * of that cgroup (its cpu.stat): unlike wall time, it does not move when
 * other work on the machine takes CPU away.
 */
function syscallWorkload(blocks: number): number {
  const cg = TestCgroup.unique('kt-bench-dd');
  try {
    const usage0 = cg.usageUsec();
    spawnSync('/bin/sh', ['-c', 'echo $$ > "$0" && exec /bin/sh -c "$1"', path.join(cg.abs, 'cgroup.procs'),
      `dd if=/dev/zero bs=64 count=${blocks} status=none | dd of=/dev/null bs=64 status=none`]);
    return (4 * blocks) / ((cg.usageUsec() - usage0) / 1e6);
  } finally {
    void cg.destroy();
  }
}

/** Runs and run time of each program of a loaded object (BPF stats on), by program name. */
function objectCounters(programs: { name: string; runTimeNs: bigint; runCount: bigint }[]): ProgCounters {
  return new Map(programs.map((p) => [p.name, { runTimeNs: Number(p.runTimeNs), runs: Number(p.runCount) }]));
}

function perProgram(before: ProgCounters, after: ProgCounters): Record<string, { nsPerEvent: number; events: number }> {
  const out: Record<string, { nsPerEvent: number; events: number }> = {};
  for (const [name, a] of after) {
    if (!name.startsWith('http_')) continue;
    const b = before.get(name) ?? { runTimeNs: 0, runs: 0 };
    const runs = a.runs - b.runs;
    out[name] = { nsPerEvent: runs > 0 ? (a.runTimeNs - b.runTimeNs) / runs : 0, events: runs };
  }
  return out;
}

/**
 * The http collector's cost, side by side in interleaved rounds:
 *  - extra app CPU per request, wrk -> nginx keep-alive, kerntap with http
 *    on vs kerntap with http off (BPF stats off);
 *  - throughput of a non-HTTP syscall-heavy workload, http on vs off;
 *  - in-kernel ns per event of each program vs an empty program on the
 *    same hook (the floor: what any program there costs), same workload.
 */
async function httpCost(app: App) {
  const blocks = SMOKE ? 50_000 : 500_000;
  // floor: http off, and empty programs on the http hooks: what any program there costs.
  type Side = 'off' | 'on' | 'floor';
  const sides: Side[] = ['off', 'on', 'floor'];
  const rounds: Record<Side, { wrk: WrkResult; syscallsPerS: number }>[] = [];
  await stats.offDuring(async () => {
    for (let r = 0; r < P.rounds; r++) {
      const order = [...sides.slice(r % 3), ...sides.slice(0, r % 3)];
      const got: Partial<(typeof rounds)[number]> = {};
      for (const side of order) {
        const k = await startExporter(side === 'on' ? ['--config.file', HTTP_CONFIG, '--poll.interval', '5s'] : ['--poll.interval', '5s']);
        const empty = side === 'floor' ? new (loadNative().BpfObject)(EMPTY_HTTP_OBJECT) : undefined;
        try {
          empty?.attach();
          await sleep(2000);
          got[side] = { wrk: app.wrk({ seconds: P.roundS, close: false }), syscallsPerS: syscallWorkload(blocks) };
        } finally {
          empty?.close();
          await k.stop();
        }
      }
      const round = got as (typeof rounds)[number];
      rounds.push(round);
      log(`http cost round ${r + 1}: extra CPU/request ${(round.on.wrk.cpuUsPerRequest - round.off.wrk.cpuUsPerRequest).toFixed(3)} µs (floor ${(round.floor.wrk.cpuUsPerRequest - round.off.wrk.cpuUsPerRequest).toFixed(3)}), syscalls ${(round.on.syscallsPerS / round.off.syscallsPerS).toFixed(3)}x (floor ${(round.floor.syscallsPerS / round.off.syscallsPerS).toFixed(3)}x)`);
    }
  });
  // Two workloads, measured apart: fds that are not tracked (dd: every
  // event is a miss) and tracked HTTP connections (wrk -> nginx).
  const workloads = {
    nonHttp: () => { syscallWorkload(blocks); },
    http: () => {
      app.wrk({ seconds: P.workloadS, close: false });
      app.wrk({ seconds: Math.max(1, P.workloadS / 4), close: true });
    },
  };
  type Costs = Record<keyof typeof workloads, ReturnType<typeof perProgram>>;
  const kernel: { kerntap: Costs; empty: Costs }[] = [];
  for (let r = 0; r < P.kernelRounds; r++) {
    const k = await startExporter(['--config.file', HTTP_STATS_CONFIG]);
    const kerntap: Partial<Costs> = {};
    try {
      for (const [name, run] of Object.entries(workloads) as [keyof typeof workloads, () => void][]) {
        const c0 = await kerntapCounters(k);
        run();
        kerntap[name] = perProgram(c0, await kerntapCounters(k));
      }
    } finally {
      await k.stop();
    }
    const emptyObj = new (loadNative().BpfObject)(EMPTY_HTTP_OBJECT);
    const empty: Partial<Costs> = {};
    try {
      emptyObj.attach();
      for (const [name, run] of Object.entries(workloads) as [keyof typeof workloads, () => void][]) {
        const c0 = objectCounters(emptyObj.programs());
        run();
        empty[name] = perProgram(c0, objectCounters(emptyObj.programs()));
      }
    } finally {
      emptyObj.close();
    }
    kernel.push({ kerntap: kerntap as Costs, empty: empty as Costs });
    log(`http in-kernel round ${r + 1} done`);
  }
  const inKernel = (w: keyof typeof workloads) => {
    const programs = [...new Set(kernel.flatMap((r) => Object.keys(r.kerntap[w])))].sort()
      .filter((name) => median(kernel.map((r) => r.kerntap[w][name]?.events ?? 0)) > 0);
    return programs.map((name) => ({
      program: name,
      kerntapNs: median(kernel.map((r) => r.kerntap[w][name]?.nsPerEvent ?? 0)),
      emptyNs: median(kernel.map((r) => r.empty[w][name]?.nsPerEvent ?? 0)),
      events: median(kernel.map((r) => r.kerntap[w][name]?.events ?? 0)),
    }));
  };
  return {
    keepAlive: {
      extraCpuUsPerRequest: spread(rounds.map((r) => r.on.wrk.cpuUsPerRequest - r.off.wrk.cpuUsPerRequest)),
      floorExtraCpuUsPerRequest: spread(rounds.map((r) => r.floor.wrk.cpuUsPerRequest - r.off.wrk.cpuUsPerRequest)),
      cpuUsPerRequestOff: median(rounds.map((r) => r.off.wrk.cpuUsPerRequest)),
      cpuUsPerRequestOn: median(rounds.map((r) => r.on.wrk.cpuUsPerRequest)),
      requestsPerS: spread(rounds.map((r) => r.on.wrk.requestsPerS / r.off.wrk.requestsPerS)),
    },
    nonHttpSyscalls: {
      throughput: spread(rounds.map((r) => r.on.syscallsPerS / r.off.syscallsPerS)),
      floorThroughput: spread(rounds.map((r) => r.floor.syscallsPerS / r.off.syscallsPerS)),
      syscallsPerSOff: median(rounds.map((r) => r.off.syscallsPerS)),
      syscallsPerSOn: median(rounds.map((r) => r.on.syscallsPerS)),
      syscallsPerSFloor: median(rounds.map((r) => r.floor.syscallsPerS)),
    },
    inKernel: { nonHttp: inKernel('nonHttp'), http: inKernel('http') },
    rounds,
  };
}

/** A positive integer option, or a one-line error naming it. */
function positiveOption(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name}: expected a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

/**
 * --ab A,B: the two builds an A/B part compares. Each is a bpf/out directory
 * (its objects under this checkout's exporter) or a built checkout (its own
 * exporter and objects), for changes that touch both sides of a map.
 */
interface AbSide { label: string; bpfDir: string; bin?: string }
function abSides(): [AbSide, AbSide] {
  const raw = (ARGS.ab ?? '').split(',');
  if (raw.length !== 2 || raw.some((d) => d.trim() === '')) throw new Error('--ab: expected two bpf/out directories or built checkouts, A,B');
  const sides = raw.map((d) => path.resolve(d)).map((d): AbSide => {
    const bin = path.join(d, 'bin/kerntap.js');
    if (existsSync(bin)) return { label: d, bpfDir: path.join(d, 'bpf/out'), bin };
    return { label: d, bpfDir: d };
  });
  for (const s of sides) if (!existsSync(path.join(s.bpfDir, 'tcp.bpf.o'))) throw new Error(`--ab: no tcp.bpf.o in ${s.bpfDir} (build it first)`);
  return [sides[0]!, sides[1]!];
}

/**
 * Dev A/B of two builds (abSides: BPF objects through KERNTAP_BPF_DIR, or
 * whole checkouts), same workload (wrk -> nginx, a new connection per request unless --keep-alive),
 * in rounds whose order alternates. Per round and side: kernel ns per event
 * of each hook and kernel ns per request over all hooks (BPF stats, which
 * both sides pay alike), and the app's CPU per request from its cgroup.
 * Ratios are B/A per round; medians with a 95% bootstrap interval.
 */
async function abCompare(app: App) {
  const sides = abSides();
  const rounds = positiveOption('rounds', ARGS.rounds, 6);
  const seconds = positiveOption('seconds', ARGS.seconds, 5);
  const close = ARGS['keep-alive'] !== true;
  type Side = 'a' | 'b';
  interface SideRound { hooks: Record<string, HookCost>; kernelNsPerRequest: number; wrk: WrkResult }
  const run = async (side: AbSide): Promise<SideRound> => {
    const k = await startExporter(['--config.file', STATS_CONFIG, '--poll.interval', '500ms'], { env: { KERNTAP_BPF_DIR: side.bpfDir }, bin: side.bin });
    try {
      await requireAllCollectors(k);
      const c0 = await kerntapCounters(k);
      const wrk = app.wrk({ seconds, close });
      if (wrk.requests === 0) throw new Error(`ab: wrk made no requests to nginx on port ${app.port}`);
      const hooks = hookCosts(c0, await kerntapCounters(k), seconds);
      const ns = Object.values(hooks).reduce((sum, h) => sum + h.nsPerEvent * h.events, 0);
      return { hooks, kernelNsPerRequest: wrk.requests ? ns / wrk.requests : 0, wrk };
    } finally {
      await k.stop();
    }
  };
  const got: Record<Side, SideRound>[] = [];
  for (let r = 0; r < rounds; r++) {
    const order: Side[] = r % 2 === 0 ? ['a', 'b'] : ['b', 'a'];
    const round: Partial<Record<Side, SideRound>> = {};
    for (const side of order) round[side] = await run(sides[side === 'a' ? 0 : 1]);
    const { a, b } = round as Record<Side, SideRound>;
    got.push({ a, b });
    log(`ab round ${r + 1}: kernel ns/request ${a.kernelNsPerRequest.toFixed(0)} -> ${b.kernelNsPerRequest.toFixed(0)}, app CPU/request ${a.wrk.cpuUsPerRequest.toFixed(2)} -> ${b.wrk.cpuUsPerRequest.toFixed(2)} µs, `
      + Object.keys(a.hooks).sort().map((h) => `${h} ${a.hooks[h]!.nsPerEvent.toFixed(0)} -> ${b.hooks[h]?.nsPerEvent.toFixed(0)} ns`).join(', '));
  }
  const hooks = [...new Set(got.flatMap((r) => Object.keys(r.a.hooks)))].sort();
  const perEvent = Object.fromEntries(hooks.map((hook) => {
    const both = got.filter((r) => (r.a.hooks[hook]?.events ?? 0) > 0 && (r.b.hooks[hook]?.events ?? 0) > 0);
    return [hook, {
      aNs: median(both.map((r) => r.a.hooks[hook]!.nsPerEvent)),
      bNs: median(both.map((r) => r.b.hooks[hook]!.nsPerEvent)),
      ratio: both.length ? bootstrapMedian(both.map((r) => r.b.hooks[hook]!.nsPerEvent / r.a.hooks[hook]!.nsPerEvent)) : null,
      aEventsPerRequest: median(both.map((r) => r.a.hooks[hook]!.events / r.a.wrk.requests)),
      bEventsPerRequest: median(both.map((r) => r.b.hooks[hook]!.events / r.b.wrk.requests)),
      aNsPerRequest: median(both.map((r) => (r.a.hooks[hook]!.nsPerEvent * r.a.hooks[hook]!.events) / r.a.wrk.requests)),
      bNsPerRequest: median(both.map((r) => (r.b.hooks[hook]!.nsPerEvent * r.b.hooks[hook]!.events) / r.b.wrk.requests)),
    }];
  }));
  return {
    a: sides[0].label, b: sides[1].label, rounds, seconds, workload: close ? 'connection_per_request' : 'keep_alive',
    perEvent,
    kernelNsPerRequest: {
      a: median(got.map((r) => r.a.kernelNsPerRequest)), b: median(got.map((r) => r.b.kernelNsPerRequest)),
      ratio: bootstrapMedian(got.map((r) => r.b.kernelNsPerRequest / r.a.kernelNsPerRequest)),
    },
    appCpuUsPerRequest: {
      a: median(got.map((r) => r.a.wrk.cpuUsPerRequest)), b: median(got.map((r) => r.b.wrk.cpuUsPerRequest)),
      ratio: bootstrapMedian(got.map((r) => r.b.wrk.cpuUsPerRequest / r.a.wrk.cpuUsPerRequest)),
    },
    requestsPerS: {
      a: median(got.map((r) => r.a.wrk.requestsPerS)), b: median(got.map((r) => r.b.wrk.requestsPerS)),
      ratio: bootstrapMedian(got.map((r) => r.b.wrk.requestsPerS / r.a.wrk.requestsPerS)),
    },
    perRound: got,
  };
}

/**
 * Where the ns of the two hot tcp hooks go (dev part, --only breakdown
 * [--rounds N] [--seconds S]): test/fixtures/bpf/bench_breakdown.bpf.c
 * attached alone (programs that each add one step: the clock, the socket
 * cast, socket storage, a histogram add), then kerntap alone, in rounds of
 * the same workload (a new connection per request). Medians of ns/event.
 */
async function breakdown(app: App) {
  const rounds = positiveOption('rounds', ARGS.rounds, 3);
  const seconds = positiveOption('seconds', ARGS.seconds, 5);
  const steps: Record<string, number[]> = {};
  const add = (name: string, c: { nsPerEvent: number; events: number }) => {
    if (c.events > 0) (steps[name] ??= []).push(c.nsPerEvent);
  };
  const delta = (before: ProgCounters, after: ProgCounters) => {
    for (const [name, a] of after) {
      const b = before.get(name) ?? { runTimeNs: 0, runs: 0 };
      const runs = a.runs - b.runs;
      add(name, { nsPerEvent: runs > 0 ? (a.runTimeNs - b.runTimeNs) / runs : 0, events: runs });
    }
  };
  for (let r = 0; r < rounds; r++) {
    const obj = new (loadNative().BpfObject)(path.join(ROOT, 'bpf/out/test/bench_breakdown.bpf.o'));
    try {
      obj.attach();
      const c0 = objectCounters(obj.programs());
      app.wrk({ seconds, close: true });
      delta(c0, objectCounters(obj.programs()));
    } finally {
      obj.close();
    }
    const k = await startExporter(['--config.file', STATS_CONFIG]);
    try {
      const c0 = await kerntapCounters(k);
      app.wrk({ seconds, close: true });
      const c1 = await kerntapCounters(k);
      delta(new Map([...c0].filter(([n]) => n.startsWith('tcp_'))), new Map([...c1].filter(([n]) => n.startsWith('tcp_'))));
    } finally {
      await k.stop();
    }
    log(`breakdown round ${r + 1}: ${Object.entries(steps).map(([n, xs]) => `${n} ${xs[xs.length - 1]!.toFixed(0)}`).join(', ')}`);
  }
  return Object.fromEntries(Object.entries(steps).sort().map(([n, xs]) => [n, { medianNs: median(xs), rounds: xs }]));
}

/**
 * Exporter cost at scale (as `scale`) under two builds' BPF objects (dev
 * part, --only scaleAb --ab DIR1,DIR2 [--rounds N]): rounds alternate which
 * goes first; each side gets fresh connections and cgroups. Ratios B/A.
 */
async function scaleAbCompare() {
  const sides = abSides();
  const rounds = positiveOption('rounds', ARGS.rounds, 3);
  const got: { a: number; b: number }[] = [];
  for (let r = 0; r < rounds; r++) {
    const round: Partial<Record<'a' | 'b', number>> = {};
    for (const side of r % 2 === 0 ? ['a', 'b'] as const : ['b', 'a'] as const) {
      round[side] = (await exporterAtScale(undefined, sides[side === 'a' ? 0 : 1])).cpuPercentOfCore;
    }
    got.push(round as { a: number; b: number });
    log(`scale ab round ${r + 1}: exporter CPU ${round.a!.toFixed(2)}% -> ${round.b!.toFixed(2)}%`);
  }
  return { a: sides[0].label, b: sides[1].label, rounds: got, ratio: bootstrapMedian(got.map((x) => x.b / x.a)) };
}

/**
 * Where the kernel CPU of tracing goes, in the programs and outside them,
 * which BPF run-time stats cannot see: a system-wide profile (perf,
 * cpu-clock, call graphs) of wrk -> nginx, a new connection per request,
 * with nothing attached, with kerntap, with the bpftrace equivalent and with
 * the floor (empty programs on kerntap's hooks), in rounds whose order
 * rotates. A sample counts for the first frame from its leaf that tracing
 * runs or causes: a BPF program (and the kernel code it calls), the
 * tracepoint dispatch (tp_btf's bpf_trace_run*, or the classic tracepoint's
 * record and perf hand-over that bpftrace's programs run behind), or socket
 * storage's own hooks outside the programs (the free and clone every socket
 * passes, whose base the detached side gives). µs of CPU per request,
 * medians over rounds, and the heaviest leaves of each. Unlike the app's CPU
 * per request, each side's figure is measured directly rather than as a
 * difference of two noisy totals. `--ab A,B` profiles two builds instead.
 */
const PROFILE_ROOTS: [RegExp, (m: RegExpMatchArray) => string][] = [
  [/^bpf_prog_[0-9a-f]+_(\w+)$/, (m) => `program ${m[1]}`],
  [/^(bpf_trace_run\d+|__bpf_prog_(enter|exit)_recur|perf_trace_\w+|trace_call_bpf|perf_trace_run_bpf_submit|perf_trace_buf_alloc|bpf_prog_run_array)$/, () => 'tracepoint dispatch'],
  [/^bpf_sk_storage_free$/, () => 'socket storage: free with the socket'],
  [/^bpf_sk_storage_clone$/, () => 'socket storage: clone into a child'],
];

/** Context switches since boot, all CPUs (/proc/stat ctxt). */
function contextSwitches(): number {
  return Number(/^ctxt (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1] ?? Number.NaN);
}

function perfAvailable(): boolean {
  return spawnSync('perf', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Samples of a perf.data by root (PROFILE_ROOTS) and, per root, by leaf symbol. */
function attributeProfile(file: string): Map<string, Map<string, number>> {
  const out = spawnSync('perf', ['script', '-i', file, '-F', 'ip,sym'], { encoding: 'utf8', maxBuffer: 1 << 30 }).stdout;
  const roots = new Map<string, Map<string, number>>();
  for (const block of out.split('\n\n')) {
    const frames = block.trim().split('\n').map((l) => l.trim().replace(/^[0-9a-f]+\s+/, '')).filter((f) => f !== '');
    for (const frame of frames) {
      const hit = PROFILE_ROOTS.map(([re, name]) => { const m = re.exec(frame); return m ? name(m) : undefined; }).find((x) => x);
      if (!hit) continue;
      const leaves = roots.get(hit) ?? new Map<string, number>();
      const leaf = frames[0]!.replace(/^bpf_prog_[0-9a-f]+_/, 'program ');
      leaves.set(leaf, (leaves.get(leaf) ?? 0) + 1);
      roots.set(hit, leaves);
      break;
    }
  }
  return roots;
}

async function profile(app: App) {
  if (!perfAvailable()) return { skipped: 'perf is not installed (Debian package linux-perf)' };
  const rounds = positiveOption('rounds', ARGS.rounds, SMOKE ? 1 : 4);
  const seconds = positiveOption('seconds', ARGS.seconds, SMOKE ? 1 : 5);
  const hz = 2999;
  const builds = ARGS.ab !== undefined ? abSides() : undefined;
  const sides = builds ? ['a', 'b'] : ['off', 'on', 'bpftrace', 'floor'];
  // sched_switch's programs run with interrupts off, where cpu-clock samples cannot land:
  // context switches per request, times §1's ns/event, give their share instead.
  type SideRound = { usPerRequest: Record<string, number>; leaves: Record<string, [string, number][]>; switchesPerRequest: number };
  const perRound: Record<string, SideRound>[] = [];
  const data = path.join(mkdtempSync(path.join(tmpdir(), 'kt-bench-perf-')), 'perf.data');
  const attach = async (side: string): Promise<() => Promise<unknown>> => {
    if (side === 'off') return async () => undefined;
    if (side === 'bpftrace') { const bt = await Bpftrace.start(); return () => bt.stop(); }
    if (side === 'floor') { const floor = Floor.start(); return async () => floor.stop(); }
    const build = builds?.[side === 'a' ? 0 : 1];
    const k = await startExporter(['--poll.interval', '5s'], build ? { env: { KERNTAP_BPF_DIR: build.bpfDir }, bin: build.bin } : {});
    await requireAllCollectors(k);
    return () => k.stop();
  };
  for (let r = 0; r < rounds; r++) {
    const round: Record<string, SideRound> = {};
    for (const side of [...sides.slice(r % sides.length), ...sides.slice(0, r % sides.length)]) {
      const detach = await attach(side);
      try {
        const switches0 = contextSwitches();
        const wrk = app.wrk({ seconds, close: true, wrap: ['perf', 'record', '-q', '-a', '-g', '-F', String(hz), '-o', data, '--'] });
        if (wrk.requests === 0) throw new Error('profile: wrk made no requests');
        const switchesPerRequest = (contextSwitches() - switches0) / wrk.requests;
        const us = (n: number) => (n / hz) * 1e6 / wrk.requests;
        const roots = [...attributeProfile(data)];
        round[side] = {
          usPerRequest: Object.fromEntries(roots.map(([root, leaves]) => [root, us(sum([...leaves.values()]))])),
          leaves: Object.fromEntries(roots.map(([root, leaves]) => [root, [...leaves].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([leaf, n]) => [leaf, us(n)] as [string, number])])),
          switchesPerRequest,
        };
      } finally {
        await detach();
      }
    }
    perRound.push(round);
    log(`profile round ${r + 1}: ${sides.map((side) => `${side} ${sum(Object.values(round[side]!.usPerRequest)).toFixed(2)} µs/request`).join(', ')}`);
  }
  const total = (r: Record<string, SideRound>, side: string) => sum(Object.values(r[side]!.usPerRequest));
  const result: Record<string, unknown> = { seconds, rounds, hz };
  for (const side of sides) {
    const roots = [...new Set(perRound.flatMap((r) => Object.keys(r[side]!.usPerRequest)))];
    result[side] = {
      usPerRequest: Object.fromEntries(roots.map((root) => [root, median(perRound.map((r) => r[side]!.usPerRequest[root] ?? 0))])),
      total: median(perRound.map((r) => total(r, side))),
      contextSwitchesPerRequest: median(perRound.map((r) => r[side]!.switchesPerRequest)),
      leavesFirstRound: perRound[0]![side]!.leaves,
    };
  }
  if (builds) {
    result.bToA = bootstrapMedian(perRound.map((r) => total(r, 'b') / total(r, 'a')));
  } else {
    // Within each round: above what the detached side shows (socket storage's hooks run for every socket anyway).
    const above = (r: Record<string, SideRound>, side: string) => total(r, side) - total(r, 'off');
    result.aboveDetached = Object.fromEntries(['on', 'bpftrace', 'floor'].map((side) => [side, bootstrapMedian(perRound.map((r) => above(r, side)))]));
    result.kerntapAboveFloor = bootstrapMedian(perRound.map((r) => above(r, 'on') - above(r, 'floor')));
    result.kerntapToBpftrace = bootstrapMedian(perRound.map((r) => above(r, 'on') / above(r, 'bpftrace')));
    result.kerntapAboveFloorToBpftraceAboveFloor = bootstrapMedian(perRound.map((r) => (above(r, 'on') - above(r, 'floor')) / (above(r, 'bpftrace') - above(r, 'floor'))));
  }
  result.perRound = perRound.map((r) => Object.fromEntries(Object.entries(r).map(([side, x]) => [side, x.usPerRequest])));
  return result;
}

/** Development parts: run only when named in --only. */
const DEV_PARTS = { ab: (app: App) => abCompare(app), breakdown: (app: App) => breakdown(app), scaleAb: () => scaleAbCompare() };

const PARTS = {
  inKernel: (app: App) => inKernelCost(app),
  // BPF run-time stats cost every program run two clock reads: off here, so
  // this measures what users run.
  appOverhead: (app: App) => stats.offDuring(() => appOverhead(app)),
  profile: (app: App) => stats.offDuring(() => profile(app)),
  render: () => seriesCost(),
  batchRead: () => batchRead(),
  scale: () => exporterAtScale(),
  // The same with V8's young generation capped (RSS: BENCHMARKS.md §3); the smoke run has no need of it.
  scaleSmallYoungGen: () => (SMOKE ? Promise.resolve(null) : exporterAtScale('--max-semi-space-size=1')),
  growth: (app: App) => growth(app),
  http: (app: App) => httpCost(app),
};
type Part = keyof typeof PARTS | keyof typeof DEV_PARTS;
const ALL_PARTS: Record<Part, (app: App) => Promise<unknown>> = { ...PARTS, ...DEV_PARTS };

async function main() {
  const only = (ARGS.only?.split(',') ?? Object.keys(PARTS)) as Part[];
  for (const part of only) if (!(part in ALL_PARTS)) throw new Error(`--only: unknown part ${JSON.stringify(part)} (parts: ${Object.keys(ALL_PARTS).join(', ')})`);
  if (ARGS.ab !== undefined && !only.includes('ab') && !only.includes('scaleAb') && !only.includes('profile')) throw new Error('--ab is for --only ab, scaleAb or profile');
  if (!existsSync('/sys/kernel/tracing/events')) spawnSync('mount', ['-t', 'tracefs', 'nodev', '/sys/kernel/tracing']);
  stats.on();
  const app = await App.start();
  try {
    const results: Record<string, unknown> = {
      mode: SMOKE ? 'smoke' : 'full',
      date: new Date().toISOString(),
      kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
      cpus: loadNative().numPossibleCpus(),
    };
    for (const part of only) results[part] = await ALL_PARTS[part](app);
    process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    // A partial run (--only) is for development: it does not replace the recorded results.
    if (!ARGS.only) {
      const file = path.join(ROOT, `bench/results/${results.mode}.json`);
      writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
      log(`wrote ${file}`);
    }
  } finally {
    await app.stop();
    stats.restore();
  }
}

main().catch((err) => {
  process.stderr.write(`bench: ${(err as Error).stack}\n`);
  process.exit(1);
});
