/**
 * Failed connects with the reason the kernel gives, against the test
 * namespace's own MIB counters: a SYN that is never answered times out
 * (ETIMEDOUT, with its SYN retransmits in RetransSegs), and an ICMP host
 * unreachable ends the connect (EHOSTUNREACH). Refusals (RST) are
 * in tcp.test.ts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { requireBpf, requireTool } from '../helpers/env.js';
import { tcpTestFile, freePort, haveNft, runClient, scrapeState, tcpMib, total, totalOrZero } from '../helpers/net.js';
import type { Sample } from '../helpers/exposition.js';

const { fixtures, settled, scrape } = tcpTestFile(before, after);

/**
 * Runs of tcp_state the kernel skipped because the program was already
 * running on that CPU (a softirq's state change interrupting a process
 * context's): each loses that one transition, as README says of
 * kerntap_bpf_program_recursion_misses_total. They are counted.
 */
const stateMisses = (s: Sample[]) => totalOrZero(s, 'kerntap_bpf_program_recursion_misses_total', { collector: 'tcp', program: 'tcp_state' });

/** K failed connects of one reason: exact, but for the ones the kernel never ran kerntap for (counted). */
function assertFailures(s: Sample[], missed: number, labels: Record<string, string>, K: number, cgroup: string): void {
  const seen = total(s, 'kerntap_tcp_connects_failed_total', labels);
  const why = `${seen} of ${K} seen, ${missed} tcp_state runs skipped; ${scrapeState(s, [cgroup])}`;
  assert.ok(seen <= K && seen + missed >= K, `${labels.reason}: ${why}`);
  assert.equal(total(s, 'kerntap_tcp_connects_failed_total', { cgroup }), seen, `no other reason: ${why}`);
}

test('unanswered SYNs: K connects fail with reason="timeout", as AttemptFails and RetransSegs count them', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'nft', haveNft())) return;
  const ns = fixtures.netns();
  const client = fixtures.cgroup('kt-fail-timeout');
  const p = await freePort();
  const K = 3;
  // ETIMEDOUT after a few seconds instead of the default 127 s.
  ns.exec(['sysctl', '-qw', 'net.ipv4.tcp_syn_retries=1']);
  const table = fixtures.nft('netdev');
  table.chain('in', `{ type filter hook ingress device ${ns.hostIf} priority 0; }`);
  table.rule('in', ['tcp', 'dport', String(p), 'counter', 'drop']);

  const mib0 = tcpMib(ns);
  const misses0 = stateMisses(await scrape());
  await runClient(client, `fail ${ns.hostAddr} ${p} ${K} ETIMEDOUT`, ns.prefix);
  const mib1 = tcpMib(ns);
  const s = await settled();

  const peer = { cgroup: client.label, peer: ns.hostAddr, server_port: String(p) };
  const missed = stateMisses(s) - misses0;
  assertFailures(s, missed, { ...peer, reason: 'timeout' }, K, client.label);
  assert.equal(mib1.ActiveOpens! - mib0.ActiveOpens!, K);
  assert.equal(mib1.AttemptFails! - mib0.AttemptFails!, K, 'the kernel counted K failed attempts');
  const retransSegs = mib1.RetransSegs! - mib0.RetransSegs!;
  assert.ok(retransSegs >= K, `every SYN was retransmitted (${retransSegs})`);
  assert.equal(table.counted('in'), K + retransSegs, 'dropped: the first SYNs and their retransmits');
  // A failed connect's retransmits go in at its close: a skipped close takes its own along.
  const retrans = total(s, 'kerntap_tcp_retransmits_total', { ...peer, role: 'client' });
  if (missed === 0) assert.equal(retrans, retransSegs, 'SYN retransmits = RetransSegs delta');
  else assert.ok(retrans <= retransSegs, `SYN retransmits ${retrans} <= RetransSegs delta ${retransSegs} (${missed} closes skipped)`);
  assert.equal(totalOrZero(s, 'kerntap_tcp_connect_duration_seconds_count', { cgroup: client.label }), 0, 'no connect completed');
});

test('ICMP host unreachable: K connects fail with reason="unreachable"', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'nft', haveNft())) return;
  const ns = fixtures.netns();
  const client = fixtures.cgroup('kt-fail-unreach');
  const p = await freePort();
  const K = 4;
  const table = fixtures.nft('inet');
  table.chain('in', '{ type filter hook input priority 0; }');
  table.rule('in', ['ip', 'daddr', ns.hostAddr, 'tcp', 'dport', String(p), 'counter', 'reject', 'with', 'icmpx', 'type', 'host-unreachable']);

  const mib0 = tcpMib(ns);
  const misses0 = stateMisses(await scrape());
  const started = Date.now();
  await runClient(client, `fail ${ns.hostAddr} ${p} ${K} EHOSTUNREACH`, ns.prefix);
  const elapsed = Date.now() - started;
  const mib1 = tcpMib(ns);
  const s = await settled();

  // On a veth the first ICMP comes back while connect() still holds the
  // socket lock, and the kernel drops it (LockDroppedIcmps): the ICMP for
  // the first SYN retransmit (after 1 s) ends the connect.
  assert.ok(elapsed < 10_000, `ended by ICMP, long before the SYN timeout (${elapsed} ms)`);
  assert.equal(table.counted('in'), K + mib1.RetransSegs! - mib0.RetransSegs!, 'one ICMP per SYN sent');
  assertFailures(s, stateMisses(s) - misses0, { cgroup: client.label, peer: ns.hostAddr, server_port: String(p), reason: 'unreachable' }, K, client.label);
  assert.equal(mib1.AttemptFails! - mib0.AttemptFails!, K);
  assert.equal(mib1.ActiveOpens! - mib0.ActiveOpens!, K);
});
