/**
 * kerntap benchmarks: `bash bench/run.sh [--smoke] [--only part,...]`.
 * Every figure that compares is a ratio taken in this one run: kerntap vs
 * bpftrace on the same hooks and workload, and the application with kerntap
 * attached vs detached in interleaved rounds. Results go to
 * bench/results/<full|smoke>.json (bench/plot.py draws the growth figure).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadNative } from '../src/bpf/native.js';
import { renderExposition } from '../src/exporters/prometheus.js';
import { defineMetric } from '../src/model/metric.js';
import { numberFamily, type RawFamily, type Snapshot } from '../src/model/snapshot.js';
import { SeriesTracker } from '../src/series.js';
import { TestCgroup } from '../test/helpers/cgroup.js';
import { sleep, startExporter, type Exporter } from '../test/helpers/exporter.js';
import { find, parseExposition, value } from '../test/helpers/exposition.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { values: ARGS } = parseArgs({ options: { smoke: { type: 'boolean' }, only: { type: 'string' } } });
const SMOKE = ARGS.smoke === true;
const P = SMOKE
  ? {
    workloadS: 2, rounds: 1, roundS: 1, conns: 200, cgroups: 20, scaleS: 6, series: [1000, 10000], mapEntries: [1000, 10000],
    rateConnections: [1, 16], stepS: 1, connSteps: [0, 200], cgroupSteps: [0, 20],
  }
  : {
    workloadS: 10, rounds: 7, roundS: 5, conns: 10000, cgroups: 1000, scaleS: 60, series: [1000, 10000, 100000], mapEntries: [1000, 10000, 100000],
    rateConnections: [1, 4, 16, 64], stepS: 5, connSteps: [0, 2500, 5000, 10000], cgroupSteps: [0, 250, 500, 1000],
  };

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

interface Nginx { port: number; pin(cpus: string): void; stop(): void }

async function startNginx(): Promise<Nginx> {
  const dir = mkdtempSync(path.join(tmpdir(), 'kt-bench-nginx-'));
  const port = await freePort();
  writeFileSync(path.join(dir, 'index.html'), 'x'.repeat(512));
  writeFileSync(path.join(dir, 'nginx.conf'), `worker_processes auto; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  server { listen 127.0.0.1:${port}; root ${dir}; keepalive_requests 1000000; } }`);
  const child = spawn('nginx', ['-c', path.join(dir, 'nginx.conf')], { stdio: 'ignore' });
  for (let i = 0; i < 50; i++) {
    if (await fetch(`http://127.0.0.1:${port}/`).then((r) => r.ok, () => false)) break;
    await sleep(100);
  }
  return {
    port,
    pin(cpus) {
      const workers = spawnSync('pgrep', ['-P', String(child.pid)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
      for (const pid of [String(child.pid), ...workers]) spawnSync('taskset', ['-a', '-p', '-c', cpus, pid], { stdio: 'ignore' });
    },
    stop: () => child.kill('SIGQUIT'),
  };
}

interface WrkOptions { seconds: number; close: boolean; connections?: number; cpus?: string }

/** wrk against nginx; returns requests/s. close: a new TCP connection per request. */
function wrk(port: number, o: WrkOptions): number {
  const connections = o.connections ?? 32;
  const args = ['-t', String(Math.min(2, connections)), '-c', String(connections), '-d', `${o.seconds}s`,
    ...(o.close ? ['-H', 'Connection: close'] : []), `http://127.0.0.1:${port}/`];
  const out = o.cpus ? spawnSync('taskset', ['-c', o.cpus, 'wrk', ...args], { encoding: 'utf8' }).stdout : spawnSync('wrk', args, { encoding: 'utf8' }).stdout;
  return Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0);
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

interface BpftoolProg { id: number; name: string; run_time_ns?: number; run_cnt?: number }
function bpftoolProgs(): BpftoolProg[] {
  return JSON.parse(spawnSync('bpftool', ['prog', 'show', '-j'], { encoding: 'utf8' }).stdout) as BpftoolProg[];
}
function bpftoolCounters(ids: Set<number>): ProgCounters {
  return new Map(bpftoolProgs().filter((p) => ids.has(p.id)).map((p) => [p.name, { runTimeNs: p.run_time_ns ?? 0, runs: p.run_cnt ?? 0 }]));
}

