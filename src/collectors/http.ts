/**
 * http: HTTP/1.x request durations, server and client side, from the
 * socket syscalls' classic tracepoints (bpf/http.bpf.c). Off by default:
 * any syscall tracepoint puts every task on the kernel's syscall slow path
 * (see docs/http.md for the cost).
 *
 * Userspace decodes the per-cgroup × port × method × status histograms,
 * seeds the kernel's connection table with the TCP sockets that were open
 * before kerntap (so their next request is seen), and frees entries of fds
 * whose process exited or that were replaced without close().
 */
import { readdirSync, readFileSync, readlinkSync, existsSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { encode, enumValues, mapLayout, wordIndex, type ObjectBtf } from '../bpf/layout.js';
import type { BpfObjectHandle, MapBatch } from '../bpf/native.js';
import { decodeHistogram, HIST_WORDS } from '../model/histogram.js';
import { defineMetric } from '../model/metric.js';
import { histogramFamily, type RawFamily, type RawHistogramPoint } from '../model/snapshot.js';
import { checkDropsMap, checkHistValue, expireCgroupEntries, u32Value } from './common.js';
import { formatAddress, portRange } from './tcp.js';
import type { CollectorContext, CollectorDefinition, CollectorInstance } from './types.js';

const METHOD = 'http.request.method';
const STATUS = 'http.response.status_code';
const RANGE = { minExp: -17, maxExp: 6 };

export const httpMetrics = {
  server: defineMetric({
    name: 'kerntap.http.server.request.duration', kind: 'histogram', unit: 's', range: RANGE,
    labels: ['cgroup', 'server.port', METHOD, STATUS],
    help: 'HTTP/1.x requests served: first request byte read to first response byte written, by the process\'s cgroup, listening port, method and status.',
  }),
  client: defineMetric({
    name: 'kerntap.http.client.request.duration', kind: 'histogram', unit: 's', range: RANGE,
    labels: ['cgroup', 'server.address', 'server.port', METHOD, STATUS],
    help: 'HTTP/1.x requests made: request written to first response byte read, by the process\'s cgroup, server address and port, method and status.',
  }),
} as const;

/** enum method in bpf/http.bpf.c, by enumerator: the label. Values come from the object's BTF. */
const METHOD_LABELS: Record<string, string> = {
  M_OTHER: '_OTHER', M_GET: 'GET', M_POST: 'POST', M_PUT: 'PUT', M_DELETE: 'DELETE', M_HEAD: 'HEAD', M_OPTIONS: 'OPTIONS',
  M_PATCH: 'PATCH', M_CONNECT: 'CONNECT', M_TRACE: 'TRACE',
};
const OVERFLOW_ID = 0xffff_ffff_ffff_ffffn;
const OVERFLOW = '~overflow';

/** What the collector reads from bpf/http.bpf.c, checked once against the object's BTF at load. */
export function httpLayouts(btf: ObjectBtf, object = 'http.bpf.o') {
  const site = { collector: 'http', object };
  const method = enumValues(btf, site, 'method', Object.keys(METHOD_LABELS), { exhaustive: true });
  const role = enumValues(btf, site, 'role', ['ROLE_UNKNOWN', 'ROLE_CLIENT', 'ROLE_SERVER'], { exhaustive: true });
  const dropSlot = enumValues(btf, site, 'drop_slot', ['DROP_REQS', 'DROP_CONNS', 'DROP_PENDING'], { exhaustive: true });
  checkHistValue(btf, site, 'reqs');
  checkDropsMap(btf, site);
  const methodLabel: string[] = [];
  for (const [name, v] of Object.entries(method)) methodLabel[v] = METHOD_LABELS[name]!;
  return {
    reqKey: mapLayout(btf, site, 'reqs', 'key', { cgroup_id: 8, peer: 16, server_port: 2, status: 2, method: 1, role: 1 }),
    connKey: mapLayout(btf, site, 'conns', 'key', { tgid: 4, fd: 4 }),
    conn: mapLayout(btf, site, 'conns', 'value', { peer: 16, ino: 8, local_port: 2, peer_port: 2, tries: 1 }),
    connInoWord: wordIndex(mapLayout(btf, site, 'conns', 'value', { ino: 8 }), { ...site, map: 'conns' }).ino,
    methodLabel,
    roleClient: role.ROLE_CLIENT!,
    dropSlot,
  };
}
type HttpLayouts = ReturnType<typeof httpLayouts>;
/** Data events a socket from before kerntap gets to show HTTP before it is forgotten. */
const TRIES_PREEXISTING = 8;
/** How often entries of exited processes and replaced fds are looked for. */
const GC_INTERVAL_MS = 30_000;

const configSchema = z.strictObject({
  enabled: z.boolean().default(false),
  /** Server ports in this range are folded into server_port="ephemeral". */
  ephemeral_ports: portRange.default([32768, 60999]),
  /** Capacity of the {process, fd} connection table; more connections are not tracked (counted). */
  max_connections: z.number().int().min(16).max(4_194_304).default(65_536),
  /** Capacity of the cgroup × port × method × status histogram map; more go to cgroup="~overflow". */
  max_series: z.number().int().min(16).max(1_048_576).default(4096),
  /** Reads in flight on tracked sockets (one per thread blocked in read). */
  max_pending: z.number().int().min(16).max(1_048_576).default(8192),
});
type HttpConfig = z.output<typeof configSchema>;

export interface ExistingSocket {
  tgid: number;
  fd: number;
  ino: bigint;
  localPort: number;
  peerPort: number;
  /** 16 bytes, IPv4 as v4-mapped IPv6, as the kernel keeps it. */
  peer: Buffer;
}

/** Established sockets of /proc/net/tcp{,6} text, by inode. */
export function parseProcNetTcp(text: string, v6: boolean): Map<bigint, Omit<ExistingSocket, 'tgid' | 'fd' | 'ino'>> {
  const out = new Map<bigint, Omit<ExistingSocket, 'tgid' | 'fd' | 'ino'>>();
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== '01') continue; // TCP_ESTABLISHED
    const [local, remote] = [f[1]!.split(':'), f[2]!.split(':')];
    const peer = Buffer.alloc(16);
    // The kernel prints each 32-bit word of the address in host order.
    if (v6) for (let w = 0; w < 4; w++) peer.writeUInt32LE(parseInt(remote[0]!.slice(w * 8, w * 8 + 8), 16), w * 4);
    else {
      peer.writeUInt16BE(0xffff, 10);
      peer.writeUInt32LE(parseInt(remote[0]!, 16), 12);
    }
    out.set(BigInt(f[9]!), { localPort: parseInt(local[1]!, 16), peerPort: parseInt(remote[1]!, 16), peer });
  }
  return out;
}

