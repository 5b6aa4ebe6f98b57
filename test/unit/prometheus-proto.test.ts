/**
 * The protobuf exposition (src/exporters/prometheus-proto.ts), decoded with
 * protobufjs from the shipped client_model metrics.proto: the same samples
 * as the text exposition of the same snapshot, native schema-0 buckets equal
 * to the kernel slots (index k-20), created timestamps equal to the series
 * starts; and the Accept negotiation Prometheus 3 relies on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import protobuf from 'protobufjs';
import { clientModel, renderProtobuf } from '../../src/exporters/prometheus-proto.js';
import { renderSnapshot } from '../../src/exporters/prometheus.js';
import { negotiateFormat } from '../../src/exporters/scrape-format.js';
import { SLOT0_EXP } from '../../src/model/histogram.js';
import { defineMetric } from '../../src/model/metric.js';
import type { Snapshot } from '../../src/model/snapshot.js';
import { parseExposition, type Sample } from '../helpers/exposition.js';
import { family } from '../helpers/snapshot-arbitrary.js';

type Decoded = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function decodeFamilies(body: Buffer): Decoded[] {
  const { family: type } = clientModel();
  const reader = protobuf.Reader.create(body);
  const out: Decoded[] = [];
  while (reader.pos < reader.len) out.push(type.toObject(type.decodeDelimited(reader), { longs: Number, enums: String }));
  return out;
}

const ms = (ts: { seconds?: number; nanos?: number } | undefined) => (ts?.seconds ?? 0) * 1000 + (ts?.nanos ?? 0) / 1e6;
const plain = (v: number) => (v === 0 ? 0 : v); // the text format has no -0

/** The samples the text format would carry, from decoded families. */
function samplesOf(families: Decoded[]): Sample[] {
  const out: Sample[] = [];
  for (const f of families) {
    for (const m of f.metric ?? []) {
      const labels: Record<string, string> = Object.fromEntries((m.label ?? []).map((l: Decoded) => [l.name, l.value ?? '']));
      if (f.type === 'COUNTER') out.push({ name: f.name, labels, value: plain(m.counter.value) });
      else if (f.type === 'GAUGE') out.push({ name: f.name, labels, value: plain(m.gauge.value) });
      else {
        for (const b of m.histogram.bucket) {
          out.push({ name: `${f.name}_bucket`, labels: { ...labels, le: Number.isFinite(b.upper_bound) ? String(b.upper_bound) : '+Inf' }, value: b.cumulative_count ?? 0 });
        }
        out.push({ name: `${f.name}_sum`, labels, value: plain(m.histogram.sample_sum) });
        out.push({ name: `${f.name}_count`, labels, value: m.histogram.sample_count ?? 0 });
      }
    }
  }
  return out;
}

/** Native bucket index → count, from spans and deltas as Prometheus reads them. */
function nativeCounts(h: Decoded): Map<number, number> {
  const counts = new Map<number, number>();
  let index = 0;
  let count = 0;
  let d = 0;
  for (const span of h.positive_span ?? []) {
    index += span.offset ?? 0;
    for (let j = 0; j < (span.length ?? 0); j++) {
      count += h.positive_delta[d++];
      if (count !== 0) counts.set(index, count);
      index++;
    }
  }
  assert.equal(d, (h.positive_delta ?? []).length, 'every delta belongs to a span');
  return counts;
}

test('protobuf exposition: the text samples, native buckets from the kernel slots, created timestamps', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(family, { maxLength: 5 }), async (families) => {
      const snapshot: Snapshot = { seq: 1, timeMs: 1, families };
      const decoded = decodeFamilies(await renderProtobuf(snapshot));
      assert.deepEqual(samplesOf(decoded), parseExposition(await renderSnapshot(snapshot, 'text')));
      assert.equal(decoded.length, families.length);
      families.forEach((fam, f) => {
        const df = decoded[f]!;
        assert.equal(df.help ?? '', fam.def.help);
        assert.equal(df.type, fam.kind.toUpperCase());
        fam.points.forEach((p, i) => {
          const m = df.metric[i];
          if (fam.kind === 'counter') assert.equal(ms(m.counter.created_timestamp), p.startMs);
          if (fam.kind !== 'histogram') return;
          const h = m.histogram;
          assert.equal(ms(h.created_timestamp), p.startMs);
          assert.equal(h.schema ?? 0, 0);
          assert.equal(h.zero_count ?? 0, 0);
          assert.ok(h.positive_span?.length > 0, 'a native histogram, even when empty');
          const expected = new Map<number, number>();
          (fam.points[i] as { hist: { slots: Float64Array } }).hist.slots.forEach((c, k) => { if (c) expected.set(k + SLOT0_EXP, c); });
          assert.deepEqual(nativeCounts(h), expected);
        });
      });
    }),
    { numRuns: 300 },
  );
});

test('protobuf exposition: an empty snapshot is empty, a big one yields to the event loop', async () => {
  assert.equal((await renderProtobuf({ seq: 1, timeMs: 1, families: [] })).length, 0);
  const def = defineMetric({ name: 'kerntap.render.big', kind: 'counter', unit: 'By', help: 'big', labels: ['cgroup'] });
  const points = Array.from({ length: 200_000 }, (_, i) => ({ labels: [`/slice/c${i}`], value: i, startMs: 1_700_000_000_123 }));
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const body = await renderProtobuf({ seq: 1, timeMs: 1, families: [{ def, kind: 'counter', points }] });
  clearInterval(timer);
  const [decoded] = decodeFamilies(body);
  assert.equal(decoded!.metric.length, 200_000);
  assert.equal(decoded!.metric[199_999].counter.value, 199_999);
  assert.equal(ms(decoded!.metric[0].counter.created_timestamp), 1_700_000_000_123);
  assert.ok(ticks > 0, 'timers ran during the rendering');
});

test('Accept negotiation follows q-values as Prometheus 3 sends them', () => {
  const proto = 'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited';
  // Prometheus 3's scrape_protocols, PrometheusProto first (scrape_native_histograms: true).
  assert.equal(negotiateFormat(`${proto};q=0.7,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2`), 'protobuf');
  // Its default: OpenMetrics first.
  assert.equal(negotiateFormat('application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2'), 'openmetrics');
  assert.equal(negotiateFormat(`text/plain;version=0.0.4;q=0.9,${proto};q=0.5`), 'text');
  assert.equal(negotiateFormat(`${proto};q=0,text/plain`), 'text');
  // Another message or encoding is not what kerntap writes.
  assert.equal(negotiateFormat('application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text'), 'text');
  assert.equal(negotiateFormat('application/vnd.google.protobuf;proto=other.Message;encoding=delimited,*/*;q=0.1'), 'text');
  assert.equal(negotiateFormat('application/openmetrics-text;version=2.0.0,text/plain;q=0.5'), 'text');
  // Equal q: the exact type over a wildcard, and OpenMetrics over text, as before.
  assert.equal(negotiateFormat('*/*,application/openmetrics-text'), 'openmetrics');
  assert.equal(negotiateFormat('text/plain,application/openmetrics-text'), 'openmetrics');
  assert.equal(negotiateFormat('application/json'), 'text');
  assert.equal(negotiateFormat(''), 'text');
});

test('the protobuf content type served is the one of the (lazily loaded) protobuf renderer', async () => {
  const { CONTENT_TYPES } = await import('../../src/exporters/scrape-format.js');
  const { PROTOBUF_CONTENT_TYPE } = await import('../../src/exporters/prometheus-proto.js');
  assert.equal(CONTENT_TYPES.protobuf, PROTOBUF_CONTENT_TYPE);
});
