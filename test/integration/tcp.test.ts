/**
 * The tcp collector against the kernel: known byte counts (loopback and
 * across a veth into another network namespace, live and closed), `ss -ti`,
 * /proc/net/snmp (ActiveOpens, AttemptFails, RetransSegs), queueing delay
 * seen by `ss`, and hostile process names that must not break the format.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { requireBpf, requireTool } from '../helpers/env.js';
import { startExporter, writeConfig } from '../helpers/exporter.js';
import { waitFor, waitForPoll } from '../helpers/wait.js';
import { parseExposition, find } from '../helpers/exposition.js';
import { havePrometheus, promtoolCheckMetrics } from '../helpers/prometheus.js';
import { tcpTestFile, TRAFFIC, exited, freePort, haveNft, runClient, ssClients, startServer, tcpMib, total, waitForLine, waitForTcpQuiet } from '../helpers/net.js';

const { fixtures, scrape, settled, exporter } = tcpTestFile(before, after);


test('loopback: M connections × N bytes are counted exactly on both sides, after they closed', async (t) => {
  if (!requireBpf(t)) return;
  const server = fixtures.cgroup('kt-tcp-srv');
  const client = fixtures.cgroup('kt-tcp-cli');
  const p = await freePort();
  const N = 100_000;
  const M = 20;
  await startServer(server, `server 127.0.0.1 ${p} ${N}`);
  await runClient(client, `client 127.0.0.1 ${p} ${N} ${M}`);
  const s = await settled();
  const cli = { cgroup: client.label, role: 'client', peer: '127.0.0.1', server_port: String(p) };
  const srv = { cgroup: server.label, role: 'server', peer: '127.0.0.1', server_port: String(p) };
  assert.equal(total(s, 'kerntap_tcp_sent_bytes_total', cli), M * N, 'client sent');
  assert.equal(total(s, 'kerntap_tcp_received_bytes_total', cli), M * N, 'client received');
  assert.equal(total(s, 'kerntap_tcp_sent_bytes_total', srv), M * N, 'server sent');
  assert.equal(total(s, 'kerntap_tcp_received_bytes_total', srv), M * N, 'server received');
  assert.equal(total(s, 'kerntap_tcp_connect_duration_seconds_count', { cgroup: client.label }), M, 'one connect latency per connection');
  assert.equal(total(s, 'kerntap_tcp_handshake_duration_seconds_count', { cgroup: server.label }), M, 'one handshake per accepted connection');
  assert.equal(total(s, 'kerntap_tcp_connection_duration_seconds_count', { cgroup: client.label, role: 'client' }), M);
  assert.equal(total(s, 'kerntap_tcp_connection_duration_seconds_count', { cgroup: server.label, role: 'server' }), M);
  assert.equal(total(s, 'kerntap_tcp_connections_active', cli), 0, 'all closed');
  assert.ok(total(s, 'kerntap_tcp_rtt_seconds_count', { cgroup: client.label }) > 0, 'RTT samples');
  assert.equal(total(s, 'kerntap_tcp_listeners', { cgroup: server.label, port: String(p), comm: 'python3' }), 1);
});

test('one cgroup serving two ports: server_port tells each service\'s exact bytes apart, on both roles', async (t) => {
  if (!requireBpf(t)) return;
  const server = fixtures.cgroup('kt-tcp-2srv');
  const client = fixtures.cgroup('kt-tcp-2cli');
  const [p1, p2] = [await freePort(), await freePort()];
  const [N1, M1, N2, M2] = [30_000, 3, 70_000, 5];
  await startServer(server, `server 127.0.0.1 ${p1} ${N1}`);
  await startServer(server, `server 127.0.0.1 ${p2} ${N2}`);
  await runClient(client, `client 127.0.0.1 ${p1} ${N1} ${M1}`);
  await runClient(client, `client 127.0.0.1 ${p2} ${N2} ${M2}`);
  const s = await settled();
  for (const [port, bytes] of [[p1, M1 * N1], [p2, M2 * N2]] as const) {
    for (const [cgroup, role] of [[server.label, 'server'], [client.label, 'client']] as const) {
      const labels = { cgroup, role, peer: '127.0.0.1', server_port: String(port) };
      assert.equal(total(s, 'kerntap_tcp_sent_bytes_total', labels), bytes, `${role} on port ${port} sent`);
      assert.equal(total(s, 'kerntap_tcp_received_bytes_total', labels), bytes, `${role} on port ${port} received`);
    }
  }
  // No server flow is folded to "ephemeral": the server side is keyed by its listening port.
  assert.deepEqual(find(s, 'kerntap_tcp_sent_bytes_total', { cgroup: server.label, server_port: 'ephemeral' }), []);
});

test('live connections: counters and the active gauge agree with ss -ti', async (t) => {
  if (!requireBpf(t)) return;
  const server = fixtures.cgroup('kt-tcp-srv');
  const client = fixtures.cgroup('kt-tcp-cli');
  const p = await freePort();
  const N = 70_000;
  const K = 3;
  await startServer(server, `server 127.0.0.1 ${p} ${N}`);
  const hold = client.run(`python3 ${TRAFFIC} hold 127.0.0.1 ${p} ${N} ${K}`, 'pipe');
  await waitForLine(hold, 'ready');
  const s = await settled();
  const cli = { cgroup: client.label, role: 'client', peer: '127.0.0.1', server_port: String(p) };
  const ours = ssClients('127.0.0.1', p);
  assert.equal(ours.length, K);
  // ss counts the SYN in an active open's bytes_acked; kerntap counts data only.
  const ssAcked = ours.reduce((sum, x) => sum + x.bytesAcked - 1, 0);
  const ssReceived = ours.reduce((sum, x) => sum + x.bytesReceived, 0);
  assert.equal(ssAcked, K * N);
  assert.equal(total(s, 'kerntap_tcp_sent_bytes_total', cli), ssAcked, 'sent = ss bytes_acked');
  assert.equal(total(s, 'kerntap_tcp_received_bytes_total', cli), ssReceived, 'received = ss bytes_received');
  assert.equal(total(s, 'kerntap_tcp_connections_active', cli), K);
  assert.equal(total(s, 'kerntap_tcp_connections_active', { cgroup: server.label, role: 'server' }), K);
  await client.killAll();
  const after = await settled();
  assert.equal(total(after, 'kerntap_tcp_sent_bytes_total', cli), K * N, 'nothing added or lost at close');
  assert.equal(total(after, 'kerntap_tcp_connections_active', cli), 0);
});

test('quiet connections passed over by the socket walk: traffic after a quiet spell is exact at the next poll', async (t) => {
  if (!requireBpf(t)) return;
  const server = fixtures.cgroup('kt-tcp-srv');
  const client = fixtures.cgroup('kt-tcp-cli');
  const p = await freePort();
  const N = 50_000;
  const K = 3;
  const go = fixtures.tempPath('kt-more', p);
  await startServer(server, `server 127.0.0.1 ${p} ${N}`);
  const more = client.run(`python3 ${TRAFFIC} more 127.0.0.1 ${p} ${N} ${K} ${go}`, 'pipe');
  await waitForLine(more, 'ready');
  const cli = { cgroup: client.label, role: 'client', peer: '127.0.0.1', server_port: String(p) };
  const srv = { cgroup: server.label, role: 'server', peer: '127.0.0.1', server_port: String(p) };
  const first = await settled();
  assert.equal(total(first, 'kerntap_tcp_sent_bytes_total', cli), K * N);
  // Two more walks while nothing moves: the second passes over these connections.
  await settled();
  await settled();
  writeFileSync(go, '');
  await waitForLine(more, 'sent');
  // The last ACK of each burst is counted only by the socket walk (tcp_probe fires before a segment is processed).
  await waitFor('ss to show every byte acked', () => {
    const ours = ssClients('127.0.0.1', p);
    return ours.length === K && ours.every((x) => x.bytesAcked - 1 === 2 * N) || undefined;
  });
  const s = await settled();
  assert.equal(total(s, 'kerntap_tcp_sent_bytes_total', cli), 2 * K * N, 'client sent = ss bytes_acked');
  assert.equal(total(s, 'kerntap_tcp_received_bytes_total', srv), 2 * K * N, 'server received');
  assert.equal(total(s, 'kerntap_tcp_received_bytes_total', cli), K * N, 'client received nothing more');
});

test('veth into another network namespace: exact bytes, and connects agree with /proc/net/snmp', async (t) => {
  if (!requireBpf(t)) return;
  const ns = fixtures.netns();
  const server = fixtures.cgroup('kt-tcp-srv');
  const client = fixtures.cgroup('kt-tcp-cli');
  const p = await freePort();
  const closed = await freePort();
  const N = 50_000;
  const M = 12;
  const K = 5;
  await startServer(server, `server ${ns.hostAddr} ${p} ${N}`);
  const mib0 = tcpMib(ns);
  await runClient(client, `client ${ns.hostAddr} ${p} ${N} ${M}`, ns.prefix);
  await runClient(client, `refused ${ns.hostAddr} ${closed} ${K}`, ns.prefix);
  const mib1 = tcpMib(ns);
  const s = await settled();
  const cli = { cgroup: client.label, role: 'client', peer: ns.hostAddr, server_port: String(p) };
  const srv = { cgroup: server.label, role: 'server', peer: ns.nsAddr, server_port: String(p) };
  assert.equal(total(s, 'kerntap_tcp_sent_bytes_total', cli), M * N, 'client in the namespace sent');
  assert.equal(total(s, 'kerntap_tcp_received_bytes_total', cli), M * N);
  assert.equal(total(s, 'kerntap_tcp_sent_bytes_total', srv), M * N, 'server in the root namespace sent');
  assert.equal(total(s, 'kerntap_tcp_received_bytes_total', srv), M * N);

  const connects = total(s, 'kerntap_tcp_connect_duration_seconds_count', { cgroup: client.label });
  const refused = total(s, 'kerntap_tcp_connects_failed_total', { cgroup: client.label, peer: ns.hostAddr, server_port: String(closed), reason: 'refused' });
  assert.equal(connects, M);
  assert.equal(refused, K);
  assert.equal(mib1.ActiveOpens! - mib0.ActiveOpens!, M + K, 'the namespace opened M+K connections');
  assert.equal(mib1.AttemptFails! - mib0.AttemptFails!, K, 'of which K failed');
  assert.equal(connects + refused, mib1.ActiveOpens! - mib0.ActiveOpens!);
  assert.ok(total(s, 'kerntap_tcp_resets_total', { cgroup: client.label, direction: 'received' }) >= K, 'refusals are resets received');
});

test('RTT: queueing delay from a rate-limited veth shows in the histogram as ss sees it; none stays sub-millisecond', async (t) => {
  if (!requireBpf(t)) return;
  const ns = fixtures.netns();
  const server = fixtures.cgroup('kt-tcp-sink');
  const client = fixtures.cgroup('kt-tcp-bulk');
  const p = await freePort();
  await startServer(server, `sink ${ns.hostAddr} ${p}`);

  const rtt = async () => {
    const s = await scrape();
    return { sum: total(s, 'kerntap_tcp_rtt_seconds_sum', { cgroup: client.label }), count: total(s, 'kerntap_tcp_rtt_seconds_count', { cgroup: client.label }) };
  };
  // Without shaping, on a veth: sub-millisecond.
  await runClient(client, `bulk ${ns.hostAddr} ${p} 1`, ns.prefix);
  await settled();
  const fast = await rtt();
  assert.ok(fast.count > 0);
  assert.ok(fast.sum / fast.count < 0.001, `unshaped mean RTT ${(fast.sum / fast.count) * 1e3} ms < 1 ms`);

  // 4 Mbit/s with a deep queue on the namespace's egress: the queue fills and RTT grows.
  ns.exec(['tc', 'qdisc', 'add', 'dev', ns.nsIf, 'root', 'tbf', 'rate', '4mbit', 'burst', '16kb', 'latency', '200ms']);
  const bulk = client.run(`${ns.prefix} python3 ${TRAFFIC} bulk ${ns.hostAddr} ${p} 6`, 'pipe');
  const bulkRtt = () => ssClients(ns.hostAddr, p, ns).map((x) => x.rttMs);
  await waitFor('the tbf queue to delay the bulk connection', () => bulkRtt().some((ms) => ms > 5));
  const a = await rtt();
  // ss's smoothed RTT over the window, once per poll.
  const ssRtt: number[] = [];
  for (let i = 0; i < 3; i++) {
    ssRtt.push(...bulkRtt());
    if (i < 2) await waitForPoll(exporter());
  }
  const b = await rtt();
  await exited(bulk);
  assert.equal(ssRtt.length, 3, 'ss sees the bulk connection');
  const meanMs = ((b.sum - a.sum) / (b.count - a.count)) * 1e3;
  const [lo, hi] = [Math.min(...ssRtt), Math.max(...ssRtt)];
  assert.ok(lo > 5, `tbf made queueing delay (ss rtt ${ssRtt.join(', ')} ms)`);
  assert.ok(meanMs > lo / 2 && meanMs < hi * 2, `histogram mean ${meanMs.toFixed(1)} ms follows ss rtt ${ssRtt.join(', ')} ms`);
});

test('retransmits equal the namespace\'s RetransSegs under 10% loss', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'nft', haveNft())) return;
  const ns = fixtures.netns();
  const server = fixtures.cgroup('kt-tcp-sink');
  const client = fixtures.cgroup('kt-tcp-lossy');
  const p = await freePort();
  await startServer(server, `sink ${ns.hostAddr} ${p}`);
  // Drop 10% of the data where it arrives, on the root side of the veth: a
  // drop in the sender's own output path is reported back to TCP as a local
  // error and requeued, not retransmitted.
  const table = fixtures.nft('netdev');
  table.chain('in', `{ type filter hook ingress device ${ns.hostIf} priority 0; }`);
  table.rule('in', ['tcp', 'dport', String(p), 'numgen', 'random', 'mod', '10', '0', 'counter', 'drop']);
  const mib0 = tcpMib(ns);
  await runClient(client, `bulk ${ns.hostAddr} ${p} 3`, ns.prefix);
  // The sink closes: FIN retransmits, if any, are over once only TIME-WAIT is left.
  await waitForTcpQuiet(p, ns);
  const mib1 = tcpMib(ns);
  const s = await settled();
  const ours = total(s, 'kerntap_tcp_retransmits_total', { cgroup: client.label });
  const kernel = mib1.RetransSegs! - mib0.RetransSegs!;
  const dropped = table.counted('in');
  assert.ok(kernel >= 5, `loss caused retransmits (${kernel}; nft dropped ${dropped} packets)`);
  assert.equal(ours, kernel, 'kerntap retransmits = RetransSegs delta');
});

test('IPv6 and v4-mapped IPv6: exact bytes, peers shown as the address family users know', async (t) => {
  if (!requireBpf(t)) return;
  const server = fixtures.cgroup('kt-tcp-srv6');
  const client = fixtures.cgroup('kt-tcp-cli6');
  const p6 = await freePort();
  const dual = await freePort();
  const N = 30_000;
  const M = 5;
  await startServer(server, `server ::1 ${p6} ${N}`);
  await startServer(server, `server :: ${dual} ${N}`); // dual-stack: IPv4 clients arrive v4-mapped
  await runClient(client, `client ::1 ${p6} ${N} ${M}`);
  await runClient(client, `client 127.0.0.1 ${dual} ${N} ${M}`);
  const s = await settled();
  assert.equal(total(s, 'kerntap_tcp_sent_bytes_total', { cgroup: client.label, role: 'client', peer: '::1', server_port: String(p6) }), M * N);
  assert.equal(total(s, 'kerntap_tcp_received_bytes_total', { cgroup: server.label, role: 'server', peer: '::1' }), M * N);
  assert.equal(total(s, 'kerntap_tcp_received_bytes_total', { cgroup: server.label, role: 'server', peer: '127.0.0.1' }), M * N,
    'the dual-stack server\'s v4-mapped peers are shown as IPv4');
  assert.equal(total(s, 'kerntap_tcp_sent_bytes_total', { cgroup: client.label, role: 'client', peer: '127.0.0.1', server_port: String(dual) }), M * N);
});

test('per-connection mode: live connections with their 5-tuple and owner, data bytes exact', async (t) => {
  if (!requireBpf(t)) return;
  const own = await startExporter(['--config.file', writeConfig('collectors:\n  tcp:\n    per_connection:\n      enabled: true\n      top_n: 1000\n')]);
  fixtures.add(() => own.stop());
  const server = fixtures.cgroup('kt-tcp-srv');
  const client = fixtures.cgroup('kt-tcp-cli');
  const p = await freePort();
  const N = 40_000;
  await startServer(server, `server 127.0.0.1 ${p} ${N}`);
  const hold = client.run(`python3 ${TRAFFIC} hold 127.0.0.1 ${p} ${N} 3`, 'pipe');
  await waitForLine(hold, 'ready');
  const s = await settled(own);
  const conns = find(s, 'kerntap_tcp_connection_sent_bytes_total', { cgroup: client.label, peer: `127.0.0.1:${p}` });
  assert.equal(conns.length, 3, 'one series per live connection');
  for (const c of conns) {
    assert.equal(c.value, N);
    assert.equal(c.labels.comm, 'python3');
    assert.match(c.labels.local!, /^127\.0\.0\.1:\d+$/);
  }
  assert.equal(find(s, 'kerntap_tcp_connection_received_bytes_total', { cgroup: client.label, peer: `127.0.0.1:${p}` }).reduce((a, x) => a + x.value, 0), 3 * N);
});

test('hostile process names reach the listeners metric escaped; promtool accepts the page', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'promtool', havePrometheus())) return;
  const cg = fixtures.cgroup('kt-tcp-hostile');
  const names = ['q"uo\\\\te', 'new\\nline', 'bad\\xff\\xfeutf8'];
  const ports: number[] = [];
  for (const _ of names) ports.push(await freePort());
  for (let i = 0; i < names.length; i++) {
    const child = cg.run(`python3 ${TRAFFIC} listen 127.0.0.1 ${ports[i]} '${names[i]}'`, 'pipe');
    await waitForLine(child, 'ready');
  }
  await settled();
  const text = await exporter().scrape();
  const check = promtoolCheckMetrics(text);
  assert.equal(check.status, 0, `promtool check metrics:\n${check.output}`);
  const s = parseExposition(text);
  const comm = (p: number) => find(s, 'kerntap_tcp_listeners', { cgroup: cg.label, port: String(p) })[0]?.labels.comm;
  assert.equal(comm(ports[0]!), 'q"uo\\te');
  assert.equal(comm(ports[1]!), 'new\nline');
  assert.equal(comm(ports[2]!), 'bad\uFFFD\uFFFDutf8');
  assert.match(text, /comm="q\\"uo\\\\te"/, 'quote and backslash escaped');
  assert.match(text, /comm="new\\nline"/, 'newline escaped');
});
