/**
 * A poll that fails (a map read error from the kernel side) is logged once,
 * counted, and the last good values keep being served; /healthz turns 503
 * after poll.degraded_after_failures polls in a row, and the other
 * collectors keep polling. kerntap runs in this process, with real programs
 * in the kernel; the failure is real too: the collector's BPF object is
 * closed under it, so its map reads fail in the addon (EBADF).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { detectCgroup2Root } from '../../src/cgroup/mount.js';
import { pino } from 'pino';
import { requireBpf } from '../helpers/env.js';
import { pollsTotal, scrapable, waitFor, waitForPoll } from '../helpers/wait.js';
import { find, parseExposition, value } from '../helpers/exposition.js';
import { Kerntap } from '../../src/app.js';
import { parseConfig } from '../../src/config.js';

test('a collector whose map reads fail: logged once, counted, last good values served, /healthz degraded, the others go on', async (t) => {
  if (!requireBpf(t)) return;
  const lines: { level: number; msg: string; collector?: string }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l));
      done();
    },
  });
  // In this process: the test runner's privileges must stay.
  const config = parseConfig(`
poll: {interval: 200ms, degraded_after_failures: 3}
web: {listen_address: "127.0.0.1:0"}
security: {drop_privileges: false}
`);
  const app = await Kerntap.start(config, pino({ level: 'info' }, sink));
  t.after(() => app.close());
  const url = app.address!;
  const kerntap = scrapable(url);
  const scrape = async () => parseExposition(await kerntap.scrape());
  const health = async () => {
    const r = await fetch(`${url}/healthz`);
    return { status: r.status, body: await r.text() };
  };

  const good = await waitForPoll(kerntap);
  assert.equal((await health()).status, 200);
  const cpuGood = find(good, 'kerntap_cgroup_cpu_time_seconds_total');
  assert.ok(cpuGood.length > 0, 'CPU series before the failure');

  // Break the collector: its map reads now fail in the addon. Any CPU time
  // that the last good poll did not see is lost from here on, while the
  // CPU keeps running: a later snapshot that still moved would be no failure.
  app.collectors.find((c) => c.name === 'cgroup_cpu')!.instance.objects[0]!.close();
  const firstBad = await waitFor('3 failed polls', async () => {
    const s = await scrape();
    return (value(s, 'kerntap_poll_errors_total', { collector: 'cgroup_cpu' }) ?? 0) >= 3 && s;
  });
  assert.equal(value(firstBad, 'kerntap_poll_errors_total', { collector: 'tcp' }), 0, 'the tcp collector did not fail');
  // Snapshots of later polls (not the same snapshot scraped twice) serve the same values.
  const polls = pollsTotal(firstBad);
  const ownUsage0 = ownCgroupUsageUsec();
  const bad = await waitForPoll(kerntap, polls + 2);
  const ownUsage1 = ownCgroupUsageUsec();
  assert.ok(pollsTotal(bad) > polls + 2, 'a later snapshot');
  const frozen = (s: typeof bad) => new Map(find(s, 'kerntap_cgroup_cpu_time_seconds_total').map((x) => [JSON.stringify(x.labels), x.value]));
  assert.ok(frozen(bad).size > 0 && frozen(bad).size >= cpuGood.length, 'every CPU series is still served');
  assert.deepEqual(frozen(bad), frozen(firstBad), 'frozen at the last good poll');
  assert.ok(ownUsage1 > ownUsage0, 'while this process\'s cgroup (one of the series) did use CPU meanwhile');
  const errors = value(bad, 'kerntap_poll_errors_total', { collector: 'cgroup_cpu' })!;
  assert.ok(errors >= 5, `every failed poll counted (${errors})`);

  const h = await health();
  assert.equal(h.status, 503);
  assert.match(h.body, /^degraded: \d+ polls in a row failed \(last: cgroup_cpu: .*closed/);

  const errorLines = lines.filter((l) => l.level >= 50 && l.collector === 'cgroup_cpu');
  assert.equal(errorLines.length, 1, 'one log line, not one per poll');
  assert.match(errorLines[0]!.msg, /^poll failed, serving last good values: /);

  // The tcp collector still polls: new traffic shows up.
  const sentBefore = find(bad, 'kerntap_tcp_sent_bytes_total').reduce((s, x) => s + x.value, 0);
  for (let i = 0; i < 5; i++) await fetch(`${url}/healthz`);
  const sentAfter = find(await waitForPoll(kerntap), 'kerntap_tcp_sent_bytes_total').reduce((s, x) => s + x.value, 0);
  assert.ok(sentAfter > sentBefore, `tcp traffic still counted (${sentBefore} → ${sentAfter})`);
});

/** usage_usec of the cgroup this test process runs in. */
function ownCgroupUsageUsec(): number {
  const rel = /^0::(.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))![1]!;
  return Number(/^usage_usec (\d+)$/m.exec(readFileSync(path.join(detectCgroup2Root(), rel, 'cpu.stat'), 'utf8'))![1]);
}
