/**
 * Container and pod identity from real cgroup directories with the path
 * shapes of docker, containerd, CRI-O, podman, Kubernetes and systemd, with
 * real processes in them: labels on the CPU metric, per-pod aggregation, and
 * names from runtime sockets (docker Engine API and CRI stand-ins) on
 * /metrics and as OTel semantic-convention attributes in OTLP.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { requireBpf, requireTool } from '../helpers/env.js';
import { startExporter, writeConfig, type Exporter } from '../helpers/exporter.js';
import { waitFor, waitForPoll, waitForPollWithCgroups } from '../helpers/wait.js';
import { TestCgroup } from '../helpers/cgroup.js';
import { parseExposition, find, type Sample } from '../helpers/exposition.js';
import { haveReceiver, metricsOf, startReceiver } from '../helpers/otlp.js';
import { Cleanups } from '../helpers/net.js';
import { shareSocket, socketDir, startFakeCri, startFakeEngine } from '../helpers/runtimes.js';

const C1 = '1f'.repeat(32);
const C2 = '2e'.repeat(32);
const UID = '3d1c7c0a-0d2e-4b0e-9a86-0a2b7a9c3f51';
const POD = `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID.replace(/-/g, '_')}.slice`;

const fixtures = new Cleanups();
after(() => fixtures.run());

/** Creates root/<rel> (all levels), runs a short busy loop in the leaf, and registers cleanup of every level. */
async function busyIn(root: TestCgroup, rel: string): Promise<TestCgroup> {
  let parent = root;
  for (const part of rel.split('/')) {
    const cg = new TestCgroup(part, parent);
    fixtures.add(() => cg.destroy());
    parent = cg;
  }
  const code = await parent.runToEnd('i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done');
  assert.equal(code, 0);
  return parent;
}

async function runWith(config: string, check: (exporter: Exporter, root: TestCgroup) => Promise<void>) {
  const exporter = await startExporter(['--config.file', writeConfig(config)]);
  fixtures.add(() => exporter.stop());
  const root = TestCgroup.unique('kt-ident');
  fixtures.add(() => root.destroy());
  await check(exporter, root);
}

test('identity labels for docker, containerd, CRI-O, podman, Kubernetes and systemd cgroups', async (t) => {
  if (!requireBpf(t)) return;
  await runWith('', async (exporter, root) => {
    const shapes: [string, Record<string, string>][] = [
      [`system.slice/docker-${C1}.scope`, { container_id: C1, container_runtime_name: 'docker', k8s_pod_uid: '', systemd_unit: '' }],
      [`docker/${C2}`, { container_id: C2, container_runtime_name: 'docker' }],
      [`${POD}/cri-containerd-${C1}.scope`, { container_id: C1, container_runtime_name: 'containerd', k8s_pod_uid: UID, pod_qos: 'burstable' }],
      [`kubepods.slice/kubepods-pod${UID.replace(/-/g, '_')}.slice/crio-${C2}.scope`, { container_id: C2, container_runtime_name: 'cri-o', pod_qos: 'guaranteed' }],
      [`machine.slice/libpod-${C1}.scope/container`, { container_id: C1, container_runtime_name: 'podman' }],
      [`kubepods/besteffort/pod${UID}/${C2}`, { container_id: C2, container_runtime_name: 'cri', k8s_pod_uid: UID, pod_qos: 'besteffort' }],
      ['system.slice/nginx.service', { systemd_unit: 'nginx.service', container_id: '' }],
      ['system.slice/dev-disk-by\\x2duuid-1.swap', { systemd_unit: 'dev-disk-by-uuid-1.swap' }],
    ];
    const leaves: TestCgroup[] = [];
    for (const [rel] of shapes) leaves.push(await busyIn(root, rel));
    const samples = await waitForPollWithCgroups(exporter, leaves.map((l) => l.label));
    shapes.forEach(([rel, want], i) => {
      const found = find(samples, 'kerntap_cgroup_cpu_time_seconds_total', { cgroup: leaves[i]!.label });
      assert.equal(found.length, 1, `series for ${rel}`);
      for (const [k, v] of Object.entries(want)) assert.equal(found[0]!.labels[k] ?? '', v, `${rel}: ${k}`);
      assert.ok(found[0]!.value > 0);
    });
  });
});

test('cgroup.aggregate: pod folds the containers of a pod into one series', async (t) => {
  if (!requireBpf(t)) return;
  await runWith('cgroup:\n  aggregate: pod\n', async (exporter, root) => {
    const a = await busyIn(root, `${POD}/cri-containerd-${C1}.scope`);
    const b = await busyIn(root, `${POD}/cri-containerd-${C2}.scope/nested`);
    const samples = await waitForPollWithCgroups(exporter, [`${root.label}/${POD}`]);
    const podPath = `${root.label}/${POD}`;
    const series = find(samples, 'kerntap_cgroup_cpu_time_seconds_total', { k8s_pod_uid: UID });
    assert.equal(series.length, 1, 'one series for the pod');
    assert.equal(series[0]!.labels.cgroup, podPath);
    assert.equal(series[0]!.labels.container_id, '');
    const usage = (a.usageUsec() + b.usageUsec()) / 1e6;
    t.diagnostic(`pod series ${series[0]!.value.toFixed(4)} s, Σ containers' cpu.stat ${usage.toFixed(4)} s`);
    assert.ok(Math.abs(series[0]!.value / usage - 1) < 0.01, `pod total ${series[0]!.value} = Σ containers' cpu.stat ${usage}`);
  });
});

