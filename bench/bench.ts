/**
 * kerntap benchmarks (run through bench/run.sh). Every figure that compares
 * is a ratio taken in this one run: kerntap vs bpftrace on the same hooks
 * and workload, and the application with kerntap attached vs detached in
 * interleaved rounds. Results go to bench/results/<mode>.json.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { loadNative } from '../src/bpf/native.js';
import { detectCgroup2Root } from '../src/cgroup/mount.js';
import { renderSnapshot } from '../src/exporters/prometheus.js';
import { defineMetric } from '../src/model/metric.js';
import type { Snapshot } from '../src/model/snapshot.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SMOKE = process.argv.includes('--smoke');
const P = SMOKE
  ? { workloadS: 2, rounds: 1, roundS: 1, conns: 200, cgroups: 20, scaleS: 6, series: [1000, 10000], mapEntries: 10000 }
  : { workloadS: 10, rounds: 5, roundS: 5, conns: 10000, cgroups: 1000, scaleS: 60, series: [1000, 10000, 100000], mapEntries: 100000 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
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

interface ProgStat { id: number; name: string; run_time_ns?: number; run_cnt?: number }
function progs(): ProgStat[] {
  return JSON.parse(spawnSync('bpftool', ['prog', 'show', '-j'], { encoding: 'utf8' }).stdout) as ProgStat[];
}

async function startNginx(): Promise<{ port: number; stop(): void }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'kt-bench-nginx-'));
  const port = await freePort();
  writeFileSync(path.join(dir, 'index.html'), 'x'.repeat(512));
  writeFileSync(path.join(dir, 'nginx.conf'), `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  server { listen 127.0.0.1:${port}; root ${dir}; keepalive_requests 1000000; } }`);
  const child = spawn('nginx', ['-c', path.join(dir, 'nginx.conf')], { stdio: 'ignore' });
  for (let i = 0; i < 50; i++) {
    if (await fetch(`http://127.0.0.1:${port}/`).then((r) => r.ok, () => false)) break;
    await sleep(100);
  }
  return { port, stop: () => child.kill('SIGQUIT') };
}

/** wrk for `seconds`; returns requests/s. close=true: a new connection per request. */
function wrk(port: number, seconds: number, close: boolean): number {
  const args = ['-t', '2', '-c', '32', '-d', `${seconds}s`, ...(close ? ['-H', 'Connection: close'] : []), `http://127.0.0.1:${port}/`];
  const out = spawnSync('wrk', args, { encoding: 'utf8' }).stdout;
  return Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0);
}

/** A scheduling load next to wrk: short-lived processes. */
function schedLoad(seconds: number): ChildProcess {
  return spawn('/bin/sh', ['-c', `end=$(($(date +%s)+${seconds})); while [ $(date +%s) -lt $end ]; do /bin/true; done`], { stdio: 'ignore' });
}

async function startKerntap(args: string[] = []): Promise<{ child: ChildProcess; url: string; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [path.join(ROOT, 'bin/kerntap.js'), '--web.listen-address', '127.0.0.1:0', '--log.level', 'info', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /"address":"([^"]+)".*kerntap listening/.exec(err);
      if (m) resolve(m[1]!);
    });
    child.on('exit', () => reject(new Error(`kerntap exited:\n${err}`)));
  });
  return {
    child, url,
    stop: () => new Promise<void>((r) => { child.on('exit', () => r()); child.kill('SIGTERM'); }),
  };
}

const HOOKS: Record<string, string> = {
  cgroup_cpu_switch: 'sched_switch', sched_switch: 'sched_switch',
  tcp_probe: 'tcp_probe',
  tcp_state: 'inet_sock_set_state', inet_sock_set_s: 'inet_sock_set_state',
  tcp_send_reset: 'tcp_send_reset', tcp_receive_reset: 'tcp_receive_reset', tcp_receive_res: 'tcp_receive_reset',
};

