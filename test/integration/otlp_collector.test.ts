/**
 * A real OpenTelemetry Collector (core OTLP receiver and OTLP/HTTP exporter,
 * built by scripts/test-deps.sh) takes kerntap's OTLP over gRPC and forwards
 * it over OTLP/HTTP to the test receiver (official OTLP protobufs): every
 * /metrics sample arrives with the same value and attributes.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT, requireBpf, requireTool } from '../helpers/env.js';
import { startExporter } from '../helpers/exporter.js';
import { waitFor, waitForPoll } from '../helpers/wait.js';
import { haveReceiver, matchingSnapshot, metricsOf, startReceiver } from '../helpers/otlp.js';
import { freePort } from '../helpers/prometheus.js';

const OTELCOL = path.join(ROOT, '.tools/bin/otelcol');
const running: { stop(): Promise<unknown> }[] = [];
after(async () => {
  for (const r of running.reverse()) await r.stop().catch(() => undefined);
});

async function startCollector(grpcPort: number, forwardTo: string): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'kerntap-otelcol-'));
  const config = path.join(dir, 'config.yaml');
  // No queue or batching: each kerntap export is forwarded as one request, so it can be
  // matched to one snapshot. The collector's own telemetry is off (no port 8888).
  writeFileSync(config, `receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${grpcPort}
exporters:
  otlphttp:
    endpoint: ${forwardTo}
    compression: none
    sending_queue:
      enabled: false
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [otlphttp]
`);
  const child = spawn(OTELCOL, [`--config=${config}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  running.push({
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await new Promise((r) => child.on('exit', r));
    },
  });
  await waitFor('the collector to start', () => {
    if (child.exitCode !== null) throw new Error(`the collector exited:\n${log}`);
    return log.includes('Everything is ready') || undefined;
  }, 30_000).catch((err: Error) => {
    throw new Error(`${err.message}\n${log}`);
  });
}

test('an OpenTelemetry Collector takes kerntap\'s OTLP/gRPC and forwards every sample', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'opentelemetry-proto venv', haveReceiver())
    || !requireTool(t, 'OpenTelemetry Collector (scripts/test-deps.sh)', existsSync(OTELCOL))) return;
  const receiver = await startReceiver();
  running.push(receiver);
  const grpcPort = await freePort();
  await startCollector(grpcPort, receiver.url);
  const exporter = await startExporter(['--poll.interval', '3s'], {
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${grpcPort}`, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_METRIC_EXPORT_INTERVAL: '500' },
  });
  running.push(exporter);
  // A snapshot past the first poll, then exports of it forwarded after the scrape.
  const prom = await waitForPoll(exporter);
  const seen = receiver.records.length;
  await receiver.waitFor((r) => r.length >= seen + 2);
  const { missing, record } = matchingSnapshot(receiver.records, prom);
  assert.deepEqual(missing.slice(0, 10), [], 'a forwarded export of the same snapshot matches /metrics sample for sample');
  t.diagnostic(`${prom.length} /metrics samples matched one forwarded export of ${metricsOf(record!).length} metrics`);
  assert.equal(record!.path, '/v1/metrics');
});