test('container, pod and namespace names from runtime sockets, on /metrics and as OTel attributes', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'OTLP receiver (scripts/test-deps.sh)', haveReceiver())) return;
  // kerntap drops to uid 65534 after attach: the sockets' group (as docker's
  // is root:docker 0660) becomes its gid through security.run_as_gid.
  const gid = 4242;
  const dir = socketDir();
  const sandbox = '5b'.repeat(32);
  const docker = await startFakeEngine(`${dir}/docker.sock`, [{ id: C1, name: 'demo-web-1' }]);
  const containerd = await startFakeCri(`${dir}/containerd.sock`, [
    { sandboxId: sandbox, uid: UID, name: 'web-5c6f', namespace: 'shop', containers: { [C2]: 'nginx' } },
  ]);
  const crio = await startFakeCri(`${dir}/crio.sock`, []);
  for (const rt of [docker, containerd, crio]) fixtures.add(() => rt.close());
  shareSocket(docker.socket, gid);
  shareSocket(containerd.socket, gid);
  shareSocket(crio.socket, gid, 0o600); // root only: the one kerntap cannot use.
  const receiver = await startReceiver();
  fixtures.add(() => receiver.stop());
  const config = [
    'security:', `  run_as_gid: ${gid}`,
    'cgroup:', '  runtime_sockets:', `    docker: ${docker.socket}`, "    podman: ''",
    `    containerd: ${containerd.socket}`, `    crio: ${crio.socket}`,
    'otlp:', `  endpoint: ${receiver.url}/v1/metrics`, '  interval: 1s', '',
  ].join('\n');
  await runWith(config, async (exporter, root) => {
    const shapes: [string, Record<string, string>][] = [
      [`system.slice/docker-${C1}.scope`, { container_id: C1, container_runtime_name: 'docker', container_name: 'demo-web-1', k8s_pod_name: '', k8s_namespace_name: '' }],
      // cgroupfs driver: the path does not say which runtime; the socket that knew the id does.
      [`kubepods/burstable/pod${UID}/${C2}`, { container_id: C2, container_runtime_name: 'containerd', container_name: 'nginx', k8s_pod_uid: UID, k8s_pod_name: 'web-5c6f', k8s_namespace_name: 'shop' }],
      [`${POD}/cri-containerd-${sandbox}.scope`, { container_id: sandbox, container_runtime_name: 'containerd', container_name: 'POD', k8s_pod_name: 'web-5c6f', k8s_namespace_name: 'shop' }],
      [POD, { container_id: '', container_name: '', k8s_pod_uid: UID, k8s_pod_name: 'web-5c6f', k8s_namespace_name: 'shop' }],
    ];
    const leaves = await Promise.all(shapes.map(([rel]) => busyIn(root, rel)));
    const named = (samples: Sample[]) => shapes.map(([, want], i) => find(samples, 'kerntap_cgroup_cpu_time_seconds_total', { cgroup: leaves[i]!.label, ...want }));
    // Names arrive with the runtimes' answers, a poll or more after the ids.
    const samples = await waitForPoll(exporter, undefined, { until: (s) => named(s).every((f) => f.length === 1) })
      // Not all named in time: the assertions below say which and what was there.
      .catch(async () => parseExposition(await exporter.scrape()));
    named(samples).forEach((found, i) => {
      assert.equal(found.length, 1, `${shapes[i]![0]}: ${JSON.stringify(find(samples, 'kerntap_cgroup_cpu_time_seconds_total', { cgroup: leaves[i]!.label }))}`);
      assert.ok(found[0]!.value > 0);
    });
    assert.ok(docker.requests >= 1 && containerd.requests >= 2, 'the runtimes were asked');
    // Logged by the first lookup made after the drop (the one at start ran as root).
    const crioRefused = new RegExp(`container names: cri-o socket ${crio.socket}: ListPodSandbox: .*EACCES.*security\\.run_as_gid`);
    await waitFor('the cri-o permission warning', () => crioRefused.test(exporter.stderr())).catch(() => undefined);
    assert.match(exporter.stderr(), crioRefused);

    // OTLP: the same identity under the semantic-convention attribute names.
    const cgroupfsLeaf = leaves[1]!.label;
    let attrs: Record<string, string> | undefined;
    await receiver.waitFor((records) => {
      for (const r of records) {
        for (const m of metricsOf(r).filter((x) => x.name === 'kerntap.cgroup.cpu.time')) {
          const dp = m.sum?.dataPoints?.map((d) => Object.fromEntries((d.attributes ?? []).map((a) => [a.key, a.value.stringValue ?? '']))).find((a) => a.cgroup === cgroupfsLeaf && a['k8s.pod.name']);
          if (dp) attrs = dp;
        }
      }
      return attrs !== undefined;
    });
    assert.deepEqual(
      Object.fromEntries(['container.id', 'container.name', 'container.runtime.name', 'k8s.pod.uid', 'k8s.pod.name', 'k8s.namespace.name', 'pod_qos'].map((k) => [k, attrs![k]])),
      { 'container.id': C2, 'container.name': 'nginx', 'container.runtime.name': 'containerd', 'k8s.pod.uid': UID, 'k8s.pod.name': 'web-5c6f', 'k8s.namespace.name': 'shop', pod_qos: 'burstable' },
    );
  });
});
