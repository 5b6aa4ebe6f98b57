import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SeriesTracker, OVERFLOW_LABEL, FORGET_AFTER_MISSED_POLLS } from '../../src/series.js';
import { defineMetric } from '../../src/model/metric.js';
import { numberFamily, type HistogramPoint, type RawFamily } from '../../src/model/snapshot.js';
import { emptyHistogram, type HistogramValue } from '../../src/model/histogram.js';
import { sanitizeLabelValue, decodeCString } from '../../src/labels.js';

const counter = defineMetric({ name: 'kerntap.test.c', kind: 'counter', unit: 's', help: 'h', labels: ['cgroup'] });

function tracker(max = 100) {
  return new SeriesTracker({ maxSeriesPerMetric: max, maxLabelLength: 64, startMs: 1000 });
}

test('counters hold on small read races and restart on a new identity', () => {
  const t = tracker();
  let f = t.track([numberFamily(counter, [{ labels: ['/a'], value: 10, identity: '1' }])], 2000);
  assert.equal(f[0]!.points[0]!.startMs, 1000, 'series present at first poll start at program load');
  f = t.track([numberFamily(counter, [{ labels: ['/a'], value: 9.9, identity: '1' }])], 3000);
  assert.equal((f[0]!.points[0] as { value: number }).value, 10, 'held at the last value');
  f = t.track([numberFamily(counter, [{ labels: ['/a'], value: 0.5, identity: '2' }])], 4000);
  const p = f[0]!.points[0] as { value: number; startMs: number };
  assert.equal(p.value, 0.5, 'new identity: new series');
  assert.equal(p.startMs, 4000);
});

test('duplicate labels merge, and the series cap folds new series into ~overflow', () => {
  const t = tracker(3);
  const pts = (n: number) => Array.from({ length: n }, (_, i) => ({ labels: [`/c${i}`], value: 1, identity: String(i) }));
  let f = t.track([numberFamily(counter, [...pts(2), { labels: ['/c0'], value: 2, identity: '9' }])], 2000);
  assert.deepEqual(f[0]!.points.map((p) => [p.labels[0], (p as { value: number }).value]), [['/c0', 3], ['/c1', 1]]);
  f = t.track([numberFamily(counter, pts(6))], 3000);
  const labels = f[0]!.points.map((p) => p.labels[0]);
  assert.deepEqual(labels, ['/c0', '/c1', OVERFLOW_LABEL], 'tracked series keep their place');
  assert.equal((f[0]!.points[2] as { value: number }).value, 4, 'overflow sums the rest');
  assert.equal(t.folded.get('kerntap.test.c'), 4);
  assert.equal(f[0]!.points.reduce((s, p) => s + (p as { value: number }).value, 0), 6, 'nothing lost');
});

test('hostile label values become valid, bounded UTF-8', () => {
  const hostile = 'a"b\\c\nd\uD800e';
  const clean = sanitizeLabelValue(hostile, 64);
  assert.equal(clean, 'a"b\\c\nd\uFFFDe');
  assert.equal(Buffer.from(clean, 'utf8').toString('utf8'), clean, 'round-trips through UTF-8');
  const long = sanitizeLabelValue('é'.repeat(4096), 64);
  assert.ok(Buffer.byteLength(long) <= 64, 'cut to the byte limit');
  assert.ok(long.endsWith('…'));
  assert.equal(decodeCString(Uint8Array.from([0x66, 0xff, 0x6f, 0, 0x78])), 'f\uFFFDo');
});

const histDef = defineMetric({ name: 'kerntap.test.h', kind: 'histogram', unit: 's', help: 'h', labels: ['cgroup'], range: { minExp: -10, maxExp: 3 } });
const hist = (count: number) => {
  const h = emptyHistogram();
  h.slots[3] = count;
  h.count = count;
  h.sum = count * 1e-6;
  return h;
};
const histFamily = (points: { labels: string[]; hist: HistogramValue; identity?: string }[]): RawFamily => ({ def: histDef, kind: 'histogram', points });

test('a series absent from one poll keeps its start time; one gone for many polls starts afresh', () => {
  const t = tracker();
  const at = (ms: number, present: boolean) =>
    t.track([numberFamily(counter, present ? [{ labels: ['/a'], value: 5, identity: '1' }] : [])], ms);
  at(2000, true);
  at(3000, false);
  let f = at(4000, true);
  assert.equal(f[0]!.points[0]!.startMs, 1000, 'one missed poll is no reset');
  for (let ms = 5000; ms < 5000 + FORGET_AFTER_MISSED_POLLS * 1000; ms += 1000) at(ms, false);
  f = at(20_000, true);
  assert.equal(f[0]!.points[0]!.startMs, 20_000, 'forgotten, then new');
});

test('a cumulative histogram never goes down under one start time', () => {
  const t = tracker();
  t.track([histFamily([{ labels: ['/a'], hist: hist(10), identity: '1' }])], 2000);
  const f = t.track([histFamily([{ labels: ['/a'], hist: hist(7), identity: '1' }])], 3000);
  const p = f[0]!.points[0] as HistogramPoint;
  assert.equal(p.startMs, 1000);
  assert.equal(p.hist.count, 10, 'held at the last histogram');
  assert.equal(p.hist.slots[3], 10);
});

test('the ~overflow histogram restarts when its members leave (a drop is a reset there)', () => {
  const t = tracker(2);
  const members = (n: number) => Array.from({ length: n }, (_, i) => ({ labels: [`/c${i}`], hist: hist(10), identity: String(i) }));
  let f = t.track([histFamily(members(4))], 2000);
  const overflow = () => (f[0]!.points as HistogramPoint[]).find((p) => p.labels[0] === OVERFLOW_LABEL)!;
  assert.equal(overflow().hist.count, 30);
  f = t.track([histFamily(members(3))], 3000);
  assert.equal(overflow().hist.count, 20, 'the sum of the members left');
  assert.equal(overflow().startMs, 3000, 'with a new start time');
});
