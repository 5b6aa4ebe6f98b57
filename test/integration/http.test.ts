/**
 * The http collector against the kernel and real servers: a Python HTTP/1.1
 * server and client in two cgroups with known numbers of requests per
 * status (keep-alive and new connections, 100 Continue, a chunked body that
 * contains a status line), a delayed endpoint, two ports in one cgroup,
 * hostile input, and wrk -> nginx against nginx's own access log.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT, requireBpf, requireTool } from '../helpers/env.js';
import { startExporter, writeConfig, type Exporter } from '../helpers/exporter.js';
import { find, parseExposition, type Sample } from '../helpers/exposition.js';
import { havePrometheus, promtoolCheckMetrics } from '../helpers/prometheus.js';
import { Cleanups, exited, freePort, total, waitForLine } from '../helpers/net.js';
import type { TestCgroup } from '../helpers/cgroup.js';
import { waitForPoll } from '../helpers/wait.js';
import { writeNginxSite } from '../../bench/common.js';

const PEER = path.join(ROOT, 'test/helpers/http_peer.py');
const SERVER = 'kerntap_http_server_request_duration_seconds';
const CLIENT = 'kerntap_http_client_request_duration_seconds';
const fixtures = new Cleanups();
let exporter: Exporter | undefined;

before(async () => {
  if (process.getuid?.() !== 0) return;
  exporter = await startExporter(['--config.file', writeConfig('collectors:\n  http:\n    enabled: true\n')]);
});
after(async () => {
  await fixtures.run();
  await exporter?.stop();
});

/** Waits for a poll after which `done` holds (or for timeoutMs), then for one whole poll more, so that late extras would show. */
async function scrapeWhen(done: (s: Sample[]) => boolean, timeoutMs = 20_000): Promise<Sample[]> {
  await waitForPoll(exporter!, undefined, { until: done, timeoutMs }).catch(() => undefined); // the assertions that follow say what is missing
  return waitForPoll(exporter!);
}

async function startPeerServer(cg: TestCgroup, ...ports: number[]): Promise<void> {
  const child = cg.run(`exec python3 ${PEER} serve ${ports.join(' ')}`, 'pipe');
  await waitForLine(child, 'ready');
}

async function runPeer(cg: TestCgroup, args: string): Promise<void> {
  const child = cg.run(`exec python3 ${PEER} ${args}`);
  assert.equal(await exited(child), 0, `http_peer.py ${args.slice(0, 80)} succeeded`);
}

/** Request counts per (method, status) of one side, for the given labels. */
function counts(s: Sample[], metric: string, labels: Record<string, string>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of find(s, `${metric}_count`, labels)) {
    const k = `${x.labels.http_request_method} ${x.labels.http_response_status_code}`;
    out[k] = (out[k] ?? 0) + x.value;
  }
  return out;
}

const sum = (c: Record<string, number>) => Object.values(c).reduce((a, b) => a + b, 0);

test('exact counts per status on both sides, keep-alive and new connections; delayed requests in buckets at or above the delay', async (t) => {
  if (!requireBpf(t)) return;
  const server = fixtures.cgroup('kt-http-srv');
  const client = fixtures.cgroup('kt-http-cli');
  const port = await freePort();
  const delayMs = 200;
  await startPeerServer(server, port);
  const plan = [
    { path: '/ok', n: 7, status: 200 },
    { path: '/missing', n: 3, status: 404 },
    { path: '/error', n: 2, status: 500 },
    { path: '/chunked', n: 2, status: 200 },
    { path: '/upload', method: 'POST', expect100: true, n: 2, status: 201 },
    { path: '/ok', n: 5, status: 200, conn: 'new' },
    { path: '/missing', n: 4, status: 404, conn: 'new' },
    { path: `/slow?ms=${delayMs}`, n: 3, status: 202, conn: 'new' },
    { path: `/slow?ms=${delayMs}`, n: 2, status: 202 },
  ];
  await runPeer(client, `client ${port} '${JSON.stringify(plan)}'`);
  const want = { 'GET 200': 14, 'GET 404': 7, 'GET 500': 2, 'POST 201': 2, 'GET 202': 5 };
  const srv = { cgroup: server.label, server_port: String(port) };
  const cli = { cgroup: client.label, server_address: '127.0.0.1', server_port: String(port) };
  const s = await scrapeWhen((x) => sum(counts(x, SERVER, srv)) >= 30 && sum(counts(x, CLIENT, cli)) >= 30);
  assert.deepEqual(counts(s, SERVER, srv), want, 'server side, by method and status');
  assert.deepEqual(counts(s, CLIENT, cli), want, 'client side, by method and status');
  assert.deepEqual(counts(s, SERVER, { cgroup: client.label }), {}, 'the client is no server');
  assert.deepEqual(counts(s, CLIENT, { cgroup: server.label }), {}, 'the server is no client');

  for (const [metric, labels] of [[SERVER, srv], [CLIENT, cli]] as const) {
    const slow = { ...labels, http_response_status_code: '202' };
    const buckets = find(s, `${metric}_bucket`, slow);
    assert.ok(buckets.length > 0, `${metric}: buckets of the delayed endpoint`);
    for (const b of buckets) {
      if (Number(b.labels.le) < delayMs / 1000) assert.equal(b.value, 0, `${metric}: nothing faster than the delay (le=${b.labels.le})`);
    }
    const mean = total(s, `${metric}_sum`, slow) / total(s, `${metric}_count`, slow);
    assert.ok(mean >= delayMs / 1000 && mean < delayMs / 1000 + 0.2, `${metric}: mean of the delayed requests ${mean} s`);
  }
});

