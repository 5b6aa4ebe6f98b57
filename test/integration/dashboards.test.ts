/**
 * The shipped Grafana dashboards and their provisioning: structural
 * invariants of Grafana's dashboard model (unique ids, grid layout, data
 * source by variable, every variable defined, no hard-coded instance), every
 * metric they query defined by kerntap, every histogram shown as a heatmap and
 * as p50/p90/p99 — and every panel query, with its template variables set to
 * real values, returns data from a real Prometheus scraping a real kerntap
 * under generated load (CPU in container-, pod- and unit-shaped cgroups with
 * names from a CRI stand-in, TCP traffic and refused connects on loopback).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ROOT, requireBpf, requireTool } from '../helpers/env.js';
import { startExporter, writeConfig } from '../helpers/exporter.js';
import { waitFor } from '../helpers/wait.js';
import { TestCgroup } from '../helpers/cgroup.js';
import { TRAFFIC, waitForLine } from '../helpers/net.js';
import { freePort, havePrometheus, startPrometheus } from '../helpers/prometheus.js';
import { socketDir, startFakeCri } from '../helpers/runtimes.js';
import { collectorDefinitions } from '../../src/collectors/index.js';
import { allSelfMetricDefs } from '../../src/selfmetrics.js';
import { otlpExports } from '../../src/exporters/otlp.js';
import { prometheusName, type MetricDef } from '../../src/model/metric.js';

interface Target { expr: string; format?: string; datasource: { uid: string } }
interface Panel { id: number; title: string; type: string; datasource: { uid: string }; gridPos: { x: number; y: number; w: number; h: number }; targets: Target[] }
interface Variable { name: string; type: string; query: string | { query: string }; datasource?: { uid: string }; allValue?: string }
interface Dashboard { uid: string; title: string; panels: Panel[]; templating: { list: Variable[] } }

const DIR = path.join(ROOT, 'dashboards');
const HTTP_PEER = path.join(ROOT, 'test/helpers/http_peer.py');
const dashboards: Dashboard[] = readdirSync(DIR).filter((f) => f.endsWith('.json')).sort()
  .map((f) => JSON.parse(readFileSync(path.join(DIR, f), 'utf8')) as Dashboard);
const everyTarget = dashboards.flatMap((d) => d.panels.flatMap((p) => p.targets.map((t) => ({ d, p, t }))));
const BUILTINS = new Set(['__rate_interval', '__interval', '__range']);
const PANEL_TYPES = new Set(['timeseries', 'heatmap', 'stat', 'table']);

/** Prometheus series names kerntap can produce. */
function knownSeries(): Set<string> {
  const defs: MetricDef[] = [...collectorDefinitions.flatMap((c) => c.metrics), ...allSelfMetricDefs, otlpExports];
  return new Set(defs.flatMap((def) => {
    const name = prometheusName(def);
    return def.kind === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name];
  }));
}

const cleanup: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

test('dashboards: unique ids, grid layout, data source by variable, defined variables, no hard-coded instance', () => {
  assert.deepEqual(dashboards.map((d) => d.uid), ['kerntap-cgroup', 'kerntap-exporter', 'kerntap-node']);
  assert.equal(new Set(dashboards.map((d) => d.title)).size, dashboards.length, 'unique titles');
  for (const d of dashboards) {
    const ids = d.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, `${d.title}: unique panel ids`);
    const vars = new Set(d.templating.list.map((v) => v.name));
    assert.ok(d.templating.list.some((v) => v.name === 'datasource' && v.type === 'datasource' && v.query === 'prometheus'), `${d.title}: datasource variable`);
    for (const v of d.templating.list.filter((x) => x.type === 'query')) {
      assert.equal(v.datasource?.uid, '${datasource}', `${d.title} variable ${v.name}: data source is the variable`);
      assert.match((v.query as { query: string }).query, /^label_values\(/, `${d.title} variable ${v.name}`);
    }
    const cells = new Set<string>();
    for (const p of d.panels) {
      const where = `${d.title} / ${p.title}`;
      assert.ok(PANEL_TYPES.has(p.type), `${where}: panel type ${p.type}`);
      const { x, y, w, h } = p.gridPos;
      assert.ok(x >= 0 && w > 0 && x + w <= 24 && h > 0 && y >= 0, `${where}: inside the 24-column grid`);
      for (let cx = x; cx < x + w; cx++) {
        for (let cy = y; cy < y + h; cy++) {
          assert.ok(!cells.has(`${cx},${cy}`), `${where}: overlaps another panel at ${cx},${cy}`);
          cells.add(`${cx},${cy}`);
        }
      }
      assert.equal(p.datasource.uid, '${datasource}', `${where}: panel data source is the variable`);
      assert.ok(p.targets.length > 0, `${where}: has queries`);
      for (const t of p.targets) {
        assert.equal(t.datasource.uid, '${datasource}', `${where}: query data source is the variable`);
        assert.doesNotMatch(t.expr, /instance\s*=~?\s*"(?!\$instance")/, `${where}: no hard-coded instance`);
        assert.match(t.expr, /instance=~"\$instance"/, `${where}: filtered by $instance`);
        for (const [, name] of t.expr.matchAll(/\$(\w+)/g)) {
          if (/^\d+$/.test(name!)) continue; // label_replace's $1
          assert.ok(vars.has(name!) || BUILTINS.has(name!), `${where}: $${name} is defined`);
        }
      }
    }
  }
});

