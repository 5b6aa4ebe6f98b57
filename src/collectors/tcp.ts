/**
 * tcp: latency histograms, traffic per cgroup × role × peer, connection
 * health (bpf/tcp.bpf.c).
 *
 * Kernel maps hold running totals; this module decodes them, resolves
 * cgroups and peers into labels, frees entries of dead cgroups and of idle
 * flows after their TTL, and runs the iter/tcp program for listeners (and
 * live connections in per-connection mode).
 */
import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import type { BpfObjectHandle, MapBatch } from '../bpf/native.js';
import { durationSchema } from '../duration.js';
import { decodeCString } from '../labels.js';
import { decodeHistogram, HIST_WORDS } from '../model/histogram.js';
import { defineMetric } from '../model/metric.js';
import { histogramFamily, numberFamily, type RawFamily, type RawHistogramPoint, type RawNumberPoint } from '../model/snapshot.js';
import { expireCgroupEntries, lacksHelper } from './common.js';
import type { CollectorContext, CollectorDefinition, CollectorInstance } from './types.js';

const CGROUP_LABEL = ['cgroup'] as const;
/** server_port: the peer's port for a client, the local (listening) port for a server. */
const FLOW_LABELS = ['cgroup', 'role', 'peer', 'server.port'] as const;

export const tcpMetrics = {
  rtt: defineMetric({
    name: 'kerntap.tcp.rtt', kind: 'histogram', unit: 's', labels: CGROUP_LABEL, range: { minExp: -17, maxExp: 3 },
    help: 'Smoothed round-trip time of TCP connections, sampled at every segment received (tcp_probe).',
  }),
  connect: defineMetric({
    name: 'kerntap.tcp.connect.duration', kind: 'histogram', unit: 's', labels: CGROUP_LABEL, range: { minExp: -17, maxExp: 5 },
    help: 'Time from SYN sent to connection established, for connections this host opened (active opens).',
  }),
  handshake: defineMetric({
    name: 'kerntap.tcp.handshake.duration', kind: 'histogram', unit: 's', labels: CGROUP_LABEL, range: { minExp: -17, maxExp: 5 },
    help: 'Time from SYN-ACK sent to the final ACK, as the kernel measured it, for connections this host accepted (passive opens).',
  }),
  lifetime: defineMetric({
    name: 'kerntap.tcp.connection.duration', kind: 'histogram', unit: 's', labels: ['cgroup', 'role'], range: { minExp: -10, maxExp: 17 },
    help: 'Lifetime of closed TCP connections, from established to close.',
  }),
  failed: defineMetric({
    name: 'kerntap.tcp.connects.failed', kind: 'counter', unit: '{connect}', labels: ['cgroup', 'peer', 'server.port', 'reason'],
    help: 'Connects that never got established, by reason: refused, timeout, reset, unreachable, other.',
  }),
  sent: defineMetric({
    name: 'kerntap.tcp.sent', kind: 'counter', unit: 'By', labels: FLOW_LABELS,
    help: 'Bytes sent and acknowledged by the peer (tcp_sock.bytes_acked), per cgroup, role and peer.',
  }),
  received: defineMetric({
    name: 'kerntap.tcp.received', kind: 'counter', unit: 'By', labels: FLOW_LABELS,
    help: 'Bytes received (tcp_sock.bytes_received), per cgroup, role and peer.',
  }),
  retransmits: defineMetric({
    name: 'kerntap.tcp.retransmits', kind: 'counter', unit: '{segment}', labels: FLOW_LABELS,
    help: 'Segments retransmitted (tcp_sock.total_retrans, counted as the RetransSegs MIB counts them).',
  }),
  synRetransmits: defineMetric({
    name: 'kerntap.tcp.syn.retransmits', kind: 'counter', unit: '{segment}', labels: FLOW_LABELS,
    help: 'SYN and SYN-ACK segments retransmitted, as the TCPSynRetrans MIB counts them: handshakes that needed more than one try.',
  }),
  resets: defineMetric({
    name: 'kerntap.tcp.resets', kind: 'counter', unit: '{reset}', labels: ['cgroup', 'direction'],
    help: 'TCP resets sent and received. cgroup "~none": resets for segments that matched no socket.',
  }),
  active: defineMetric({
    name: 'kerntap.tcp.connections.active', kind: 'gauge', unit: '{connection}', labels: FLOW_LABELS,
    help: 'Established TCP connections, per cgroup, role and peer.',
  }),
  listeners: defineMetric({
    name: 'kerntap.tcp.listeners', kind: 'gauge', unit: '{socket}', labels: ['cgroup', 'comm', 'port'],
    help: 'Listening TCP sockets in kerntap\'s network namespace, by owner cgroup, the process that called listen(), and port.',
  }),
  connectionSent: defineMetric({
    name: 'kerntap.tcp.connection.sent', kind: 'counter', unit: 'By', labels: ['cgroup', 'comm', 'local', 'peer'],
    help: 'Per-connection mode: bytes sent by the top connections (by traffic) in kerntap\'s network namespace; the rest in "~overflow".',
  }),
  connectionReceived: defineMetric({
    name: 'kerntap.tcp.connection.received', kind: 'counter', unit: 'By', labels: ['cgroup', 'comm', 'local', 'peer'],
    help: 'Per-connection mode: bytes received by the top connections (by traffic); the rest in "~overflow".',
  }),
} as const;