/** ns/event per hook for the programs that appear while `attach` runs the workload. */
async function costPerHook(nginxPort: number, attach: (before: Set<number>) => Promise<() => Promise<void>>): Promise<Record<string, { nsPerEvent: number; events: number }>> {
  const before = new Set(progs().map((p) => p.id));
  const detach = await attach(before);
  await sleep(1000);
  const ours = () => progs().filter((p) => !before.has(p.id) && HOOKS[p.name]);
  const start = new Map(ours().map((p) => [p.id, p]));
  const load = schedLoad(P.workloadS);
  wrk(nginxPort, P.workloadS, true);
  load.kill();
  const totals: Record<string, { ns: number; runs: number }> = {};
  for (const p of ours()) {
    const s = start.get(p.id);
    if (!s) continue; // appeared during the workload: someone else's
    const t = (totals[HOOKS[p.name]!] ??= { ns: 0, runs: 0 });
    t.runs += (p.run_cnt ?? 0) - (s.run_cnt ?? 0);
    t.ns += (p.run_time_ns ?? 0) - (s.run_time_ns ?? 0);
  }
  const out: Record<string, { nsPerEvent: number; events: number }> = {};
  for (const [hook, t] of Object.entries(totals)) out[hook] = { nsPerEvent: t.runs > 0 ? t.ns / t.runs : 0, events: t.runs };
  await detach();
  return out;
}

async function inKernelCost(nginxPort: number) {
  log('in-kernel cost: kerntap');
  const kerntap = await costPerHook(nginxPort, async () => {
    const k = await startKerntap();
    return () => k.stop();
  });
  log('in-kernel cost: bpftrace');
  const bpftrace = await costPerHook(nginxPort, async (before) => {
    const bt = spawn('bpftrace', [path.join(ROOT, 'bench/bpftrace/equivalent.bt')], { stdio: ['ignore', 'ignore', 'ignore'] });
    // bpftrace compiles its programs with LLVM first: allow a loaded machine a minute.
    for (let i = 0; !progs().some((p) => p.name === 'tcp_receive_res' && !before.has(p.id)); i++) {
      if (i > 600 || bt.exitCode !== null) throw new Error('bpftrace did not attach its programs');
      await sleep(100);
    }
    return async () => {
      bt.kill('SIGINT');
      await new Promise((r) => bt.on('exit', r));
    };
  });
  const rows = Object.keys(kerntap).sort().map((hook) => ({
    hook,
    kerntapNs: kerntap[hook]!.nsPerEvent,
    bpftraceNs: bpftrace[hook]?.nsPerEvent ?? 0,
    events: kerntap[hook]!.events,
    ratio: bpftrace[hook]?.nsPerEvent ? kerntap[hook]!.nsPerEvent / bpftrace[hook]!.nsPerEvent : NaN,
  }));
  return rows;
}

async function appOverhead(nginxPort: number) {
  // BPF run-time stats cost every program run a clock read or two: off here,
  // so this measures what users run.
  writeFileSync('/proc/sys/kernel/bpf_stats_enabled', '0');
  const result: Record<string, { ratios: number[]; median: number; min: number; max: number; rpsOff: number; rpsOn: number }> = {};
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
          const k = await startKerntap();
          got.on = wrk(nginxPort, P.roundS, close);
          await k.stop();
        } else {
          got.off = wrk(nginxPort, P.roundS, close);
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
  return result;
}

function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]);
}
function rssBytes(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
}

