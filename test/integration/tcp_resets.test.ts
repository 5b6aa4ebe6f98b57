/**
 * Resets the kernel sends from a time-wait socket (a struct much smaller
 * than a full socket, with no owner cgroup): a client that closed, and got
 * its FIN acknowledged, lives on as a time-wait socket in the FIN-WAIT-2
 * substate; data from the peer after that is answered with a reset
 * (tcp_timewait_state_process -> TCP_TW_RST -> tcp_v4_send_reset(tw)).
 * They must be counted under cgroup "~none", and must not create a flow
 * from whatever lies past the end of the time-wait socket.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { requireBpf } from '../helpers/env.js';
import { find, parseExposition, type Sample } from '../helpers/exposition.js';
import { tcpTestFile, freePort, runClient, startServer, tcpExtMib, tcpMib, total, totalOrZero, waitFor, waitForLine } from '../helpers/net.js';

const { fixtures, exporter } = tcpTestFile(before, after);

const UNKNOWN = 'unknown_cgroup_id:';

async function scrape(): Promise<Sample[]> {
  return parseExposition(await exporter().scrape());
}

test('resets from time-wait sockets: counted under cgroup "~none", as OutRsts counts them, with no junk flow', async (t) => {
  if (!requireBpf(t)) return;
  const ns = fixtures.netns();
  const client = fixtures.cgroup('kt-twrst-cli');
  const server = fixtures.cgroup('kt-twrst-srv');
  const p = await freePort();
  const K = 5;
  const go = fixtures.tempPath('kt-twrst', p);
  fixtures.add(() => { try { writeFileSync(go, ''); } catch { /* let the server go */ } });
  const srv = await startServer(server, `latesend ${ns.hostAddr} ${p} ${K} ${go}`);
  const eof = waitForLine(srv, 'eof');
  const sent = waitForLine(srv, 'sent');
  // Before this test's resets, a fresh kerntap may have seen none at all: no such metric yet.
  const noneSent = (s: Sample[]) => find(s, 'kerntap_tcp_resets_total', { cgroup: '~none', direction: 'sent' }).reduce((sum, x) => sum + x.value, 0);
  const s0 = await scrape();
  const unknownBefore = new Set(s0.filter((x) => x.labels.cgroup?.startsWith(UNKNOWN)).map((x) => x.labels.cgroup));
  const mib0 = { ...tcpMib(ns), ...tcpExtMib(ns) };

  await runClient(client, `closefirst ${ns.hostAddr} ${p} ${K}`, ns.prefix);
  await eof;
  // The server has read each FIN; once its ACK is in, each client socket is
  // a time-wait socket in FIN-WAIT-2 (ss shows the substate).
  await waitFor(`${K} client sockets in FIN-WAIT-2`, () =>
    ns.exec(['ss', '-tanH', 'state', 'fin-wait-2', `( dport = :${p} )`]).split('\n').filter(Boolean).length === K || undefined);
  writeFileSync(go, '');
  await sent;
  const mib1 = await waitFor(`${K} resets sent in the namespace`, () => {
    const m = { ...tcpMib(ns), ...tcpExtMib(ns) };
    return m.OutRsts! - mib0.OutRsts! >= K ? m : undefined;
  });
  assert.equal(mib1.OutRsts! - mib0.OutRsts!, K, 'OutRsts: one reset per connection');
  assert.equal(mib1.TCPAbortOnData! - mib0.TCPAbortOnData!, 0, 'none from a full socket (data after close)');
  assert.equal(ns.exec(['ss', '-tanH', `( dport = :${p} )`]).trim(), '', 'the resets ended the time-wait sockets');

  // The server's sockets took the resets and closed: every event is in.
  const s = await waitFor('the server connections reset and closed', async () => {
    const x = await scrape();
    return total(x, 'kerntap_tcp_connection_duration_seconds_count', { cgroup: server.label, role: 'server' }) === K ? x : undefined;
  });
  assert.equal(total(s, 'kerntap_tcp_resets_total', { cgroup: server.label, direction: 'received' }), K);
  assert.equal(totalOrZero(s, 'kerntap_tcp_resets_total', { cgroup: server.label, direction: 'sent' }), 0);
  assert.equal(totalOrZero(s, 'kerntap_tcp_resets_total', { cgroup: client.label }), 0, 'the client sockets were gone: not theirs');

  // The only flows to this test's peer are the client's.
  const flows = s.filter((x) => x.labels.peer === ns.hostAddr);
  assert.ok(flows.length > 0, 'the client flow is there');
  assert.deepEqual([...new Set(flows.map((x) => `${x.labels.cgroup} ${x.labels.role}`))], [`${client.label} client`],
    'no flow with a cgroup read past the end of a time-wait socket');
  const unknownNew = s.filter((x) => x.labels.cgroup?.startsWith(UNKNOWN) && !unknownBefore.has(x.labels.cgroup));
  assert.deepEqual(unknownNew.map((x) => `${x.name}{cgroup="${x.labels.cgroup}"}`), [], 'no new unknown_cgroup_id series');
  // "~none" is shared with every reset on the host that matched no socket: at least ours.
  const delta = noneSent(s) - noneSent(s0);
  assert.ok(delta >= K, `kerntap_tcp_resets_total{cgroup="~none",direction="sent"} grew by ${delta} >= ${K}`);
});