const FAILURES = ['refused', 'timeout', 'reset', 'unreachable', 'other'] as const;
const ROLES = ['unknown', 'client', 'server'] as const;
const HIST_KINDS = ['rtt', 'connect', 'handshake', 'lifetime_client', 'lifetime_server'] as const;
const OVERFLOW_ID = 0xffff_ffff_ffff_ffffn;
const OVERFLOW = '~overflow';
const TCP_LISTEN = 10;
const FLOW_KEY_SIZE = 32;
/** struct flow_val: sent, received, retrans, active, resets_sent, resets_received, syn_retrans, failed[]. */
const FLOW_WORDS = 7 + FAILURES.length;
const FLOW_FAILED = 7;
const RECORD_SIZE = 80;

export const portRange = z
  .string()
  .regex(/^\d{1,5}-\d{1,5}$/, 'must look like "32768-60999"')
  .transform((s) => s.split('-').map(Number) as [number, number])
  .refine(([lo, hi]) => lo <= hi && hi <= 65535, 'must be a range of ports, low-high');

const configSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** Service ports in this range are folded into server_port="ephemeral" (a client's peer port, a server's local port). */
  ephemeral_ports: portRange.default([32768, 60999]),
  /** Capacity of the cgroup × role × peer map; more flows are summed under cgroup="~overflow". */
  max_flows: z.number().int().min(16).max(1_048_576).default(16_384),
  /**
   * Capacity of the per-socket state table on kernels whose tracing
   * programs have no socket storage (before 5.11); unused elsewhere.
   */
  max_sockets: z.number().int().min(16).max(4_194_304).default(65_536),
  /** Capacity of the per-cgroup histogram map (5 histograms per cgroup). */
  max_histograms: z.number().int().min(16).max(1_048_576).default(8_192),
  /** Flows with no connection open and no new traffic for this long are dropped (their series end). */
  flow_ttl: durationSchema(0).default(600_000),
  per_connection: z
    .strictObject({
      enabled: z.boolean().default(false),
      top_n: z.number().int().min(1).max(10_000).default(100),
    })
    .default({ enabled: false, top_n: 100 }),
});
type TcpConfig = z.output<typeof configSchema>;

/** "1.2.3.4" for IPv4 and v4-mapped IPv6, RFC 5952 text for IPv6. */
export function formatAddress(bytes: Buffer): string {
  const addr = ipaddr.fromByteArray([...bytes]) as ipaddr.IPv6;
  return addr.isIPv4MappedAddress() ? addr.toIPv4Address().toString() : addr.toString();
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}

function overflowKey(size: number): Buffer {
  const k = Buffer.alloc(size);
  k.writeBigUInt64LE(OVERFLOW_ID, 0);
  return k;
}

interface FlowSeen {
  total: bigint;
  changedMs: number;
}

/** Where per-socket state lives: socket storage (5.11+), or a table keyed by socket before. */
export type SocketStateStore = 'socket storage' | 'socket table';

class TcpCollector implements CollectorInstance {
  readonly objects: BpfObjectHandle[];
  readonly dropSlots;
  readonly notes;
  private readonly flowSeen = new Map<string, FlowSeen>();
  /**
   * Values of flows that were expired while an event raced the expiry and
   * the kernel had already re-created the key: added to that key's values
   * until it expires again (rare; see expireIdle).
   */
  private readonly carried = new Map<string, BigUint64Array>();

  constructor(
    private readonly obj: BpfObjectHandle,
    private readonly ctx: CollectorContext,
    private readonly config: TcpConfig,
    store: SocketStateStore,
  ) {
    this.objects = [obj];
    this.dropSlots = [
      { slot: 0, map: 'flows' },
      { slot: 1, map: 'hists' },
      { slot: 2, map: store === 'socket storage' ? 'sock_states' : 'sock_table' },
    ];
    this.notes = store === 'socket storage' ? [] : ['socket state in a table (no socket storage for tracing programs before Linux 5.11)'];
  }

