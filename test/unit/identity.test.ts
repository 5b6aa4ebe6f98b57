import { test } from 'node:test';
import assert from 'node:assert/strict';
import { aggregatePath, identityOf, systemdUnescape } from '../../src/cgroup/identity.js';

const C1 = 'a'.repeat(12) + '0123456789abcdef'.repeat(3) + 'b'.repeat(4);
const C2 = 'f0e1d2c3b4a59687'.repeat(4);
const UID = '3d1c7c0a-0d2e-4b0e-9a86-0a2b7a9c3f51';
const UID_ = UID.replace(/-/g, '_');

const KIND = 'c0ffee00'.repeat(8);

/** Paths as each runtime and cgroup driver really lays them out (cgroup v2, relative to the mount). */
const cases: [string, Partial<ReturnType<typeof identityOf>>][] = [
  // docker: systemd driver, cgroupfs driver, rootless, custom --cgroup-parent, docker in docker.
  [`/system.slice/docker-${C1}.scope`, { container_id: C1, container_runtime: 'docker', systemd_unit: '' }],
  [`/docker/${C1}`, { container_id: C1, container_runtime: 'docker' }],
  [`/user.slice/user-1000.slice/user@1000.service/user.slice/docker-${C1}.scope`, { container_id: C1, container_runtime: 'docker', systemd_unit: '' }],
  [`/batch.slice/docker-${C1}.scope`, { container_id: C1, container_runtime: 'docker' }],
  [`/docker/${C1}/docker/${C2}`, { container_id: C2, container_runtime: 'docker' }],
  [`/system.slice/docker.service`, { systemd_unit: 'docker.service', container_id: '' }],
  // containerd through the CRI (Kubernetes), systemd driver, every QoS class.
  [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${C1}.scope`,
    { container_id: C1, container_runtime: 'containerd', pod_uid: UID, pod_qos: 'burstable' }],
  [`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/cri-containerd-${C1}.scope`,
    { container_id: C1, pod_uid: UID, pod_qos: 'besteffort' }],
  [`/kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-${C1}.scope`, { container_id: C1, pod_uid: UID, pod_qos: 'guaranteed' }],
  // The pod's own slice and the QoS slices above it.
  [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice`, { pod_uid: UID, pod_qos: 'burstable', container_id: '', systemd_unit: '' }],
  ['/kubepods.slice/kubepods-burstable.slice', { pod_uid: '', container_id: '', systemd_unit: '' }],
  // Kubernetes' cgroupfs driver (k3s, GKE COS): the runtime is not in the path.
  [`/kubepods/burstable/pod${UID}/${C1}`, { container_id: C1, container_runtime: 'cri', pod_uid: UID, pod_qos: 'burstable' }],
  [`/kubepods/pod${UID}/${C1}`, { container_id: C1, pod_uid: UID, pod_qos: 'guaranteed' }],
  [`/kubepods/besteffort/pod${UID}`, { pod_uid: UID, pod_qos: 'besteffort', container_id: '' }],
  [`/kubepods/besteffort/pod${UID}/${C1}/docker/${C2}`, { container_id: C2, container_runtime: 'docker', pod_uid: UID, pod_qos: 'besteffort' }],
  // A 64-hex directory outside docker/ and pods is no container.
  [`/kt-test/${C1}`, { container_id: '' }],
  // CRI-O: systemd driver (conmon has its own scope), cgroupfs driver.
  [`/kubepods.slice/kubepods-pod${UID_}.slice/crio-${C1}.scope`, { container_id: C1, container_runtime: 'cri-o', pod_uid: UID, pod_qos: 'guaranteed' }],
  [`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/crio-conmon-${C1}.scope`,
    { pod_uid: UID, pod_qos: 'besteffort', container_id: '', systemd_unit: '' }],
  [`/kubepods/burstable/pod${UID}/crio-${C1}`, { container_id: C1, container_runtime: 'cri-o', pod_uid: UID }],
  // Kubernetes on docker (cri-dockerd), systemd driver.
  [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/docker-${C1}.scope`,
    { container_id: C1, container_runtime: 'docker', pod_uid: UID, pod_qos: 'burstable' }],
  // kind: a Kubernetes node in a docker container, with its kubelet's "kubelet-" slice prefix.
  [`/system.slice/docker-${KIND}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${UID_}.slice/cri-containerd-${C1}.scope`,
    { container_id: C1, container_runtime: 'containerd', pod_uid: UID, pod_qos: 'besteffort' }],
  [`/system.slice/docker-${KIND}.scope/system.slice/containerd.service`, { container_id: KIND, container_runtime: 'docker', systemd_unit: '' }],
  // podman: systemd driver (the container's processes in a "container" child), conmon, cgroupfs driver, rootless.
  [`/machine.slice/libpod-${C1}.scope/container`, { container_id: C1, container_runtime: 'podman' }],
  [`/machine.slice/libpod-${C1}.scope`, { container_id: C1, container_runtime: 'podman' }],
  [`/machine.slice/libpod-conmon-${C1}.scope`, { container_id: '', systemd_unit: `libpod-conmon-${C1}.scope` }],
  [`/libpod_parent/libpod-${C1}`, { container_id: C1, container_runtime: 'podman' }],
  [`/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${C1}.scope/container`, { container_id: C1, container_runtime: 'podman' }],
  // containerd without Kubernetes (nerdctl, systemd driver).
  [`/system.slice/nerdctl-${C1}.scope`, { container_id: C1, container_runtime: 'containerd' }],
  // systemd: services, templates, escaping, sessions, user managers, nspawn machines.
  ['/system.slice/nginx.service', { systemd_unit: 'nginx.service', container_id: '' }],
  ['/system.slice/system-getty.slice/getty@tty1.service', { systemd_unit: 'getty@tty1.service' }],
  ['/system.slice/dev-disk-by\\x2duuid-1234.swap', { systemd_unit: 'dev-disk-by-uuid-1234.swap' }],
  ['/system.slice/system-systemd\\x2dfsck.slice/systemd-fsck@dev-disk-by\\x2duuid-0a1b\\x2d2c3d.service',
    { systemd_unit: 'systemd-fsck@dev-disk-by-uuid-0a1b-2c3d.service' }],
  ['/system.slice/srv-data\\x2d1.mount', { systemd_unit: 'srv-data-1.mount' }],
  ['/user.slice/user-1000.slice/session-3.scope', { systemd_unit: 'session-3.scope' }],
  ['/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-4c1d.scope', { systemd_unit: 'vte-spawn-4c1d.scope' }],
  ['/user.slice/user-1000.slice/user@1000.service', { systemd_unit: 'user@1000.service' }],
  ['/machine.slice/machine-web\\x2d01.scope', { systemd_unit: 'machine-web-01.scope' }],
  ['/init.scope', { systemd_unit: 'init.scope' }],
  ['/', { container_id: '', pod_uid: '', systemd_unit: '' }],
  ['/kt-test/notacontainer', { container_id: '', systemd_unit: '' }],
];

test('cgroup paths of real runtimes resolve to container, pod and unit', () => {
  for (const [path, want] of cases) {
    const got = identityOf(path);
    for (const [k, v] of Object.entries(want)) assert.equal(got[k as keyof typeof got], v, `${path}: ${k}`);
  }
});

test('systemd unescaping', () => {
  assert.equal(systemdUnescape('a\\x2db\\x5cc'), 'a-b\\c');
});

test('aggregation folds nested cgroups into their container or pod', () => {
  const pod = `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice`;
  const c = `${pod}/cri-containerd-${C1}.scope`;
  assert.equal(aggregatePath(`${c}/sub/deeper`, 'container'), c);
  assert.equal(aggregatePath(`${c}/sub`, 'pod'), pod);
  assert.equal(aggregatePath(pod, 'container'), pod, 'a pod slice is no container: unchanged');
  assert.equal(aggregatePath('/system.slice/nginx.service', 'pod'), '/system.slice/nginx.service', 'no pod: unchanged');
  assert.equal(aggregatePath(`/system.slice/docker-${C1}.scope/app`, 'pod'), `/system.slice/docker-${C1}.scope`, 'no pod: folds to its container');
  assert.equal(aggregatePath(`/machine.slice/libpod-${C1}.scope/container`, 'container'), `/machine.slice/libpod-${C1}.scope`);
  assert.equal(aggregatePath(`/docker/${C1}/docker/${C2}/x`, 'container'), `/docker/${C1}/docker/${C2}`, 'innermost container, as its labels say');
  assert.equal(aggregatePath(`/docker/${C1}/init`, 'container'), `/docker/${C1}`);
  assert.equal(aggregatePath(`${c}/sub`, 'cgroup'), `${c}/sub`);
});

test('every aggregated path keeps the identity of what it folded', () => {
  for (const [path] of cases) {
    const id = identityOf(path);
    if (id.container_id) assert.equal(identityOf(aggregatePath(path, 'container')).container_id, id.container_id, path);
    if (id.pod_uid) assert.equal(identityOf(aggregatePath(path, 'pod')).pod_uid, id.pod_uid, path);
  }
});
