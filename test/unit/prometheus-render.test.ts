/**
 * The direct renderer (src/exporters/prometheus.ts) writes exactly what
 * prom-client's Registry writes for the same snapshot, byte for byte, in both
 * formats: hostile label values, repeated label names, NaN/±Inf, histograms,
 * empty families.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { renderSnapshot } from '../../src/exporters/prometheus.js';
import { HIST_SLOTS } from '../../src/model/histogram.js';
import { defineMetric, type MetricKind } from '../../src/model/metric.js';
import type { Family, Snapshot } from '../../src/model/snapshot.js';
import { renderWithPromClient } from '../helpers/prom-client-render.js';

const hostile = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: fc.constantFrom('"', '\\', '\n', '\r', '{', '}', '=', ',', '#', ' ', 'é', '\u2028', 'a'), maxLength: 12 }),
);
const number = fc.oneof(fc.double(), fc.constantFrom(NaN, Infinity, -Infinity, -0, 0, 2 ** 53, 1e-300), fc.nat());
const labelName = fc.constantFrom('cgroup', 'comm', 'peer', 'a', 'k8s.pod.uid');

let familySeq = 0;
const family: fc.Arbitrary<Family> = fc
  .record({
    kind: fc.constantFrom<MetricKind>('counter', 'gauge', 'histogram'),
    help: hostile,
    labels: fc.uniqueArray(labelName, { maxLength: 4 }), // attribute names, dotted ones translated
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
