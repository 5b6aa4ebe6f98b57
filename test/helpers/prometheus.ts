/**
 * Real Prometheus servers and promtool, for tests: Debian's 2.42
 * (/usr/bin/prometheus), and a Prometheus 3 built from source by
 * scripts/test-deps.sh for its OTLP receiver.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT } from './env.js';
import { waitFor } from './wait.js';

export const PROMETHEUS = '/usr/bin/prometheus';
export const PROMTOOL = '/usr/bin/promtool';
export const havePrometheus = () => existsSync(PROMETHEUS) && existsSync(PROMTOOL);
export const PROMETHEUS3 = path.join(ROOT, '.tools/bin/prometheus3');
export const havePrometheus3 = () => existsSync(PROMETHEUS3);

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Runs `promtool check metrics` on exposition text; returns its exit code and output. */
export function promtoolCheckMetrics(text: string): { status: number | null; output: string } {
  const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

export interface PrometheusServer {
  url: string;
  query(expr: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
  waitFor(expr: string, ok: (r: { metric: Record<string, string>; value: [number, string] }[]) => boolean, timeoutMs?: number): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
  stop(): Promise<void>;
}

export interface ScrapeTarget {
  /** host:port */
  target: string;
  scheme?: 'http' | 'https';
  metricsPath?: string;
  /** Extra YAML lines for the scrape job (e.g. tls_config, basic_auth), indented by 4 spaces. */
  extra?: string;
}

export interface PrometheusOptions {
  /** The server binary (default Debian's 2.42). */
  binary?: string;
  /** Extra command-line flags, e.g. --web.enable-otlp-receiver. */
  args?: string[];
  /** Extra top-level YAML for prometheus.yml (e.g. an otlp: section). */
  config?: string;
  /** Port to listen on (127.0.0.1), when the caller must know it first. */
  port?: number;
}

export async function startPrometheus(targets: ScrapeTarget[], scrapeInterval = '1s', opts: PrometheusOptions = {}): Promise<PrometheusServer> {
  const dir = mkdtempSync(path.join(tmpdir(), 'kerntap-prom-'));
  const jobs = targets
    .map((t, i) => [
      `  - job_name: kerntap${i}`,
      `    scrape_interval: ${scrapeInterval}`,
      `    scheme: ${t.scheme ?? 'http'}`,
      `    metrics_path: ${t.metricsPath ?? '/metrics'}`,
      ...(t.extra ? [t.extra] : []),
      `    static_configs:`,
      `      - targets: ['${t.target}']`,
    ].join('\n'))
    .join('\n');
  writeFileSync(path.join(dir, 'prometheus.yml'), `global:\n  scrape_interval: ${scrapeInterval}\n${opts.config ?? ''}\nscrape_configs:\n${jobs}\n`);
  const port = opts.port ?? (await freePort());
  const child: ChildProcess = spawn(opts.binary ?? PROMETHEUS, [
    `--config.file=${path.join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${path.join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
    ...(opts.args ?? []),
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const url = `http://127.0.0.1:${port}`;
  await waitFor('prometheus to be ready', async () => {
    if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}:\n${log}`);
    return (await fetch(`${url}/-/ready`).catch(() => undefined))?.ok;
  }, 20_000, 200).catch((err: Error) => {
    throw new Error(`prometheus did not start: ${err.message}\n${log}`);
  });
  const query = async (expr: string) => {
    const r = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = (await r.json()) as { status: string; error?: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    if (body.status !== 'success') throw new Error(`query ${expr}: ${body.error}`);
    return body.data.result;
  };
  return {
    url,
    query,
    async waitFor(expr, ok, timeoutMs = 20_000) {
      let last: Awaited<ReturnType<typeof query>> = [];
      return waitFor(expr, async () => {
        last = await query(expr);
        return ok(last) && last;
      }, timeoutMs, 250).catch((err: Error) => {
        throw new Error(`${err.message}; last result ${JSON.stringify(last)}\nprometheus log:\n${log}`);
      });
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.on('exit', r));
      }
    },
  };
}
