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

interface HookCost { nsPerEvent: number; events: number }

test('bench/run.sh --smoke measures every part', (t) => {
  if (!requireBpf(t)) return;
  for (const tool of ['wrk', 'nginx', 'bpftrace', 'bpftool', 'taskset', 'ss', 'perf']) if (!requireTool(t, tool, have(tool))) return;
  const r = spawnSync('bash', [path.join(ROOT, 'bench/run.sh'), '--smoke'], { encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, r.stderr.slice(-2000));
  const res = JSON.parse(readFileSync(path.join(ROOT, 'bench/results/smoke.json'), 'utf8'));

  const hooks = Object.fromEntries(res.inKernel.map((x: { hook: string }) => [x.hook, x]));
  for (const hook of ['sched_switch', 'tcp_probe', 'inet_sock_set_state', 'tcp_send_reset', 'tcp_receive_reset']) {
    assert.ok(hooks[hook]?.kerntapNs > 0 && hooks[hook].events > 0, `kerntap ns/event on ${hook}: ${JSON.stringify(hooks[hook])}`);
    assert.ok(hooks[hook].bpftraceNs > 0 && hooks[hook].bpftraceEvents > 0, `bpftrace ns/event on ${hook}`);
    assert.ok(hooks[hook].kerntapNs < 100_000, `${hook}: ${hooks[hook].kerntapNs} ns/event is not a BPF program's cost`);
  }

  for (const mode of ['connection_per_request', 'keep_alive']) {
    const a = res.appOverhead[mode];
    // One 1-second round measures nothing on a shared machine; it proves both sides ran.
    assert.ok(a.rpsOff > 0 && a.rpsOn > 0, `${mode} requests/s with and without kerntap`);
    assert.ok(a.cpuUsPerRequestOff > 0 && a.cpuUsPerRequestOn > 0 && a.cpuUsPerRequestOn < 10_000, `${mode} CPU per request from the app's cgroup`);
    assert.ok(Number.isFinite(a.requestsPerS.median) && Number.isFinite(a.cpuPerRequest.median), `${mode} A/B ratios`);
  }

  // The profile attributes CPU to kerntap's programs only when they are attached, and sees bpftrace's.
  const programs = (side: { usPerRequest: Record<string, number> }, prefix: string) => Object.entries(side.usPerRequest).filter(([root, us]) => root.startsWith(prefix) && us > 0);
  assert.ok(programs(res.profile.on, 'program tcp_state').length === 1, `profile: tcp_state seen: ${JSON.stringify(res.profile.on)}`);
  assert.deepEqual(programs(res.profile.off, 'program tcp_'), [], 'profile: no kerntap program when detached');
  assert.ok(programs(res.profile.bpftrace, 'program ').length > 0, `profile: bpftrace's programs seen: ${JSON.stringify(res.profile.bpftrace)}`);
  assert.ok(Number.isFinite(res.profile.kerntapToBpftrace.median), 'profile: kerntap against bpftrace');
  assert.ok(res.profile.on.contextSwitchesPerRequest > 0, `profile: context switches per request counted: ${res.profile.on.contextSwitchesPerRequest}`);

  // Every rendered series parses back as one sample.
  for (const x of res.render) {
    assert.equal(x.lines, x.series, `render of ${x.series} series`);
    assert.ok(x.renderMs > 0 && x.trackMs > 0 && x.maxEventLoopBlockMs > 0);
    assert.ok(x.protobufRenderMs > 0 && x.protobufBytes > x.series, `protobuf render of ${x.series} series`);
  }
  assert.deepEqual(res.batchRead.map((x: { entries: number }) => x.entries), [1000, 10000]);

  // Connections counted by the kernel (ss), not by the generator.
  assert.equal(res.scale.connections, 200);
  assert.ok(res.scale.maxRssMB > 10 && res.scale.cpuPercentOfCore >= 0 && res.scale.series > 20);

  const rates = res.growth.eventRate.map((s: { hooks: Record<string, HookCost> }) => s.hooks.inet_sock_set_state!.events);
  assert.ok(rates.every((n: number) => n > 0), `state changes seen at every event rate: ${rates}`);
  assert.deepEqual(res.growth.cpus.map((s: { cpus: number }) => s.cpus), [1, 2]);
  const conns = res.growth.exporter.filter((x: { growing: string }) => x.growing === 'connections');
  assert.deepEqual(conns.map((x: { connections: number }) => x.connections), [0, 200]);
  assert.ok(res.growth.exporter.every((x: { pollMs: number; cpuMsPerPoll: number; rssMB: number }) => x.pollMs > 0 && x.cpuMsPerPoll > 0 && x.rssMB > 10));

  // The http collector: both sides of each A/B, and the programs measured against empty ones on both workloads.
  assert.ok(res.http.keepAlive.cpuUsPerRequestOff > 0 && res.http.keepAlive.cpuUsPerRequestOn > 0, 'http: CPU per request on and off');
  assert.ok(res.http.nonHttpSyscalls.syscallsPerSOff > 0 && res.http.nonHttpSyscalls.syscallsPerSOn > 0, 'http: syscall throughput on and off');
  for (const w of ['nonHttp', 'http']) {
    const read = res.http.inKernel[w].find((x: { program: string }) => x.program === 'http_read_enter');
    assert.ok(read?.kerntapNs > 0 && read.emptyNs > 0 && read.events > 0, `http ${w}: read_enter against the empty program: ${JSON.stringify(read)}`);
  }
});
