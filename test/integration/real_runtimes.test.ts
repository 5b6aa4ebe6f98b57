/**
 * kerntap against real container runtimes: dockerd, podman and containerd's
 * CRI, started by the test (test/helpers/realruntimes.ts) with a busybox
 * image. For each: identity and names on a CPU-burning container's series
 * and its CPU against the container cgroup's cpu.stat; exact TCP bytes of a
 * container in its own network namespace; a container that exits ages out
 * after cgroup.ttl and a new one under the same name is a new series; and
 * with the runtimes hung, or podman's API service stopped, identity from the
 * path with empty names and one log line per socket.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { bpfUnavailable, requireBpf, requireTool } from '../helpers/env.js';
import { startExporter, writeConfig, type Exporter } from '../helpers/exporter.js';
import { parseExposition, find, type Sample } from '../helpers/exposition.js';
import { freePort } from '../helpers/net.js';
import {
  cgroupExists, expectCpuMatches, expectTrafficExact, missingRuntimeTools, startRuntimes, startTraffic, untilMetrics, waitFor,
  type RealContainer, type Runtime, type Runtimes,
} from '../helpers/realruntimes.js';

const CPU = 'kerntap_cgroup_cpu_time_seconds_total';
const TTL_MS = 3000;
const burn = (n: number) => `i=0; while [ $i -lt ${n} ]; do i=$((i+1)); done`;
const BURN = burn(150_000);
/** About half a CPU second: the ticks that follow (a fork every 0.5 s) stay far below 1% of it. */
const LONG_BURN = burn(400_000);
const FOREVER = 'exec sleep 2147483647';
/** A little CPU every half second, so that an exporter started later sees the cgroup too. */
const TICKING = 'while :; do sleep 0.5; done';

let runtimes: Runtimes | undefined;
let exporter: Exporter | undefined;
const missing = missingRuntimeTools();
const undo: (() => unknown)[] = [];

function configFor(r: Runtimes): string {
  return [
    // The test daemons' sockets are root's 0600/0660: no privilege drop here (the image test covers it).
    'security:', '  drop_privileges: false',
    'cgroup:', `  ttl: ${TTL_MS}ms`, '  runtime_sockets:',
    ...r.all.map((rt) => `    ${rt.kind}: ${rt.socket}`), "    crio: ''", '',
  ].join('\n');
}

before(async () => {
  if (bpfUnavailable() || missing.length) return;
  runtimes = await startRuntimes();
  exporter = await startExporter(['--config.file', writeConfig(configFor(runtimes))]);
});

after(async () => {
  for (const u of undo.reverse()) await u();
  await exporter?.stop();
  await runtimes?.teardown();
});

function ready(t: import('node:test').TestContext): boolean {
  if (!requireBpf(t)) return false;
  if (!requireTool(t, `Debian packages ${missing.join(', ')} (scripts/dev.sh installs them)`, missing.length === 0)) return false;
  assert.ok(runtimes && exporter, 'runtimes and exporter started');
  return true;
}

async function scrape(e: Exporter = exporter!): Promise<Sample[]> {
  return parseExposition(await e.scrape());
}

function until<T>(what: string, check: (s: Sample[]) => T | undefined, e: Exporter = exporter!, timeoutMs = 30_000): Promise<T> {
  return untilMetrics(() => e.scrape(), what, check, timeoutMs);
}

async function startContainer(r: Runtime, name: string, script: string): Promise<RealContainer> {
  const c = await r.start(name, script);
  undo.push(() => r.remove(c).catch(() => undefined));
  return c;
}

/** The identity and name labels kerntap must put on a container's series. */
function labelsOf(r: Runtime, c: RealContainer): Record<string, string> {
  return {
    cgroup: c.cgroup,
    container_id: c.id,
    container_name: c.name,
    container_runtime_name: r.kind,
    k8s_pod_uid: c.pod?.uid ?? '',
    k8s_pod_name: c.pod?.name ?? '',
    k8s_namespace_name: c.pod?.namespace ?? '',
    pod_qos: c.pod ? 'besteffort' : '',
  };
}

const burners = new Map<string, RealContainer>();
const suffix = process.pid.toString(36);

