/**
 * What a cgroup path says about its owner: container, pod, systemd unit.
 *
 * Runtimes name their cgroups in a few well-known shapes, with the systemd
 * cgroup driver (…/docker-<id>.scope, kubepods-burstable-pod<uid>.slice) or
 * the cgroupfs driver (/docker/<id>, /kubepods/burstable/pod<uid>/<id>).
 * The innermost container and the outermost pod win, so nested layouts
 * (docker in a pod, a kind node in docker, podman's libpod-<id>.scope/container)
 * resolve sensibly. Pure: names come from the runtimes (runtime.ts).
 */

export interface CgroupIdentity {
  container_id: string;
  /** docker, containerd, cri-o, podman; "cri" for Kubernetes' cgroupfs driver, which does not say. */
  container_runtime: string;
  pod_uid: string;
  /** guaranteed, burstable or besteffort. */
  pod_qos: string;
  /** Unescaped unit name, e.g. "nginx.service"; empty inside containers and pods. */
  systemd_unit: string;
}

/** The attributes of CgroupIdentity's fields, in its order: semantic-convention names where OTel has one. */
export const IDENTITY_LABELS = ['container.id', 'container.runtime.name', 'k8s.pod.uid', 'pod_qos', 'systemd_unit'] as const;

/** Runtime reported for containers of Kubernetes' cgroupfs driver until a runtime socket tells which one. */
export const UNNAMED_CRI_RUNTIME = 'cri';

const ID = '([0-9a-f]{64})';
/** One path component that is a container; the systemd driver's scope and the cgroupfs driver's directory. */
const CONTAINER_PATTERNS: [RegExp, string][] = [
  [new RegExp(`^docker-${ID}\\.scope$`), 'docker'],
  [new RegExp(`^cri-containerd-${ID}\\.scope$`), 'containerd'],
  [new RegExp(`^nerdctl-${ID}\\.scope$`), 'containerd'],
  [new RegExp(`^crio-${ID}(?:\\.scope)?$`), 'cri-o'],
  [new RegExp(`^libpod-${ID}(?:\\.scope)?$`), 'podman'],
];
const BARE_ID = new RegExp(`^${ID}$`);
/** kubepods[-qos]-pod<uid with _>.slice; kind and others prefix it ("kubelet-kubepods-…"). */
const POD_SYSTEMD = /(?:^|-)kubepods(?:-(burstable|besteffort))?-pod([0-9a-f_]{36})\.slice$/;
const POD_CGROUPFS = /^pod([0-9a-f-]{36})$/;
const KUBEPODS = /^kubepods$|(?:^|-)kubepods\.slice$/;
const UNIT = /\.(service|scope|socket|mount|swap)$/;

/** systemd escapes bytes in unit names as \xNN (e.g. "-" as \x2d). */
export function systemdUnescape(name: string): string {
  return name.replace(/\\x([0-9a-fA-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}

export function identityOf(cgroupPath: string): CgroupIdentity {
  const parts = cgroupPath.split('/').filter(Boolean);
  const id: CgroupIdentity = { container_id: '', container_runtime: '', pod_uid: '', pod_qos: '', systemd_unit: '' };
  let underKubepods = false;
  let underDocker = false;
  for (const [i, part] of parts.entries()) {
    if (KUBEPODS.test(part)) underKubepods = true;
    let m: RegExpExecArray | null;
    if (!id.pod_uid && (m = POD_SYSTEMD.exec(part))) {
      id.pod_uid = m[2]!.replace(/_/g, '-');
      id.pod_qos = m[1] ?? 'guaranteed';
      continue;
    }
    if (!id.pod_uid && underKubepods && (m = POD_CGROUPFS.exec(part))) {
      id.pod_uid = m[1]!;
      const qos = parts[i - 1];
      id.pod_qos = qos === 'burstable' || qos === 'besteffort' ? qos : 'guaranteed';
      continue;
    }
    const container = CONTAINER_PATTERNS.find(([re]) => re.test(part));
    if (container) {
      id.container_id = BARE_ID.exec(part) ? part : container[0].exec(part)![1]!;
      id.container_runtime = container[1];
      underDocker = false;
      continue;
    }
    if (part === 'docker') {
      underDocker = true;
      continue;
    }
    if (BARE_ID.test(part) && (underDocker || id.pod_uid)) {
      // cgroupfs driver: only docker's parent directory names the runtime.
      id.container_id = part;
      id.container_runtime = underDocker ? 'docker' : UNNAMED_CRI_RUNTIME;
      underDocker = false;
      continue;
    }
    if (UNIT.test(part)) id.systemd_unit = systemdUnescape(part);
  }
  // Units outside the container or pod (the docker.service a container was
  // started from, a kind node's scope) say nothing about what runs in it.
  if (id.container_id || id.pod_uid) id.systemd_unit = '';
  return id;
}

export type Aggregation = 'cgroup' | 'container' | 'pod';

/**
 * The cgroup label a path is reported under: itself, or — to cut
 * cardinality — the cgroup of its container (the innermost one, as in
 * identityOf) or of its pod (a container outside any pod folds to the
 * container). Everything nested below folds in; other paths keep themselves.
 */
export function aggregatePath(cgroupPath: string, how: Aggregation): string {
  if (how === 'cgroup') return cgroupPath;
  const parts = cgroupPath.split('/');
  let container = -1;
  for (let i = 1; i < parts.length; i++) {
    const prefix = parts.slice(0, i + 1).join('/');
    const id = identityOf(prefix);
    if (how === 'pod' && id.pod_uid) return prefix;
    if (id.container_id && id.container_id !== identityOf(parts.slice(0, i).join('/')).container_id) container = i;
  }
  return container >= 0 ? parts.slice(0, container + 1).join('/') : cgroupPath;
}
