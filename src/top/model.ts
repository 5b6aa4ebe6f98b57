/**
 * What `kerntap top` shows: live connections with their rates over the last
 * refresh, owner names resolved from the cgroup id (the exporter's resolver
 * and runtime lookups, src/cgroup/), the latest events, sorting and
 * filtering. Pure apart from the resolver's filesystem reads; the terminal
 * is view.ts.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { CgroupResolver } from '../cgroup/resolver.js';
import { identityOf } from '../cgroup/identity.js';
import type { RuntimeNames } from '../cgroup/runtime.js';
import type { EventType, KernelConnection, KernelEvent, Reason, Role } from './source.js';

export type SortKey = 'rate' | 'bytes' | 'age';
export const SORT_KEYS: readonly SortKey[] = ['rate', 'bytes', 'age'];

/**
 * Where the pid came from: the kernel saw the task connect or accept
 * (`connect`, `accept`), or, for a socket older than top, the lowest pid
 * holding it open in /proc/<pid>/fd (`fd`); '' when none is known.
 */
export type OwnerSource = 'connect' | 'accept' | 'fd' | '';

export interface Connection {
  pid: number;
  comm: string;
  owner_source: OwnerSource;
  /** Container name (or short id), else the cgroup path. */
  container: string;
  cgroup: string;
  local: string;
  local_port: number;
  peer: string;
  peer_port: number;
  role: Role;
  state: string;
  bytes_sent: number;
  bytes_received: number;
  /** bytes/s over the last interval (0 at first sight). */
  send_rate: number;
  receive_rate: number;
  srtt_us: number;
  /** null: established before top started. */
  age_s: number | null;
}

export interface TopEvent {
  time: string;
  type: EventType;
  reason: Reason;
  pid: number;
  comm: string;
  container: string;
  role: Role;
  local: string;
  local_port: number;
  peer: string;
  peer_port: number;
  duration_ms: number;
  bytes_sent: number;
  bytes_received: number;
}

export interface Snapshot {
  time: string;
  interval_ms: number;
  connections: Connection[];
  events: TopEvent[];
  drops: { events: number; owners: number };
  notes: string[];
}

/** A filter: plain text matches comm, container, peer address or either port; `port:`, `comm:`, `container:`, `peer:` pick one. */
export interface Filter {
  field: 'any' | 'port' | 'comm' | 'container' | 'peer';
  text: string;
}

export function parseFilter(input: string): Filter | undefined {
  const s = input.trim();
  if (!s) return undefined;
  const m = /^(port|comm|container|peer):(.*)$/i.exec(s);
  if (m) return { field: m[1]!.toLowerCase() as Filter['field'], text: m[2]!.trim() };
  return { field: 'any', text: s };
}

export function formatFilter(f: Filter | undefined): string {
  return !f ? '' : f.field === 'any' ? f.text : `${f.field}:${f.text}`;
}

type Filterable = Pick<Connection, 'comm' | 'container' | 'peer' | 'local_port' | 'peer_port'>;

export function matches(c: Filterable, f: Filter | undefined): boolean {
  if (!f) return true;
  const t = f.text.toLowerCase();
  const port = () => String(c.local_port) === f.text || String(c.peer_port) === f.text;
  const has = (s: string) => s.toLowerCase().includes(t);
  switch (f.field) {
    case 'port': return port();
    case 'comm': return has(c.comm);
    case 'container': return has(c.container);
    case 'peer': return has(c.peer) || has(`${c.peer}:${c.peer_port}`);
    default: return port() || has(c.comm) || has(c.container) || has(c.peer);
  }
}

/** Highest first; ties by bytes, then by the tuple, so the order is stable between refreshes. */
export function sortConnections(list: Connection[], key: SortKey, reverse = false): Connection[] {
  const value = (c: Connection) => key === 'rate' ? c.send_rate + c.receive_rate
    : key === 'bytes' ? c.bytes_sent + c.bytes_received
    : c.age_s ?? Number.POSITIVE_INFINITY;
  const tie = (c: Connection) => `${c.local}:${c.local_port} ${c.peer}:${c.peer_port}`;
  const out = [...list].sort((a, b) => (value(b) - value(a)) || (b.bytes_sent + b.bytes_received - a.bytes_sent - a.bytes_received) || tie(a).localeCompare(tie(b)));
  return reverse ? out.reverse() : out;
}

/** Names of cgroups: a container's name where a runtime knows it, its short id, or the path. */
export class Owners {
  constructor(private readonly resolver: CgroupResolver | undefined, private readonly names: RuntimeNames | undefined) {}

  cgroupPath(id: bigint): string {
    if (id === 0n) return '';
    return this.resolver?.resolve(id) ?? `cgroup:${id}`;
  }

  container(path: string): string {
    if (!path.startsWith('/')) return path;
    const cid = identityOf(path).container_id;
    if (!cid) return path;
    return this.names?.container(cid)?.name ?? cid.slice(0, 12);
  }

  /** Asks the runtimes about containers not named yet (at most once a second, see RuntimeNames). */
  async learn(paths: Iterable<string>): Promise<void> {
    if (!this.names) return;
    const ids = new Set<string>();
    for (const p of paths) {
      const cid = p.startsWith('/') ? identityOf(p).container_id : '';
      if (cid) ids.add(cid);
    }
    if (ids.size) await this.names.learn(ids, []);
  }
}

