/**
 * The shipped Grafana dashboards: structural invariants, and every panel's
 * query (template variables substituted) returns data from a real
 * Prometheus scraping a real kerntap under generated load.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT, requireBpf, requireTool } from '../helpers/env.js';
import { startExporter, sleep, writeConfig } from '../helpers/exporter.js';
import { TestCgroup } from '../helpers/cgroup.js';
import { TRAFFIC, waitForLine } from '../helpers/net.js';
import { havePrometheus, startPrometheus } from '../helpers/prometheus.js';

interface Target { expr: string; datasource: { uid: string } }
interface Panel { id: number; title: string; type: string; datasource: { uid: string }; targets: Target[] }
interface Dashboard { uid: string; title: string; panels: Panel[]; templating: { list: { name: string; type: string; query: unknown }[] } }

const DIR = path.join(ROOT, 'dashboards');
const dashboards: Dashboard[] = readdirSync(DIR).filter((f) => f.endsWith('.json')).map((f) => JSON.parse(readFileSync(path.join(DIR, f), 'utf8')) as Dashboard);

const cleanup: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

test('dashboards: unique ids, data source by variable, no hard-coded instance', () => {
  assert.ok(dashboards.length >= 3);
  assert.equal(new Set(dashboards.map((d) => d.uid)).size, dashboards.length, 'unique dashboard uids');
  for (const d of dashboards) {
    const ids = d.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, `${d.title}: unique panel ids`);
    assert.ok(d.templating.list.some((v) => v.name === 'datasource' && v.type === 'datasource'), `${d.title}: datasource variable`);
    for (const p of d.panels) {
      assert.equal(p.datasource.uid, '${datasource}', `${d.title} / ${p.title}: panel data source is the variable`);
      assert.ok(p.targets.length > 0, `${d.title} / ${p.title}: has queries`);
      for (const t of p.targets) {
        assert.equal(t.datasource.uid, '${datasource}');
        assert.doesNotMatch(t.expr, /instance\s*=\s*"/, `${d.title} / ${p.title}: no hard-coded instance`);
        assert.match(t.expr, /\$instance/, `${d.title} / ${p.title}: filtered by $instance`);
      }
    }
  }
});

test('every panel query returns data from a real Prometheus scraping kerntap under load', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'prometheus', havePrometheus())) return;
  const config = writeConfig('bpf:\n  stats: true\n');
  // OTLP towards a closed port, so the export-failure panel has data too.
  const exporter = await startExporter(['--config.file', config, '--poll.interval', '1s'], {
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9', OTEL_METRIC_EXPORT_INTERVAL: '1000', OTEL_EXPORTER_OTLP_TIMEOUT: '300' },
  });
  cleanup.push(() => exporter.stop());

  const parent = TestCgroup.unique('kt-dash');
  cleanup.push(() => parent.destroy());
  const container = new TestCgroup(`docker-${'ab'.repeat(32)}.scope`, parent);
  cleanup.push(() => container.destroy());
  container.run('while :; do :; done');
  const server = new TestCgroup('server', parent);
  cleanup.push(() => server.destroy());
  const client = new TestCgroup('client', parent);
  cleanup.push(() => client.destroy());
  const port = 30000 + (process.pid % 2000);
  const srv = server.run(`python3 ${TRAFFIC} server 127.0.0.1 ${port} 20000`, 'pipe');
  await waitForLine(srv, 'ready');
  client.run(`while :; do python3 ${TRAFFIC} client 127.0.0.1 ${port} 20000 20; python3 ${TRAFFIC} refused 127.0.0.1 1 2; done`);

  const prom = await startPrometheus([{ target: new URL(exporter.url).host }]);
  cleanup.push(() => prom.stop());
  await sleep(12_000);

  const vars: Record<string, string> = { __rate_interval: '20s', __interval: '5s', instance: '.*', cgroup: client.label };
  const empty: string[] = [];
  let queried = 0;
  for (const d of dashboards) {
    for (const p of d.panels) {
      for (const target of p.targets) {
        const expr = target.expr.replace(/\$(\w+)/g, (_, v: string) => vars[v] ?? `$${v}`);
        assert.doesNotMatch(expr, /\$\w/, `${p.title}: every variable substituted`);
        const result = await prom.query(expr);
        queried++;
        if (result.length === 0) empty.push(`${d.title} / ${p.title}: ${expr}`);
      }
    }
    for (const v of d.templating.list.filter((x) => x.type === 'query')) {
      const q = (v.query as { query: string }).query;
      const selector = /label_values\((.*), \w+\)$/.exec(q)![1]!.replace(/\$(\w+)/g, (_, x: string) => vars[x] ?? '');
      if ((await prom.query(selector)).length === 0) empty.push(`${d.title} variable ${v.name}: ${q}`);
    }
  }
  assert.deepEqual(empty, [], `all ${queried} panel queries return data`);
});
