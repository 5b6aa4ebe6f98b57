import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseKeyValues, resolveOtlpSettings } from '../../src/exporters/otlp-settings.js';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { SnapshotProducer, startOtlp } from '../../src/exporters/otlp.js';
import { defineMetric } from '../../src/model/metric.js';
import { emptyHistogram, SLOT0_EXP, type HistogramValue } from '../../src/model/histogram.js';
import type { Snapshot } from '../../src/model/snapshot.js';
import type { ExponentialHistogramMetricData, HistogramMetricData, SumMetricData } from '@opentelemetry/sdk-metrics';
// The SDK's own scale-0 mapping: an oracle independent of src/model/histogram.ts.
import { getMapping } from '@opentelemetry/sdk-metrics/build/src/aggregator/exponential-histogram/mapping/getMapping.js';

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

test('gRPC settings: the base endpoint as it is, headers checked as metadata', () => {
  const g = resolveOtlpSettings({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'https://collector:4317', OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_HEADERS: 'Authorization=Api-Token%20x' })!;
  assert.equal(g.protocol, 'grpc');
  assert.equal(g.url, 'https://collector:4317', 'no /v1/metrics: gRPC names the service, not a path');
  assert.deepEqual(g.headers, { Authorization: 'Api-Token x' });
  assert.equal(resolveOtlpSettings({ endpoint: 'http://c:4317/', protocol: 'grpc' }, {})!.url, 'http://c:4317/');
  assert.throws(() => resolveOtlpSettings({ endpoint: 'http://c:4317/v1/metrics', protocol: 'grpc' }, {}), /^ConfigError: config key otlp.endpoint: a gRPC endpoint is scheme:\/\/host:port, without a path \(got \/v1\/metrics\)$/);
  assert.throws(() => resolveOtlpSettings({ endpoint: 'http://c:4317', protocol: 'grpc', headers: { 'x-id-bin': 'a' } }, {}), /OTLP header "x-id-bin": not a gRPC metadata key/);
  assert.throws(() => resolveOtlpSettings({ endpoint: 'http://c:4317', protocol: 'grpc', headers: { 'x-id': 'caf\u00e9-secret' } }, {}), (e: Error) => !e.message.includes('secret') && /printable ASCII/.test(e.message));
  assert.equal(resolveOtlpSettings({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' })!.protocol, 'http/protobuf', 'the default stays http/protobuf');
});

test('resource attributes: OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME, then the file', () => {
  const env = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x', OTEL_RESOURCE_ATTRIBUTES: 'service.name=a,deployment.environment=prod%20eu,team=x', OTEL_SERVICE_NAME: 'b' };
  assert.deepEqual(resolveOtlpSettings({}, env)!.resourceAttributes, { 'service.name': 'b', 'deployment.environment': 'prod eu', team: 'x' });
  assert.deepEqual(resolveOtlpSettings({ resource_attributes: { team: 'y' } }, env)!.resourceAttributes, { 'service.name': 'b', 'deployment.environment': 'prod eu', team: 'y' });
});

test('settings errors name the variable, never the value', () => {
  assert.throws(() => parseKeyValues('Authorization', 'OTEL_EXPORTER_OTLP_HEADERS'), /OTEL_EXPORTER_OTLP_HEADERS: malformed entry #1/);
  assert.throws(() => parseKeyValues('k=%zz-secret', 'X'), (e: Error) => !e.message.includes('secret') && /malformed percent-encoding/.test(e.message));
  assert.throws(() => resolveOtlpSettings({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x', OTEL_RESOURCE_ATTRIBUTES: 'a=1,oops' }), /OTEL_RESOURCE_ATTRIBUTES: malformed entry #2/);
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
  current = { seq: 5, timeMs: 6000, families: [{ def: counter, kind: 'counter', points: [] }] };
  assert.deepEqual(await points(true), [], 'a series that disappeared is forgotten');
  current = snap(6, 7000, 3, 6500);
  assert.deepEqual(await points(true), [{ value: 3, start: 6500 }], 'and starts afresh when it returns');
});

const rtt = defineMetric({ name: 'kerntap.test.rtt', kind: 'histogram', unit: 's', help: 'h', labels: ['container.id', 'k8s.pod.uid', 'cgroup'], range: { minExp: -4, maxExp: 2 } });

/** A kernel histogram holding one observation of exactly 2^e seconds per exponent (slot e − SLOT0_EXP, as kt_hist.h puts it). */
function histOfPowers(exps: number[]): HistogramValue {
  const h = emptyHistogram();
  for (const e of exps) {
    h.slots[e - SLOT0_EXP]! += 1;
    h.sum += 2 ** e;
    h.count++;
  }
  return h;
}

function histSnap(timeMs: number, hist: HistogramValue, startMs = 1000): Snapshot {
  return { seq: timeMs, timeMs, families: [{ def: rtt, kind: 'histogram', points: [{ labels: ['c1', 'p1', '/a'], hist, startMs }] }] };
}

test('histograms: exactly 2^e seconds lands in the bucket whose upper edge is 2^e, in both forms', async () => {
  const exps = [-6, -4, -3, -1, 0, 1, 2, 5];
  const current = histSnap(2000, histOfPowers(exps));

  const explicit = (await new SnapshotProducer(() => current, 'cumulative', 'explicit', '0.0.0').collect()).resourceMetrics.scopeMetrics[0]!.metrics[0] as HistogramMetricData;
  const dp = explicit.dataPoints[0]!;
  assert.deepEqual(dp.attributes, { 'container.id': 'c1', 'k8s.pod.uid': 'p1', cgroup: '/a' }, 'semconv attribute names');
  const { boundaries, counts } = dp.value.buckets;
  assert.deepEqual(boundaries, [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2, 4]);
  // Explicit bucket i is (boundaries[i-1], boundaries[i]]; 2^-6 folds into the first, 2^5 into +Inf.
  assert.deepEqual(counts, [2, 1, 0, 1, 1, 1, 1, 1]);
  for (const e of exps.filter((x) => x > -4 && x <= 2)) assert.equal(counts[boundaries.indexOf(2 ** e)], 1, `2^${e} s in le=2^${e}`);
  assert.equal(dp.value.count, exps.length);
  assert.equal(dp.value.sum, exps.reduce((a, e) => a + 2 ** e, 0));

  const exponential = (await new SnapshotProducer(() => current, 'cumulative', 'exponential', '0.0.0').collect()).resourceMetrics.scopeMetrics[0]!.metrics[0] as ExponentialHistogramMetricData;
  const x = exponential.dataPoints[0]!.value;
  assert.equal(x.scale, 0);
  assert.equal(x.zeroCount, 0);
  assert.equal(x.count, x.zeroCount + x.positive.bucketCounts.reduce((a, b) => a + b, 0), 'count = zero + Σ buckets');
  const mapping = getMapping(0);
  for (const e of exps) {
    const index = mapping.mapToIndex(2 ** e);
    assert.equal(index, e - 1, `the SDK maps 2^${e} to (2^${e - 1}, 2^${e}]`);
    assert.equal(x.positive.bucketCounts[index - x.positive.offset], 1, `2^${e} s in exponential bucket ${index}`);
  }
  assert.equal(x.positive.offset, -7);
  assert.equal(x.positive.bucketCounts.length, 5 - -6 + 1);
});

test('delta histograms: per-bucket differences; a bucket that went down counts as a reset', async () => {
  let current = histSnap(2000, histOfPowers([0, 1]));
  const producer = new SnapshotProducer(() => current, 'delta', 'explicit', '0.0.0');
  const next = async () => {
    const r = await producer.collect();
    producer.commit(r.resourceMetrics);
    const d = (r.resourceMetrics.scopeMetrics[0]!.metrics[0] as HistogramMetricData).dataPoints[0]!;
    return { start: d.startTime[0] * 1000 + d.startTime[1] / 1e6, counts: d.value.buckets.counts, count: d.value.count, sum: d.value.sum };
  };
  assert.deepEqual(await next(), { start: 1000, counts: [0, 0, 0, 0, 1, 1, 0, 0], count: 2, sum: 3 });
  current = histSnap(3000, histOfPowers([0, 1, 1, 2, 2]));
  assert.deepEqual(await next(), { start: 2000, counts: [0, 0, 0, 0, 0, 1, 2, 0], count: 3, sum: 10 });
  current = histSnap(4000, histOfPowers([0, 2]));
  assert.deepEqual(await next(), { start: 3000, counts: [0, 0, 0, 0, 1, 0, 1, 0], count: 2, sum: 5 }, 'never negative counts');
});

test('headers over plain http:// get one warning line naming them, never their values', async () => {
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: 'info' }, new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l));
      done();
    },
  }));
  const start = async (endpoint: string, headers: Record<string, string>) => {
    lines.length = 0;
    const otlp = await startOtlp(resolveOtlpSettings({ endpoint, headers, interval: 3_600_000 }, {})!, () => ({ seq: 0, timeMs: 0, families: [] }), 't', log);
    await otlp.shutdown(100);
    return lines.filter((l) => l.level === 40);
  };
  const secret = 'Api-Token dt0c01.SECRET';
  const warned = await start('http://collector.example:4318/v1/metrics', { Authorization: secret });
  assert.equal(warned.length, 1);
  assert.match(warned[0]!.msg, /^OTLP sends header Authorization over plain http:\/\/ to collector\.example:4318: .*use an https:\/\/ endpoint$/);
  assert.ok(!JSON.stringify(lines).includes('SECRET'), 'the value is never logged');
  assert.deepEqual(await start('https://collector.example:4318/v1/metrics', { Authorization: secret }), [], 'https: no warning');
  assert.deepEqual(await start('http://collector.example:4318/v1/metrics', {}), [], 'no headers: no warning');
});
