/**
 * Least privilege after start-up. Loading and attaching need CAP_BPF and
 * CAP_PERFMON; reading maps and running iterators through fds kerntap
 * already holds needs nothing on Linux 6.5+ (earlier kernels check CAP_BPF on
 * every bpf() call when unprivileged BPF is disabled). So a root kerntap
 * switches to an unprivileged uid once everything is attached and listening:
 * setuid() from root clears the capability sets of every thread (glibc
 * applies it to all of them), which capset() alone would not.
 */
import { release } from 'node:os';
import type { Logger } from 'pino';

export function kernelAtLeast(major: number, minor: number, text = release()): boolean {
  const m = /^(\d+)\.(\d+)/.exec(text);
  if (!m) return false;
  const [a, b] = [Number(m[1]), Number(m[2])];
  return a > major || (a === major && b >= minor);
}

export interface DropResult {
  dropped: boolean;
  reason: string;
}

export function dropPrivileges(uid: number, gid: number, log: Logger): DropResult {
  if (process.getuid?.() !== 0) {
    return { dropped: false, reason: 'not running as root: capabilities given by the runtime are kept' };
  }
  if (!kernelAtLeast(6, 5)) {
    return { dropped: false, reason: `kernel ${release()} checks CAP_BPF on map reads (before 6.5): privileges kept` };
  }
  try {
    process.setgroups?.([gid]);
    process.setgid!(gid);
    process.setuid!(uid);
  } catch (err) {
    // e.g. a container granted CAP_BPF and CAP_PERFMON but not CAP_SETUID.
    return { dropped: false, reason: `cannot switch to uid ${uid}: ${(err as Error).message}` };
  }
  log.info({ uid, gid }, 'dropped all privileges after attach');
  return { dropped: true, reason: '' };
}