async function inKernelCost(nginx: Nginx) {
  const closedPort = await freePort();
  const workload = () => {
    const load = schedAndResetLoad(P.workloadS, closedPort);
    wrk(nginx.port, { seconds: P.workloadS, close: true });
    load.kill();
  };
  log('in-kernel cost: kerntap');
  const k = await startExporter();
  const k0 = await kerntapCounters(k);
  const kt0 = performance.now();
  workload();
  const kerntapS = (performance.now() - kt0) / 1000;
  const kerntap = hookCosts(k0, await kerntapCounters(k), kerntapS);
  await k.stop();

  log('in-kernel cost: bpftrace');
  const existing = new Set(bpftoolProgs().map((p) => p.id));
  const bt = spawn('bpftrace', [path.join(ROOT, 'bench/bpftrace/equivalent.bt')], { stdio: 'ignore' });
  const btIds = () => new Set(bpftoolProgs().filter((p) => !existing.has(p.id) && HOOKS[p.name]).map((p) => p.id));
  for (let i = 0; i < 100 && btIds().size < 5; i++) await sleep(100);
  const ids = btIds();
  const b0 = bpftoolCounters(ids);
  const bt0 = performance.now();
  workload();
  const bpftraceS = (performance.now() - bt0) / 1000;
  const bpftrace = hookCosts(b0, bpftoolCounters(ids), bpftraceS);
  bt.kill('SIGINT');
  await new Promise((r) => bt.on('exit', r));

  return Object.keys(kerntap).sort().map((hook) => ({
    hook,
    kerntapNs: kerntap[hook]!.nsPerEvent,
    bpftraceNs: bpftrace[hook]?.nsPerEvent ?? 0,
    events: kerntap[hook]!.events,
    bpftraceEvents: bpftrace[hook]?.events ?? 0,
    ratio: bpftrace[hook]?.nsPerEvent ? kerntap[hook]!.nsPerEvent / bpftrace[hook]!.nsPerEvent : null,
  }));
}

async function appOverhead(nginx: Nginx) {
  // BPF run-time stats cost every program run two clock reads: off here, so
  // this measures what users run.
  writeFileSync('/proc/sys/kernel/bpf_stats_enabled', '0');
  const result: Record<string, { ratios: number[]; median: number; min: number; max: number; rpsOff: number; rpsOn: number }> = {};
  try {
    for (const close of [true, false]) {
      const ratios: number[] = [];
      const on: number[] = [];
      const off: number[] = [];
      for (let r = 0; r < P.rounds; r++) {
        // Alternate which side goes first, so drift does not favour one.
        const order = r % 2 === 0 ? ['off', 'on'] : ['on', 'off'];
        const got: Record<string, number> = {};
        for (const side of order) {
          if (side === 'on') {
            const k = await startExporter(['--poll.interval', '5s']);
            await sleep(2000); // past start-up work (first poll, cgroup walk)
            got.on = wrk(nginx.port, { seconds: P.roundS, close });
            await k.stop();
          } else {
            got.off = wrk(nginx.port, { seconds: P.roundS, close });
          }
        }
        ratios.push(got.on! / got.off!);
        on.push(got.on!);
        off.push(got.off!);
        log(`app overhead (${close ? 'new connection per request' : 'keep-alive'}) round ${r + 1}: ${(got.on! / got.off!).toFixed(3)}`);
      }
      result[close ? 'connection_per_request' : 'keep_alive'] = {
        ratios, median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios), rpsOff: median(off), rpsOn: median(on),
      };
    }
  } finally {
    writeFileSync('/proc/sys/kernel/bpf_stats_enabled', '1');
  }
  return result;
}

function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]);
}
function rssBytes(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
}

/** Live loopback TCP connections held by this process (both ends); grow() adds more. */
class ConnectionPool {
  private sockets: net.Socket[] = [];
  private server: net.Server | undefined;

  get size(): number {
    return this.sockets.length;
  }

  async grow(to: number): Promise<void> {
    if (!this.server) {
      this.server = net.createServer((s) => s.on('error', () => undefined)).listen(0, '127.0.0.1');
      await new Promise((r) => this.server!.once('listening', r));
    }
    const port = (this.server.address() as net.AddressInfo).port;
    while (this.sockets.length < to) {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      this.sockets.push(s);
      if (this.sockets.length % 500 === 0) await sleep(50);
    }
  }

  close(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets = [];
    this.server?.close();
    this.server = undefined;
  }
}

/** Cgroups under the detected cgroup2 root, each with a process run in it so it has CPU entries. */
class CgroupPool {
  private readonly parent = TestCgroup.unique('kt-bench');
  private readonly children: TestCgroup[] = [];

  get size(): number {
    return this.children.length;
  }

