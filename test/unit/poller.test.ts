/** The poller's schedule survives polls that fail as a whole, and its own metrics count polls and skipped BPF runs. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { pino } from 'pino';
import { Poller } from '../../src/poller.js';
import { selfFamilies, type SelfState } from '../../src/selfmetrics.js';
import { prometheusName } from '../../src/model/metric.js';
import type { NumberPoint, Snapshot } from '../../src/model/snapshot.js';

function poller(beforePoll: () => void) {
  return new Poller([], {
    intervalMs: 5, maxSeriesPerMetric: 100, maxLabelLength: 64, degradedAfterFailures: 3, version: 'test', libbpfVersion: 'test',
    statsEnabled: () => false, log: pino({ level: 'silent' }), collectorStates: [], beforePoll,
  });
}

const polls = (s: Snapshot) => (s.families.find((f) => prometheusName(f.def) === 'kerntap_polls_total')!.points[0] as NumberPoint).value;

test('polls that fail outside any collector are no unhandled rejection; the poller goes on and recovers', async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown) => unhandled.push(err);
  process.on('unhandledRejection', onUnhandled);
  // The poller's timer does not hold the process up; this does, for the test.
  const keepAlive = setInterval(() => undefined, 1000);
  let calls = 0;
  const p = poller(() => {
    if (++calls <= 4) throw new Error(`cgroup walk failed (${calls})`);
  });
  try {
    await assert.rejects(p.start(), /cgroup walk failed \(1\)/);
    const [snapshot] = (await once(p, 'snapshot')) as [Snapshot];
    assert.ok(calls >= 5, 'polled again after the failures');
    assert.equal(p.consecutiveFailures, 0, 'a good poll clears the failure count');
    assert.equal(polls(snapshot), 1, 'kerntap_polls_total counts completed polls');
    await once(p, 'snapshot');
    assert.equal(polls(p.latest), 2);
    // Give a stray rejection its turn to be reported.
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(unhandled, []);
  } finally {
    p.stop();
    clearInterval(keepAlive);
    process.off('unhandledRejection', onUnhandled);
  }
});

test('kerntap_bpf_program_recursion_misses_total{collector,program} comes from the kernel\'s recursion_misses, with or without BPF stats', () => {
  const state: SelfState = {
    version: 'v', libbpfVersion: 'l', collectors: [], statsEnabled: false, maps: [], overflow: [], pollDurationS: 0, polls: 1,
    pollErrors: new Map(), series: new Map(), folded: new Map(),
    programs: [{ collector: 'tcp', program: 'on_state', runTimeNs: 0n, runCount: 0n, recursionMisses: 3n }],
  };
  const fam = selfFamilies(state).find((f) => prometheusName(f.def) === 'kerntap_bpf_program_recursion_misses_total');
  assert.ok(fam, 'defined and exported');
  assert.equal(fam.kind, 'counter');
  assert.deepEqual(fam.def.labels, ['collector', 'program']);
  assert.deepEqual(fam.points.map((x) => [x.labels, (x as { value: number }).value]), [[['tcp', 'on_state'], 3]]);
});