for (const kind of ['docker', 'podman', 'containerd'] as const) {
  const rt = () => runtimes![kind]!;

  test(`${kind}: a CPU-burning container's series has its id, name and runtime, CPU within 1% of its cpu.stat`, async (t) => {
    if (!ready(t)) return;
    const c = await startContainer(rt(), `kt-burn-${kind}-${suffix}`, `${LONG_BURN}; ${TICKING}`);
    burners.set(kind, c);
    t.diagnostic(`${kind} container ${c.name} (${c.id}) in cgroup ${c.cgroup}`);
    const want = labelsOf(rt(), c);
    // Once the burn is over the container mostly sleeps: kerntap's series catches up with its cpu.stat.
    const [got, usage] = await expectCpuMatches(() => exporter!.scrape(), c, want);
    t.diagnostic(`kerntap ${got.toFixed(4)} s, cpu.stat ${usage.toFixed(4)} s`);
    assert.equal(find(await scrape(), CPU, { cgroup: c.cgroup }).length, 1, 'one series for the container');
  });

  test(`${kind}: TCP bytes of a container in its own network namespace, exact`, async (t) => {
    if (!ready(t)) return;
    const traffic = await startTraffic(3, 7000, 5000, await freePort());
    undo.push(() => traffic.close());
    const c = await startContainer(rt(), `kt-tcp-${kind}-${suffix}`, `${traffic.script}; ${FOREVER}`);
    await traffic.start(c);
    await expectTrafficExact(() => exporter!.scrape(), traffic, { cgroup: c.cgroup, container_id: c.id, container_name: c.name });
    t.diagnostic(`${c.name}: sent ${traffic.server.counts.received} B, received ${traffic.server.counts.sent} B, as the server counted`);
  });

  test(`${kind}: an exited container ages out after cgroup.ttl; the same name again is a new series`, async (t) => {
    if (!ready(t)) return;
    const name = `kt-exit-${kind}-${suffix}`;
    // Exits by itself on SIGTERM, after the burn.
    const script = `trap 'exit 0' TERM; ${BURN}; while :; do sleep 0.1; done`;
    const first = await startContainer(rt(), name, script);
    await until(`${kind}: series of ${name}`, (s) => find(s, CPU, labelsOf(rt(), first)).length === 1 || undefined);
    process.kill(first.pid, 'SIGTERM');
    const deadline = Date.now() + 30_000;
    while (cgroupExists(first.cgroup) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(!cgroupExists(first.cgroup), `${kind} removed ${first.cgroup} when the container exited`);
    const goneAt = Date.now();
    await until(`${kind}: series of exited ${name} dropped`, (s) => find(s, CPU, { cgroup: first.cgroup }).length === 0 || undefined, exporter, TTL_MS + 15_000)
      .catch(async (err: Error) => {
        throw new Error(`${err.message}: ${JSON.stringify(find(await scrape(), CPU, { cgroup: first.cgroup }))}`);
      });
    const keptMs = Date.now() - goneAt;
    t.diagnostic(`series kept ${keptMs} ms after the cgroup went (ttl ${TTL_MS} ms)`);
    // Deletions are checked every max(poll, ttl / 10): gone after ttl plus that and a poll (500 ms each here).
    assert.ok(keptMs >= TTL_MS - 500 && keptMs <= TTL_MS + 2500, `kept for the ttl (${keptMs} ms)`);

    await rt().remove(first);
    const second = await startContainer(rt(), name, script);
    assert.notEqual(second.id, first.id);
    await until(`${kind}: series of the new ${name}`, (s) => find(s, CPU, labelsOf(rt(), second)).length === 1 || undefined);
    assert.equal(find(await scrape(), CPU, { container_name: name }).length, 1, 'only the new container has a series under the name');
  });
}

test('runtimes hung: identity from the path, names empty, one log line naming each socket', async (t) => {
  if (!ready(t)) return;
  const r = runtimes!;
  assert.equal(burners.size, 3, 'the CPU tests left a container running in each runtime');
  for (const rt of r.all) process.kill(rt.pid, 'SIGSTOP');
  try {
    const hung = await startExporter(['--config.file', writeConfig(configFor(r).replace('cgroup:', 'cgroup:\n  runtime_timeout: 300ms'))]);
    undo.push(() => hung.stop());
    for (const rt of r.all) {
      const c = burners.get(rt.kind)!;
      // A cgroupfs-driver pod path does not say which CRI runtime: "cri" until a socket answers.
      const want = { ...labelsOf(rt, c), container_name: '', k8s_pod_name: '', k8s_namespace_name: '', container_runtime_name: rt.kind === 'containerd' ? 'cri' : rt.kind };
      await until(`${rt.kind} hung: series ${JSON.stringify(want)}`, (s) => find(s, CPU, want).length === 1 || undefined, hung);
    }
    await until('a log line per hung runtime', () => r.all.every((rt) => hung.stderr().includes(`socket ${rt.socket}:`)) || undefined, hung);
    for (const rt of r.all) {
      const lines = hung.stderr().split('\n').filter((l) => l.includes(`container names: ${rt.kind} socket ${rt.socket}:`));
      t.diagnostic(lines[0] ?? '');
      assert.equal(lines.length, 1, `one line for ${rt.kind}`);
    }
  } finally {
    for (const rt of r.all) process.kill(rt.pid, 'SIGCONT');
  }
});

test('podman API service stopped: identity from the path, names empty, one log line naming the socket', async (t) => {
  if (!ready(t)) return;
  const podman = runtimes!.podman!;
  const c = burners.get('podman')!;
  // podman's containers run on without the API service (conmon keeps them); SIGKILL leaves its socket file behind.
  process.kill(podman.pid, 'SIGKILL');
  await waitFor('podman service gone', () => {
    try { process.kill(podman.pid, 0); return undefined; } catch { return true; }
  });
  assert.ok(existsSync(podman.socket), 'the killed service left its socket');
  const stopped = await startExporter(['--config.file', writeConfig(configFor(runtimes!))]);
  undo.push(() => stopped.stop());
  const want = { ...labelsOf(podman, c), container_name: '' };
  await until(`podman stopped: series ${JSON.stringify(want)}`, (s) => find(s, CPU, want).length === 1 || undefined, stopped);
  await until('a log line for the stopped runtime', () => stopped.stderr().includes(`socket ${podman.socket}:`) || undefined, stopped);
  const lines = stopped.stderr().split('\n').filter((l) => l.includes(`container names: podman socket ${podman.socket}:`));
  t.diagnostic(lines[0] ?? '');
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /ECONNREFUSED/);
});
