/**
 * The kernel side of `kerntap top` (bpf/top.bpf.c): loads and attaches its
 * own object, walks the live TCP sockets with iter/tcp and drains the event
 * ring buffer. It shares nothing with a running exporter: its programs run
 * only while a view is open and go with it (close(), or the process exit).
 */
import path from 'node:path';
import { existsSync } from 'node:fs';
import { checkScalar, enumValues, globalLayout, type ObjectBtf } from '../bpf/layout.js';
import { loadNative, packageRoot, type BpfObjectHandle, type NativeBinding } from '../bpf/native.js';
import { formatAddress } from '../collectors/tcp.js';
import { decodeCString } from '../labels.js';
import { checkDropsMap, readDropCounts, u32Value } from '../collectors/common.js';
import { btfProblem, effectiveCapabilities, explainLoadFailure, privilegeProblem } from '../probe.js';

const SITE = { collector: 'top', object: 'top.bpf.o' };
const TRACEFS_ROOTS = ['/sys/kernel/tracing', '/sys/kernel/debug/tracing'];
const ACCEPT_TRACEPOINTS = ['syscalls/sys_exit_accept4', 'syscalls/sys_exit_accept'] as const;
const ACCEPT_PROGRAMS = ['top_accept4_exit', 'top_accept_exit'];

export type Role = 'client' | 'server' | 'unknown';
export type EventType = 'connect' | 'accept' | 'close' | 'failed';
export type Reason = '' | 'refused' | 'timeout' | 'reset' | 'unreachable' | 'other';

