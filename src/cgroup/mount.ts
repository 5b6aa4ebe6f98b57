/** Finds the cgroup v2 mount: /sys/fs/cgroup on most hosts, /sys/fs/cgroup/unified on hybrid ones. */
import { readFileSync, statfsSync } from 'node:fs';

const CGROUP2_SUPER_MAGIC = 0x63677270;

/** Parses /proc/self/mountinfo text and returns cgroup2 mount points, shortest first. */
export function cgroup2MountsFromMountinfo(mountinfo: string): string[] {
  const mounts: string[] = [];
  for (const line of mountinfo.split('\n')) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const fstype = line.slice(sep + 3).split(' ')[0];
    if (fstype !== 'cgroup2') continue;
    const fields = line.slice(0, sep).split(' ');
    const mountPoint = fields[4];
    if (mountPoint) mounts.push(unescapeMountPath(mountPoint));
  }
  return mounts.sort((a, b) => a.length - b.length);
}

/** mountinfo escapes space, tab, newline and backslash as \ooo octal. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function isCgroup2(path: string): boolean {
  try {
    return statfsSync(path).type === CGROUP2_SUPER_MAGIC;
  } catch {
    return false;
  }
}

/**
 * The cgroup v2 root to use: the configured one (checked), or the first
 * cgroup2 mount in /proc/self/mountinfo. Throws naming what is missing.
 */
export function detectCgroup2Root(configured = 'auto', mountinfoPath = '/proc/self/mountinfo'): string {
  if (configured !== 'auto') {
    if (!isCgroup2(configured)) {
      throw new Error(`cgroup.root ${configured} is not a cgroup v2 mount`);
    }
    return configured;
  }
  let text: string;
  try {
    text = readFileSync(mountinfoPath, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${mountinfoPath} to find the cgroup v2 mount: ${(err as Error).message}`);
  }
  const mount = cgroup2MountsFromMountinfo(text)[0];
  if (!mount) throw new Error('no cgroup v2 (cgroup2) mount found in /proc/self/mountinfo');
  return mount;
}
