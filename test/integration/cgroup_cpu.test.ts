/**
 * cgroup_cpu against the kernel's own accounting: the exported CPU time of a
 * test cgroup must match its cpu.stat usage_usec within 1%, for a lone busy
 * loop, for 3 busy loops on 2 cores, and for many short processes.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { requireBpf } from '../helpers/env.js';
import { startExporter, sleep, type Exporter } from '../helpers/exporter.js';
import { TestCgroup } from '../helpers/cgroup.js';
import { parseExposition, value } from '../helpers/exposition.js';

const METRIC = 'kerntap_cgroup_cpu_time_seconds_total';
let exporter: Exporter | undefined;

before(async () => {
  if (process.getuid?.() === 0) exporter = await startExporter([]).catch(() => undefined);
});
after(async () => {
  await exporter?.stop();
});

async function exportedSeconds(cg: TestCgroup): Promise<number | undefined> {
  return value(parseExposition(await exporter!.scrape()), METRIC, { cgroup: cg.label });
}

/** Runs the workload in a fresh cgroup, waits for it to end and for a poll after that, then compares. */
async function compareAfter(name: string, workload: (cg: TestCgroup) => Promise<void>) {
  const cg = TestCgroup.unique(`kt-cpu-${name}`);
  try {
    await workload(cg);
    assert.deepEqual(cg.procs(), [], 'workload finished');
    await sleep(1500); // > 2 poll intervals
    const usage = cg.usageUsec() / 1e6;
    const exported = await exportedSeconds(cg);
    assert.ok(exported !== undefined, `${METRIC}{cgroup="${cg.label}"} present`);
    // The 1% comparison below is the test; this only guards against a workload that never ran.
    assert.ok(usage > 0.05, `workload used CPU (${usage}s)`);
    const ratio = exported / usage;
    assert.ok(Math.abs(ratio - 1) < 0.01, `${name}: exported ${exported.toFixed(4)}s vs cpu.stat ${usage.toFixed(4)}s (ratio ${ratio.toFixed(4)})`);
    return { exported, usage };
  } finally {
    await cg.destroy();
  }
}

const BUSY = 'while :; do :; done';

test('lone busy loop matches cpu.stat within 1%', async (t) => {
  if (!requireBpf(t)) return;
  assert.ok(exporter, 'exporter started');
  await compareAfter('lone', async (cg) => {
    const child = cg.run(BUSY);
    await sleep(3000);
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
  });
});

test('3 busy loops on 2 cores match cpu.stat within 1%', async (t) => {
  if (!requireBpf(t)) return;
  await compareAfter('three', async (cg) => {
    const children = [cg.run(BUSY), cg.run(BUSY), cg.run(BUSY)];
    await sleep(3000);
    for (const c of children) c.kill('SIGKILL');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.on('exit', r)))));
  });
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
  if (!requireBpf(t)) return;
  const cg = TestCgroup.unique('kt-cpu-running');
  try {
    const child = cg.run(BUSY);
    await sleep(2500);
    // The snapshot is at most one poll interval (0.5 s) older than this read.
    const exported = (await exportedSeconds(cg)) ?? 0;
    const usage = cg.usageUsec() / 1e6;
    child.kill('SIGKILL');
    assert.ok(exported <= usage * 1.01 + 0.01, `not ahead of the kernel: ${exported} vs ${usage}`);
    assert.ok(exported >= usage - 0.6 - usage * 0.01, `in-progress time counted: exported ${exported}s, cpu.stat ${usage}s`);
  } finally {
    await cg.destroy();
  }
});