const ROLES = { TOP_ROLE_UNKNOWN: 'unknown', TOP_ROLE_CLIENT: 'client', TOP_ROLE_SERVER: 'server' } as const;
const EVENTS = { TOP_EV_CONNECT: 'connect', TOP_EV_ACCEPT: 'accept', TOP_EV_CLOSE: 'close', TOP_EV_FAILED: 'failed' } as const;
const REASONS = {
  TOP_REASON_NONE: '', TOP_REASON_REFUSED: 'refused', TOP_REASON_TIMEOUT: 'timeout', TOP_REASON_RESET: 'reset',
  TOP_REASON_UNREACHABLE: 'unreachable', TOP_REASON_OTHER: 'other',
} as const;
const DROPS = ['TOP_DROP_EVENTS', 'TOP_DROP_OWNERS'] as const;
const STATES = ['', 'ESTABLISHED', 'SYN_SENT', 'SYN_RECV', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT', 'CLOSE', 'CLOSE_WAIT', 'LAST_ACK', 'LISTEN', 'CLOSING'];

/** A live socket as the iterator saw it. Strings from the kernel are raw here (escaped by the view). */
export interface KernelConnection {
  /** Identity across refreshes (the socket's address; never shown). */
  sock: bigint;
  pid: number;
  comm: string;
  cgroupId: bigint;
  local: string;
  localPort: number;
  peer: string;
  peerPort: number;
  role: Role;
  state: string;
  /** Data bytes (no SYN/FIN). */
  bytesSent: number;
  bytesReceived: number;
  /** The kernel's counters as `ss -i` prints them (bytes_acked, bytes_received). */
  bytesAcked: number;
  bytesReceivedRaw: number;
  srttUs: number;
  /** The socket's inode (0 if it has no file), as /proc/<pid>/fd links name it: socket:[ino]. */
  ino: number;
  /** ms since established; undefined when it was established before top started. */
  ageMs: number | undefined;
}

export interface KernelEvent {
  type: EventType;
  reason: Reason;
  /** Wall clock, ms since the epoch. */
  timeMs: number;
  pid: number;
  comm: string;
  cgroupId: bigint;
  role: Role;
  local: string;
  localPort: number;
  peer: string;
  peerPort: number;
  durationMs: number;
  bytesSent: number;
  bytesReceived: number;
}

/** Why top cannot run at all here, in one line, or undefined. */
export function topProblem(native: NativeBinding): string | undefined {
  const problem = btfProblem() ?? privilegeProblem(effectiveCapabilities());
  if (problem) return problem;
  const need: [string, 'typedef' | 'func', string][] = [
    ['btf_trace_inet_sock_set_state', 'typedef', 'tp_btf/inet_sock_set_state (4.16+)'],
    ['bpf_iter_tcp', 'func', 'iter/tcp (5.9+)'],
  ];
  for (const [name, kind, hook] of need) if (!native.btfHasType(name, kind)) return `kernel lacks ${hook}`;
  return undefined;
}

function tracepointPresent(name: string): boolean {
  return TRACEFS_ROOTS.some((root) => existsSync(`${root}/events/${name}`));
}

function layouts(btf: ObjectBtf) {
  const role = enumValues(btf, SITE, 'top_role', Object.keys(ROLES), { exhaustive: true });
  const ev = enumValues(btf, SITE, 'top_event', Object.keys(EVENTS), { exhaustive: true });
  const reason = enumValues(btf, SITE, 'top_reason', Object.keys(REASONS), { exhaustive: true });
  const drop = enumValues(btf, SITE, 'top_drop', DROPS, { exhaustive: true });
  const event = globalLayout(btf, SITE, 'kt_layouts', 'event', {
    ts_ns: 8, duration_ns: 8, bytes_sent: 8, bytes_received: 8, cgroup_id: 8, local: 16, peer: 16, pid: 4,
    local_port: 2, peer_port: 2, type: 1, reason: 1, role: 1, comm: 16,
  });
  const conn = globalLayout(btf, SITE, 'kt_layouts', 'conn_record', {
    sock: 8, bytes_sent: 8, bytes_received: 8, bytes_acked: 8, bytes_received_raw: 8, est_ns: 8, now_ns: 8, cgroup_id: 8, ino: 8,
    local: 16, peer: 16, pid: 4, srtt_us: 4, local_port: 2, peer_port: 2, state: 1, role: 1, comm: 16,
  });
  checkScalar(btf, SITE, 'owners', 'key', 8);
  checkDropsMap(btf, SITE);
  const byValue = <T extends string>(values: Record<string, number>, labels: Record<string, T>): T[] => {
    const out: T[] = [];
    for (const [k, v] of Object.entries(values)) out[v] = labels[k]!;
    return out;
  };
  return {
    event, conn, drop,
    role: byValue(role, ROLES as Record<string, Role>),
    ev: byValue(ev, EVENTS as Record<string, EventType>),
    reason: byValue(reason, REASONS as Record<string, Reason>),
  };
}
type Layouts = ReturnType<typeof layouts>;

export interface TopSourceOptions {
  ephemeralPorts: [number, number];
  /** Sockets whose owner is remembered (LRU). */
  maxSockets: number;
  /** Ring buffer bytes (a power of two, at least a page). */
  ringBytes: number;
  objectPath?: string;
}

export class TopSource {
  /** How this kernel runs top where that differs from the usual (one line each). */
  readonly notes: string[] = [];
  private constructor(private readonly obj: BpfObjectHandle, private readonly L: Layouts) {}

  /** Loads and attaches; throws one line naming what the kernel lacks. */
  static open(opts: TopSourceOptions): TopSource {
    const native = loadNative();
    const problem = topProblem(native);
    if (problem) throw new Error(problem);
    const missing = ACCEPT_TRACEPOINTS.filter((t) => !tracepointPresent(t));
    const objectPath = opts.objectPath ?? path.join(packageRoot(), 'bpf', 'out', 'top.bpf.o');
    let obj: BpfObjectHandle;
    try {
      obj = new native.BpfObject(objectPath, {
        maxEntries: { owners: opts.maxSockets, events: opts.ringBytes },
        rodata: { ephemeral_lo: u32Value(opts.ephemeralPorts[0]), ephemeral_hi: u32Value(opts.ephemeralPorts[1]) },
        skipPrograms: missing.length ? ACCEPT_PROGRAMS : [],
      });
    } catch (err) {
      throw new Error(explainLoadFailure(err).replace(/^failed to load/, 'top.bpf.o failed to load'));
    }
    try {
      const source = new TopSource(obj, layouts(obj.btf()));
      obj.attach();
      if (missing.length) {
        source.notes.push(`kernel lacks tracepoint/${missing[0]} (tracefs not mounted at /sys/kernel/tracing?): accept events are off, and accepted connections take their pid from /proc/<pid>/fd`);
      }
      return source;
    } catch (err) {
      obj.close();
      throw new Error(explainLoadFailure(err).replace(/^failed to load: /, ''));
    }
  }

  /** Every live TCP socket of this network namespace (listeners excluded). */
  async connections(): Promise<KernelConnection[]> {
    const buf = await this.obj.runIter('top_sockets');
    const { conn: R, role } = this.L;
    const o = R.offset;
    const out: KernelConnection[] = [];
    for (let off = 0; off + R.size <= buf.length; off += R.size) {
      const r = buf.subarray(off, off + R.size);
      const est = r.readBigUInt64LE(o.est_ns);
      const now = r.readBigUInt64LE(o.now_ns);
      out.push({
        sock: r.readBigUInt64LE(o.sock),
        pid: r.readUInt32LE(o.pid),
        comm: decodeCString(r.subarray(o.comm, o.comm + 16)),
        cgroupId: r.readBigUInt64LE(o.cgroup_id),
        local: formatAddress(r.subarray(o.local, o.local + 16)),
        localPort: r.readUInt16LE(o.local_port),
        peer: formatAddress(r.subarray(o.peer, o.peer + 16)),
        peerPort: r.readUInt16LE(o.peer_port),
        role: role[r.readUInt8(o.role)] ?? 'unknown',
        state: STATES[r.readUInt8(o.state)] ?? String(r.readUInt8(o.state)),
        bytesSent: Number(r.readBigUInt64LE(o.bytes_sent)),
        bytesReceived: Number(r.readBigUInt64LE(o.bytes_received)),
        bytesAcked: Number(r.readBigUInt64LE(o.bytes_acked)),
        bytesReceivedRaw: Number(r.readBigUInt64LE(o.bytes_received_raw)),
        srttUs: r.readUInt32LE(o.srtt_us),
        ino: Number(r.readBigUInt64LE(o.ino)),
        ageMs: est > 0n && now >= est ? Number(now - est) / 1e6 : undefined,
      });
    }
    return out;
  }

  /** The events since the last call, oldest first. */
  async events(): Promise<KernelEvent[]> {
    const buf = await this.obj.drainRing('events');
    const { event: E, ev, reason, role } = this.L;
    const o = E.offset;
    // bpf_ktime_get_ns is CLOCK_MONOTONIC, as process.hrtime is.
    const monoNow = process.hrtime.bigint();
    const wallNow = Date.now();
    const out: KernelEvent[] = [];
    for (let off = 0; off + 4 <= buf.length;) {
      const len = buf.readUInt32LE(off);
      const r = buf.subarray(off + 4, off + 4 + len);
      off += (4 + len + 7) & ~7;
      if (r.length < E.size) continue;
      const type = ev[r.readUInt8(o.type)];
      if (!type) continue;
      const ts = r.readBigUInt64LE(o.ts_ns);
      out.push({
        type,
        reason: reason[r.readUInt8(o.reason)] ?? 'other',
        timeMs: wallNow - Number(monoNow > ts ? monoNow - ts : 0n) / 1e6,
        pid: r.readUInt32LE(o.pid),
        comm: decodeCString(r.subarray(o.comm, o.comm + 16)),
        cgroupId: r.readBigUInt64LE(o.cgroup_id),
        role: role[r.readUInt8(o.role)] ?? 'unknown',
        local: formatAddress(r.subarray(o.local, o.local + 16)),
        localPort: r.readUInt16LE(o.local_port),
        peer: formatAddress(r.subarray(o.peer, o.peer + 16)),
        peerPort: r.readUInt16LE(o.peer_port),
        durationMs: Number(r.readBigUInt64LE(o.duration_ns)) / 1e6,
        bytesSent: Number(r.readBigUInt64LE(o.bytes_sent)),
        bytesReceived: Number(r.readBigUInt64LE(o.bytes_received)),
      });
    }
    return out;
  }

  /** Events the ring buffer had no room for, and owners the table could not hold, since start. */
  async drops(): Promise<{ events: number; owners: number }> {
    const counts = await readDropCounts(this.obj);
    return { events: counts[this.L.drop.TOP_DROP_EVENTS!] ?? 0, owners: counts[this.L.drop.TOP_DROP_OWNERS!] ?? 0 };
  }

  /** Program ids (for tests: they must be gone after close). */
  programIds(): number[] {
    return this.obj.programs().map((p) => p.id);
  }

  close(): void {
    this.obj.close();
  }
}
