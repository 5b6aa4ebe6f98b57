/**
 * cgroup_cpu against the kernel's own accounting: the exported CPU time of a
 * test cgroup must match its cpu.stat usage_usec within 1%, for a lone busy
 * loop, for 3 busy loops on 2 cores, and for many short processes; a task
 * still running is counted before it ever switches out; and the series of a
 * parent counts its own tasks only (the metric is not hierarchical).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { hasTool, requireBpf, requireTool } from '../helpers/env.js';
import { startExporter } from '../helpers/exporter.js';
import { TestCgroup } from '../helpers/cgroup.js';
import { parseExposition, value, type Sample } from '../helpers/exposition.js';
import { fileExporter } from '../helpers/net.js';
import { waitFor, waitForPoll, waitForPollWithCgroups } from '../helpers/wait.js';

const METRIC = 'kerntap_cgroup_cpu_time_seconds_total';
const exporter = fileExporter(before, after);

const exported = (s: Sample[], cg: TestCgroup) => value(s, METRIC, { cgroup: cg.label });

/** Runs the workload in a fresh cgroup, waits for it to end and for a poll after that, then compares. */
async function compareAfter(name: string, workload: (cg: TestCgroup) => Promise<void>) {
  const cg = TestCgroup.unique(`kt-cpu-${name}`);
  try {
    await workload(cg);
    assert.deepEqual(cg.procs(), [], 'workload finished');
    const got = exported(await waitForPollWithCgroups(exporter(), [cg.label]), cg);
    const usage = cg.usageUsec() / 1e6;
    assert.ok(got !== undefined, `${METRIC}{cgroup="${cg.label}"} present`);
    // The 1% comparison below is the test; this only guards against a workload that never ran.
    assert.ok(usage > 0.05, `workload used CPU (${usage}s)`);
    const ratio = got / usage;
    assert.ok(Math.abs(ratio - 1) < 0.01, `${name}: exported ${got.toFixed(4)}s vs cpu.stat ${usage.toFixed(4)}s (ratio ${ratio.toFixed(4)})`);
    return { exported: got, usage };
  } finally {
    await cg.destroy();
  }
}

test('lone busy loop matches cpu.stat within 1%', async (t) => {
  if (!requireBpf(t)) return;
  await compareAfter('lone', (cg) => cg.busy(2));
});

test('3 busy loops on 2 cores match cpu.stat within 1%', async (t) => {
  if (!requireBpf(t)) return;
  await compareAfter('three', (cg) => cg.busy(4, 3));
});

test('many short processes match cpu.stat within 1%', async (t) => {
  if (!requireBpf(t)) return;
  await compareAfter('short', async (cg) => {
    // ~150 processes of ~10-20 ms each, forked by a shell inside the cgroup.
    const code = await cg.runToEnd('i=0; while [ $i -lt 150 ]; do awk "BEGIN{for(j=0;j<150000;j++);}"; i=$((i+1)); done');
    assert.equal(code, 0);
  });
});

test('a running busy loop is counted before it ever switches out (in-progress slice)', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'chrt', hasTool('chrt')) || !requireTool(t, 'taskset', hasTool('taskset'))) return;
  // A real-time (FIFO) loop pinned to one CPU is never preempted by normal
  // tasks, and at under 0.95 s of CPU it is not throttled either: it never
  // switches out, so only the in-progress slice can count it. (An ordinary
  // loop is preempted at every tick on a busy machine, and its time would be
  // counted at those switches anyway.)
  // The loop gets the last CPU; the exporter and this process the first, so
  // that they are not starved while it runs.
  const last = cpus().length - 1;
  const fast = await startExporter(['--poll.interval', '100ms'], { wrap: ['taskset', '-c', '0'] });
  t.after(() => fast.stop());
  execFileSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
  const cg = TestCgroup.unique('kt-cpu-running');
  try {
    // Known by path first (a new id may wait up to a second for a cgroup walk).
    assert.equal(await cg.runToEnd('true'), 0);
    await waitFor('kerntap to know the cgroup', async () => exported(parseExposition(await fast.scrape()), cg) !== undefined);
    const loop = cg.run(`chrt -f 1 taskset -c ${last} /bin/sh -c 'while :; do :; done'`);
    await waitFor('the loop to run for 0.1 s', () => cg.usageUsec() >= 100_000, 10_000, 10);
    const switches = contextSwitches(loop.pid!);
    const atLeast = cg.usageUsec() / 1e6;
    const got = exported(await waitForPoll(fast), cg);
    const usage = cg.usageUsec() / 1e6;
    const switchedMeanwhile = contextSwitches(loop.pid!) !== switches;
    await cg.killAll();
    assert.ok(!switchedMeanwhile, `the loop never switched out while measured (${usage} s of CPU)`);
    assert.ok(got !== undefined, 'the running cgroup has a series');
    assert.ok(got >= atLeast * 0.99, `in-progress time counted: exported ${got}s, cpu.stat ${atLeast}s before the poll`);
    assert.ok(got <= usage * 1.01 + 0.001, `not ahead of the kernel: ${got} vs ${usage}`);
  } finally {
    execFileSync('taskset', ['-a', '-p', '-c', `0-${last}`, String(process.pid)], { stdio: 'ignore' });
    await cg.destroy();
  }
});

/** Voluntary and involuntary context switches of a task so far. */
function contextSwitches(pid: number): string {
  return [...readFileSync(`/proc/${pid}/status`, 'utf8').matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)].map((m) => m[1]).join('/');
}

test('a parent\'s series counts its own tasks only; its cpu.stat includes its children (leaf cgroups match)', async (t) => {
  if (!requireBpf(t)) return;
  const parent = TestCgroup.unique('kt-cpu-parent');
  const child = new TestCgroup('leaf', parent);
  try {
    await child.busy(0.5);
    const s = await waitForPollWithCgroups(exporter(), [child.label]);
    const leaf = exported(s, child)!;
    assert.ok(Math.abs(leaf / (child.usageUsec() / 1e6) - 1) < 0.01, `the leaf matches its cpu.stat (${leaf})`);
    assert.ok(parent.usageUsec() >= child.usageUsec(), 'the parent\'s cpu.stat includes the child');
    assert.ok((exported(s, parent) ?? 0) < 0.01, `the parent's own tasks used nothing (${exported(s, parent)})`);
  } finally {
    await child.destroy();
    await parent.destroy();
  }
});
