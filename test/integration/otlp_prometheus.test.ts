/**
 * A real Prometheus 3 gets kerntap twice: it scrapes /metrics, and it
 * ingests kerntap's OTLP push through its own OTLP receiver, with its own
 * OTel → Prometheus translation of names, units and attributes. Every
 * series must come out the same both ways: same name, same labels, same
 * value. Polls are 15 s apart here, and the comparison is made between two
 * polls, so both paths carry the same snapshot.
 * With delta temporality (what Dynatrace takes), Prometheus's
 * delta-to-cumulative conversion must add the deltas up to the same values.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { requireBpf, requireTool } from '../helpers/env.js';
import { startExporter, writeConfig } from '../helpers/exporter.js';
import { waitFor } from '../helpers/wait.js';
import { freePort, havePrometheus3, PROMETHEUS3, startPrometheus, type PrometheusServer } from '../helpers/prometheus.js';

const running: { stop(): Promise<unknown> }[] = [];
after(async () => {
  for (const r of running.reverse()) await r.stop().catch(() => undefined);
});

type Series = { metric: Record<string, string>; value: [number, string] };

/** Labels that say where a series came from, not what it is. */
const ORIGIN = new Set(['__name__', 'job', 'instance', 'otel_scope_name', 'otel_scope_version', 'otel_scope_schema_url']);

/**
 * A series' identity. Bucket bounds compare as numbers: Prometheus 3
 * normalises a scraped le="1" to "1.0" but writes an OTLP bound 2^-17 as
 * "0.00000762939453125" and a scraped one as "7.62939453125e-06".
 */
function key(s: Series): string {
  const labels = Object.entries(s.metric).filter(([k, v]) => !ORIGIN.has(k) && v !== '')
    .map(([k, v]): [string, string] => [k, k === 'le' ? String(Number(v)) : v])
    .sort(([a], [b]) => a.localeCompare(b));
  return `${s.metric.__name__}${JSON.stringify(labels)}`;
}

/**
 * kerntap pushing OTLP to a Prometheus 3 that also scrapes it (scrape job
 * "kerntap0", OTLP job "kerntap"), once a second poll has seen some TCP
 * traffic (so histograms have buckets) and both paths carry it.
 */
async function pushAndScrape(env: Record<string, string>, promArgs: string[] = [], withHttp = false): Promise<PrometheusServer> {
  // Prometheus's port first: kerntap needs its URL, and Prometheus kerntap's address.
  const port = await freePort();
  // With the http collector on, Prometheus's scrapes and kerntap's pushes are its HTTP traffic.
  const config = withHttp ? ['--config.file', writeConfig('collectors:\n  http:\n    enabled: true\n')] : [];
  const exporter = await startExporter(['--poll.interval', '15s', ...config], {
    env: { OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `http://127.0.0.1:${port}/api/v1/otlp/v1/metrics`, OTEL_METRIC_EXPORT_INTERVAL: '1000', ...env },
  });
  running.push(exporter);
  const prom = await startPrometheus([{ target: new URL(exporter.url).host }], '1s', {
    binary: PROMETHEUS3, port, args: ['--web.enable-otlp-receiver', ...promArgs],
  });
  running.push(prom);
  for (let i = 0; i < 5; i++) await exporter.scrape('/healthz');
  const metric = withHttp ? 'kerntap_http_client_request_duration_seconds_count' : 'kerntap_tcp_connect_duration_seconds_count';
  const counted = (job: string) => `sum(${metric}{job="${job}"}) > 0`;
  await prom.waitFor(`(${counted('kerntap')}) and (${counted('kerntap0')})`, (r) => r.length > 0, 30_000);
  // Both paths at the same snapshot: its poll count is the same in both (the next poll is 15 s away).
  const polls = async (job: string) => (await prom.query(`kerntap_polls_total{job="${job}"}`)).map((r) => r.value[1]);
  await waitFor('the scrape and the push to carry the same snapshot', async () => {
    const [pushed, scraped] = [await polls('kerntap'), await polls('kerntap0')];
    return pushed.length === 1 && scraped.length === 1 && pushed[0] === scraped[0];
  }, 10_000, 250);
  return prom;
}

