/**
 * What a cgroup path says about its owner: container, pod, systemd unit.
 *
 * Runtimes name their cgroups in a few well-known shapes, with the systemd
 * cgroup driver (…/docker-<id>.scope, kubepods-burstable-pod<uid>.slice) or
 * the cgroupfs driver (/docker/<id>, /kubepods/burstable/pod<uid>/<id>).
 * The innermost container and the outermost pod win, so nested layouts
 * (docker in a pod, podman's libpod-<id>.scope/container) resolve sensibly.
 */

export interface CgroupIdentity {
  container_id: string;
  container_runtime: string;
  pod_uid: string;
  pod_qos: string;
  systemd_unit: string;
}

export const IDENTITY_LABELS = ['container_id', 'container_runtime', 'pod_uid', 'pod_qos', 'systemd_unit'] as const;

const ID = '([0-9a-f]{64})';
/** Container scopes and directories, most specific first. */
const CONTAINER_PATTERNS: [RegExp, string][] = [
  [new RegExp(`^docker-${ID}\\.scope$`), 'docker'],
  [new RegExp(`^cri-containerd-${ID}\\.scope$`), 'containerd'],
  [new RegExp(`^crio-${ID}\\.scope$`), 'cri-o'],
  [new RegExp(`^libpod-${ID}\\.scope$`), 'podman'],
];
const POD_SYSTEMD = /^kubepods(?:-(burstable|besteffort))?-pod([0-9a-f_]{36})\.slice$/;
const POD_CGROUPFS = /^pod([0-9a-f-]{36})$/;
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
    if (part === 'kubepods' || part.startsWith('kubepods.slice') || part === 'kubepods.slice') underKubepods = true;
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
    let matched = false;
    for (const [re, runtime] of CONTAINER_PATTERNS) {
      if ((m = re.exec(part))) {
        id.container_id = m[1]!;
        id.container_runtime = runtime;
        matched = true;
        break;
      }
    }
    if (matched) continue;
    if (part === 'docker') {
      underDocker = true;
      continue;
    }
    if (/^[0-9a-f]{64}$/.test(part) && (underDocker || id.pod_uid)) {
      // cgroupfs driver: the runtime is not in the path, except for docker.
      id.container_id = part;
      id.container_runtime = underDocker ? 'docker' : 'cri';
      continue;
    }
    if (UNIT.test(part) && !id.container_id) id.systemd_unit = systemdUnescape(part);
  }
  // A unit that is itself a pod/container scope says nothing more.
  if (id.container_id || id.pod_uid) id.systemd_unit = '';
  return id;
}

export type Aggregation = 'cgroup' | 'container' | 'pod';

/**
 * The cgroup label a path is reported under: itself, or — to cut
 * cardinality — the cgroup of its container or pod (everything nested below
 * it folds in). Paths that are no container/pod keep themselves.
 */
export function aggregatePath(cgroupPath: string, how: Aggregation): string {
  if (how === 'cgroup') return cgroupPath;
  const parts = cgroupPath.split('/');
  let cut = -1;
  for (let i = 0; i < parts.length; i++) {
    const prefix = parts.slice(0, i + 1).join('/');
    const id = identityOf(prefix);
    if (how === 'pod' && id.pod_uid) return prefix;
    if (how === 'container' && id.container_id && cut < 0) cut = i;
  }
  return cut >= 0 ? parts.slice(0, cut + 1).join('/') : cgroupPath;
}
