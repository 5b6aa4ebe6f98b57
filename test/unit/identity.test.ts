import { test } from 'node:test';
import assert from 'node:assert/strict';
import { aggregatePath, identityOf, systemdUnescape } from '../../src/cgroup/identity.js';

const C1 = 'a'.repeat(12) + '0123456789abcdef'.repeat(3) + 'b'.repeat(4);
const C2 = 'f0e1d2c3b4a59687'.repeat(4);
const UID = '3d1c7c0a-0d2e-4b0e-9a86-0a2b7a9c3f51';
const UID_ = UID.replace(/-/g, '_');

const cases: [string, Partial<ReturnType<typeof identityOf>>][] = [
  [`/system.slice/docker-${C1}.scope`, { container_id: C1, container_runtime: 'docker' }],
  [`/docker/${C1}`, { container_id: C1, container_runtime: 'docker' }],
  [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${C1}.scope`,
    { container_id: C1, container_runtime: 'containerd', pod_uid: UID, pod_qos: 'burstable' }],
  [`/kubepods.slice/kubepods-pod${UID_}.slice/crio-${C1}.scope`, { container_id: C1, container_runtime: 'cri-o', pod_uid: UID, pod_qos: 'guaranteed' }],
  [`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/crio-conmon-${C1}.scope`,
    { pod_uid: UID, pod_qos: 'besteffort', container_id: '' }],
  [`/kubepods/burstable/pod${UID}/${C1}`, { container_id: C1, container_runtime: 'cri', pod_uid: UID, pod_qos: 'burstable' }],
  [`/kubepods/pod${UID}/${C1}`, { container_id: C1, pod_uid: UID, pod_qos: 'guaranteed' }],
  [`/kubepods/besteffort/pod${UID}/${C1}/docker/${C2}`, { container_id: C2, container_runtime: 'docker', pod_uid: UID, pod_qos: 'besteffort' }],
  [`/machine.slice/libpod-${C1}.scope/container`, { container_id: C1, container_runtime: 'podman' }],
  [`/machine.slice/libpod-conmon-${C1}.scope`, { container_id: '', systemd_unit: `libpod-conmon-${C1}.scope` }],
  ['/system.slice/nginx.service', { systemd_unit: 'nginx.service', container_id: '' }],
  ['/system.slice/system-getty.slice/getty@tty1.service', { systemd_unit: 'getty@tty1.service' }],
  ['/system.slice/dev-disk-by\\x2duuid-1234.swap', { systemd_unit: 'dev-disk-by-uuid-1234.swap' }],
  ['/user.slice/user-1000.slice/session-3.scope', { systemd_unit: 'session-3.scope' }],
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
  assert.equal(aggregatePath('/system.slice/nginx.service', 'pod'), '/system.slice/nginx.service', 'no pod: unchanged');
  assert.equal(aggregatePath(`${c}/sub`, 'cgroup'), `${c}/sub`);
});
