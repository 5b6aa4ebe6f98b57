/** The OTLP test receiver (test/helpers/otlp_receiver.py, official protobuf bindings) and OTLP↔Prometheus comparison. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './env.js';
import { waitFor } from './wait.js';
import { prometheusLabel, prometheusName, type MetricKind } from '../../src/model/metric.js';
import type { Sample } from './exposition.js';

export const RECEIVER_PYTHON = path.join(ROOT, '.tools/venv/bin/python');
export const haveReceiver = () => existsSync(RECEIVER_PYTHON);

/** OTLP JSON (as google.protobuf.json_format.MessageToDict renders it). */
export interface OtlpRecord {
  path: string;
  format: 'protobuf' | 'json' | 'grpc';
  status: number;
  authorization: string | null;
  encoding: string | null;
  request: {
    resourceMetrics: {
      resource: { attributes: KeyValue[] };
      scopeMetrics: { scope: { name: string }; metrics: OtlpMetric[] }[];
    }[];
  };
}
export interface KeyValue { key: string; value: { stringValue?: string } }
export interface NumberDP { attributes?: KeyValue[]; asDouble?: number; startTimeUnixNano: string; timeUnixNano: string }
export interface HistDP { attributes?: KeyValue[]; count: string; sum: number; bucketCounts: string[]; explicitBounds: number[]; startTimeUnixNano: string; timeUnixNano: string }
export interface ExpDP { attributes?: KeyValue[]; count: string; sum: number; scale?: number; zeroCount?: string; positive?: { offset?: number; bucketCounts?: string[] }; timeUnixNano: string }
export interface OtlpMetric {
  name: string;
  unit?: string;
  sum?: { dataPoints?: NumberDP[]; aggregationTemporality: string; isMonotonic?: boolean };
  gauge?: { dataPoints?: NumberDP[] };
  histogram?: { dataPoints?: HistDP[]; aggregationTemporality: string };
  exponentialHistogram?: { dataPoints?: ExpDP[]; aggregationTemporality: string };
}

export interface Receiver {
  url: string;
  records: OtlpRecord[];
  waitFor(ok: (records: OtlpRecord[]) => boolean, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** grpc: serve OTLP/gRPC (the url is then scheme://host:port); 'identity-only' refuses compressed calls. */
export async function startReceiver(failFirstRequests = 0, tls?: { cert: string; key: string; clientCa?: string }, grpc: boolean | 'identity-only' = false): Promise<Receiver> {
  const args = [
    path.join(ROOT, 'test/helpers/otlp_receiver.py'),
    ...(grpc ? ['--grpc'] : []),
    ...(grpc === 'identity-only' ? ['--identity-only'] : []),
    ...(failFirstRequests ? ['--fail-first-requests', String(failFirstRequests)] : []),
    ...(tls ? ['--tls', tls.cert, tls.key, ...(tls.clientCa ? ['--client-ca', tls.clientCa] : [])] : []),
  ];
  const child: ChildProcess = spawn(RECEIVER_PYTHON, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const records: OtlpRecord[] = [];
  let buf = '';
  const port = await new Promise<number>((resolve, reject) => {
    child.on('exit', (code) => reject(new Error(`receiver exited ${code}`)));
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = /^listening (\d+)$/.exec(line);
        if (m) resolve(Number(m[1]));
        else if (line.startsWith('{')) records.push(JSON.parse(line) as OtlpRecord);
      }
    });
  });
  return {
    url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    records,
    async waitFor(ok, timeoutMs = 20_000) {
      await waitFor(`the OTLP receiver's condition (${records.length} requests so far)`, () => ok(records), timeoutMs, 100);
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.on('exit', r));
      }
    },
  };
}

/** OTLP attributes as they are (resource attributes). */
export function attributesOf(attrs: KeyValue[] | undefined): Record<string, string> {
  return Object.fromEntries((attrs ?? []).map((a) => [a.key, a.value.stringValue ?? '']));
}

/** Data point attributes as the Prometheus labels they translate to. */
export function labelsOf(attrs: KeyValue[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of attrs ?? []) out[prometheusLabel(a.key)] = a.value.stringValue ?? '';
  return out;
}

export function metricsOf(record: OtlpRecord): OtlpMetric[] {
  return record.request.resourceMetrics.flatMap((rm) => rm.scopeMetrics.flatMap((sm) => sm.metrics));
}

/** The Prometheus samples an OTLP request renders to (explicit histograms, cumulative). */
export function promSamplesOf(metrics: OtlpMetric[]): Sample[] {
  const out: Sample[] = [];
  for (const m of metrics) {
    const kind: MetricKind = m.sum ? 'counter' : m.gauge ? 'gauge' : 'histogram';
    const name = prometheusName({ name: m.name, unit: m.unit ?? '', kind });
    for (const dp of m.sum?.dataPoints ?? m.gauge?.dataPoints ?? []) out.push({ name, labels: labelsOf(dp.attributes), value: dp.asDouble ?? 0 });
    for (const dp of m.histogram?.dataPoints ?? []) {
      const labels = labelsOf(dp.attributes);
      let cum = 0;
      dp.bucketCounts.forEach((c, i) => {
        cum += Number(c);
        const le = i < dp.explicitBounds.length ? String(dp.explicitBounds[i]) : '+Inf';
        out.push({ name: `${name}_bucket`, labels: { ...labels, le }, value: cum });
      });
      out.push({ name: `${name}_sum`, labels, value: dp.sum ?? 0 });
      out.push({ name: `${name}_count`, labels, value: Number(dp.count) });
    }
  }
  return out;
}

export function sampleKey(s: Sample): string {
  return `${s.name}${JSON.stringify(Object.entries(s.labels).sort())}`;
}

/** Groups OTLP requests by snapshot time and finds the one that renders to exactly these samples. */
export function matchingSnapshot(records: OtlpRecord[], prom: Sample[]): { missing: string[]; record?: OtlpRecord } {
  const want = new Map(prom.map((s) => [sampleKey(s), s.value]));
  let best: string[] = [...want.keys()];
  for (const record of records) {
    const got = new Map(promSamplesOf(metricsOf(record)).map((s) => [sampleKey(s), s.value]));
    const missing = [...want].filter(([k, v]) => got.get(k) !== v).map(([k, v]) => `${k}=${v} (otlp ${got.get(k)})`);
    if (missing.length === 0) return { missing, record };
    if (missing.length < best.length) best = missing;
  }
  return { missing: best };
}
