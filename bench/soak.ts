/**
 * Soak: `bash bench/soak.sh [--minutes 30] [--sample 10]`. Runs one kerntap
 * (as shipped: default config but for short TTLs, so ageing happens inside
 * the window) under steady churn, and records its RSS, CPU, open fds, BPF
 * map fill and series count over time into bench/results/soak.json
 * (bench/plot.py draws bench/results/soak.png from it).
 *
 * Churn: HTTP requests to nginx on loopback, each on a new TCP connection
 * (1 000 a second: 1.8 million in 30 minutes), connects to a closed port (failed connects,
 * resets), and a new cgroup every few seconds that runs a process, makes
 * connections to a port of its own (a new flow) and is deleted. A scrape
 * every 15 s, as Prometheus would. OTLP push is on, every 5 s, to an
 * endpoint that is down for the whole run: what it holds must stay bounded.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { TestCgroup } from '../test/helpers/cgroup.js';
import { sleep, startExporter, writeConfig } from '../test/helpers/exporter.js';
import { find, parseExposition, value } from '../test/helpers/exposition.js';
import { tcpMib } from '../test/helpers/net.js';
import { freePort } from '../test/helpers/prometheus.js';
import { cpuTicks, rssBytes, writeNginxSite } from './common.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { values: ARGS } = parseArgs({ options: { minutes: { type: 'string', default: '30' }, sample: { type: 'string', default: '10' } } });
const MINUTES = Number(ARGS.minutes);
const SAMPLE_S = Number(ARGS.sample);
if (!(MINUTES > 0) || !(SAMPLE_S >= 1)) throw new Error('--minutes must be > 0 and --sample >= 1 (seconds)');
const log = (msg: string) => process.stderr.write(`soak: ${msg}\n`);
/** New connections per second from the churn loop. */
const RATE = 1000;

/** Short TTLs: deleted cgroups and idle flows age out within the soak window. */
const CONFIG = writeConfig(`cgroup:
  ttl: 1m
collectors:
  tcp:
    flow_ttl: 1m
`);

function startNginx(port: number): ChildProcess {
  return spawn('nginx', ['-c', writeNginxSite(port, { workers: 1 })], { stdio: 'ignore' });
}

interface Sample {
  t: number;
  rssMB: number;
  cpuPercentOfCore: number;
  fds: number;
  series: number;
  mapEntries: Record<string, number>;
  mapCapacity: Record<string, number>;
  mapOverflow: number;
  connectionsOpened: number;
  pollMs: number;
  otlpFailures: number;
}

const activeOpens = () => tcpMib().ActiveOpens!;