  private cgroupLabel(id: bigint): string {
    if (id === OVERFLOW_ID) return OVERFLOW;
    if (id === 0n) return '~none';
    return this.ctx.cgroups.resolve(id);
  }

  /** Entries of cgroups past their TTL (or replaced by a new cgroup at the same path) are not reported. */
  private retired(id: bigint): boolean {
    return id !== OVERFLOW_ID && id !== 0n && this.ctx.cgroups.expired(id);
  }

  async collect(nowMs: number): Promise<RawFamily[]> {
    // iter/tcp first: it adds the traffic of quiet connections to the flows read next.
    const sockets = await this.obj.runIter('tcp_sockets');
    const [flows, hists] = await Promise.all([this.obj.readMap('flows'), this.obj.readMap('hists')]);
    return [...this.flowFamilies(flows, nowMs), ...this.histFamilies(hists), ...this.socketFamilies(sockets)];
  }

  private flowFamilies(batch: MapBatch, nowMs: number): RawFamily[] {
    const sent: RawNumberPoint[] = [];
    const received: RawNumberPoint[] = [];
    const retrans: RawNumberPoint[] = [];
    const active: RawNumberPoint[] = [];
    const failed: RawNumberPoint[] = [];
    const synRetrans: RawNumberPoint[] = [];
    const resets = new Map<string, RawNumberPoint>();
    const idle: { key: Buffer; words: BigUint64Array }[] = [];
    const seen = new Set<string>();

    for (let i = 0; i < batch.count; i++) {
      const key = batch.keys.subarray(i * FLOW_KEY_SIZE, (i + 1) * FLOW_KEY_SIZE);
      const hex = key.toString('hex');
      const kernelWords = batch.values.subarray(i * FLOW_WORDS, (i + 1) * FLOW_WORDS);
      const w = this.withCarried(hex, kernelWords);
      const id = key.readBigUInt64LE(0);
      const cgroup = this.cgroupLabel(id);
      if (this.retired(id)) continue;
      const identity = id.toString();
      const role = id === OVERFLOW_ID ? OVERFLOW : ROLES[key.readUInt8(26)] ?? 'unknown';
      const peer = id === OVERFLOW_ID ? OVERFLOW : formatAddress(key.subarray(8, 24));
      const port = key.readUInt16LE(24);
      const serverPort = id === OVERFLOW_ID ? OVERFLOW : port === 0 ? 'ephemeral' : String(port);
      const labels = [cgroup, role, peer, serverPort];
      // Not clamped: +1 and -1 come from the same socket's events, so a
      // negative value would show a lost event instead of hiding it.
      const openNow = BigInt.asIntN(64, w[3]!);

      // A flow with nothing open and no change for the TTL is freed, so
      // closed peers don't pile up series forever.
      seen.add(hex);
      let total = 0n;
      for (const x of w) total += x;
      const prev = this.flowSeen.get(hex);
      if (!prev || prev.total !== total) this.flowSeen.set(hex, { total, changedMs: nowMs });
      else if (openNow <= 0n && id !== OVERFLOW_ID && nowMs - prev.changedMs > this.config.flow_ttl) {
        idle.push({ key: Buffer.from(key), words: kernelWords.slice() });
        continue;
      }

      if (id === OVERFLOW_ID && total === 0n) continue;
      if (id !== 0n) {
        sent.push({ labels, value: Number(w[0]), identity });
        received.push({ labels, value: Number(w[1]), identity });
        retrans.push({ labels, value: Number(w[2]), identity });
        active.push({ labels, value: Number(openNow), identity });
        synRetrans.push({ labels, value: Number(w[6]), identity });
        FAILURES.forEach((reason, f) => {
          const n = Number(w[FLOW_FAILED + f]);
          if (n > 0) failed.push({ labels: [cgroup, peer, serverPort, reason], value: n, identity });
        });
      }
      for (const [direction, word] of [['sent', 4], ['received', 5]] as const) {
        const n = Number(w[word]);
        if (n === 0) continue;
        const k = `${cgroup}\u0000${direction}`;
        const point = resets.get(k);
        if (point) point.value += n;
        else resets.set(k, { labels: [cgroup, direction], value: n, identity });
      }
    }
    for (const hex of this.flowSeen.keys()) if (!seen.has(hex)) this.flowSeen.delete(hex);
    for (const hex of this.carried.keys()) if (!seen.has(hex)) this.carried.delete(hex);
    if (idle.length > 0) this.expireIdle(idle);
    expireCgroupEntries(this.obj, 'flows', batch, this.ctx.cgroups, (i) => batch.keys.readBigUInt64LE(i * FLOW_KEY_SIZE),
      (id) => id === OVERFLOW_ID || id === 0n);

    return [
      numberFamily(tcpMetrics.sent, sent),
      numberFamily(tcpMetrics.received, received),
      numberFamily(tcpMetrics.retransmits, retrans),
      numberFamily(tcpMetrics.active, active),
      numberFamily(tcpMetrics.failed, failed),
      numberFamily(tcpMetrics.synRetransmits, synRetrans),
      numberFamily(tcpMetrics.resets, [...resets.values()]),
    ];
  }

