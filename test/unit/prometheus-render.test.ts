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
import { defineMetric } from '../../src/model/metric.js';
import type { Snapshot } from '../../src/model/snapshot.js';
import { renderWithPromClient } from '../helpers/prom-client-render.js';
import { family } from '../helpers/snapshot-arbitrary.js';

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