/**
 * Same value: the same text, or with `relTolerance`, numbers that far apart
 * at most (deltas of a float counter, added up again, may end an ulp or two
 * off: 1.349779111 against 1.3497791109999997 in one CI run).
 */
function same(a: string, b: string, relTolerance: number): boolean {
  if (a === b) return true;
  const [x, y] = [Number(a), Number(b)];
  return relTolerance > 0 && Number.isFinite(x) && Number.isFinite(y) && Math.abs(x - y) <= relTolerance * Math.max(Math.abs(x), Math.abs(y));
}

async function compare(prom: PrometheusServer, relTolerance = 0): Promise<{ scraped: number; names: Set<string>; onlyScraped: string[]; onlyPushed: string[]; differ: string[] }> {
  const otlp = new Map((await prom.query('{__name__=~"kerntap_.+", job="kerntap"}')).map((s) => [key(s), s.value[1]]));
  const scraped = await prom.query('{__name__=~"kerntap_.+", job="kerntap0"}');
  const scrape = new Map(scraped.map((s) => [key(s), s.value[1]]));
  return {
    scraped: scrape.size,
    names: new Set(scraped.map((s) => s.metric.__name__!)),
    onlyScraped: [...scrape.keys()].filter((k) => !otlp.has(k)),
    onlyPushed: [...otlp.keys()].filter((k) => !scrape.has(k)),
    differ: [...scrape].filter(([k, v]) => otlp.has(k) && !same(v, otlp.get(k)!, relTolerance)).map(([k, v]) => `${k}: scrape ${v}, otlp ${otlp.get(k)}`),
  };
}

test('Prometheus 3: the OTLP push and the scrape give the same series, names, labels and values', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'Prometheus 3 (scripts/test-deps.sh)', havePrometheus3())) return;
  const prom = await pushAndScrape({}, [], true);
  const c = await compare(prom);
  t.diagnostic(`${c.scraped} series compared`);
  assert.ok(c.scraped > 50, 'a real exporter\'s worth of series');
  for (const name of ['kerntap_cgroup_cpu_time_seconds_total', 'kerntap_tcp_connect_duration_seconds_bucket', 'kerntap_tcp_sent_bytes_total', 'kerntap_build_info', 'kerntap_bpf_map_capacity',
    'kerntap_http_server_request_duration_seconds_bucket', 'kerntap_http_client_request_duration_seconds_bucket']) {
    assert.ok(c.names.has(name), `${name} was compared`);
  }
  assert.deepEqual(c.onlyScraped, [], 'every scraped series also came through OTLP');
  assert.deepEqual(c.onlyPushed, [], 'and nothing else did');
  assert.deepEqual(c.differ, [], 'same values');
  // The resource became target_info, with kerntap's identity.
  const info = await prom.query('target_info{job="kerntap"}');
  assert.equal(info.length, 1);
  assert.match(info[0]!.metric.service_version ?? '', /^\d+\.\d+\.\d+$/);
  assert.equal(info[0]!.metric.os_type, 'linux');
});

test('Prometheus 3: delta temporality (as Dynatrace takes it) adds up to the scraped values', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'Prometheus 3 (scripts/test-deps.sh)', havePrometheus3())) return;
  const prom = await pushAndScrape({ OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'delta' }, ['--enable-feature=otlp-deltatocumulative']);
  // 1e-12 of the value: any float rounding, and less than 1 for any count below 10^12.
  const c = await compare(prom, 1e-12);
  t.diagnostic(`${c.scraped} series compared`);
  assert.ok(c.scraped > 50 && c.names.has('kerntap_tcp_connect_duration_seconds_bucket'));
  assert.deepEqual(c.onlyScraped, [], 'every scraped series also came through OTLP');
  assert.deepEqual(c.onlyPushed, []);
  assert.deepEqual(c.differ, [], 'the deltas add up to the same values');
  assert.ok(c.names.has('kerntap_cgroup_cpu_time_seconds_total'), 'a float counter was compared');
});