/**
 * Owners of sockets older than top, as `ss -p` finds them: socket inodes in
 * /proc/<pid>/fd. A scan reads every process's fds, so it runs only when an
 * unknown socket shows up, and at most every `minScanMs`.
 */
export class FdOwners {
  private byIno = new Map<number, { pid: number; comm: string }>();
  private lastScanMs = -Infinity;
  constructor(private readonly minScanMs = 5000, private readonly proc = '/proc') {}

  lookup(inos: number[], nowMs: number): Map<number, { pid: number; comm: string }> {
    if (inos.some((i) => !this.byIno.has(i)) && nowMs - this.lastScanMs >= this.minScanMs) this.scan(nowMs);
    return this.byIno;
  }

  private scan(nowMs: number): void {
    this.lastScanMs = nowMs;
    const out = new Map<number, { pid: number; comm: string }>();
    let pids: number[];
    try {
      pids = readdirSync(this.proc).filter((d) => /^\d+$/.test(d)).map(Number).sort((a, b) => a - b);
    } catch {
      return;
    }
    for (const pid of pids) {
      let fds: string[];
      try {
        fds = readdirSync(`${this.proc}/${pid}/fd`);
      } catch {
        continue; // gone, or not ours to read
      }
      let comm: string | undefined;
      for (const fd of fds) {
        let link: string;
        try {
          link = readlinkSync(`${this.proc}/${pid}/fd/${fd}`);
        } catch {
          continue;
        }
        const m = /^socket:\[(\d+)\]$/.exec(link);
        if (!m || out.has(Number(m[1]))) continue;
        if (comm === undefined) {
          try {
            comm = readFileSync(`${this.proc}/${pid}/comm`, 'latin1').replace(/\n$/, '');
          } catch {
            comm = '';
          }
        }
        out.set(Number(m[1]), { pid, comm });
      }
    }
    this.byIno = out;
  }
}

/** Keeps the previous refresh's counters for rates, and the latest events. */
export class TopState {
  private prev = new Map<string, { sent: number; received: number; atMs: number }>();
  private readonly recent: TopEvent[] = [];
  lastIntervalMs = 0;
  private lastMs: number | undefined;

  constructor(private readonly owners: Owners, readonly maxEvents = 200, private readonly fdOwners = new FdOwners()) {}

  async update(conns: KernelConnection[], events: KernelEvent[], nowMs: number, keep: (e: TopEvent) => boolean = () => true): Promise<Connection[]> {
    const paths = new Map<bigint, string>();
    const pathOf = (id: bigint) => {
      let p = paths.get(id);
      if (p === undefined) paths.set(id, (p = this.owners.cgroupPath(id)));
      return p;
    };
    for (const c of conns) pathOf(c.cgroupId);
    for (const e of events) pathOf(e.cgroupId);
    await this.owners.learn(paths.values());

    const unowned = conns.filter((c) => !c.pid && c.ino).map((c) => c.ino);
    const byFd = unowned.length ? this.fdOwners.lookup(unowned, nowMs) : undefined;
    const next = new Map<string, { sent: number; received: number; atMs: number }>();
    const out: Connection[] = [];
    for (const c of conns) {
      const key = `${c.sock}|${c.local}:${c.localPort}|${c.peer}:${c.peerPort}`;
      const before = this.prev.get(key);
      const dt = before ? (nowMs - before.atMs) / 1000 : 0;
      const rate = (now: number, then: number | undefined) => (dt > 0 && then !== undefined && now >= then ? (now - then) / dt : 0);
      const cgroup = pathOf(c.cgroupId);
      const fd = !c.pid && c.ino ? byFd?.get(c.ino) : undefined;
      out.push({
        pid: fd?.pid ?? c.pid, comm: fd?.comm ?? c.comm,
        owner_source: fd ? 'fd' : !c.pid ? '' : c.role === 'server' ? 'accept' : 'connect',
        container: this.owners.container(cgroup), cgroup,
        local: c.local, local_port: c.localPort, peer: c.peer, peer_port: c.peerPort,
        role: c.role, state: c.state,
        bytes_sent: c.bytesSent, bytes_received: c.bytesReceived,
        send_rate: rate(c.bytesSent, before?.sent), receive_rate: rate(c.bytesReceived, before?.received),
        srtt_us: c.srttUs,
        age_s: c.ageMs === undefined ? null : c.ageMs / 1000,
      });
      next.set(key, { sent: c.bytesSent, received: c.bytesReceived, atMs: nowMs });
    }
    this.prev = next;
    this.lastIntervalMs = this.lastMs === undefined ? 0 : nowMs - this.lastMs;
    this.lastMs = nowMs;

    for (const e of events) {
      const cgroup = pathOf(e.cgroupId);
      const ev: TopEvent = {
        time: new Date(e.timeMs).toISOString(), type: e.type, reason: e.reason, pid: e.pid, comm: e.comm,
        container: this.owners.container(cgroup), role: e.role,
        local: e.local, local_port: e.localPort, peer: e.peer, peer_port: e.peerPort,
        duration_ms: e.durationMs, bytes_sent: e.bytesSent, bytes_received: e.bytesReceived,
      };
      if (keep(ev)) this.recent.push(ev);
    }
    if (this.recent.length > this.maxEvents) this.recent.splice(0, this.recent.length - this.maxEvents);
    return out;
  }

  /** Latest events, newest first. */
  events(): TopEvent[] {
    return [...this.recent].reverse();
  }
}
