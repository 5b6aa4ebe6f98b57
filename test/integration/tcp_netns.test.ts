/**
 * Containers have their own network namespace. A quiet connection there
 * (a keep-alive connection between requests) is not walked by iter/tcp, and
 * tcp_probe has not reported the last segment it saw (docs/tcp.md): while
 * quiet it may show less than `ss` in the namespace, never more, and at close
 * it must come out exact, on the client side and on the server side. A fast
 * poll racing with a busy connection must count every byte once.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { requireBpf } from '../helpers/env.js';
import { startExporter } from '../helpers/exporter.js';
import { tcpTestFile, TRAFFIC, freePort, runClient, ssClients, ssSockets, startServer, total, waitForLine } from '../helpers/net.js';

const { fixtures, scrape, settled, exporter } = tcpTestFile(before, after);


test('client in a namespace: quiet live connections never exceed ss there, and are exact at close', async (t) => {
  if (!requireBpf(t)) return;
  const ns = fixtures.netns();
  const server = fixtures.cgroup('kt-ns-srv');
  const client = fixtures.cgroup('kt-ns-cli');
  const p = await freePort();
  const N = 70_000;
  const K = 3;
  await startServer(server, `server ${ns.hostAddr} ${p} ${N}`);
  const hold = client.run(`${ns.prefix} python3 ${TRAFFIC} hold ${ns.hostAddr} ${p} ${N} ${K}`, 'pipe');
  await waitForLine(hold, 'ready');
  const s = await settled();

  const ours = ssClients(ns.hostAddr, p, ns);
  assert.equal(ours.length, K, 'ss in the namespace sees the connections');
  // An active open's bytes_acked counts its SYN; kerntap counts data only.
  const ssAcked = ours.reduce((sum, x) => sum + x.bytesAcked - 1, 0);
  const ssReceived = ours.reduce((sum, x) => sum + x.bytesReceived, 0);
  assert.equal(ssAcked, K * N);
  assert.equal(ssReceived, K * N);
  const cli = { cgroup: client.label, role: 'client', peer: ns.hostAddr, server_port: String(p) };
  const liveSent = total(s, 'kerntap_tcp_sent_bytes_total', cli);
  const liveReceived = total(s, 'kerntap_tcp_received_bytes_total', cli);
  assert.ok(liveSent > 0 && liveSent <= ssAcked, `sent ${liveSent} is at most ss bytes_acked ${ssAcked} while quiet`);
  assert.ok(liveReceived > 0 && liveReceived <= ssReceived, `received ${liveReceived} is at most ss bytes_received ${ssReceived} while quiet`);
  assert.equal(total(s, 'kerntap_tcp_connections_active', cli), K);

  await client.killAll();
  const after = await settled();
  assert.equal(total(after, 'kerntap_tcp_sent_bytes_total', cli), K * N, 'exact at close');
  assert.equal(total(after, 'kerntap_tcp_received_bytes_total', cli), K * N);
  assert.equal(total(after, 'kerntap_tcp_connections_active', cli), 0);
});

test('server in a namespace: idle keep-alive connections never exceed ss there, and are exact at close', async (t) => {
  if (!requireBpf(t)) return;
  const ns = fixtures.netns();
  const server = fixtures.cgroup('kt-ns-srv');
  const client = fixtures.cgroup('kt-ns-cli');
  const p = await freePort();
  const N = 90_000;
  const K = 4;
  await startServer(server, `server ${ns.nsAddr} ${p} ${N}`, ns.prefix);
  const hold = client.run(`python3 ${TRAFFIC} hold ${ns.nsAddr} ${p} ${N} ${K}`, 'pipe');
  await waitForLine(hold, 'ready');
  const s = await settled();

  const ours = ssSockets(p, ns).filter((x) => x.local === `${ns.nsAddr}:${p}`);
  assert.equal(ours.length, K);
  // A passive open's bytes_acked does not count the SYN-ACK: data only.
  const ssAcked = ours.reduce((sum, x) => sum + x.bytesAcked, 0);
  const ssReceived = ours.reduce((sum, x) => sum + x.bytesReceived, 0);
  assert.equal(ssAcked, K * N);
  const srv = { cgroup: server.label, role: 'server', peer: ns.hostAddr, server_port: String(p) };
  const liveSent = total(s, 'kerntap_tcp_sent_bytes_total', srv);
  const liveReceived = total(s, 'kerntap_tcp_received_bytes_total', srv);
  assert.ok(liveSent > 0 && liveSent <= ssAcked, `server sent ${liveSent} is at most ss bytes_acked ${ssAcked} while quiet`);
  assert.ok(liveReceived > 0 && liveReceived <= ssReceived, `server received ${liveReceived} is at most ss bytes_received ${ssReceived}`);
  assert.equal(total(s, 'kerntap_tcp_connections_active', srv), K);
  assert.equal(total(s, 'kerntap_tcp_handshake_duration_seconds_count', { cgroup: server.label }), K);

  await client.killAll();
  const after = await settled();
  assert.equal(total(after, 'kerntap_tcp_sent_bytes_total', srv), K * N, 'server sent: exact at close');
  assert.equal(total(after, 'kerntap_tcp_received_bytes_total', srv), K * N, 'server received: exact at close');
  assert.equal(total(after, 'kerntap_tcp_connections_active', srv), 0);
});

test('a 100 ms poll racing a busy connection in a namespace counts every byte once', async (t) => {
  if (!requireBpf(t)) return;
  const fast = await startExporter(['--poll.interval', '100ms']);
  fixtures.add(() => fast.stop());
  const ns = fixtures.netns();
  const server = fixtures.cgroup('kt-ns-sink');
  const client = fixtures.cgroup('kt-ns-bulk');
  const p = await freePort();
  await startServer(server, `sink ${ns.hostAddr} ${p}`);
  const out = await runClient(client, `bulk ${ns.hostAddr} ${p} 3`, ns.prefix);
  const written = Number(/^sent (\d+)$/m.exec(out)?.[1]);
  const s = await settled(fast);
  const sent = total(s, 'kerntap_tcp_sent_bytes_total', { cgroup: client.label, role: 'client' });
  const received = total(s, 'kerntap_tcp_received_bytes_total', { cgroup: server.label, role: 'server' });
  assert.ok(written > 10_000_000, `the client wrote ${written} bytes`);
  assert.equal(sent, written, 'client in the namespace: sent = bytes written');
  assert.equal(received, written, 'server in the root namespace: received = bytes written');
});
