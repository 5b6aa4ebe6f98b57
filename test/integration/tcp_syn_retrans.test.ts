/**
 * Handshakes that needed a second try, against the test namespace's own
 * TcpExt TCPSynRetrans (which counts SYN and SYN-ACK retransmits alike).
 * An nft set drops exactly the first SYN (client side) or the first SYN-ACK
 * (server side) of each connection, so every connection succeeds after one
 * retransmit (the initial RTO, 1 s), and all of them run at once.
 *
 * A listener takes its SYN-ACK RTT sample only from a SYN-ACK sent once
 * (tcp_synack_rtt_meas; Karn's rule); with timestamps off nothing else
 * gives the new socket an RTT, so its srtt is still 0 when it reaches
 * ESTABLISHED. Such a handshake has no duration to report: it must not be
 * counted as a 0 s sample.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { requireBpf, requireTool } from '../helpers/env.js';
import { parseExposition, value, type Sample } from '../helpers/exposition.js';
import { tcpTestFile, freePort, haveNft, runClient, scrapeState, sh, startServer, tcpExtMib, tcpMib, total, waitFor, type NftTable } from '../helpers/net.js';

const { fixtures, exporter } = tcpTestFile(before, after);

/** The one sample of `name` with exactly these labels; fails when the series is missing. */
function series(s: Sample[], name: string, labels: Record<string, string>): number {
  const v = value(s, name, labels);
  assert.notEqual(v, undefined, `series ${name}${JSON.stringify(labels)} exists`);
  return v!;
}

/**
 * Drops the first segment of each connection that `match` selects (nft
 * expressions), keyed by the connection's `key` (e.g. "ip saddr . tcp
 * sport"); later ones pass. Counted by the chain's first counter.
 */
function dropFirstOfEach(table: NftTable, device: string, match: string[], key: string): void {
  table.chain('in', `{ type filter hook ingress device ${device} priority 0; }`);
  sh(['nft', 'add', 'set', table.family, table.name, 'seen', '{ type ipv4_addr . inet_service; flags dynamic; timeout 1m; }']);
  table.rule('in', [...match, ...key.split(' '), '@seen', 'accept']);
  table.rule('in', [...match, 'add', '@seen', '{', ...key.split(' '), '}', 'counter', 'drop']);
}

/**
 * Scrapes until `ready` holds for the samples; returns them. A timeout says
 * what kerntap showed for these cgroups, and what it logged.
 */
async function scrapeUntil(what: string, cgroups: string[], ready: (s: Sample[]) => boolean): Promise<Sample[]> {
  let last: Sample[] = [];
  try {
    return await waitFor(what, async () => {
      last = parseExposition(await exporter().scrape());
      return ready(last) ? last : undefined;
    });
  } catch (err) {
    const log = exporter().stderr().trim().split('\n').slice(-5).join(' | ');
    throw new Error(`${(err as Error).message}; kerntap: ${scrapeState(last, cgroups)}; its log ends: ${log}`);
  }
}

test('lost SYNs: kerntap_tcp_syn_retransmits_total of the client flow = TCPSynRetrans of its namespace', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'nft', haveNft())) return;
  const ns = fixtures.netns();
  const client = fixtures.cgroup('kt-synrt-cli');
  const server = fixtures.cgroup('kt-synrt-srv');
  const p = await freePort();
  const K = 4;
  ns.exec(['sysctl', '-qw', 'net.ipv4.tcp_syn_retries=3']);
  await startServer(server, `server ${ns.hostAddr} ${p} 100`);
  const table = fixtures.nft('netdev');
  dropFirstOfEach(table, ns.hostIf, ['tcp', 'dport', String(p), 'tcp', 'flags', '&', '(syn|ack)', '==', 'syn'], 'ip saddr . tcp sport');

  const mib0 = { ...tcpMib(ns), ...tcpExtMib(ns) };
  await runClient(client, `parallel ${ns.hostAddr} ${p} 100 ${K}`, ns.prefix);
  const mib1 = { ...tcpMib(ns), ...tcpExtMib(ns) };
  const synRetrans = mib1.TCPSynRetrans! - mib0.TCPSynRetrans!;
  assert.equal(mib1.ActiveOpens! - mib0.ActiveOpens!, K);
  assert.equal(table.counted('in'), K, 'the first SYN of each connection was dropped');
  assert.ok(synRetrans >= K, `each connection retransmitted its SYN (TCPSynRetrans +${synRetrans})`);

  const flow = { cgroup: client.label, role: 'client', peer: ns.hostAddr, server_port: String(p) };
  // Every connection has closed on both sides: all their events are in.
  const s = await scrapeUntil('the client connections closed', [client.label, server.label], (x) =>
    total(x, 'kerntap_tcp_connection_duration_seconds_count', { cgroup: client.label, role: 'client' }) === K &&
    total(x, 'kerntap_tcp_connection_duration_seconds_count', { cgroup: server.label, role: 'server' }) === K);
  assert.equal(series(s, 'kerntap_tcp_syn_retransmits_total', flow), synRetrans, 'SYN retransmits = TCPSynRetrans delta');
  assert.equal(series(s, 'kerntap_tcp_syn_retransmits_total', { ...flow, cgroup: server.label, role: 'server', peer: ns.nsAddr }), 0,
    'the server sent each SYN-ACK once');
  assert.equal(series(s, 'kerntap_tcp_connect_duration_seconds_count', { cgroup: client.label }), K);
  // The SYN-ACK answered the retransmitted SYN, sent once: the server timed it.
  assert.equal(series(s, 'kerntap_tcp_handshake_duration_seconds_count', { cgroup: server.label }), K);
});

