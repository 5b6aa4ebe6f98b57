/**
 * The real /metrics endpoint, checked by the real tools: promtool accepts it,
 * OpenMetrics is served when asked for, and a real Prometheus scrapes it and
 * answers PromQL with the test cgroup's CPU time (equal to its cpu.stat).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { kernelAtLeast } from '../../src/privileges.js';
import { BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_HASH, hashMapUsage } from '../../src/bpf/map_memory.js';
import { mapMemlock, mapsHeldBy, possibleCpus, requireBpf, requireTool } from '../helpers/env.js';
import { startExporter, type Exporter } from '../helpers/exporter.js';
import { waitFor, waitForPoll, waitForPollWithCgroups } from '../helpers/wait.js';
import { TestCgroup } from '../helpers/cgroup.js';
import { find, parseExposition, value } from '../helpers/exposition.js';
import { havePrometheus, promtoolCheckMetrics, startPrometheus, type PrometheusServer } from '../helpers/prometheus.js';

let exporter: Exporter | undefined;
let prom: PrometheusServer | undefined;
let cg: TestCgroup | undefined;
after(async () => {
  await prom?.stop();
  await exporter?.stop();
  await cg?.destroy();
});

test('promtool accepts /metrics; OpenMetrics by Accept; Prometheus scrapes and queries it', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'prometheus', havePrometheus())) return;
  exporter = await startExporter();
  cg = TestCgroup.unique('kt-prom');
  await cg.busy(1);
  await waitForPollWithCgroups(exporter, [cg.label]);

  const text = await exporter.scrape();
  const check = promtoolCheckMetrics(text);
  assert.equal(check.status, 0, `promtool check metrics:\n${check.output}`);
  const samples = parseExposition(text);
  const exported = value(samples, 'kerntap_cgroup_cpu_time_seconds_total', { cgroup: cg.label });
  const usage = cg.usageUsec() / 1e6;
  assert.ok(exported !== undefined && Math.abs(exported / usage - 1) < 0.01, `exported ${exported} vs cpu.stat ${usage}`);
  assert.equal(value(samples, 'kerntap_collector_enabled', { collector: 'cgroup_cpu' }), 1);
  assert.equal(value(samples, 'kerntap_build_info', {}) , 1);
  assert.ok((value(samples, 'kerntap_bpf_map_capacity', { collector: 'cgroup_cpu', map: 'cpu_ns' }) ?? 0) > 16);
  assert.ok((value(samples, 'kerntap_bpf_map_entries', { collector: 'cgroup_cpu', map: 'cpu_ns' }) ?? 0) >= 2);
  const misses = find(samples, 'kerntap_bpf_program_recursion_misses_total');
  assert.ok(misses.some((s) => s.labels.collector === 'cgroup_cpu') && misses.some((s) => s.labels.collector === 'tcp'), 'recursion misses of every collector\'s programs');
  assert.ok(misses.every((s) => s.labels.program && Number.isInteger(s.value) && s.value >= 0));
  assert.ok((value(samples, 'kerntap_polls_total') ?? 0) >= 1, 'polls counted');

  const res = await fetch(`${exporter.url}/metrics`, { headers: { accept: 'application/openmetrics-text;version=1.0.0,text/plain;q=0.5' } });
  assert.match(res.headers.get('content-type') ?? '', /^application\/openmetrics-text; version=1\.0\.0/);
  const om = await res.text();
  assert.ok(om.endsWith('# EOF\n'), 'OpenMetrics ends with # EOF');
  assert.match(om, /^# TYPE kerntap_cgroup_cpu_time_seconds counter$/m);
  assert.match(om, new RegExp(`^kerntap_cgroup_cpu_time_seconds_total\\{cgroup="${cg.label}"[,}]`, "m"));

  const health = await fetch(`${exporter.url}/healthz`);
  assert.equal(health.status, 200);
  const landing = await (await fetch(`${exporter.url}/`)).text();
  assert.match(landing, /cgroup_cpu/);

  prom = await startPrometheus([{ target: new URL(exporter.url).host }]);
  const expr = `kerntap_cgroup_cpu_time_seconds_total{cgroup="${cg.label}"}`;
  const result = await prom.waitFor(expr, (r) => r.length === 1);
  const scraped = Number(result[0]!.value[1]);
  assert.ok(Math.abs(scraped / usage - 1) < 0.01, `PromQL ${scraped} vs cpu.stat ${usage}`);
  const up = await prom.query('up');
  assert.equal(up[0]!.value[1], '1');
});

test('kerntap_bpf_map_memory_bytes is the kernel\'s own figure: its series sum to the fdinfo memlock of the maps kerntap holds', async (t) => {
  if (!requireBpf(t)) return;
  const e = await startExporter();
  try {
    // Maps allocated as used change size with traffic: compare a poll's
    // figures with fdinfo read right after it, until one pair agrees.
    let last = '';
    const agreed = await waitFor('map memory series = fdinfo memlock', async () => {
      const s = await waitForPoll(e);
      const series = find(s, 'kerntap_bpf_map_memory_bytes');
      const kernel = mapMemlock(e.pid);
      const exported = series.reduce((n, x) => n + x.value, 0);
      last = `${series.length} series, ${exported} B; fdinfo: ${kernel.maps} maps, ${kernel.bytes} B`;
      return series.length > 0 && series.length === kernel.maps && exported === kernel.bytes && last;
    }, 20_000).catch(() => undefined);
    assert.ok(agreed, `exported map memory = the kernel's (${last})`);
  } finally {
    await e.stop();
  }
});

/*
 * Before 6.4 the kernel reports a capacity estimate, so kerntap computes a
 * hash map's memory from its entries with the sum the kernel makes from 6.4
 * on (src/bpf/map_memory.ts). Here the kernel makes it itself: the two agree
 * for every map kerntap reports entries of, sock_table's counted ones too.
 */
test('map memory from entries: the sum kerntap makes before 6.4 is the kernel\'s own count on this one', async (t) => {
  if (!requireBpf(t)) return;
  if (!kernelAtLeast(6, 4)) {
    t.skip('this kernel reports a capacity estimate (before 6.4): nothing to compare with');
    return;
  }
  const e = await startExporter();
  try {
    const types: Record<string, number> = { hash: BPF_MAP_TYPE_HASH, percpu_hash: BPF_MAP_TYPE_PERCPU_HASH };
    let last = '';
    const agreed = await waitFor('computed = kernel map memory', async () => {
      const s = await waitForPoll(e);
      const maps = mapsHeldBy(e.pid);
      const rows = find(s, 'kerntap_bpf_map_entries').flatMap((x) => {
        const m = maps.find((k) => k.name === x.labels.map && types[k.type] !== undefined);
        if (!m) return []; // an array: preallocated, its figure is the kernel's on every version
        const computed = hashMapUsage({ type: types[m.type]!, keySize: m.bytes_key, valueSize: m.bytes_value, maxEntries: m.max_entries }, x.value, possibleCpus());
        return [{ ok: computed === m.bytes_memlock, text: `${m.name}: ${x.value} entries, computed ${computed} B, kernel ${m.bytes_memlock} B` }];
      });
      last = rows.map((r) => r.text).join('; ');
      return rows.length >= 4 && rows.every((r) => r.ok) && last;
    }, 20_000).catch(() => undefined);
    assert.ok(agreed, `every hash map's memory, computed from its entries, is the kernel's figure (${last || 'no entries series'})`);
  } finally {
    await e.stop();
  }
});
