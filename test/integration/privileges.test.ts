/**
 * Least privilege: once attached and listening, a root kerntap runs as an
 * unprivileged uid with no capabilities on any thread — and keeps measuring
 * exactly.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { requireBpf } from '../helpers/env.js';
import { startExporter, sleep, writeConfig, type Exporter } from '../helpers/exporter.js';
import { TestCgroup } from '../helpers/cgroup.js';
import { parseExposition, value } from '../helpers/exposition.js';

const cleanup: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

function threads(pid: number): { uid: string; capEff: string }[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    return { uid: /^Uid:\s+(\d+)/m.exec(status)![1]!, capEff: /^CapEff:\s+(\w+)/m.exec(status)![1]! };
  });
}

test('after attach every thread runs as uid 65534 with no capabilities, and CPU time stays exact', async (t) => {
  if (!requireBpf(t)) return;
  const e: Exporter = await startExporter();
  cleanup.push(() => e.stop());
  const ts = threads(e.pid);
  assert.ok(ts.length > 3, 'Node runs several threads');
  for (const th of ts) {
    assert.equal(th.uid, '65534');
    assert.equal(th.capEff, '0000000000000000');
  }
  const cg = TestCgroup.unique('kt-priv');
  cleanup.push(() => cg.destroy());
  const busy = cg.run('while :; do :; done');
  await sleep(1500);
  busy.kill('SIGKILL');
  await new Promise((r) => busy.on('exit', r));
  await sleep(1200);
  const s = parseExposition(await e.scrape());
  const v = value(s, 'kerntap_cgroup_cpu_time_seconds_total', { cgroup: cg.label })!;
  assert.ok(Math.abs(v / (cg.usageUsec() / 1e6) - 1) < 0.01, `exact after the drop (${v})`);
  assert.equal(value(s, 'kerntap_poll_errors_total', { collector: 'cgroup_cpu' }), 0);
});

test('security.drop_privileges: false keeps the capabilities', async (t) => {
  if (!requireBpf(t)) return;
  const e = await startExporter(['--config.file', writeConfig('security:\n  drop_privileges: false\n')]);
  cleanup.push(() => e.stop());
  assert.notEqual(threads(e.pid)[0]!.capEff, '0000000000000000');
});
