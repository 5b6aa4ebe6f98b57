import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defineMetric, prometheusLabel, prometheusName } from '../../src/model/metric.js';
import {
  HIST_SLOTS,
  decodeHistogram,
  emptyHistogram,
  explicitBounds,
  explicitCounts,
  exponentialBuckets,
} from '../../src/model/histogram.js';

test('OTel names translate to Prometheus names', () => {
  const cases: [string, string, 'counter' | 'gauge' | 'histogram', string][] = [
    ['kerntap.cgroup.cpu.time', 's', 'counter', 'kerntap_cgroup_cpu_time_seconds_total'],
    ['kerntap.tcp.sent', 'By', 'counter', 'kerntap_tcp_sent_bytes_total'],
    ['kerntap.tcp.rtt', 's', 'histogram', 'kerntap_tcp_rtt_seconds'],
    ['kerntap.tcp.connections.active', '{connection}', 'gauge', 'kerntap_tcp_connections_active'],
    ['kerntap.build.info', '', 'gauge', 'kerntap_build_info'],
    ['kerntap.poll.duration', 's', 'gauge', 'kerntap_poll_duration_seconds'],
    ['kerntap.map.fill', '1', 'gauge', 'kerntap_map_fill_ratio'],
    ['kerntap.process.memory.rss', 'By', 'gauge', 'kerntap_process_memory_rss_bytes'],
    ['kerntap.bpf.program.runs', '{run}', 'counter', 'kerntap_bpf_program_runs_total'],
  ];
  for (const [name, unit, kind, want] of cases) {
    assert.equal(prometheusName({ name, unit, kind }), want, name);
  }
});

test('defineMetric rejects bad names and labels', () => {
  assert.throws(() => defineMetric({ name: 'cpu', kind: 'gauge', unit: '', help: '', labels: [] }), /prefixed kerntap/);
  assert.throws(() => defineMetric({ name: 'kerntap.x', kind: 'gauge', unit: '', help: '', labels: ['le'] }), /invalid label/);
  assert.throws(() => defineMetric({ name: 'kerntap.x', kind: 'histogram', unit: 's', help: '', labels: [] }), /range/);
  assert.throws(() => defineMetric({ name: 'kerntap.x', kind: 'gauge', unit: '', help: '', labels: ['k8s.pod.uid', 'k8s_pod_uid'] }), /two labels translate to k8s_pod_uid/);
  assert.throws(() => defineMetric({ name: 'kerntap.x', kind: 'gauge', unit: '', help: '', labels: ['cgroup', 'cgroup'] }), /two labels/);
  assert.throws(() => defineMetric({ name: 'kerntap.x', kind: 'gauge', unit: '', help: '', labels: ['k8s..pod'] }), /invalid label/);
});

test('attribute names translate to Prometheus labels', () => {
  assert.equal(prometheusLabel('k8s.namespace.name'), 'k8s_namespace_name');
  assert.equal(prometheusLabel('container.runtime.name'), 'container_runtime_name');
  assert.equal(prometheusLabel('cgroup'), 'cgroup');
});

/** Slot of a duration, as bpf/include/kt_hist.h computes it (integer maths). */
function kernelSlot(ns: bigint): number {
  if (ns >= 1n << 53n) return HIST_SLOTS - 1;
  const units = (ns * 2048n + 1953124n) / 1953125n;
  if (units <= 1n) return 0;
  let k = 0;
  while (1n << BigInt(k) < units) k++;
  return Math.min(k, HIST_SLOTS - 1);
}

test('kernel slots put exact powers of two seconds on their own upper bound', () => {
  // 2^e seconds in ns is exact for e >= -9 (2^-9 s = 1953125 ns).
  for (let e = -9; e <= 20; e++) {
    const ns = BigInt(Math.round(2 ** e * 1e9));
    const k = kernelSlot(ns);
    assert.equal(k, e + 20, `2^${e} s lands in the slot whose le is 2^${e}`);
    assert.equal(kernelSlot(ns + 1n), e + 21, `just above 2^${e} s goes one slot up`);
  }
  assert.equal(kernelSlot(0n), 0);
  assert.equal(kernelSlot(953n), 0); // < 2^-20 s
});

function histWith(slots: Record<number, number>, sumNs = 0): ReturnType<typeof emptyHistogram> {
  const words = new BigUint64Array(HIST_SLOTS + 1);
  for (const [k, n] of Object.entries(slots)) words[Number(k)] = BigInt(n);
  words[HIST_SLOTS] = BigInt(sumNs);
  return decodeHistogram(words, 0);
}

test('explicit buckets fold below/above the range without losing counts', () => {
  const h = histWith({ 0: 1, 3: 2, 10: 5, 20: 7, 40: 1 }, 3_000_000_000);
  assert.equal(h.count, 16);
  assert.equal(h.sum, 3);
  const range = { minExp: -17, maxExp: 3 };
  const bounds = explicitBounds(range);
  assert.equal(bounds.length, 21);
  assert.equal(bounds[0], 2 ** -17);
  assert.equal(bounds[20], 8);
  const counts = explicitCounts(h, range);
  assert.equal(counts.length, 22);
  assert.equal(counts[0], 3, 'slots 0 and 3 are at or below 2^-17');
  assert.equal(counts[10 - 3], 5, 'slot 10 = le 2^-10');
  assert.equal(counts[20 - 3], 7, 'slot 20 = le 1 s');
  assert.equal(counts[21], 1, 'slot 40 (2^20 s) goes to +Inf');
  assert.equal(counts.reduce((a, b) => a + b, 0), h.count);
});

test('exponential buckets (scale 0) index slot k as k-21: (2^(k-21), 2^(k-20)]', () => {
  const h = histWith({ 20: 4, 22: 1 });
  const exp = exponentialBuckets(h);
  assert.equal(exp.scale, 0);
  assert.equal(exp.offset, -1, 'slot 20 holds (0.5 s, 1 s] = OTel index -1');
  assert.deepEqual(exp.counts, [4, 0, 1]);
  assert.deepEqual(exponentialBuckets(emptyHistogram()).counts, []);
});