async function main() {
  const nginxPort = await freePort();
  const closedPort = await freePort();
  const nginx = startNginx(nginxPort);
  const churners: ChildProcess[] = [];
  const cgroups: TestCgroup[] = [];
  // Nothing listens on this port: every OTLP export fails, for the whole run.
  const deadOtlpPort = await freePort();
  // Ctrl-C (or a timeout's SIGTERM) still stops the churn and removes the cgroups.
  const interrupted = new Promise<void>((resolve) => {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => resolve());
  });
  const k = await startExporter(['--config.file', CONFIG, '--poll.interval', '5s'], {
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${deadOtlpPort}`, OTEL_METRIC_EXPORT_INTERVAL: '5000', OTEL_EXPORTER_OTLP_TIMEOUT: '2000' },
  });
  let stopping = false;
  try {
    await sleep(1000);
    // Steady connection churn at a fixed rate (not all of the machine):
    // RATE HTTP requests a second, each on a new connection.
    churners.push(spawn(process.execPath, ['-e', `const net = require('net');
      setInterval(() => { for (let i = 0; i < ${RATE / 100}; i++) {
        const c = net.connect(${nginxPort}, '127.0.0.1', () => c.end('GET / HTTP/1.0\\r\\n\\r\\n'));
        c.on('data', () => {}); c.on('error', () => {}); } }, 10);`], { stdio: 'ignore' }));
    churners.push(spawn('/bin/bash', ['-c', `while :; do (echo > /dev/tcp/127.0.0.1/${closedPort}) 2>/dev/null; sleep 0.05; done`], { stdio: 'ignore' }));
    // Cgroup churn: one lives ~10 s, a new one every 3 s.
    const cgroupLoop = (async () => {
      let n = 0;
      while (!stopping) {
        const cg = TestCgroup.unique(`kt-soak-${n++}`);
        cgroups.push(cg);
        cg.run(`for i in 1 2 3 4 5; do curl -s -o /dev/null http://127.0.0.1:${nginxPort}/; done; sleep 8`);
        while (cgroups.length > 4) await cgroups.shift()!.destroy();
        await sleep(3000);
      }
    })();
    const scrapeLoop = (async () => {
      while (!stopping) {
        await k.scrape().catch(() => undefined);
        await sleep(15_000);
      }
    })();

    const samples: Sample[] = [];
    const t0 = Date.now();
    const opens0 = activeOpens();
    let lastTicks = cpuTicks(k.pid);
    let lastT = t0;
    let stop = false;
    void interrupted.then(() => {
      stop = true;
      log('interrupted: cleaning up');
    });
    while (Date.now() - t0 < MINUTES * 60_000 && !stop) {
      await Promise.race([sleep(SAMPLE_S * 1000), interrupted]);
      if (stop) break;
      const s = parseExposition(await k.scrape());
      const now = Date.now();
      const tk = cpuTicks(k.pid);
      const entries: Record<string, number> = {};
      const capacity: Record<string, number> = {};
      for (const x of find(s, 'kerntap_bpf_map_entries')) entries[x.labels.map!] = x.value;
      for (const x of find(s, 'kerntap_bpf_map_capacity')) capacity[x.labels.map!] = x.value;
      const sample: Sample = {
        t: (now - t0) / 1000,
        rssMB: rssBytes(k.pid) / 1e6,
        cpuPercentOfCore: ((tk - lastTicks) / 100 / ((now - lastT) / 1000)) * 100,
        fds: readdirSync(`/proc/${k.pid}/fd`).length,
        series: find(s, 'kerntap_series').reduce((sum, x) => sum + x.value, 0),
        mapEntries: entries,
        mapCapacity: capacity,
        mapOverflow: find(s, 'kerntap_map_overflow_total').reduce((sum, x) => sum + x.value, 0),
        connectionsOpened: activeOpens() - opens0,
        pollMs: (value(s, 'kerntap_poll_duration_seconds') ?? 0) * 1000,
        otlpFailures: value(s, 'kerntap_otlp_exports_total', { result: 'failure' }) ?? 0,
      };
      samples.push(sample);
      lastTicks = tk;
      lastT = now;
      log(`${sample.t.toFixed(0)} s: RSS ${sample.rssMB.toFixed(1)} MB, CPU ${sample.cpuPercentOfCore.toFixed(2)}%, fds ${sample.fds}, series ${sample.series}, flows ${entries.flows ?? '?'}, ${sample.connectionsOpened} connections, ${sample.otlpFailures} failed OTLP exports so far`);
    }
    stopping = true;
    await Promise.all([cgroupLoop, scrapeLoop]);
    if (stop) throw new Error('interrupted: no results written');

    // Flat or not: the first and the last third of the run compared.
    const third = Math.max(1, Math.floor(samples.length / 3));
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const compare = (f: (s: Sample) => number) => ({
      firstThird: mean(samples.slice(third, 2 * third).map(f)),
      lastThird: mean(samples.slice(-third).map(f)),
      max: Math.max(...samples.map(f)),
    });
    const result = {
      date: new Date().toISOString(),
      kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
      minutes: MINUTES,
      sampleSeconds: SAMPLE_S,
      connectionsOpened: samples.at(-1)!.connectionsOpened,
      summary: {
        rssMB: compare((s) => s.rssMB),
        cpuPercentOfCore: compare((s) => s.cpuPercentOfCore),
        fds: compare((s) => s.fds),
        series: compare((s) => s.series),
        flows: compare((s) => s.mapEntries.flows ?? 0),
        cpuMapEntries: compare((s) => s.mapEntries.cpu_ns ?? 0),
        mapOverflow: samples.at(-1)!.mapOverflow,
        otlpFailures: samples.at(-1)!.otlpFailures,
      },
      samples,
    };
    const file = path.join(ROOT, 'bench/results/soak.json');
    writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
    log(`wrote ${file}`);
  } finally {
    stopping = true;
    for (const c of churners) c.kill('SIGKILL');
    await k.stop();
    nginx.kill('SIGQUIT');
    for (const cg of cgroups) await cg.destroy();
  }
}

main().catch((err) => {
  process.stderr.write(`soak: ${(err as Error).stack}\n`);
  process.exit(1);
});
