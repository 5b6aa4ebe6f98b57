/**
 * Least privilege: once attached and listening, a root kerntap runs as an
 * unprivileged uid with no capabilities on any thread — and keeps measuring
 * exactly.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ROOT, requireBpf } from '../helpers/env.js';
import { waitForPoll, waitForPollWithCgroups } from '../helpers/wait.js';
import { startExporter, writeConfig, type Exporter } from '../helpers/exporter.js';
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

test('after attach every thread runs as uid 65534 with no capabilities, and CPU time is still counted', async (t) => {
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
  await cg.busy(1);
  const s = await waitForPollWithCgroups(e, [cg.label]);
  const v = value(s, 'kerntap_cgroup_cpu_time_seconds_total', { cgroup: cg.label })!;
  const ratio = v / (cg.usageUsec() / 1e6);
  // Never over, and exact; except that this machine's kernel now and then
  // traces no switch-out of its agent's threads, and the slice after one is
  // counted short (RELIABILITY.md, "Known issue"; cgroup_cpu.test.ts holds
  // cgroups to 1% over many of them).
  assert.ok(ratio < 1.01 && ratio > 0.9, `counted after the drop: ${v} s, ${ratio.toFixed(4)} of cpu.stat`);
  if (ratio < 0.99) t.diagnostic(`counted short (${ratio.toFixed(4)} of cpu.stat): RELIABILITY.md, "Known issue"`);
  assert.equal(value(s, 'kerntap_poll_errors_total', { collector: 'cgroup_cpu' }), 0);
});

/** Bits of the capabilities the deployments may grant (linux/capability.h). */
const CAP_BITS: Record<string, bigint> = { SETGID: 6n, SETUID: 7n, PERFMON: 38n, BPF: 39n };

test('with exactly the capabilities the shipped deployments grant, kerntap ends as uid 65534 with none', async (t) => {
  if (!requireBpf(t)) return;
  const compose = parseAllDocuments(readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8'))[0]!.toJS() as { services: { kerntap: { cap_add: string[] } } };
  const k8s = parseAllDocuments(readFileSync(path.join(ROOT, 'deploy/kubernetes/daemonset.yaml'), 'utf8'))[0]!.toJS() as {
    spec: { template: { spec: { containers: { securityContext: { capabilities: { add: string[] } } }[] } } };
  };
  const lists = new Set([compose.services.kerntap.cap_add, k8s.spec.template.spec.containers[0]!.securityContext.capabilities.add].map((l) => l.join(',')));
  for (const list of lists) {
    // As the runtimes start it: uid 0, these capabilities only (bounding set), no new privileges.
    const caps = list.split(',').map((c) => `+${c.toLowerCase()}`).join(',');
    const e = await startExporter([], { wrap: ['setpriv', '--bounding-set', `-all,${caps}`, '--inh-caps', '-all', '--no-new-privs', '--'] });
    cleanup.push(() => e.stop());
    const bounding = BigInt(`0x${/^CapBnd:\s+(\w+)/m.exec(readFileSync(`/proc/${e.pid}/status`, 'utf8'))![1]!}`);
    assert.equal(bounding, list.split(',').reduce((m, c) => m | (1n << CAP_BITS[c]!), 0n), 'started with the deployment\'s capabilities only');
    for (const th of threads(e.pid)) assert.deepEqual(th, { uid: '65534', capEff: '0000000000000000' }, `capabilities ${list}`);
    assert.match(e.stderr(), /dropped all privileges after attach/);
    await waitForPoll(e);
    await e.stop();
  }
});

test('security.drop_privileges: false keeps the capabilities', async (t) => {
  if (!requireBpf(t)) return;
  const e = await startExporter(['--config.file', writeConfig('security:\n  drop_privileges: false\n')]);
  cleanup.push(() => e.stop());
  assert.notEqual(threads(e.pid)[0]!.capEff, '0000000000000000');
});