function readOr(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/**
 * TCP connections open now, with the processes holding them: each process's
 * fds (/proc/<pid>/fd) matched to the established sockets of its network
 * namespace. Processes whose fds can't be read (no CAP_SYS_PTRACE) are skipped.
 */
export function existingSockets(limit: number): ExistingSocket[] {
  const byNetns = new Map<string, Map<bigint, Omit<ExistingSocket, 'tgid' | 'fd' | 'ino'>>>();
  const out: ExistingSocket[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let fds: string[];
    let netns: string;
    try {
      netns = readlinkSync(`/proc/${pid}/ns/net`);
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    let established = byNetns.get(netns);
    if (!established) {
      established = new Map([
        ...parseProcNetTcp(readOr(`/proc/${pid}/net/tcp`), false),
        ...parseProcNetTcp(readOr(`/proc/${pid}/net/tcp6`), true),
      ]);
      byNetns.set(netns, established);
    }
    for (const fd of fds) {
      let link: string;
      try {
        link = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(link);
      const sock = m && established.get(BigInt(m[1]!));
      if (!sock) continue;
      out.push({ tgid: Number(pid), fd: Number(fd), ino: BigInt(m[1]!), ...sock });
      if (out.length >= limit) return out;
    }
  }
  return out;
}

/** A struct conn for a socket from before kerntap: role unknown until its data shows it. */
function connValue(L: HttpLayouts, s: ExistingSocket): Buffer {
  return encode(L.conn, { peer: s.peer, ino: s.ino, local_port: s.localPort, peer_port: s.peerPort, tries: TRIES_PREEXISTING });
}

class HttpCollector implements CollectorInstance {
  readonly objects: BpfObjectHandle[];
  readonly dropSlots;
  private lastGcMs = 0;

  constructor(
    private readonly obj: BpfObjectHandle,
    private readonly ctx: CollectorContext,
    private readonly layouts: HttpLayouts,
  ) {
    this.objects = [obj];
    this.dropSlots = [
      { slot: layouts.dropSlot.DROP_REQS, map: 'reqs' },
      { slot: layouts.dropSlot.DROP_CONNS, map: 'conns' },
      { slot: layouts.dropSlot.DROP_PENDING, map: 'pending' },
    ];
  }

  /** Puts the sockets open before kerntap into the connection table (those the kernel has not learned meanwhile). */
  seedConnections(sockets: ExistingSocket[]): number {
    let added = 0;
    for (const s of sockets) if (this.obj.updateElem('conns', encode(this.layouts.connKey, { tgid: s.tgid, fd: s.fd }), connValue(this.layouts, s), true)) added++;
    return added;
  }

  async collect(nowMs: number): Promise<RawFamily[]> {
    const reqs = await this.obj.readMap('reqs');
    if (nowMs - this.lastGcMs >= GC_INTERVAL_MS) {
      this.lastGcMs = nowMs;
      await this.forgetClosed(await this.obj.readMap('conns'));
    }
    return this.families(reqs);
  }

  private async families(batch: MapBatch): Promise<RawFamily[]> {
    const server: RawHistogramPoint[] = [];
    const client: RawHistogramPoint[] = [];
    const { reqKey: K, methodLabel, roleClient } = this.layouts;
    const o = K.offset;
    for (let i = 0; i < batch.count; i++) {
      const key = batch.keys.subarray(i * K.size, (i + 1) * K.size);
      const id = key.readBigUInt64LE(o.cgroup_id);
      const hist = decodeHistogram(batch.values, i * HIST_WORDS);
      if (hist.count === 0) continue;
      const identity = id.toString();
      if (id === OVERFLOW_ID) {
        server.push({ labels: [OVERFLOW, OVERFLOW, OVERFLOW, OVERFLOW], hist, identity });
        continue;
      }
      const cgroup = this.ctx.cgroups.resolve(id);
      if (this.ctx.cgroups.expired(id)) continue;
      const port = key.readUInt16LE(o.server_port);
      const serverPort = port === 0 ? 'ephemeral' : String(port);
      const status = String(key.readUInt16LE(o.status));
      const method = methodLabel[key.readUInt8(o.method)] ?? '_OTHER';
      if (key.readUInt8(o.role) === roleClient) {
        client.push({ labels: [cgroup, formatAddress(key.subarray(o.peer, o.peer + 16)), serverPort, method, status], hist, identity });
      } else {
        server.push({ labels: [cgroup, serverPort, method, status], hist, identity });
      }
    }
    await expireCgroupEntries(this.obj, 'reqs', batch, this.ctx.cgroups, (i) => batch.keys.readBigUInt64LE(i * K.size + o.cgroup_id),
      (id) => id === OVERFLOW_ID);
    return [histogramFamily(httpMetrics.server, server), histogramFamily(httpMetrics.client, client)];
  }

  /**
   * Frees connections whose process exited, or whose fd now holds another
   * file (closed by exit, dup2 or exec's close-on-exec, which the close()
   * tracepoint does not see). Without the right to read another process's
   * fds (after dropping privileges), only exits are detected.
   */
  private async forgetClosed(batch: MapBatch): Promise<void> {
    const stale: Buffer[] = [];
    const { connKey: K, conn, connInoWord } = this.layouts;
    const words = conn.size / 8;
    for (let i = 0; i < batch.count; i++) {
      const key = batch.keys.subarray(i * K.size, (i + 1) * K.size);
      const [tgid, fd] = [key.readUInt32LE(K.offset.tgid), key.readUInt32LE(K.offset.fd)];
      const ino = batch.values[i * words + connInoWord]!;
      let gone: boolean;
      try {
        gone = readlinkSync(`/proc/${tgid}/fd/${fd}`) !== `socket:[${ino}]`;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        gone = code === 'ENOENT' || (code !== 'EACCES' ? true : !existsSync(`/proc/${tgid}`));
      }
      if (gone) stale.push(Buffer.from(key));
    }
    if (stale.length > 0) await this.obj.deleteKeys('conns', Buffer.concat(stale));
  }

  close(): void {
    this.obj.close();
  }
}


const SYSCALL_TP_SINCE = '4.7, with CONFIG_FTRACE_SYSCALLS and tracefs mounted';
const syscallHook = (name: string) => ({ kind: 'tracepoint' as const, name: `syscalls/${name}`, since: SYSCALL_TP_SINCE });

export const http: CollectorDefinition<HttpConfig> = {
  name: 'http',
  description: 'HTTP/1.x request rate, status and duration per cgroup, server port and peer, from syscall tracepoints (opt-in)',
  hooks: [
    ...['read', 'readv', 'recvfrom', 'recvmsg', 'connect'].flatMap((s) => [syscallHook(`sys_enter_${s}`), syscallHook(`sys_exit_${s}`)]),
    ...['write', 'writev', 'sendto', 'sendmsg', 'close'].map((s) => syscallHook(`sys_enter_${s}`)),
    ...['accept', 'accept4'].map((s) => syscallHook(`sys_exit_${s}`)),
  ],
  metrics: Object.values(httpMetrics),
  configSchema,
  async start(ctx, config) {
    const [lo, hi] = config.ephemeral_ports;
    const obj = new ctx.native.BpfObject(ctx.objectPath('http'), {
      maxEntries: { conns: config.max_connections, reqs: config.max_series + 1, pending: config.max_pending },
      rodata: { ephemeral_lo: u32Value(lo), ephemeral_hi: u32Value(hi) },
    });
    let collector: HttpCollector;
    try {
      const layouts = httpLayouts(obj.btf(), path.basename(ctx.objectPath('http')));
      obj.updateElem('reqs', encode(layouts.reqKey, { cgroup_id: OVERFLOW_ID }), Buffer.alloc(HIST_WORDS * 8));
      // Attached first, so that a connection closed during the scan is not left behind.
      obj.attach();
      collector = new HttpCollector(obj, ctx, layouts);
      const seeded = collector.seedConnections(existingSockets(config.max_connections));
      ctx.log.debug({ collector: 'http', connections: seeded }, 'tracking TCP connections open before start');
    } catch (err) {
      obj.close();
      throw err;
    }
    return collector;
  },
};