  private withCarried(hex: string, words: BigUint64Array): BigUint64Array {
    const carried = this.carried.get(hex);
    if (!carried) return words;
    const sum = new BigUint64Array(FLOW_WORDS);
    for (let j = 0; j < FLOW_WORDS; j++) sum[j] = words[j]! + carried[j]!;
    return sum;
  }

  /**
   * Frees idle flows without losing an event that raced the decision: each
   * key is taken out with the values it had at that moment (atomically per
   * key where the kernel can); if they moved since the poll read them, the
   * flow is not idle after all and goes back in. A key the kernel re-created
   * in between keeps the taken values in userspace (`carried`). Left: an
   * event whose program looked the flow up just before the take and adds
   * just after it (a window of nanoseconds on a flow idle for flow_ttl).
   */
  private expireIdle(idle: { key: Buffer; words: BigUint64Array }[]): void {
    const taken = this.obj.takeElems('flows', Buffer.concat(idle.map((x) => x.key)));
    idle.forEach(({ key, words }, i) => {
      const hex = key.toString('hex');
      const carried = this.carried.get(hex);
      this.carried.delete(hex);
      this.flowSeen.delete(hex);
      if (!taken.found[i]) return;
      const now = taken.values.subarray(i * FLOW_WORDS, (i + 1) * FLOW_WORDS);
      if (now.every((x, j) => x === words[j])) return;
      const back = Buffer.alloc(FLOW_WORDS * 8);
      for (let j = 0; j < FLOW_WORDS; j++) back.writeBigUInt64LE(BigInt.asUintN(64, now[j]! + (carried?.[j] ?? 0n)), j * 8);
      if (!this.obj.updateElem('flows', key, back, true)) {
        this.carried.set(hex, new BigUint64Array(back.buffer, back.byteOffset, FLOW_WORDS));
      }
    });
  }

  private histFamilies(batch: MapBatch): RawFamily[] {
    const byKind: RawHistogramPoint[][] = HIST_KINDS.map(() => []);
    for (let i = 0; i < batch.count; i++) {
      const id = batch.keys.readBigUInt64LE(i * 16);
      const kind = batch.keys.readUInt32LE(i * 16 + 8);
      const hist = decodeHistogram(batch.values, i * HIST_WORDS);
      if (hist.count === 0 || kind >= HIST_KINDS.length) continue;
      const cgroup = this.cgroupLabel(id);
      if (this.retired(id)) continue;
      const labels = kind === 3 ? [cgroup, 'client'] : kind === 4 ? [cgroup, 'server'] : [cgroup];
      byKind[kind]!.push({ labels, hist, identity: id.toString() });
    }
    expireCgroupEntries(this.obj, 'hists', batch, this.ctx.cgroups, (i) => batch.keys.readBigUInt64LE(i * 16),
      (id) => id === OVERFLOW_ID);
    return [
      histogramFamily(tcpMetrics.rtt, byKind[0]!),
      histogramFamily(tcpMetrics.connect, byKind[1]!),
      histogramFamily(tcpMetrics.handshake, byKind[2]!),
      histogramFamily(tcpMetrics.lifetime, [...byKind[3]!, ...byKind[4]!]),
    ];
  }