async function exporterAtScale() {
  log(`exporter at scale: ${P.conns} connections, ${P.cgroups} cgroups, ${P.scaleS}s, scrape every 15s`);
  const root = path.join(detectCgroup2Root(), `kt-bench-${process.pid}`);
  mkdirSync(root);
  for (let i = 0; i < P.cgroups; i++) {
    const dir = path.join(root, `c${i}`);
    mkdirSync(dir);
    spawnSync('/bin/sh', ['-c', `echo $$ > ${dir}/cgroup.procs; /bin/true`]);
  }
  const server = net.createServer((s) => s.on('error', () => undefined)).listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const port = (server.address() as net.AddressInfo).port;
  const sockets: net.Socket[] = [];
  for (let i = 0; i < P.conns; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    sockets.push(s);
    if (i % 500 === 499) await sleep(50);
  }
  const k = await startKerntap(['--poll.interval', '5s']);
  await sleep(5000);
  const pid = k.child.pid!;
  const t0 = cpuTicks(pid);
  let maxRss = 0;
  let scrapeMs = 0;
  let seriesLines = 0;
  const start = Date.now();
  while (Date.now() - start < P.scaleS * 1000) {
    const s0 = performance.now();
    const body = await (await fetch(`${k.url}/metrics`)).text();
    scrapeMs = Math.max(scrapeMs, performance.now() - s0);
    seriesLines = body.split('\n').filter((l) => l && !l.startsWith('#')).length;
    maxRss = Math.max(maxRss, rssBytes(pid));
    await sleep(Math.min(15_000, P.scaleS * 1000 - (Date.now() - start)));
  }
  const cpuPct = ((cpuTicks(pid) - t0) / 100 / ((Date.now() - start) / 1000)) * 100;
  maxRss = Math.max(maxRss, rssBytes(pid));
  await k.stop();
  for (const s of sockets) s.destroy();
  server.close();
  for (let i = 0; i < P.cgroups; i++) rmdirSync(path.join(root, `c${i}`));
  rmdirSync(root);
  return { connections: P.conns, cgroups: P.cgroups, seconds: P.scaleS, cpuPercentOfCore: cpuPct, maxRssMB: maxRss / 1e6, series: seriesLines, slowestScrapeMs: scrapeMs };
}

async function renderCost() {
  const out = [];
  const def = defineMetric({ name: 'kerntap.bench.total', kind: 'counter', unit: 'By', help: 'bench', labels: ['cgroup', 'role', 'peer', 'peer_port'] });
  for (const n of P.series) {
    const snapshot: Snapshot = {
      seq: 1, timeMs: Date.now(),
      families: [{ def, kind: 'counter', points: Array.from({ length: n }, (_, i) => ({ labels: [`/kubepods.slice/pod${i % 997}/c${i}`, 'client', `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, '443'], value: i * 1.5, startMs: 0 })) }],
    };
    const h = monitorEventLoopDelay({ resolution: 1 });
    h.enable();
    const t0 = performance.now();
    const text = await renderSnapshot(snapshot, 'text');
    const ms = performance.now() - t0;
    await sleep(5);
    h.disable();
    out.push({ series: n, renderMs: ms, bytes: text.length, maxEventLoopBlockMs: h.max / 1e6 });
  }
  return out;
}

async function batchRead() {
  const native = loadNative();
  const obj = new native.BpfObject(path.join(ROOT, 'bpf/out/test/bench_map.bpf.o'));
  try {
    const key = Buffer.alloc(8);
    const val = Buffer.alloc(8);
    for (let i = 0; i < P.mapEntries; i++) {
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
    return { entries: count, cpus: native.numPossibleCpus(), medianMs: median(times) };
  } finally {
    obj.close();
  }
}

async function main() {
  if (!existsSync('/sys/kernel/tracing/events')) spawnSync('mount', ['-t', 'tracefs', 'nodev', '/sys/kernel/tracing']);
  const statsBefore = readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim();
  writeFileSync('/proc/sys/kernel/bpf_stats_enabled', '1');
  const nginx = await startNginx();
  try {
    const results = {
      mode: SMOKE ? 'smoke' : 'full',
      date: new Date().toISOString(),
      kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
      cpus: loadNative().numPossibleCpus(),
      inKernel: await inKernelCost(nginx.port),
      appOverhead: await appOverhead(nginx.port),
      render: await renderCost(),
      batchRead: await batchRead(),
      scale: await exporterAtScale(),
    };
    const file = path.join(ROOT, `bench/results/${results.mode}.json`);
    writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
    process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    log(`wrote ${file}`);
  } finally {
    nginx.stop();
    writeFileSync('/proc/sys/kernel/bpf_stats_enabled', statsBefore);
  }
}

main().catch((err) => {
  process.stderr.write(`bench: ${(err as Error).stack}\n`);
  process.exit(1);
});
