/**
 * The direct renderer (src/exporters/prometheus.ts) writes exactly what
 * prom-client's Registry writes for the same snapshot, byte for byte, in both
 * formats: hostile label values, repeated label names, NaN/±Inf, histograms,
 * empty families.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Registry } from 'prom-client';
import { CONTENT_TYPES, renderSnapshot, type ExpositionFormat } from '../../src/exporters/prometheus.js';
import { explicitBounds, explicitCounts, HIST_SLOTS } from '../../src/model/histogram.js';
import { defineMetric, prometheusName, type MetricKind } from '../../src/model/metric.js';
import type { Family, Snapshot } from '../../src/model/snapshot.js';

type PromValue = { labels: Record<string, string>; value: number; metricName?: string };

/** The oracle: the snapshot fed to prom-client's own Registry as pre-aggregated duck-typed metrics. */
async function renderWithPromClient(snapshot: Snapshot, format: ExpositionFormat): Promise<string> {
  const registry = new (Registry as unknown as new (contentType: string) => Registry)(CONTENT_TYPES[format]);
  for (const fam of snapshot.families) {
    let name = prometheusName(fam.def);
    if (format === 'openmetrics' && fam.kind === 'counter') name = name.replace(/_total$/, '');
    const labelsOf = (values: readonly string[]) => {
      const out: Record<string, string> = {};
      fam.def.labels.forEach((n, i) => { out[n] = values[i] ?? ''; });
      return out;
    };
    const values: PromValue[] = [];
    if (fam.kind === 'histogram') {
      const range = fam.def.range!;
      const bounds = [...explicitBounds(range), Infinity];
      for (const p of fam.points) {
        const labels = labelsOf(p.labels);
        const counts = explicitCounts(p.hist, range);
        let cumulative = 0;
        bounds.forEach((b, i) => {
          cumulative += counts[i]!;
          values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: Number.isFinite(b) ? String(b) : '+Inf' }, value: cumulative });
        });
        values.push({ metricName: `${name}_sum`, labels, value: p.hist.sum }, { metricName: `${name}_count`, labels, value: p.hist.count });
      }
    } else {
      for (const p of fam.points) values.push({ labels: labelsOf(p.labels), value: p.value });
    }
    const metric = { name, help: fam.def.help, type: fam.kind, aggregator: 'sum', values };
    registry.registerMetric({ ...metric, get: async () => metric } as never);
  }
  return registry.metrics();
}

const hostile = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: fc.constantFrom('"', '\\', '\n', '\r', '{', '}', '=', ',', '#', ' ', 'é', '\u2028', 'a'), maxLength: 12 }),
);
const number = fc.oneof(fc.double(), fc.constantFrom(NaN, Infinity, -Infinity, -0, 0, 2 ** 53, 1e-300), fc.nat());
const labelName = fc.constantFrom('cgroup', 'comm', 'peer', 'a', 'b');

let familySeq = 0;
const family: fc.Arbitrary<Family> = fc
  .record({
    kind: fc.constantFrom<MetricKind>('counter', 'gauge', 'histogram'),
    help: hostile,
    labels: fc.array(labelName, { maxLength: 4 }), // repeated names allowed: prom-client keeps the last value
    points: fc.array(fc.record({ labels: fc.array(hostile, { maxLength: 4 }), value: number, slots: fc.array(fc.nat(1000), { minLength: HIST_SLOTS, maxLength: HIST_SLOTS }) }), { maxLength: 6 }),
  })
  .map(({ kind, help, labels, points }) => {
    const def = defineMetric({ name: `kerntap.render.f${familySeq++}`, kind, unit: kind === 'histogram' ? 's' : 'By', help, labels, ...(kind === 'histogram' ? { range: { minExp: -10, maxExp: 2 } } : {}) });
    if (kind !== 'histogram') return { def, kind, points: points.map((p) => ({ labels: p.labels, value: p.value, startMs: 0 })) };
    return {
      def, kind,
      points: points.map((p) => ({ labels: p.labels, startMs: 0, hist: { slots: Float64Array.from(p.slots), sum: Math.abs(p.value), count: p.slots.reduce((a, b) => a + b, 0) } })),
    };
  });

test('direct rendering is byte-identical to prom-client in both formats', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(family, { maxLength: 5 }), async (families) => {
      const snapshot: Snapshot = { seq: 1, timeMs: 1, families };
      for (const format of ['text', 'openmetrics'] as const) {
        assert.equal(await renderSnapshot(snapshot, format), await renderWithPromClient(snapshot, format), format);
      }
    }),
    { numRuns: 400 },
  );
});

test('a large rendering hands the event loop back while it runs', async () => {
  const def = defineMetric({ name: 'kerntap.render.big', kind: 'gauge', unit: '', help: 'big', labels: ['cgroup'] });
  const points = Array.from({ length: 200_000 }, (_, i) => ({ labels: [`/slice/c${i}`], value: i, startMs: 0 }));
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const text = await renderSnapshot({ seq: 1, timeMs: 1, families: [{ def, kind: 'gauge', points }] }, 'text');
  clearInterval(timer);
  assert.equal(text.split('\n').length, 200_000 + 3);
  assert.ok(ticks > 0, 'timers ran during the rendering');
});