  private socketFamilies(records: Buffer): RawFamily[] {
    const listeners = new Map<string, RawNumberPoint>();
    const connections: { labels: string[]; sent: number; received: number }[] = [];
    for (let off = 0; off + RECORD_SIZE <= records.length; off += RECORD_SIZE) {
      const r = records.subarray(off, off + RECORD_SIZE);
      const cgroup = this.cgroupLabel(r.readBigUInt64LE(0));
      const comm = decodeCString(r.subarray(64, 80));
      const localPort = r.readUInt16LE(56);
      if (r.readUInt8(60) === TCP_LISTEN) {
        const labels = [cgroup, comm, String(localPort)];
        const k = labels.join('\u0000');
        const point = listeners.get(k);
        if (point) point.value++;
        else listeners.set(k, { labels, value: 1 });
        continue;
      }
      const local = `${formatAddress(r.subarray(24, 40))}:${localPort}`;
      const peer = `${formatAddress(r.subarray(40, 56))}:${r.readUInt16LE(58)}`;
      // An active open's bytes_acked counts its SYN; data only, as everywhere else.
      const acked = Number(r.readBigUInt64LE(8));
      const sent = r.readUInt8(61) === 1 && acked > 0 ? acked - 1 : acked;
      connections.push({ labels: [cgroup, comm, local, peer], sent, received: Number(r.readBigUInt64LE(16)) });
    }
    const families: RawFamily[] = [numberFamily(tcpMetrics.listeners, [...listeners.values()])];
    if (this.config.per_connection.enabled) {
      connections.sort((a, b) => b.sent + b.received - (a.sent + a.received));
      const top = connections.slice(0, this.config.per_connection.top_n);
      const rest = connections.slice(this.config.per_connection.top_n);
      const overflow = [OVERFLOW, OVERFLOW, OVERFLOW, OVERFLOW];
      const sum = (f: 'sent' | 'received') => rest.reduce((s, c) => s + c[f], 0);
      // The overflow series sums a changing set of connections: identity makes it restart, not go backwards.
      const restIdentity = `overflow:${rest.length}`;
      families.push(
        numberFamily(tcpMetrics.connectionSent, [
          ...top.map((c) => ({ labels: c.labels, value: c.sent, identity: c.labels.join(' ') })),
          ...(rest.length ? [{ labels: overflow, value: sum('sent'), identity: restIdentity }] : []),
        ]),
        numberFamily(tcpMetrics.connectionReceived, [
          ...top.map((c) => ({ labels: c.labels, value: c.received, identity: c.labels.join(' ') })),
          ...(rest.length ? [{ labels: overflow, value: sum('received'), identity: restIdentity }] : []),
        ]),
      );
    }
    return families;
  }

  close(): void {
    this.obj.close();
  }
}

export const tcp: CollectorDefinition<TcpConfig> = {
  name: 'tcp',
  description: 'TCP latency histograms, traffic per cgroup and peer, connection health',
  hooks: [
    { kind: 'tp_btf', name: 'inet_sock_set_state', since: '4.16' },
    { kind: 'tp_btf', name: 'tcp_probe', since: '4.16' },
    { kind: 'tp_btf', name: 'tcp_send_reset', since: '4.15' },
    { kind: 'tp_btf', name: 'tcp_receive_reset', since: '4.15' },
    { kind: 'tp_btf', name: 'tcp_retransmit_synack', since: '4.15' },
    { kind: 'iter', name: 'tcp', since: '5.9' },
  ],
  metrics: Object.values(tcpMetrics),
  configSchema,
  async start(ctx, config) {
    const [lo, hi] = config.ephemeral_ports;
    const open = (store: SocketStateStore) => new ctx.native.BpfObject(ctx.objectPath('tcp'), {
      maxEntries: {
        flows: config.max_flows + 2,
        hists: config.max_histograms + 1,
        sock_table: store === 'socket table' ? config.max_sockets : 1,
      },
      rodata: {
        ephemeral_lo: u32(lo), ephemeral_hi: u32(hi), per_connection: u32(config.per_connection.enabled ? 1 : 0),
        sk_storage_ok: u32(store === 'socket storage' ? 1 : 0),
      },
    });
    // Tracing programs get socket storage from 5.11 on; the verifier of an
    // older kernel names the helper it lacks, and the table takes its place.
    let store: SocketStateStore = 'socket storage';
    let obj: BpfObjectHandle;
    try {
      obj = open(store);
    } catch (err) {
      if (!lacksHelper(err, 'bpf_sk_storage_get')) throw err;
      store = 'socket table';
      obj = open(store);
    }
    try {
      obj.updateElem('flows', overflowKey(FLOW_KEY_SIZE), Buffer.alloc(FLOW_WORDS * 8));
      obj.updateElem('hists', overflowKey(16), Buffer.alloc(HIST_WORDS * 8));
      obj.attach();
    } catch (err) {
      obj.close();
      throw err;
    }
    return new TcpCollector(obj, ctx, config, store);
  },
};
