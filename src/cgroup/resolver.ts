/**
 * Cgroup v2 id → path. The kernel's cgroup id is the inode number of the
 * cgroup's directory, so a walk of the cgroup2 mount builds the map. The walk
 * is cached and repeated only when an unknown id shows up (at most once per
 * `minRewalkMs`); deletions are found by `verify()`, a stat of each known
 * path (about 3 µs each, against ~30 µs per directory for a walk, which
 * lists every interface file). A walk lists only directories that have
 * subdirectories: cgroupfs (kernfs) gives a directory 2 + its subdirectory
 * count as link count, so a leaf (nlink 2, most cgroups) needs no readdir.
 * Each walk checks that rule on the root (always listed) and lists every
 * directory when it does not hold.
 * Paths of deleted cgroups are remembered for the TTL so their last values
 * can still be served.
 */
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';

export interface CgroupEntry {
  /** Path relative to the cgroup2 root, starting with "/" ("/" is the root). */
  path: string;
  /** When the directory was last seen by a walk (ms). */
  lastSeenMs: number;
  /** Set once a walk no longer finds the directory. */
  goneSinceMs?: number;
  /** No walk has found this id yet. */
  unknown?: boolean;
}

export interface CgroupResolverOptions {
  root: string;
  /** How long paths of deleted cgroups are kept. */
  ttlMs: number;
  minRewalkMs?: number;
  /** Stop a walk after this many directories (protects against runaway trees). */
  maxCgroups?: number;
  now?: () => number;
}

export const UNKNOWN_CGROUP_PREFIX = 'unknown_cgroup_id:';

export class CgroupResolver {
  readonly root: string;
  private readonly byId = new Map<bigint, CgroupEntry>();
  private readonly ttlMs: number;
  private readonly minRewalkMs: number;
  private readonly maxCgroups: number;
  private readonly now: () => number;
  private lastWalkMs = -Infinity;
  private lastCheckMs = -Infinity;
  walks = 0;
  truncated = false;

  constructor(opts: CgroupResolverOptions) {
    this.root = opts.root;
    this.ttlMs = opts.ttlMs;
    this.minRewalkMs = opts.minRewalkMs ?? 1000;
    this.maxCgroups = opts.maxCgroups ?? 100_000;
    this.now = opts.now ?? Date.now;
  }

  /** Walks the whole tree now. */
  walk(): void {
    const now = this.now();
    this.lastWalkMs = this.lastCheckMs = now;
    this.walks++;
    const seen = new Set<bigint>();
    const stack: string[] = ['/'];
    let visited = 0;
    let linksCountSubdirs = false; // set from the root, popped first
    this.truncated = false;
    while (stack.length > 0) {
      const rel = stack.pop()!;
      const abs = rel === '/' ? this.root : path.join(this.root, rel);
      let ino: bigint;
      let nlink: bigint;
      try {
        ({ ino, nlink } = statSync(abs, { bigint: true }));
      } catch {
        continue; // removed while walking
      }
      seen.add(ino);
      const entry = this.byId.get(ino);
      if (entry && entry.path === rel) {
        entry.lastSeenMs = now;
        delete entry.goneSinceMs;
      } else {
        this.byId.set(ino, { path: rel, lastSeenMs: now });
      }
      if (++visited >= this.maxCgroups) {
        this.truncated = true;
        break;
      }
      // Exactly 2: "." and the entry in its parent, so no subdirectory.
      if (linksCountSubdirs && nlink === 2n) continue;
      try {
        let subdirs = 0n;
        for (const d of readdirSync(abs, { withFileTypes: true })) {
          if (!d.isDirectory()) continue;
          stack.push(rel === '/' ? `/${d.name}` : `${rel}/${d.name}`);
          subdirs++;
        }
        // A mismatch (another filesystem, or a cgroup made meanwhile) lists everything this walk.
        if (rel === '/') linksCountSubdirs = nlink === 2n + subdirs;
      } catch {
        // unreadable or removed: keep what we have
      }
    }
    const livePaths = new Set<string>();
    for (const id of seen) livePaths.add(this.byId.get(id)!.path);
    for (const [id, entry] of this.byId) if (!seen.has(id)) this.notFound(id, entry, now, livePaths.has(entry.path));
  }

  /**
   * A walk or a check no longer finds this cgroup at its path. `replaced`:
   * a new cgroup took the path, so the old one's series ends now and the
   * path's series restarts instead of adding both together.
   */
  private notFound(id: bigint, entry: CgroupEntry, now: number, replaced: boolean): void {
    if (replaced) entry.goneSinceMs = Math.min(entry.goneSinceMs ?? now, now - this.ttlMs - 1);
    else if (entry.goneSinceMs === undefined) entry.goneSinceMs = now;
    // Collectors free an expired id's kernel entries at the TTL; this is the
    // backstop for ids no collector holds.
    else if (now - entry.goneSinceMs > 2 * this.ttlMs) this.byId.delete(id);
  }

  /** Path for an id, walking again if it is unknown and the last walk is old enough. */
  resolve(id: bigint): string {
    let entry = this.byId.get(id);
    if ((!entry || entry.unknown) && this.now() - this.lastWalkMs >= this.minRewalkMs) {
      this.walk();
      entry = this.byId.get(id);
    }
    if (!entry) {
      // Created and deleted between walks, or outside our view: keep the
      // data under an explicit label, and let it age out like a deleted one.
      const now = this.now();
      entry = { path: `${UNKNOWN_CGROUP_PREFIX}${id}`, lastSeenMs: now, goneSinceMs: now, unknown: true };
      this.byId.set(id, entry);
    }
    return entry.path;
  }

  /** Drops an id whose kernel entries were freed. */
  forget(id: bigint): void {
    this.byId.delete(id);
  }

  entry(id: bigint): CgroupEntry | undefined {
    return this.byId.get(id);
  }

  /** True when the cgroup is gone (or was never found) for longer than the TTL. */
  expired(id: bigint): boolean {
    const entry = this.byId.get(id);
    return entry?.goneSinceMs !== undefined && this.now() - entry.goneSinceMs > this.ttlMs;
  }

  /**
   * Checks that every live path still holds the cgroup it held, without a
   * walk: a path that is gone marks its cgroup deleted, and a path that
   * holds a new cgroup (deleted and re-created) ends the old one's series
   * at once, as a walk does.
   */
  verify(): void {
    const now = this.now();
    this.lastCheckMs = now;
    for (const [id, entry] of this.byId) {
      const st = entry.goneSinceMs === undefined
        ? statSync(entry.path === '/' ? this.root : path.join(this.root, entry.path), { bigint: true, throwIfNoEntry: false })
        : undefined;
      if (st?.ino === id) {
        entry.lastSeenMs = now;
        continue;
      }
      this.notFound(id, entry, now, st !== undefined);
      if (st && !this.byId.has(st.ino)) this.byId.set(st.ino, { path: entry.path, lastSeenMs: now });
    }
  }

  /** Verifies the known paths if the last walk or check is older than maxAgeMs (catches deletions). */
  refresh(maxAgeMs: number): void {
    if (this.now() - this.lastCheckMs >= maxAgeMs) this.verify();
  }

  get size(): number {
    return this.byId.size;
  }
}
