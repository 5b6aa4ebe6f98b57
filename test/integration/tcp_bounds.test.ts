/**
 * Bounds of the tcp collector against the kernel: a full flow map keeps
 * counting (under "~overflow", with kerntap_map_overflow_total) and tracked
 * flows stay exact; a full socket table counts the sockets it could not
 * track and never miscounts those it did; flows of closed connections end
 * after flow_ttl while a quiet open connection's flow stays.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mapsHeldBy, requireBpf } from '../helpers/env.js';
import { startExporter, writeConfig, type Exporter } from '../helpers/exporter.js';
import { waitFor, waitForPoll } from '../helpers/wait.js';
import { parseExposition, find, value } from '../helpers/exposition.js';
import { Cleanups, TRAFFIC, freePort, startServer, total, totalOrZero, waitForLine } from '../helpers/net.js';

const fixtures = new Cleanups();
after(() => fixtures.run());

/** The entries the kernel holds in a map of the exporter's, by name (bpftool map dump). */
function kernelEntries(e: Exporter, name: string): number {
  const map = mapsHeldBy(e.pid).find((m) => m.name === name);
  if (!map) throw new Error(`the exporter holds no map named ${name}`);
  return (JSON.parse(execFileSync('bpftool', ['-j', 'map', 'dump', 'id', String(map.id)], { encoding: 'utf8' })) as unknown[]).length;
}

async function exporterWith(tcpConfig: string): Promise<Exporter> {
  const e = await startExporter(['--config.file', writeConfig(`collectors:\n  tcp:\n${tcpConfig}`)]);
  fixtures.add(() => e.stop());
  return e;
}

const OVERFLOW = { cgroup: '~overflow', role: '~overflow', peer: '~overflow', server_port: '~overflow' };

test('a full flow map: overflow counted, the rest summed under ~overflow, tracked flows exact', async (t) => {
  if (!requireBpf(t)) return;
  const MAX_FLOWS = 32;
  const e = await exporterWith(`    max_flows: ${MAX_FLOWS}\n`);
  const server = fixtures.cgroup('kt-bounds-srv');
  const client = fixtures.cgroup('kt-bounds-cli');
  const p = await freePort();
  const N = 10_000;
  // More peers than entries, and enough that some of the entries are ours
  // even when the machine's other connections took some first.
  const PEERS = 80;
  await startServer(server, `server 0.0.0.0 ${p} ${N}`);
  // A poll has run and shows traffic (its own scrapes at least), so every series below exists.
  const before = await waitForPoll(e, undefined, { until: (x) => find(x, 'kerntap_tcp_sent_bytes_total').length > 0 });
  // One connection to each of 127.0.0.1 … 127.0.0.80: 80 client flows.
  const code = await client.runToEnd(`for i in $(seq 1 ${PEERS}); do python3 ${TRAFFIC} client 127.0.0.$i ${p} ${N} 1 || exit 1; done`);
  assert.equal(code, 0);
  const s = await waitForPoll(e);

  const tracked = find(s, 'kerntap_tcp_sent_bytes_total', { cgroup: client.label, role: 'client', server_port: String(p) });
  for (const series of tracked) {
    assert.equal(series.value, N, `tracked flow to ${series.labels.peer} exact`);
    assert.equal(value(s, 'kerntap_tcp_received_bytes_total', series.labels), N);
  }
  assert.ok(tracked.length > 0, 'some flows were tracked, and checked exact above');
  assert.ok(tracked.length < PEERS, `the map could not hold every flow (${tracked.length} tracked)`);
  const overflowed = total(s, 'kerntap_tcp_sent_bytes_total', OVERFLOW) - totalOrZero(before, 'kerntap_tcp_sent_bytes_total', OVERFLOW);
  // ~overflow also takes whatever else the machine did meanwhile: at least ours.
  assert.ok(overflowed >= (PEERS - tracked.length) * N, `the untracked flows' ${(PEERS - tracked.length) * N} bytes are in ~overflow (${overflowed})`);
  assert.ok((value(s, 'kerntap_map_overflow_total', { collector: 'tcp', map: 'flows' }) ?? 0) > 0, 'overflow counted');
  assert.ok((value(s, 'kerntap_bpf_map_entries', { collector: 'tcp', map: 'flows' }) ?? Infinity) <= MAX_FLOWS + 2, `map bounded: ${MAX_FLOWS} + the reserved keys`);
});

