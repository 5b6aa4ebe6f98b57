/**
 * Random snapshot families for the renderers' property tests: hostile label
 * values and help texts, repeated label names, NaN/±Inf, histograms, empty
 * families.
 */
import fc from 'fast-check';
import { HIST_SLOTS } from '../../src/model/histogram.js';
import { defineMetric, type MetricKind } from '../../src/model/metric.js';
import type { Family } from '../../src/model/snapshot.js';

const hostile = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: fc.constantFrom('"', '\\', '\n', '\r', '{', '}', '=', ',', '#', ' ', 'é', '\u2028', 'a'), maxLength: 12 }),
);
const number = fc.oneof(fc.double(), fc.constantFrom(NaN, Infinity, -Infinity, -0, 0, 2 ** 53, 1e-300), fc.nat());
const labelName = fc.constantFrom('cgroup', 'comm', 'peer', 'a', 'k8s.pod.uid');

// Dense slots, or sparse ones with gaps of every width between non-empty buckets.
const slots = fc.oneof(
  fc.array(fc.nat(1000), { minLength: HIST_SLOTS, maxLength: HIST_SLOTS }),
  fc.array(fc.oneof({ arbitrary: fc.constant(0), weight: 4 }, { arbitrary: fc.nat(1000), weight: 1 }), { minLength: HIST_SLOTS, maxLength: HIST_SLOTS }),
);

let familySeq = 0;
export const family: fc.Arbitrary<Family> = fc
  .record({
    kind: fc.constantFrom<MetricKind>('counter', 'gauge', 'histogram'),
    help: hostile,
    labels: fc.uniqueArray(labelName, { maxLength: 4 }), // attribute names, dotted ones translated
    points: fc.array(fc.record({ labels: fc.array(hostile, { maxLength: 4 }), value: number, startMs: fc.nat(2 ** 42), slots }), { maxLength: 6 }),
  })
  .map(({ kind, help, labels, points }) => {
    const def = defineMetric({ name: `kerntap.render.f${familySeq++}`, kind, unit: kind === 'histogram' ? 's' : 'By', help, labels, ...(kind === 'histogram' ? { range: { minExp: -10, maxExp: 2 } } : {}) });
    if (kind !== 'histogram') return { def, kind, points: points.map((p) => ({ labels: p.labels, value: p.value, startMs: p.startMs })) };
    return {
      def, kind,
      points: points.map((p) => ({ labels: p.labels, startMs: p.startMs, hist: { slots: Float64Array.from(p.slots), sum: Math.abs(p.value), count: p.slots.reduce((a, b) => a + b, 0) } })),
    };
  });
