/**
 * What the two handshake histograms measure, on this kernel. A namespace
 * whose egress is a full tbf queue delays everything it sends by the
 * queueing delay D (what `ss` shows as the RTT of the bulk connection that
 * fills it): the client's SYN and its final ACK both wait in that queue.
 *  - connect duration (client, SYN_SENT -> ESTABLISHED) ~ D: the SYN waited;
 *  - handshake duration (server, SYN-ACK sent -> final ACK, the kernel's
 *    own SYN-ACK RTT sample) ~ D: the final ACK waited. Timing the child
 *    socket's SYN_RECV -> ESTABLISHED instead would give ~0 (both happen
 *    while the final ACK is processed).
 * Unshaped, both stay sub-millisecond.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { requireBpf } from '../helpers/env.js';
import { waitFor } from '../helpers/wait.js';
import type { Sample } from '../helpers/exposition.js';
import { tcpTestFile, TRAFFIC, exited, freePort, runClient, ssClients, startServer, total, totalOrZero } from '../helpers/net.js';
import type { TestCgroup } from '../helpers/cgroup.js';

const { fixtures, settled } = tcpTestFile(before, after);

/** Mean of a histogram in ms, for the given cgroup. */
function meanMs(s: Sample[], metric: string, cg: TestCgroup): { count: number; ms: number } {
  const count = total(s, `${metric}_count`, { cgroup: cg.label });
  return { count, ms: (total(s, `${metric}_sum`, { cgroup: cg.label }) / count) * 1e3 };
}

test('connect and handshake durations: sub-millisecond on an idle veth, the queueing delay behind a full queue', async (t) => {
  if (!requireBpf(t)) return;
  const ns = fixtures.netns();
  const server = fixtures.cgroup('kt-hs-srv');
  const sink = fixtures.cgroup('kt-hs-sink');
  const bulk = fixtures.cgroup('kt-hs-bulk');
  const idleClient = fixtures.cgroup('kt-hs-idle');
  const queuedClient = fixtures.cgroup('kt-hs-queued');
  const idleServer = fixtures.cgroup('kt-hs-srv-idle');
  const p = await freePort();
  const pIdle = await freePort();
  const pSink = await freePort();
  const M = 6;
  await startServer(idleServer, `server ${ns.hostAddr} ${pIdle} 1000`);
  await startServer(server, `server ${ns.hostAddr} ${p} 1000`);
  await startServer(sink, `sink ${ns.hostAddr} ${pSink}`);

  await runClient(idleClient, `client ${ns.hostAddr} ${pIdle} 1000 ${M}`, ns.prefix);
  const idle = await settled();
  const idleConnect = meanMs(idle, 'kerntap_tcp_connect_duration_seconds', idleClient);
  const idleHandshake = meanMs(idle, 'kerntap_tcp_handshake_duration_seconds', idleServer);
  t.diagnostic(`idle: connect ${idleConnect.ms.toFixed(3)} ms, handshake ${idleHandshake.ms.toFixed(3)} ms`);
  assert.equal(idleConnect.count, M);
  assert.equal(idleHandshake.count, M);
  assert.ok(idleConnect.ms < 1, 'idle connect sub-millisecond');
  assert.ok(idleHandshake.ms < 1, 'idle handshake sub-millisecond');

  ns.exec(['tc', 'qdisc', 'add', 'dev', ns.nsIf, 'root', 'tbf', 'rate', '4mbit', 'burst', '16kb', 'latency', '100ms']);
  const filler = bulk.run(`${ns.prefix} python3 ${TRAFFIC} bulk ${ns.hostAddr} ${pSink} 6`, 'pipe');
  const fillerRtt = () => ssClients(ns.hostAddr, pSink, ns)[0]?.rttMs ?? 0;
  const before = await waitFor('the filler to fill the tbf queue', () => { const ms = fillerRtt(); return ms > 15 && ms; });
  await runClient(queuedClient, `client ${ns.hostAddr} ${p} 1000 ${M}`, ns.prefix);
  const after = fillerRtt();
  await exited(filler);
  const queued = await settled();
  const connect = meanMs(queued, 'kerntap_tcp_connect_duration_seconds', queuedClient);
  const handshake = meanMs(queued, 'kerntap_tcp_handshake_duration_seconds', server);
  t.diagnostic(`queued (ss rtt ${before} -> ${after} ms): connect ${connect.ms.toFixed(1)} ms, handshake ${handshake.ms.toFixed(1)} ms`);
  assert.equal(connect.count, M);
  // tbf drops what exceeds its latency bound: a final ACK lost there makes the
  // server retransmit its SYN-ACK, and the kernel then takes no SYN-ACK RTT
  // sample (Karn), so that connection has no handshake duration. Those
  // retransmits are counted (kerntap_tcp_syn_retransmits_total, checked
  // against TCPSynRetrans in tcp_syn_retrans.test.ts).
  const synAckRetrans = totalOrZero(queued, 'kerntap_tcp_syn_retransmits_total', { cgroup: server.label });
  t.diagnostic(`queued: ${handshake.count} handshake samples, ${synAckRetrans} SYN-ACK retransmits`);
  assert.ok(handshake.count <= M && handshake.count >= M - synAckRetrans, `${handshake.count} handshake samples of ${M} connections, ${synAckRetrans} SYN-ACK retransmits`);
  // The queue's depth swings with the filler's congestion window, and ss
  // shows a smoothed RTT: the bounds are loose, the ratio between the two
  // histograms (one trip through the same queue each) is not.
  const low = Math.min(before, after) / 3;
  const high = Math.max(before, after) * 2;
  assert.ok(low > 5, `the full queue delays what the namespace sends (ss rtt ${before} -> ${after} ms)`);
  assert.ok(connect.ms > low && connect.ms < high, 'connect duration ~ queueing delay (the SYN waited)');
  assert.ok(handshake.ms > low && handshake.ms < high, 'handshake duration ~ queueing delay (the final ACK waited)');
  assert.ok(handshake.ms / connect.ms > 0.5 && handshake.ms / connect.ms < 2, 'SYN-ACK -> ACK and SYN -> SYN-ACK each crossed the queue once');
});