test('a full socket table: sockets beyond max_sockets are counted, those tracked are exact, the open gauge returns to zero', async (t) => {
  if (!requireBpf(t)) return;
  const MAX_SOCKETS = 16;
  const e = await exporterWith(`    max_sockets: ${MAX_SOCKETS}\n`);
  const server = fixtures.cgroup('kt-bounds-socks-srv');
  const client = fixtures.cgroup('kt-bounds-socks-cli');
  const p = await freePort();
  // K connections, 2K sockets and a listener: more than the table holds.
  const [N, K] = [1000, 40];
  await startServer(server, `server 127.0.0.1 ${p} ${N}`);
  const hold = client.run(`python3 ${TRAFFIC} hold 127.0.0.1 ${p} ${N} ${K}`, 'pipe');
  await waitForLine(hold, 'ready');
  const cli = { cgroup: client.label, role: 'client', peer: '127.0.0.1', server_port: String(p) };
  const srv = { cgroup: server.label, role: 'server', peer: '127.0.0.1', server_port: String(p) };
  const overflowed = (x: Parameters<typeof value>[0]) => value(x, 'kerntap_map_overflow_total', { collector: 'tcp', map: 'sock_table' }) ?? 0;
  const live = await waitForPoll(e, undefined, { until: (x) => overflowed(x) > 0 });
  assert.ok(overflowed(live) >= 2 * K + 1 - MAX_SOCKETS, `sockets the table could not hold are counted: ${overflowed(live)}`);
  assert.equal(value(live, 'kerntap_bpf_map_capacity', { collector: 'tcp', map: 'sock_table' }), MAX_SOCKETS);
  const entries = (x: Parameters<typeof value>[0]) => value(x, 'kerntap_bpf_map_entries', { collector: 'tcp', map: 'sock_table' });
  assert.equal(entries(live), MAX_SOCKETS, 'the programs\' count of the table\'s entries: full');
  // Every tracked connection is open in the gauge with its exact bytes (the
  // walk reports them at the poll); an untracked one is in neither.
  const tracked = { client: totalOrZero(live, 'kerntap_tcp_connections_active', cli), server: totalOrZero(live, 'kerntap_tcp_connections_active', srv) };
  assert.ok(tracked.client + tracked.server < 2 * K, `not every socket was tracked: ${JSON.stringify(tracked)}`);
  // Made right after the start, when the table holds little else: some are ours.
  assert.ok(tracked.client + tracked.server > 0, 'some sockets were tracked, and are checked exact below');
  for (const [role, labels] of [['client', cli], ['server', srv]] as const) {
    assert.equal(totalOrZero(live, 'kerntap_tcp_sent_bytes_total', labels), tracked[role] * N, `${role}: sent = N per tracked connection`);
    assert.equal(totalOrZero(live, 'kerntap_tcp_received_bytes_total', labels), tracked[role] * N, `${role}: received = N per tracked connection`);
  }
  await client.killAll();
  const closed = await waitForPoll(e, undefined, {
    until: (x) => totalOrZero(x, 'kerntap_tcp_connections_active', cli) === 0 && totalOrZero(x, 'kerntap_tcp_connections_active', srv) === 0,
  });
  // The count matches the table itself once a poll and the dump agree (scrapes come and go).
  let last = '';
  const agreed = await waitFor('sock_table entries = its dump', async () => {
    const n = entries(await waitForPoll(e));
    const held = kernelEntries(e, 'sock_table');
    last = `kerntap ${n}, bpftool ${held}`;
    return n === held && n < MAX_SOCKETS && last;
  }, 20_000).catch(() => undefined);
  assert.ok(agreed, `closed sockets left the table, and kerntap counts what it holds (${last})`);
  for (const [role, labels] of [['client', cli], ['server', srv]] as const) {
    assert.equal(totalOrZero(closed, 'kerntap_tcp_connections_active', labels), 0, `${role}: nothing left open`);
    assert.equal(totalOrZero(closed, 'kerntap_tcp_sent_bytes_total', labels), tracked[role] * N, `${role}: nothing added or lost at close`);
  }
});

test('flow_ttl: closed flows end after the TTL; an open, quiet connection keeps its flow', async (t) => {
  if (!requireBpf(t)) return;
  // Long enough to see the closed flow at the next poll on a loaded machine, short enough to wait for.
  const e = await exporterWith('    flow_ttl: 3s\n');
  const server = fixtures.cgroup('kt-ttl-srv');
  const closedClient = fixtures.cgroup('kt-ttl-closed');
  const openClient = fixtures.cgroup('kt-ttl-open');
  const p = await freePort();
  const N = 5_000;
  await startServer(server, `server 127.0.0.1 ${p} ${N}`);
  assert.equal(await closedClient.runToEnd(`python3 ${TRAFFIC} client 127.0.0.1 ${p} ${N} 2`), 0);
  let s = await waitForPoll(e);
  assert.equal(total(s, 'kerntap_tcp_sent_bytes_total', { cgroup: closedClient.label }), 2 * N, 'seen while fresh');
  const hold = openClient.run(`python3 ${TRAFFIC} hold 127.0.0.1 ${p} ${N} 1`, 'pipe');
  await waitForLine(hold, 'ready');
  s = await waitForPoll(e);
  assert.equal(total(s, 'kerntap_tcp_sent_bytes_total', { cgroup: openClient.label }), N);

  // Expiry runs at a poll once the TTL has passed: well within 15 s.
  s = await waitFor('the closed flow to expire', async () => {
    const now = parseExposition(await e.scrape());
    return find(now, 'kerntap_tcp_sent_bytes_total', { cgroup: closedClient.label }).length === 0 && now;
  }, 15_000);
  assert.equal(total(s, 'kerntap_tcp_sent_bytes_total', { cgroup: openClient.label }), N, 'open connection\'s flow kept');
  assert.equal(total(s, 'kerntap_tcp_connections_active', { cgroup: openClient.label }), 1);
});
