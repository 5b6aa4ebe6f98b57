/**
 * The benchmark harness works end to end (bench/run.sh --smoke: seconds, not
 * a measurement): every part produces sane numbers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, requireBpf, requireTool } from '../helpers/env.js';

const have = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

test('bench/run.sh --smoke measures every part', (t) => {
  if (!requireBpf(t)) return;
  for (const tool of ['wrk', 'nginx', 'bpftrace', 'bpftool']) if (!requireTool(t, tool, have(tool))) return;
  const r = spawnSync('bash', [path.join(ROOT, 'bench/run.sh'), '--smoke'], { encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, r.stderr.slice(-2000));
  const res = JSON.parse(readFileSync(path.join(ROOT, 'bench/results/smoke.json'), 'utf8'));
  const hooks = Object.fromEntries(res.inKernel.map((x: { hook: string }) => [x.hook, x]));
  for (const hook of ['sched_switch', 'tcp_probe', 'inet_sock_set_state']) {
    assert.ok(hooks[hook]?.kerntapNs > 0 && hooks[hook].events > 0, `kerntap ns/event on ${hook}`);
    assert.ok(hooks[hook].bpftraceNs > 0, `bpftrace ns/event on ${hook}`);
  }
  for (const mode of ['connection_per_request', 'keep_alive']) {
    const a = res.appOverhead[mode];
    assert.ok(a.rpsOff > 0 && a.rpsOn > 0 && a.median > 0.5 && a.median < 1.5, `${mode} A/B ratio ${a.median}`);
  }
  assert.ok(res.render.every((x: { bytes: number; renderMs: number }) => x.bytes > 0 && x.renderMs > 0));
  assert.equal(res.batchRead.entries, 10000);
  assert.ok(res.scale.maxRssMB > 10 && res.scale.cpuPercentOfCore >= 0 && res.scale.series > 20);
});
