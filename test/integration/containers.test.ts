/**
 * Container and pod identity from real cgroup directories with the path
 * shapes of docker, containerd, CRI-O, podman, Kubernetes and systemd, with
 * real processes in them: labels on the CPU metric, and per-pod aggregation.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { requireBpf } from '../helpers/env.js';
import { startExporter, sleep, writeConfig, type Exporter } from '../helpers/exporter.js';
import { TestCgroup } from '../helpers/cgroup.js';
import { parseExposition, find } from '../helpers/exposition.js';

const C1 = '1f'.repeat(32);
const C2 = '2e'.repeat(32);
const UID = '3d1c7c0a-0d2e-4b0e-9a86-0a2b7a9c3f51';
const POD = `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID.replace(/-/g, '_')}.slice`;

const cleanup: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

/** Creates root/<rel> (all levels), runs a short busy loop in the leaf, and registers cleanup of every level. */
async function busyIn(root: TestCgroup, rel: string): Promise<TestCgroup> {
  let parent = root;
  for (const part of rel.split('/')) {
    const cg = new TestCgroup(part, parent);
    cleanup.push(() => cg.destroy());
    parent = cg;
  }
  const code = await parent.runToEnd('i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done');
  assert.equal(code, 0);
  return parent;
}

async function runWith(config: string, check: (exporter: Exporter, root: TestCgroup) => Promise<void>) {
  const exporter = await startExporter(['--config.file', writeConfig(config)]);
  cleanup.push(() => exporter.stop());
  const root = TestCgroup.unique('kt-ident');
  cleanup.push(() => root.destroy());
  await check(exporter, root);
}

test('identity labels for docker, containerd, CRI-O, podman, Kubernetes and systemd cgroups', async (t) => {
  if (!requireBpf(t)) return;
  await runWith('', async (exporter, root) => {
    const shapes: [string, Record<string, string>][] = [
      [`system.slice/docker-${C1}.scope`, { container_id: C1, container_runtime: 'docker', pod_uid: '', systemd_unit: '' }],
      [`docker/${C2}`, { container_id: C2, container_runtime: 'docker' }],
      [`${POD}/cri-containerd-${C1}.scope`, { container_id: C1, container_runtime: 'containerd', pod_uid: UID, pod_qos: 'burstable' }],
      [`kubepods.slice/kubepods-pod${UID.replace(/-/g, '_')}.slice/crio-${C2}.scope`, { container_id: C2, container_runtime: 'cri-o', pod_qos: 'guaranteed' }],
      [`machine.slice/libpod-${C1}.scope/container`, { container_id: C1, container_runtime: 'podman' }],
      [`kubepods/besteffort/pod${UID}/${C2}`, { container_id: C2, container_runtime: 'cri', pod_uid: UID, pod_qos: 'besteffort' }],
      ['system.slice/nginx.service', { systemd_unit: 'nginx.service', container_id: '' }],
      ['system.slice/dev-disk-by\\x2duuid-1.swap', { systemd_unit: 'dev-disk-by-uuid-1.swap' }],
    ];
    const leaves: TestCgroup[] = [];
    for (const [rel] of shapes) leaves.push(await busyIn(root, rel));
    await sleep(1500);
    const samples = parseExposition(await exporter.scrape());
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
    await sleep(1500);
    const samples = parseExposition(await exporter.scrape());
    const podPath = `${root.label}/${POD}`;
    const series = find(samples, 'kerntap_cgroup_cpu_time_seconds_total', { pod_uid: UID });
    assert.equal(series.length, 1, 'one series for the pod');
    assert.equal(series[0]!.labels.cgroup, podPath);
    assert.equal(series[0]!.labels.container_id, '');
    const usage = (a.usageUsec() + b.usageUsec()) / 1e6;
    assert.ok(Math.abs(series[0]!.value / usage - 1) < 0.01, `pod total ${series[0]!.value} = Σ containers' cpu.stat ${usage}`);
  });
});