  async grow(to: number): Promise<void> {
    while (this.children.length < to) {
      const batch = [];
      for (let i = 0; i < 50 && this.children.length < to; i++) {
        const cg = new TestCgroup(`c${this.children.length}`, this.parent);
        this.children.push(cg);
        batch.push(cg.runToEnd('true'));
      }
      await Promise.all(batch);
    }
  }

  async destroy(): Promise<void> {
    for (const cg of this.children) await cg.destroy();
    await this.parent.destroy();
  }
}

/** 10k connections, 1k cgroups, the default 5 s poll and a scrape every 15 s: CPU and RSS from /proc. */
async function exporterAtScale(nodeOptions?: string) {
  log(`exporter at scale: ${P.conns} connections, ${P.cgroups} cgroups, ${P.scaleS}s, scrape every 15s${nodeOptions ? `, NODE_OPTIONS=${nodeOptions}` : ''}`);
  const cgroups = new CgroupPool();
  const conns = new ConnectionPool();
  try {
    await cgroups.grow(P.cgroups);
    await conns.grow(P.conns);
    const k = await startExporter(['--poll.interval', '5s'], nodeOptions ? { env: { NODE_OPTIONS: nodeOptions } } : {});
    await sleep(5000);
    const t0 = cpuTicks(k.pid);
    let maxRss = 0;
    let scrapeMs = 0;
    let series = 0;
    const start = Date.now();
    while (Date.now() - start < P.scaleS * 1000) {
      const s0 = performance.now();
      const body = await k.scrape();
      scrapeMs = Math.max(scrapeMs, performance.now() - s0);
      series = parseExposition(body).length;
      maxRss = Math.max(maxRss, rssBytes(k.pid));
      await sleep(Math.min(15_000, P.scaleS * 1000 - (Date.now() - start)));
    }
    const cpuPct = ((cpuTicks(k.pid) - t0) / 100 / ((Date.now() - start) / 1000)) * 100;
    maxRss = Math.max(maxRss, rssBytes(k.pid));
    await k.stop();
    return { nodeOptions: nodeOptions ?? '', connections: P.conns, cgroups: P.cgroups, seconds: P.scaleS, cpuPercentOfCore: cpuPct, maxRssMB: maxRss / 1e6, series, slowestScrapeMs: scrapeMs };
  } finally {
    conns.close();
    await cgroups.destroy();
  }
}

/** Longest gap between 1 ms timer ticks while `work` runs: the longest event-loop block. */
async function longestBlock<T>(work: () => Promise<T>): Promise<{ result: T; ms: number; maxBlockMs: number }> {
  let last = performance.now();
  let maxBlockMs = 0;
  const tick = setInterval(() => {
    const now = performance.now();
    maxBlockMs = Math.max(maxBlockMs, now - last);
    last = now;
  }, 1);
  const t0 = performance.now();
  const result = await work();
  const ms = performance.now() - t0;
  await sleep(3); // let the timer record a block that ended with the work
  clearInterval(tick);
  return { result, ms, maxBlockMs };
}

/**
 * Poll bookkeeping (SeriesTracker) and /metrics rendering for n series, as the
 * poller does it: counter families of up to 10k series (the default
 * limits.max_series_per_metric) with 4 labels, flow-like values. Measured on
 * the second poll (steady state: every series already tracked).
 */
