/**
 * Fuzz: hostile label values (quotes, backslashes, newlines, control
 * characters, lone surrogates, invalid UTF-8 from kernel bytes, 4 KiB
 * lengths) never break the exposition: every line parses, values round-trip
 * to the sanitised label, and promtool accepts a sample of pages.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import { renderSnapshot } from '../../src/exporters/prometheus.js';
import { decodeCString, sanitizeLabelValue } from '../../src/labels.js';
import { defineMetric } from '../../src/model/metric.js';
import { numberFamily } from '../../src/model/snapshot.js';
import { SeriesTracker } from '../../src/series.js';
import { parseExposition } from '../helpers/exposition.js';
import { PROMTOOL, havePrometheus } from '../helpers/prometheus.js';
import { requireTool } from '../helpers/env.js';

const def = defineMetric({ name: 'kerntap.fuzz.total', kind: 'counter', unit: 's', help: 'fuzz "help" with \\ and\nnewline', labels: ['comm', 'cgroup'] });

const hostile = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 64 }),
  fc.string({ unit: fc.constantFrom('"', '\\', '\n', '\r', '\t', '\u0000', '{', '}', '=', ',', '#', ' ', '\uD800', '\uDFFF', '\u2028', 'é'), maxLength: 40 }),
  fc.uint8Array({ maxLength: 32 }).map((b) => decodeCString(b)),
  fc.string({ unit: 'grapheme', minLength: 3000, maxLength: 4200 }),
);

async function render(values: [string, string][]): Promise<string> {
  const tracker = new SeriesTracker({ maxSeriesPerMetric: 1000, maxLabelLength: 512, startMs: 0 });
  const fams = tracker.track([numberFamily(def, values.map(([a, b], i) => ({ labels: [a, b], value: i })))], 1);
  return renderSnapshot({ seq: 1, timeMs: 1, families: fams }, 'text');
}

test('hostile label values always render to a valid, faithful exposition', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.tuple(hostile, hostile), { minLength: 1, maxLength: 8 }), async (values) => {
      const text = await render(values);
      assert.ok(Buffer.from(text, 'utf8').toString('utf8') === text, 'valid UTF-8');
      const samples = parseExposition(text); // throws on any malformed line
      const want = new Map<string, number>();
      values.forEach(([a, b], i) => {
        const key = `${sanitizeLabelValue(a, 512)}\u0000${sanitizeLabelValue(b, 512)}`;
        want.set(key, (want.get(key) ?? 0) + i);
      });
      assert.equal(samples.length, want.size, 'one sample per distinct sanitised label set');
      for (const s of samples) {
        assert.equal(s.value, want.get(`${s.labels.comm}\u0000${s.labels.cgroup}`));
        assert.ok(Buffer.byteLength(s.labels.comm!) <= 512);
      }
    }),
    { numRuns: 300 },
  );
});

test('promtool accepts pages full of hostile labels', async (t) => {
  if (!requireTool(t, 'promtool', havePrometheus())) return;
  const pages = fc.sample(fc.array(fc.tuple(hostile, hostile), { minLength: 1, maxLength: 20 }), 15);
  for (const values of pages) {
    const text = await render(values);
    const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}\n${text.slice(0, 2000)}`);
  }
});