test('two servers on two ports in one cgroup are told apart by server_port', async (t) => {
  if (!requireBpf(t)) return;
  const server = fixtures.cgroup('kt-http-two');
  const client = fixtures.cgroup('kt-http-cli2');
  const [p1, p2] = [await freePort(), await freePort()];
  await startPeerServer(server, p1, p2);
  await runPeer(client, `client ${p1} '${JSON.stringify([{ path: '/ok', n: 3, status: 200 }])}'`);
  await runPeer(client, `client ${p2} '${JSON.stringify([{ path: '/ok', n: 5, status: 200 }, { path: '/error', n: 1, status: 500 }])}'`);
  const s = await scrapeWhen((x) => sum(counts(x, SERVER, { cgroup: server.label })) >= 9);
  assert.deepEqual(counts(s, SERVER, { cgroup: server.label, server_port: String(p1) }), { 'GET 200': 3 });
  assert.deepEqual(counts(s, SERVER, { cgroup: server.label, server_port: String(p2) }), { 'GET 200': 5, 'GET 500': 1 });
  assert.deepEqual(counts(s, CLIENT, { cgroup: client.label, server_port: String(p2) }), { 'GET 200': 5, 'GET 500': 1 });
});

test('hostile input: invalid UTF-8, an oversized method and binary garbage count as no request; the exposition stays valid', async (t) => {
  if (!requireBpf(t)) return;
  const server = fixtures.cgroup('kt-http-hostile');
  const client = fixtures.cgroup('kt-http-evil');
  const port = await freePort();
  await startPeerServer(server, port);
  const hex = (b: Buffer | string) => Buffer.from(b).toString('hex');
  const get = (target: Buffer | string, extra = '') => Buffer.concat([Buffer.from('GET '), Buffer.from(target), Buffer.from(` HTTP/1.1\r\nHost: x\r\n${extra}\r\n`)]);
  const garbage = Buffer.from(Array.from({ length: 200 }, (_, i) => (i * 151 + 7) % 256));
  const connections = [
    hex(Buffer.concat([Buffer.from([0xff, 0xfe, 0xc3, 0x28]), Buffer.from(' / HTTP/1.1\r\n\r\n')])), // invalid UTF-8 as the method
    hex(`${'A'.repeat(4096)} / HTTP/1.1\r\n\r\n`), // oversized method
    hex(garbage),
    `${hex(get('/ok'))},${hex(garbage)}`, // a good request, then garbage on the same connection
    hex(get(Buffer.from([0x2f, 0xff, 0xfe, 0x80]))), // a GET whose target is not UTF-8: a real request, answered 404
  ];
  await runPeer(client, `raw ${port} ${connections.join(' ')}`);
  const s = await scrapeWhen((x) => sum(counts(x, SERVER, { cgroup: server.label })) >= 2);
  assert.deepEqual(counts(s, SERVER, { cgroup: server.label }), { 'GET 200': 1, 'GET 404': 1 },
    'only the two real requests; the 400/501 answers to garbage are not requests');
  assert.deepEqual(counts(s, CLIENT, { cgroup: client.label }), { 'GET 200': 1, 'GET 404': 1 });
  if (!requireTool(t, 'promtool', havePrometheus())) return;
  const check = promtoolCheckMetrics(await exporter!.scrape());
  assert.equal(check.status, 0, check.output);
});