test('lost SYN-ACKs: syn_retransmits of the server flow = TCPSynRetrans, and no 0 s handshake samples', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'nft', haveNft())) return;
  const ns = fixtures.netns();
  const client = fixtures.cgroup('kt-synackrt-cli');
  const server = fixtures.cgroup('kt-synackrt-srv');
  const lossy = await freePort();
  const clean = await freePort();
  const K = 4;
  const J = 3;
  // With timestamps, the final ACK's TSecr gives the new socket an RTT
  // (ms resolution) even after a retransmitted SYN-ACK.
  ns.exec(['sysctl', '-qw', 'net.ipv4.tcp_timestamps=0']);
  ns.exec(['sysctl', '-qw', 'net.ipv4.tcp_synack_retries=3']);
  await startServer(server, `server ${ns.nsAddr} ${lossy} 100`, ns.prefix);
  await startServer(server, `server ${ns.nsAddr} ${clean} 100`, ns.prefix);
  const table = fixtures.nft('netdev');
  dropFirstOfEach(table, ns.hostIf, ['tcp', 'sport', String(lossy), 'tcp', 'flags', '&', '(syn|ack)', '==', '(syn|ack)'], 'ip daddr . tcp dport');

  const mib0 = { ...tcpMib(ns), ...tcpExtMib(ns) };
  await Promise.all([
    runClient(client, `parallel ${ns.nsAddr} ${lossy} 100 ${K}`),
    runClient(client, `parallel ${ns.nsAddr} ${clean} 100 ${J}`),
  ]);
  const mib1 = { ...tcpMib(ns), ...tcpExtMib(ns) };
  const synRetrans = mib1.TCPSynRetrans! - mib0.TCPSynRetrans!;
  assert.equal(table.counted('in'), K, 'the first SYN-ACK of each lossy connection was dropped');
  assert.ok(synRetrans >= K, `each lossy connection retransmitted its SYN-ACK (TCPSynRetrans +${synRetrans})`);
  // When the SYN-ACK timer and the client's retransmitted SYN fire together,
  // the server sends two SYN-ACKs and gets two ACKs; processed at once on two
  // CPUs, both make a child and the kernel counts both in PassiveOpens
  // (tcp_create_openreq_child) before one loses the request (own_req false)
  // and closes from SYN_RECV. Each such child needs one more SYN-ACK.
  const passive = mib1.PassiveOpens! - mib0.PassiveOpens!;
  assert.ok(passive >= K + J && passive <= K + J + (synRetrans - K),
    `PassiveOpens +${passive}: ${K + J} connections, at most one more per extra SYN-ACK (TCPSynRetrans +${synRetrans})`);

  const flow = (port: number) => ({ cgroup: server.label, role: 'server', peer: ns.hostAddr, server_port: String(port) });
  const s = await scrapeUntil('the server connections closed', [client.label, server.label], (x) =>
    total(x, 'kerntap_tcp_connection_duration_seconds_count', { cgroup: server.label, role: 'server' }) === K + J);
  // Only the J handshakes whose SYN-ACK went once have a duration.
  assert.equal(series(s, 'kerntap_tcp_handshake_duration_seconds_count', { cgroup: server.label }), J,
    'no sample from a handshake whose SYN-ACK was retransmitted');
  assert.equal(series(s, 'kerntap_tcp_syn_retransmits_total', flow(lossy)), synRetrans, 'SYN-ACK retransmits = TCPSynRetrans delta');
  assert.equal(series(s, 'kerntap_tcp_syn_retransmits_total', flow(clean)), 0);
});
