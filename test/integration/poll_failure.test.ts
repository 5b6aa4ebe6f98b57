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
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { requireBpf } from '../helpers/env.js';
import { sleep } from '../helpers/exporter.js';
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
  const scrape = async () => parseExposition(await (await fetch(`${url}/metrics`)).text());
  const health = async () => {
    const r = await fetch(`${url}/healthz`);
    return { status: r.status, body: await r.text() };
  };

  await sleep(500);
  assert.equal((await health()).status, 200);
  const good = await scrape();
  const cpuGood = find(good, 'kerntap_cgroup_cpu_time_seconds_total');
  assert.ok(cpuGood.length > 0, 'CPU series before the failure');

  // Break the collector: its map reads now fail in the addon.
  app.collectors.find((c) => c.name === 'cgroup_cpu')!.instance.objects[0]!.close();
  await sleep(1200); // ~6 polls

  const bad = await scrape();
  const errors = value(bad, 'kerntap_poll_errors_total', { collector: 'cgroup_cpu' })!;
  assert.ok(errors >= 3, `poll errors counted (${errors})`);
  assert.equal(value(bad, 'kerntap_poll_errors_total', { collector: 'tcp' }), 0, 'the tcp collector did not fail');
  // The last good values, unchanged, for every series.
  const cpuNow = find(bad, 'kerntap_cgroup_cpu_time_seconds_total');
  const lastGood = new Map(cpuNow.map((s) => [JSON.stringify(s.labels), s.value]));
  const served = find(parseExposition(await (await fetch(`${url}/metrics`)).text()), 'kerntap_cgroup_cpu_time_seconds_total');
  assert.ok(cpuNow.length >= cpuGood.length, 'every CPU series is still served');
  for (const s of served) assert.equal(s.value, lastGood.get(JSON.stringify(s.labels)), 'frozen at the last good poll');

  const h = await health();
  assert.equal(h.status, 503);
  assert.match(h.body, /^degraded: \d+ polls in a row failed \(last: cgroup_cpu: .*closed/);

  const errorLines = lines.filter((l) => l.level >= 50 && l.collector === 'cgroup_cpu');
  assert.equal(errorLines.length, 1, 'one log line, not one per poll');
  assert.match(errorLines[0]!.msg, /^poll failed, serving last good values: /);

  // The tcp collector still polls: new traffic shows up.
  const sentBefore = find(bad, 'kerntap_tcp_sent_bytes_total').reduce((s, x) => s + x.value, 0);
  for (let i = 0; i < 5; i++) await fetch(`${url}/healthz`);
  await sleep(600);
  const sentAfter = find(await scrape(), 'kerntap_tcp_sent_bytes_total').reduce((s, x) => s + x.value, 0);
  assert.ok(sentAfter > sentBefore, `tcp traffic still counted (${sentBefore} → ${sentAfter})`);
});