test('a keep-alive connection opened before kerntap started is picked up from its next request', async (t) => {
  if (!requireBpf(t)) return;
  const server = fixtures.cgroup('kt-http-old');
  const client = fixtures.cgroup('kt-http-oldcli');
  const port = await freePort();
  const go = path.join(mkdtempSync(path.join(tmpdir(), 'kt-http-')), 'go');
  const n = 6;
  await startPeerServer(server, port);
  const holder = client.run(`exec python3 ${PEER} hold ${port} ${n} ${go}`, 'pipe');
  await waitForLine(holder, 'ready');
  const late = await startExporter(['--config.file', writeConfig('collectors:\n  http:\n    enabled: true\n')]);
  fixtures.add(() => late.stop());
  writeFileSync(go, '');
  assert.equal(await exited(holder), 0);
  const srv = { cgroup: server.label, server_port: String(port) };
  const cli = { cgroup: client.label, server_port: String(port) };
  await waitForPoll(late, undefined, { until: (s) => sum(counts(s, CLIENT, cli)) >= n }).catch(() => undefined);
  const s = await waitForPoll(late); // one whole poll more: late extras would show
  assert.deepEqual(counts(s, CLIENT, cli), { 'GET 200': n }, 'client side: every request written after the start');
  // The server's thread was already blocked in recv() when kerntap attached:
  // that read's buffer was never seen, so its request is not counted.
  assert.deepEqual(counts(s, SERVER, srv), { 'GET 200': n - 1 }, 'server side: from the request after the read in progress');
});

function haveNginxAndWrk(): boolean {
  return ['nginx', 'wrk'].every((tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0 || existsSync(`/usr/sbin/${tool}`));
}

test('wrk -> nginx, keep-alive, Connection: close and pipelined: the server-side count equals nginx\'s access log', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'nginx and wrk', haveNginxAndWrk())) return;
  const server = fixtures.cgroup('kt-http-nginx');
  const load = fixtures.cgroup('kt-http-wrk');
  const port = await freePort();
  const conf = writeNginxSite(port, { workers: 1, accessLog: true });
  const log = path.join(path.dirname(conf), 'access.log');
  server.run(`exec nginx -c ${conf}`);
  fixtures.add(() => server.killAll());
  for (let i = 0; i < 100 && spawnSync('curl', ['-so', '/dev/null', `http://127.0.0.1:${port}/`]).status !== 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  for (const extra of ['', `-H 'Connection: close'`]) {
    await load.runToEnd(`wrk -t1 -c4 -d2s ${extra} http://127.0.0.1:${port}/`);
  }
  // Pipelining: nginx reads the requests in one read and writes each response in one writev.
  const pipelined = 5;
  const pipeClient = fixtures.cgroup('kt-http-pipe');
  for (let i = 0; i < 4; i++) await runPeer(pipeClient, `pipeline ${port} ${pipelined}`);
  await load.runToEnd(`wrk -t1 -c2 -d1s http://127.0.0.1:${port}/missing`);
  const lines = () => readFileSync(log, 'utf8').split('\n').filter(Boolean);
  const byStatus = (status: string) => lines().filter((l) => l.split(' ')[8] === status).length;
  const srv = { cgroup: server.label, server_port: String(port) };
  const s = await scrapeWhen((x) => sum(counts(x, SERVER, srv)) >= lines().length);
  const seen = counts(s, SERVER, srv);
  assert.ok(lines().length > 1000, `wrk made requests (${lines().length})`);
  assert.equal(seen['GET 200'], byStatus('200'), 'GET 200 = access log lines with 200 (the readiness probes included)');
  assert.equal(seen['GET 404'], byStatus('404'));
  // 499: the client closed before the answer (none expected for a static page, but not an answer either).
  assert.equal(sum(seen), lines().filter((l) => l.split(' ')[8] !== '499').length, 'every answered request in the log, nothing more');
  const clientSide = sum(counts(s, CLIENT, { cgroup: load.label, server_port: String(port) }));
  const byPipeline = 4 * pipelined;
  // wrk stops mid-request at its deadline: those requests are neither logged nor answered.
  const byWrk = lines().length - byPipeline - 1; // less the readiness probe that succeeded
  assert.ok(clientSide <= byWrk && clientSide >= byWrk - 8, `wrk's client side ${clientSide} ≈ ${byWrk}`);
  // Pipelined responses that arrive in one read are seen as one on the client side (docs/http.md).
  const piped = sum(counts(s, CLIENT, { cgroup: pipeClient.label }));
  assert.ok(piped >= 4 && piped <= byPipeline, `pipelining client side: ${piped} of ${byPipeline}, at least one per read`);
});