test('dashboards query only metrics kerntap defines; every histogram as a heatmap and as p50/p90/p99', () => {
  const known = knownSeries();
  for (const { d, p, t } of everyTarget) {
    for (const [name] of t.expr.matchAll(/\bkerntap_[a-z0-9_]+/g)) {
      assert.ok(known.has(name), `${d.title} / ${p.title}: ${name} is not a kerntap metric`);
    }
  }
  const histograms = new Set([...everyTarget.flatMap(({ t }) => [...t.expr.matchAll(/\b(kerntap_\w+)_bucket\b/g)].map((m) => m[1]!))]);
  assert.ok(histograms.size >= 4, `histograms shown: ${[...histograms].join(', ')}`);
  for (const h of histograms) {
    const uses = everyTarget.filter(({ t }) => t.expr.includes(`${h}_bucket`));
    const heatmaps = uses.filter(({ p }) => p.type === 'heatmap');
    for (const { p, t } of heatmaps) {
      assert.equal(t.format, 'heatmap', `${p.title}: heatmap query format`);
      assert.match(t.expr, /^sum by \(le\) \(increase\(/, `${p.title}: bucket increases per le`);
    }
    const quantiles = new Set(uses.flatMap(({ t }) => [...t.expr.matchAll(/histogram_quantile\((0\.\d+),/g)].map((m) => m[1])));
    assert.ok(heatmaps.length > 0 || h === 'kerntap_tcp_connection_duration_seconds', `${h}: shown as a heatmap`);
    assert.deepEqual([...quantiles].sort(), ['0.5', '0.9', '0.99'], `${h}: p50, p90 and p99`);
  }
});

test('provisioning: the Prometheus data source and the dashboards folder that docker-compose.yml mounts', () => {
  const datasources = parseYaml(readFileSync(path.join(DIR, 'provisioning/datasources/prometheus.yaml'), 'utf8')) as { datasources: { type: string; url: string }[] };
  assert.equal(datasources.datasources[0]!.type, 'prometheus');
  const provider = parseYaml(readFileSync(path.join(DIR, 'provisioning/dashboards/kerntap.yaml'), 'utf8')) as { providers: { type: string; options: { path: string } }[] };
  assert.equal(provider.providers[0]!.type, 'file');
  const compose = parseYaml(readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8')) as { services: Record<string, { volumes?: string[] }> };
  const mounts = Object.fromEntries(compose.services.grafana!.volumes!.map((v) => v.split(':')).map(([src, dst]) => [dst, src]));
  assert.equal(mounts[provider.providers[0]!.options.path], './dashboards', 'the provider reads the dashboards folder');
  assert.equal(mounts['/etc/grafana/provisioning'], './dashboards/provisioning');
  assert.ok(datasources.datasources[0]!.url.startsWith('http://prometheus:'), 'the compose service name');
});

test('every panel query returns data from a real Prometheus scraping kerntap under load', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'prometheus', havePrometheus())) return;
  const uid = '0e4f6a3b-2c1d-4e5f-9a8b-7c6d5e4f3a2b';
  const [server, client, sandbox] = ['5e'.repeat(32), 'c1'.repeat(32), 'ab'.repeat(32)];
  const cri = await startFakeCri(path.join(socketDir(), 'containerd.sock'), [
    { sandboxId: sandbox, uid, name: 'web-5c6f', namespace: 'shop', containers: { [server]: 'server', [client]: 'client' } },
  ]);
  cleanup.push(() => cri.close());
  const config = writeConfig([
    'bpf:', '  stats: true',
    // The stand-in's socket is root's; stay root so it can be used.
    'security:', '  drop_privileges: false',
    'cgroup:', '  runtime_sockets:', `    containerd: ${cri.socket}`, "    docker: ''", "    podman: ''", "    crio: ''",
    // The opt-in http collector, for the HTTP panels.
    'collectors:', '  http:', '    enabled: true', '',
  ].join('\n'));
  // OTLP towards a closed port, so the export-failure panel has data too.
  const closedPort = await freePort();
  const exporter = await startExporter(['--config.file', config, '--poll.interval', '1s'], {
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${closedPort}`, OTEL_METRIC_EXPORT_INTERVAL: '1000', OTEL_EXPORTER_OTLP_TIMEOUT: '300' },
  });
  cleanup.push(() => exporter.stop());

  const parent = TestCgroup.unique('kt-dash');
  cleanup.push(() => parent.destroy());
  const cgroup = (rel: string) => {
    let cg = parent;
    for (const part of rel.split('/')) {
      cg = new TestCgroup(part, cg);
      const made = cg;
      cleanup.push(() => made.destroy());
    }
    return cg;
  };
  cgroup(`docker-${'d0'.repeat(32)}.scope`).run('while :; do :; done');
  cgroup('demo.service').run('i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 600');
  const pod = `kubepods/burstable/pod${uid}`;
  const serverCg = cgroup(`${pod}/${server}`);
  const clientCg = cgroup(`${pod}/${client}`);
  const port = await freePort();
  const srv = serverCg.run(`python3 ${TRAFFIC} server 127.0.0.1 ${port} 20000`, 'pipe');
  await waitForLine(srv, 'ready');
  clientCg.run(`while :; do python3 ${TRAFFIC} client 127.0.0.1 ${port} 20000 20; python3 ${TRAFFIC} refused 127.0.0.1 ${closedPort} 2; done`);
  const httpPort = await freePort();
  const web = serverCg.run(`exec python3 ${HTTP_PEER} serve ${httpPort}`, 'pipe');
  await waitForLine(web, 'ready');
  const plan = JSON.stringify([{ path: '/ok', n: 20, status: 200 }, { path: '/error', n: 2, status: 500 }]);
  clientCg.run(`while :; do python3 ${HTTP_PEER} client ${httpPort} '${plan}'; sleep 0.2; done`);

  const instance = new URL(exporter.url).host;
  const prom = await startPrometheus([{ target: instance }]);
  cleanup.push(() => prom.stop());

  // As Grafana renders them: a multi-value variable becomes a regex alternation, "All" its allValue.
  const vars: Record<string, string> = {
    __rate_interval: '20s', __interval: '5s', __range: '1m',
    instance, namespace: 'shop', pod: 'web-5c6f', container: '(client|server)', cgroup: '.*',
  };
  const substitute = (expr: string) => expr.replace(/\$(\w+)/g, (whole, v: string) => vars[v] ?? whole);
  const emptyQueries = async () => {
    const empty: string[] = [];
    let queried = 0;
    for (const { d, p, t: target } of everyTarget) {
      const expr = substitute(target.expr);
      assert.doesNotMatch(expr, /\$[A-Za-z_]/, `${p.title}: every variable substituted`);
      const result = await prom.query(expr);
      queried++;
      if (result.length === 0) empty.push(`${d.title} / ${p.title}: ${expr}`);
    }
    for (const d of dashboards) {
      for (const v of d.templating.list.filter((x) => x.type === 'query')) {
        const selector = substitute(/^label_values\((.*), \w+\)$/.exec((v.query as { query: string }).query)![1]!);
        if ((await prom.query(selector)).length === 0) empty.push(`${d.title} variable ${v.name}: ${selector}`);
      }
    }
    return { empty, queried };
  };
  // Rates need a few scrapes: until every query has data (if some never do, the assertion names them).
  await waitFor('every panel query to return data', async () => (await emptyQueries()).empty.length === 0, 60_000, 1000).catch(() => undefined);
  const { empty, queried } = await emptyQueries();
  assert.deepEqual(empty, [], `all ${queried} panel queries and the variables return data`);
  t.diagnostic(`${queried} panel queries and ${dashboards.flatMap((d) => d.templating.list.filter((v) => v.type === 'query')).length} variable queries returned data`);
  assert.ok(queried >= 50, `${queried} queries`);

  // The drill-down's filters select what they name: the pod's two containers, by name.
  const perContainer = await prom.query(substitute('sum by (container_name, k8s_pod_name, k8s_namespace_name) (kerntap_cgroup_cpu_time_seconds_total{instance=~"$instance", k8s_namespace_name=~"$namespace", k8s_pod_name=~"$pod", container_name=~"$container"})'));
  assert.deepEqual(perContainer.map((r) => r.metric.container_name).sort(), ['client', 'server']);
  assert.ok(perContainer.every((r) => r.metric.k8s_pod_name === 'web-5c6f' && r.metric.k8s_namespace_name === 'shop'));
});
