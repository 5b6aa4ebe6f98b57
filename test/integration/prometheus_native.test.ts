/**
 * A real Prometheus 3 scrapes kerntap in the protobuf exposition, with
 * native histograms on and the classic buckets kept
 * (always_scrape_classic_histograms), and with created timestamps ingested
 * as zero samples (created-timestamp-zero-ingestion). Both forms of every
 * histogram come from the same scrape, so they must agree exactly on count
 * and sum, and their quantiles must fall in the same bucket; every counter's
 * zero sample must sit at the created timestamp kerntap reports.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import protobuf from 'protobufjs';
import { clientModel } from '../../src/exporters/prometheus-proto.js';
import { requireBpf, requireTool } from '../helpers/env.js';
import { startExporter } from '../helpers/exporter.js';
import { havePrometheus3, PROMETHEUS3, startPrometheus } from '../helpers/prometheus.js';

const running: { stop(): Promise<unknown> }[] = [];
after(async () => {
  for (const r of running.reverse()) await r.stop().catch(() => undefined);
});

type Series = { metric: Record<string, string>; value: [number, string] };
const PROTOBUF_ACCEPT = 'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited';

/** A series' identity without the labels Prometheus adds and without __name__. */
function labelKey(labels: Record<string, string>): string {
  return JSON.stringify(Object.entries(labels).filter(([k, v]) => !['__name__', 'job', 'instance', 'le'].includes(k) && v !== '').sort(([a], [b]) => a.localeCompare(b)));
}

const byLabels = (rs: Series[]) => new Map(rs.map((s) => [labelKey(s.metric), Number(s.value[1])]));

test('Prometheus 3 scrapes native histograms and created timestamps from the protobuf exposition', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'Prometheus 3 (scripts/test-deps.sh)', havePrometheus3())) return;
  const exporter = await startExporter(['--poll.interval', '1s']);
  running.push(exporter);
  const prom = await startPrometheus([{
    target: new URL(exporter.url).host,
    extra: [
      '    scrape_protocols: [PrometheusProto, OpenMetricsText1.0.0, PrometheusText0.0.4]',
      '    scrape_native_histograms: true',
      '    always_scrape_classic_histograms: true',
    ].join('\n'),
  }], '1s', { binary: PROMETHEUS3, args: ['--enable-feature=created-timestamp-zero-ingestion'] });
  running.push(prom);
  // Connections to kerntap itself fill the TCP histograms.
  for (let i = 0; i < 5; i++) await exporter.scrape('/healthz');
  await prom.waitFor('sum(histogram_count(kerntap_tcp_connect_duration_seconds)) > 0', (r) => r.length > 0, 30_000);

  // Every kerntap histogram, found by its classic buckets.
  const names = (await prom.query('group by (__name__) ({__name__=~"kerntap_.+_bucket"})')).map((s) => s.metric.__name__!.replace(/_bucket$/, ''));
  t.diagnostic(`histograms: ${names.join(', ')}`);
  assert.ok(names.includes('kerntap_tcp_connect_duration_seconds') && names.length >= 3, 'the TCP histograms are there');
  let compared = 0;
  for (const name of names) {
    // One instant query per pair: both sides are the same scrape.
    const [nativeCount, classicCount, nativeSum, classicSum] = await Promise.all([
      prom.query(`histogram_count(${name})`), prom.query(`${name}_count`), prom.query(`histogram_sum(${name})`), prom.query(`${name}_sum`),
    ]);
    assert.ok(classicCount.length > 0, `${name}: classic series`);
    assert.deepEqual(byLabels(nativeCount), byLabels(classicCount), `${name}: histogram_count() = _count`);
    assert.deepEqual(byLabels(nativeSum), byLabels(classicSum), `${name}: histogram_sum() = _sum`);
    compared += classicCount.length;

    const buckets = await prom.query(`${name}_bucket`);
    const bounds = [...new Set(buckets.map((s) => Number(s.metric.le)))].filter(Number.isFinite).sort((a, b) => a - b);
    for (const q of [0.5, 0.9, 0.99]) {
      const [native, classic] = await Promise.all([prom.query(`histogram_quantile(${q}, ${name})`), prom.query(`histogram_quantile(${q}, ${name}_bucket)`)]);
      const nativeBy = byLabels(native);
      for (const [key, c] of byLabels(classic)) {
        if (Number.isNaN(c)) continue; // no observations
        const n = nativeBy.get(key)!;
        // The classic bucket that holds the classic quantile: (lower, upper].
        const upperIndex = bounds.findIndex((b) => b >= c * (1 - 1e-12));
        const lower = upperIndex > 0 ? bounds[upperIndex - 1]! : 0;
        const upper = c >= bounds.at(-1)! ? Infinity : bounds[upperIndex]!; // the +Inf bucket reports the highest bound
        assert.ok(n >= lower * (1 - 1e-12) && n <= upper * (1 + 1e-12), `${name}${key} q=${q}: native ${n} outside the classic bucket (${lower}, ${upper}] of ${c}`);
      }
    }
  }
  t.diagnostic(`${compared} histogram series compared`);

  // Created timestamps, as kerntap reports them in its own protobuf exposition.
  const res = await fetch(`${exporter.url}/metrics`, { headers: { accept: PROTOBUF_ACCEPT } });
  assert.match(res.headers.get('content-type') ?? '', /^application\/vnd\.google\.protobuf; proto=io\.prometheus\.client\.MetricFamily; encoding=delimited/);
  const reader = protobuf.Reader.create(new Uint8Array(await res.arrayBuffer()));
  const created = new Map<string, number>();
  const { family } = clientModel();
  while (reader.pos < reader.len) {
    const f = family.toObject(family.decodeDelimited(reader), { longs: Number, enums: String });
    if (f.type !== 'COUNTER') continue;
    for (const m of f.metric ?? []) {
      const labels = Object.fromEntries((m.label ?? []).map((l: { name: string; value?: string }) => [l.name, l.value ?? '']));
      const ts = m.counter.created_timestamp;
      created.set(`${f.name}${labelKey(labels)}`, (ts.seconds ?? 0) * 1000 + (ts.nanos ?? 0) / 1e6);
    }
  }
  const r = await fetch(`${prom.url}/api/v1/query?query=${encodeURIComponent('{__name__=~"kerntap_.+_total"}[10m]')}`);
  const matrix = ((await r.json()) as { data: { result: { metric: Record<string, string>; values: [number, string][] }[] } }).data.result;
  let checked = 0;
  for (const s of matrix) {
    const createdMs = created.get(`${s.metric.__name__}${labelKey(s.metric)}`);
    if (createdMs === undefined) continue; // a series that ended before this scrape
    const [ts, v] = s.values[0]!;
    assert.equal(v, '0', `${s.metric.__name__}${labelKey(s.metric)}: Prometheus's first sample is the created zero`);
    assert.equal(Math.round(ts * 1000), createdMs, `${s.metric.__name__}${labelKey(s.metric)}: at kerntap's created timestamp`);
    checked++;
  }
  t.diagnostic(`${checked} counter series' created timestamps checked`);
  assert.ok(checked > 10, 'a real exporter\'s worth of counters');
});