async function seriesCost() {
  const out = [];
  const perFamily = 10_000;
  for (const n of P.series) {
    const defs = Array.from({ length: Math.ceil(n / perFamily) }, (_, f) =>
      defineMetric({ name: `kerntap.bench.f${f}`, kind: 'counter', unit: 'By', help: 'bench', labels: ['cgroup', 'role', 'peer', 'peer_port'] }));
    const poll = (round: number): RawFamily[] => defs.map((def, f) => numberFamily(def, Array.from({ length: Math.min(perFamily, n - f * perFamily) }, (_, j) => {
      const i = f * perFamily + j;
      return { labels: [`/kubepods.slice/pod${i % 997}/c${i}`, 'client', `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, '443'], value: i * 1.5 + round };
    })));
    const tracker = new SeriesTracker({ maxSeriesPerMetric: perFamily, maxLabelLength: 512, startMs: 0 });
    tracker.track(poll(0), 1);
    const raw = poll(1);
    const t0 = performance.now();
    const families = tracker.track(raw, 2);
    const trackMs = performance.now() - t0;
    const snapshot: Snapshot = { seq: 2, timeMs: 2, families };
    const render = await longestBlock(() => renderExposition(snapshot, 'text'));
    const lines = parseExposition(render.result.toString('utf8')).length;
    out.push({ series: n, trackMs, renderMs: render.ms, maxEventLoopBlockMs: render.maxBlockMs, bytes: render.result.length, lines });
    log(`series ${n}: bookkeeping ${trackMs.toFixed(0)} ms, render ${render.ms.toFixed(0)} ms, longest block ${render.maxBlockMs.toFixed(0)} ms`);
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
async function growth(nginx: Nginx) {
  const k = await startExporter();
  const eventRate = [];
  const cpus = [];
  const exporter: { growing: string; connections: number; cgroups: number; cpuMsPerPoll: number; pollMs: number; rssMB: number }[] = [];
  const conns = new ConnectionPool();
  const cgroups = new CgroupPool();
  try {
    for (const connections of P.rateConnections) {
      const c0 = await kerntapCounters(k);
      const t0 = performance.now();
      const rps = wrk(nginx.port, { seconds: P.stepS, close: true, connections });
      const seconds = (performance.now() - t0) / 1000;
      const hooks = hookCosts(c0, await kerntapCounters(k), seconds);
      eventRate.push({ wrkConnections: connections, requestsPerS: rps, hooks });
      log(`growth: event rate at ${connections} wrk connections: ${rps.toFixed(0)} req/s`);
    }
    for (const set of ['0', '0-1']) {
      nginx.pin(set);
      const c0 = await kerntapCounters(k);
      const t0 = performance.now();
      const rps = wrk(nginx.port, { seconds: P.stepS, close: true, cpus: set });
      const seconds = (performance.now() - t0) / 1000;
      const hooks = hookCosts(c0, await kerntapCounters(k), seconds);
      cpus.push({ cpus: set.includes('-') ? 2 : 1, requestsPerS: rps, hooks });
      log(`growth: workload on CPUs ${set}: ${rps.toFixed(0)} req/s`);
    }
    nginx.pin(`0-${loadNative().numPossibleCpus() - 1}`);
    await k.stop();

    // Exporter cost: its own self-metrics, over a window of 1 s polls.
    const e = await startExporter(['--poll.interval', '1s']);
    const measure = async (growing: string) => {
      await sleep(2000);
      const first = parseExposition(await e.scrape());
      const polls: number[] = [];
      for (let i = 0; i < P.stepS; i++) {
        await sleep(1000);
        polls.push(value(parseExposition(await e.scrape()), 'kerntap_poll_duration_seconds')! * 1000);
      }
      const last = parseExposition(await e.scrape());
      const cpu = (s: typeof first) => value(s, 'kerntap_process_cpu_time_seconds_total')!;
      exporter.push({
        growing, connections: conns.size, cgroups: cgroups.size,
        cpuMsPerPoll: ((cpu(last) - cpu(first)) * 1000) / (P.stepS + 1),
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

const PARTS = {
  inKernel: (nginx: Nginx) => inKernelCost(nginx),
  appOverhead: (nginx: Nginx) => appOverhead(nginx),
  render: () => seriesCost(),
  batchRead: () => batchRead(),
  scale: () => exporterAtScale(),
  // The same with V8's young generation capped (RSS: BENCHMARKS.md §3).
  scaleSmallYoungGen: () => exporterAtScale('--max-semi-space-size=1'),
  growth: (nginx: Nginx) => growth(nginx),
};
type Part = keyof typeof PARTS;

async function main() {
  const only = (ARGS.only?.split(',') ?? Object.keys(PARTS)) as Part[];
  for (const part of only) if (!(part in PARTS)) throw new Error(`--only: unknown part ${JSON.stringify(part)} (parts: ${Object.keys(PARTS).join(', ')})`);
  if (!existsSync('/sys/kernel/tracing/events')) spawnSync('mount', ['-t', 'tracefs', 'nodev', '/sys/kernel/tracing']);
  const statsBefore = readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim();
  writeFileSync('/proc/sys/kernel/bpf_stats_enabled', '1');
  const nginx = await startNginx();
  try {
    const results: Record<string, unknown> = {
      mode: SMOKE ? 'smoke' : 'full',
      date: new Date().toISOString(),
      kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
      cpus: loadNative().numPossibleCpus(),
    };
    for (const part of only) results[part] = await PARTS[part](nginx);
    process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    // A partial run (--only) is for development: it does not replace the recorded results.
    if (!ARGS.only) {
      const file = path.join(ROOT, `bench/results/${results.mode}.json`);
      writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
      log(`wrote ${file}`);
    }
  } finally {
    nginx.stop();
    writeFileSync('/proc/sys/kernel/bpf_stats_enabled', statsBefore);
  }
}

main().catch((err) => {
  process.stderr.write(`bench: ${(err as Error).stack}\n`);
  process.exit(1);
});
