import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseHeaders, resolveOtlpSettings } from '../../src/exporters/otlp-settings.js';
import { SnapshotProducer } from '../../src/exporters/otlp.js';
import { defineMetric } from '../../src/model/metric.js';
import type { Snapshot } from '../../src/model/snapshot.js';
import type { SumMetricData } from '@opentelemetry/sdk-metrics';

test('settings: file first, then OTEL_* variables, then defaults', () => {
  assert.equal(resolveOtlpSettings({}, {}), undefined, 'off without an endpoint');
  const s = resolveOtlpSettings({}, {
    OTEL_EXPORTER_OTLP_ENDPOINT: 'https://collector:4318/',
    OTEL_EXPORTER_OTLP_HEADERS: 'a=1,Authorization=Api-Token%20x',
    OTEL_EXPORTER_OTLP_METRICS_HEADERS: 'a=2',
    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'LowMemory',
    OTEL_METRIC_EXPORT_INTERVAL: '15000',
  })!;
  assert.equal(s.url, 'https://collector:4318/v1/metrics', '/v1/metrics appended to the base endpoint');
  assert.deepEqual(s.headers, { a: '2', Authorization: 'Api-Token x' }, 'metrics headers override, values percent-decoded');
  assert.equal(s.temporality, 'delta', 'lowmemory is delta for counters and histograms');
  assert.equal(s.intervalMs, 15000);
  assert.equal(s.protocol, 'http/protobuf');
  const f = resolveOtlpSettings({ endpoint: 'http://x:1/custom', temporality: 'cumulative', histogram: 'exponential' }, {
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://ignored/', OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'delta',
  })!;
  assert.equal(f.url, 'http://x:1/custom', 'a metrics endpoint is used as given');
  assert.equal(f.temporality, 'cumulative');
  assert.equal(f.histogram, 'exponential');
});

test('settings errors name the variable, never the value', () => {
  assert.throws(() => parseHeaders('Authorization', 'OTEL_EXPORTER_OTLP_HEADERS'), /OTEL_EXPORTER_OTLP_HEADERS: malformed header #1/);
  assert.throws(() => parseHeaders('k=%zz-secret', 'X'), (e: Error) => !e.message.includes('secret') && /malformed percent-encoding/.test(e.message));
  assert.throws(() => resolveOtlpSettings({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'ftp://x' }), /URL scheme must be http or https/);
  assert.throws(() => resolveOtlpSettings({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x', OTEL_EXPORTER_OTLP_TIMEOUT: '-1' }), /OTEL_EXPORTER_OTLP_TIMEOUT: expected a positive number/);
  assert.throws(() => resolveOtlpSettings({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x', OTEL_EXPORTER_OTLP_CERTIFICATE: '/nonexistent.pem' }), /OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read \/nonexistent\.pem \(ENOENT\)/);
});

const counter = defineMetric({ name: 'kerntap.test.total', kind: 'counter', unit: 's', help: 'h', labels: ['cgroup'] });

function snap(seq: number, timeMs: number, value: number, startMs: number): Snapshot {
  return { seq, timeMs, families: [{ def: counter, kind: 'counter', points: [{ labels: ['/a'], value, startMs }] }] };
}

test('delta: baselines advance only on success; resets and new series send the whole value', async () => {
  let current = snap(1, 2000, 10, 1000);
  const producer = new SnapshotProducer(() => current, 'delta', 'explicit', '0.0.0');
  const points = async (commit: boolean) => {
    const r = await producer.collect();
    if (commit) producer.commit(r.resourceMetrics);
    const dps = (r.resourceMetrics.scopeMetrics[0]!.metrics[0] as SumMetricData).dataPoints;
    return dps.map((d) => ({ value: d.value, start: d.startTime[0] * 1000 + d.startTime[1] / 1e6 }));
  };
  assert.deepEqual(await points(true), [{ value: 10, start: 1000 }], 'first export: everything since the series start');
  assert.deepEqual(await points(true), [], 'same snapshot again: no new interval');
  current = snap(2, 3000, 15, 1000);
  assert.deepEqual(await points(false), [{ value: 5, start: 2000 }], 'export that will fail');
  current = snap(3, 4000, 18, 1000);
  assert.deepEqual(await points(true), [{ value: 8, start: 2000 }], 'the failed interval is sent with the next');
  current = snap(4, 5000, 2, 4500);
  assert.deepEqual(await points(true), [{ value: 2, start: 4500 }], 'a reset (new start) sends the new value from its start');
});
