/**
 * Container, pod and namespace names from runtime sockets: docker's Engine
 * API and the CRI (containerd, CRI-O) answered by stand-ins on real unix
 * sockets; the refresh policy (one listing per miss, rate-limited, misses
 * retried later), timeouts on a hung runtime, one-line errors, and the
 * labels the labeler derives from them.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { CriSource, EngineApiSource, RuntimeNames, SANDBOX_CONTAINER_NAME } from '../../src/cgroup/runtime.js';
import { CgroupLabeler } from '../../src/cgroup/labeler.js';
import { defineMetric } from '../../src/model/metric.js';
import { parseConfig } from '../../src/config.js';
import { numberFamily } from '../../src/model/snapshot.js';
import { socketDir, startFakeCri, startFakeEngine, startSilentSocket, type FakeRuntime } from '../helpers/runtimes.js';

const D1 = 'd1'.repeat(32);
const D2 = 'd2'.repeat(32);
const C1 = 'c1'.repeat(32);
const C2 = 'c2'.repeat(32);
const SANDBOX = '5b'.repeat(32);
const UID = '6f1d0b7e-3c2a-4f5e-8d9c-0a1b2c3d4e5f';
const UID_ = UID.replace(/-/g, '_');

const dir = socketDir();
const fakes: FakeRuntime[] = [];
after(async () => {
  for (const f of fakes) await f.close();
});

function capturingLog() {
  const lines: string[] = [];
  const log = pino({ level: 'warn' }, new Writable({ write(chunk: Buffer, _enc, cb) { lines.push(...chunk.toString().trim().split('\n')); cb(); } }));
  return { log, lines };
}

async function engine(name: string) {
  const fake = await startFakeEngine(path.join(dir, name), [
    { id: D1, name: 'demo-web-1', labels: { 'com.docker.compose.service': 'web' } },
    // cri-dockerd: Kubernetes on docker.
    { id: D2, name: `k8s_api_shop-7d9_prod_${UID}_0`, labels: {
      'io.kubernetes.container.name': 'api', 'io.kubernetes.pod.name': 'shop-7d9', 'io.kubernetes.pod.namespace': 'prod', 'io.kubernetes.pod.uid': UID,
    } },
  ]);
  fakes.push(fake);
  return fake;
}

async function cri(name: string) {
  const fake = await startFakeCri(path.join(dir, name), [
    { sandboxId: SANDBOX, uid: UID, name: 'web-5c6f', namespace: 'shop', containers: { [C1]: 'nginx', [C2]: 'log-shipper' } },
  ]);
  fakes.push(fake);
  return fake;
}

test('docker Engine API: container names, and pod names from the kubelet labels', async () => {
  const fake = await engine('docker.sock');
  const listing = await new EngineApiSource('docker', fake.socket).list(1000);
  assert.deepEqual(listing.containers.get(D1), { name: 'demo-web-1', runtime: 'docker', podUid: '' });
  assert.deepEqual(listing.containers.get(D2), { name: 'api', runtime: 'docker', podUid: UID });
  assert.deepEqual(listing.pods.get(UID), { name: 'shop-7d9', namespace: 'prod' });
});

test('CRI (containerd, CRI-O): containers, sandboxes and pods over gRPC', async () => {
  const fake = await cri('containerd.sock');
  const source = new CriSource('containerd', fake.socket);
  try {
    // Generous: the timeout is tested below, not a loaded machine.
    const listing = await source.list(10_000);
    assert.deepEqual(listing.containers.get(C1), { name: 'nginx', runtime: 'containerd', podUid: UID });
    assert.deepEqual(listing.containers.get(C2), { name: 'log-shipper', runtime: 'containerd', podUid: UID });
    assert.deepEqual(listing.containers.get(SANDBOX), { name: SANDBOX_CONTAINER_NAME, runtime: 'containerd', podUid: UID });
    assert.deepEqual(listing.pods.get(UID), { name: 'web-5c6f', namespace: 'shop' });
    assert.equal(fake.requests, 2, 'one ListPodSandbox and one ListContainers');
  } finally {
    source.close();
  }
});

test('refresh policy: one listing for new ids, rate-limited, misses asked again only later', async () => {
  const fake = await engine('docker-policy.sock');
  let now = 0;
  const { log } = capturingLog();
  const names = new RuntimeNames([new EngineApiSource('docker', fake.socket)], { timeoutMs: 1000, log, now: () => now, minRefreshMs: 5000, retryMissMs: 60_000 });
  await names.learn([D1], []);
  assert.equal(names.container(D1)?.name, 'demo-web-1');
  assert.equal(names.container(D2)?.name, 'api', 'one listing answers for every container');
  assert.equal(names.pod(UID)?.namespace, 'prod');
  assert.equal(fake.requests, 1);

  await names.learn([D1, D2], [UID]);
  assert.equal(fake.requests, 1, 'known ids: no request');

  const stranger = 'ee'.repeat(32);
  now = 1000;
  await names.learn([stranger], []);
  assert.equal(fake.requests, 1, 'within minRefreshMs of the last listing: no request');
  now = 6000;
  await names.learn([stranger], []);
  assert.equal(fake.requests, 2, 'unknown id after minRefreshMs: one listing');
  now = 30_000;
  await names.learn([stranger], []);
  assert.equal(fake.requests, 2, 'still unknown: not asked again before retryMissMs');
  now = 66_001;
  await names.learn([stranger], []);
  assert.equal(fake.requests, 3, 'asked again after retryMissMs');
});

test('refresh policy: when a runtime failed to answer, unknown ids are asked for again sooner', async () => {
  const fake = await engine('docker-policy2.sock');
  const broken = path.join(dir, 'broken-file');
  writeFileSync(broken, '');
  let now = 0;
  const { log } = capturingLog();
  const names = new RuntimeNames([new EngineApiSource('docker', fake.socket), new EngineApiSource('podman', broken)],
    { timeoutMs: 1000, log, now: () => now, minRefreshMs: 1000, retryMissMs: 60_000, retryFailedMs: 10_000 });
  const stranger = 'ef'.repeat(32);
  await names.learn([stranger], []);
  assert.equal(fake.requests, 1);
  now = 9000;
  await names.learn([stranger], []);
  assert.equal(fake.requests, 1, 'not before retryFailedMs');
  now = 10_000;
  await names.learn([stranger], []);
  assert.equal(fake.requests, 2, 'after retryFailedMs, not retryMissMs: the failed runtime may know it');
});

test('a hung runtime costs at most the timeout; absent sockets are skipped; failures log one line naming the socket', async (t) => {
  const silent = await startSilentSocket(path.join(dir, 'hung.sock'));
  fakes.push(silent);
  const notHttp = path.join(dir, 'plain-file');
  writeFileSync(notHttp, '');
  const { log, lines } = capturingLog();
  const names = new RuntimeNames([
    new EngineApiSource('docker', silent.socket),
    new EngineApiSource('podman', path.join(dir, 'absent.sock')),
    new CriSource('cri-o', notHttp),
  ], { timeoutMs: 300, log });
  const t0 = performance.now();
  await names.learn([D1], []);
  const took = performance.now() - t0;
  t.diagnostic(`learn() with a hung runtime took ${took.toFixed(0)} ms (timeout 300 ms)`);
  names.close();
  assert.ok(took >= 290 && took < 2000, `learn waited ${took.toFixed(0)} ms for a 300 ms timeout`);
  assert.equal(names.container(D1), undefined);
  const warnings = lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
  assert.equal(warnings.length, 2, warnings.join('\n'));
  assert.ok(warnings.some((w) => w === `container names: docker socket ${silent.socket}: no answer in 300 ms; names stay empty until it answers`), warnings.join('\n'));
  assert.ok(warnings.some((w) => w.startsWith(`container names: cri-o socket ${notHttp}: ListPodSandbox: `)), warnings.join('\n'));
  assert.ok(!warnings.some((w) => w.includes('absent.sock')), 'an absent socket is not an error');
});

test('labeler: name labels next to the identity labels, cgroupfs CRI runtime named by the socket that knew it', async () => {
  const docker = await engine('docker-labeler.sock');
  const containerd = await cri('containerd-labeler.sock');
  const { log } = capturingLog();
  const labeler = CgroupLabeler.fromConfig({
    aggregate: 'cgroup',
    runtime_sockets: { docker: docker.socket, podman: '', containerd: containerd.socket, crio: '' },
    runtime_timeout: 10_000,
  }, log);
  const def = defineMetric({ name: 'kerntap.test.cpu', kind: 'counter', unit: 's', help: 'test', labels: ['cgroup'] });
  const paths = [
    `/system.slice/docker-${D1}.scope`,
    `/kubepods/burstable/pod${UID}/${C1}`,
    `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${SANDBOX}.scope`,
    `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice`,
    '/system.slice/nginx.service',
    '~overflow',
  ];
  const [fam] = await labeler.apply([numberFamily(def, paths.map((p, i) => ({ labels: [p], value: i })))]);
  labeler.close();
  assert.deepEqual(fam!.def.labels, ['cgroup', 'container.id', 'container.runtime.name', 'k8s.pod.uid', 'pod_qos', 'systemd_unit', 'container.name', 'k8s.pod.name', 'k8s.namespace.name']);
  const rows = fam!.points.map((p) => p.labels.slice(1));
  assert.deepEqual(rows, [
    [D1, 'docker', '', '', '', 'demo-web-1', '', ''],
    [C1, 'containerd', UID, 'burstable', '', 'nginx', 'web-5c6f', 'shop'],
    [SANDBOX, 'containerd', UID, 'burstable', '', 'POD', 'web-5c6f', 'shop'],
    ['', '', UID, 'burstable', '', '', 'web-5c6f', 'shop'],
    ['', '', '', '', 'nginx.service', '', '', ''],
    ['', '', '', '', '', '', '', ''],
  ]);
});

test('labeler without runtime sockets: identity labels only', async () => {
  const { log } = capturingLog();
  const labeler = CgroupLabeler.fromConfig({ aggregate: 'container', runtime_sockets: false, runtime_timeout: 1000 }, log);
  const def = defineMetric({ name: 'kerntap.test.cpu2', kind: 'counter', unit: 's', help: 'test', labels: ['cgroup'] });
  const [fam] = await labeler.apply([numberFamily(def, [{ labels: [`/system.slice/docker-${D1}.scope/inner`], value: 1 }])]);
  assert.deepEqual(fam!.def.labels, ['cgroup', 'container.id', 'container.runtime.name', 'k8s.pod.uid', 'pod_qos', 'systemd_unit']);
  assert.deepEqual(fam!.points[0]!.labels, [`/system.slice/docker-${D1}.scope`, D1, 'docker', '', '', '']);
});

test('config: runtime sockets default to the runtimes\' standard paths; bad values name the key in one line', () => {
  assert.deepEqual(parseConfig('', 'k.yml').cgroup.runtime_sockets, {
    docker: '/run/docker.sock', podman: '/run/podman/podman.sock', containerd: '/run/containerd/containerd.sock', crio: '/run/crio/crio.sock',
  });
  assert.equal(parseConfig('cgroup:\n  runtime_sockets: false\n', 'k.yml').cgroup.runtime_sockets, false);
  assert.throws(() => parseConfig('cgroup:\n  runtime_sockets:\n    docker: run/docker.sock\n', 'k.yml'),
    { message: 'k.yml: key cgroup.runtime_sockets.docker: must be an absolute path to a unix socket, or "" to turn it off' });
  assert.throws(() => parseConfig('cgroup:\n  runtime_sockets:\n    dockr: /x\n', 'k.yml'), { message: 'k.yml: unknown key cgroup.runtime_sockets.dockr' });
  assert.throws(() => parseConfig('cgroup:\n  runtime_sockets: /run/docker.sock\n', 'k.yml'),
    { message: 'k.yml: key cgroup.runtime_sockets: must be false, or a mapping of docker, podman, containerd, crio to socket paths' });
  assert.throws(() => parseConfig('cgroup:\n  runtime_timeout: 1ms\n', 'k.yml'), { message: 'k.yml: key cgroup.runtime_timeout: must be at least 10ms' });
});
