/**
 * tcp: latency histograms, traffic per cgroup × role × peer, connection
 * health (bpf/tcp.bpf.c).
 *
 * Kernel maps hold running totals; this module decodes them, resolves
 * cgroups and peers into labels, frees entries of dead cgroups and of idle
 * flows after their TTL, and runs the iter/tcp program for listeners (and
 * live connections in per-connection mode).
 */
import path from 'node:path';
import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { checkScalar, encode, enumValues, globalLayout, mapLayout, wordIndex, type ObjectBtf } from '../bpf/layout.js';
import type { BpfObjectHandle, MapBatch } from '../bpf/native.js';
import { durationSchema } from '../duration.js';
import { decodeCString } from '../labels.js';
import { addHistogram, decodeHistogram, type HistogramValue } from '../model/histogram.js';
import { defineMetric } from '../model/metric.js';
import { histogramFamily, numberFamily, type RawFamily, type RawHistogramPoint, type RawNumberPoint } from '../model/snapshot.js';
import { checkDropsMap, expireCgroupEntries, histMembers, u32Value } from './common.js';
import type { CollectorContext, CollectorDefinition, CollectorInstance } from './types.js';

const CGROUP_LABEL = ['cgroup'] as const;
/** server_port: the peer's port for a client, the local (listening) port for a server. */
const FLOW_LABELS = ['cgroup', 'role', 'peer', 'server.port'] as const;

export const tcpMetrics = {
  rtt: defineMetric({
    name: 'kerntap.tcp.rtt', kind: 'histogram', unit: 's', labels: CGROUP_LABEL, range: { minExp: -17, maxExp: 3 },
    help: 'Smoothed round-trip time of TCP connections: when established (the handshake\'s sample), then, past their first 8 segments, at most once per 10 ms of their activity (tcp_probe), so weighted by active time, not by segments.',
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
    help: 'Open TCP connections (established and not yet closed, closing states included), per cgroup, role and peer.',
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

/** The C enums of bpf/tcp.bpf.c, by enumerator; their values come from the object's BTF. */
const FAILURE_LABELS = { FAIL_REFUSED: 'refused', FAIL_TIMEOUT: 'timeout', FAIL_RESET: 'reset', FAIL_UNREACHABLE: 'unreachable', FAIL_OTHER: 'other' } as const;
const ROLE_LABELS = { ROLE_UNKNOWN: 'unknown', ROLE_CLIENT: 'client', ROLE_SERVER: 'server' } as const;
/** struct conn_hists: the histograms of one cgroup and role. `open` is the connect time of a client, the handshake of a server. */
const CONN_HISTS = ['rtt', 'open', 'lifetime'] as const;
const DROP_SLOTS = ['DROP_FLOWS', 'DROP_HISTS', 'DROP_SOCKS'] as const;
const OVERFLOW_ID = 0xffff_ffff_ffff_ffffn;
const OVERFLOW = '~overflow';
const TCP_LISTEN = 10;

/** Labels by enum value (a sparse array: values are small). */
function byValue(values: Record<string, number>, labels: Record<string, string>): string[] {
  const out: string[] = [];
  for (const [name, v] of Object.entries(values)) out[v] = labels[name]!;
  return out;
}

/**
 * Everything the collector reads from the kernel, located in the object's
 * BTF and checked once at load: a member missing or of another size fails
 * the start with a LayoutError naming the map and the member.
 */
export function tcpLayouts(btf: ObjectBtf, object = 'tcp.bpf.o') {
  const site = { collector: 'tcp', object };
  const failure = enumValues(btf, site, 'failure', [...Object.keys(FAILURE_LABELS), 'FAIL_KINDS'], { exhaustive: true });
  const role = enumValues(btf, site, 'role', Object.keys(ROLE_LABELS), { exhaustive: true });
  const dropSlot = enumValues(btf, site, 'drop_slot', DROP_SLOTS, { exhaustive: true });
  const flowKey = mapLayout(btf, site, 'flows', 'key', { cgroup_id: 8, peer: 16, server_port: 2, role: 1 });
  const flowVal = mapLayout(btf, site, 'flows', 'value', {
    sent: 8, received: 8, retrans: 8, active: 8, resets_sent: 8, resets_received: 8, syn_retrans: 8,
    failed: { elem: 8, length: failure.FAIL_KINDS! },
  });
  const histKey = mapLayout(btf, site, 'hists', 'key', { cgroup_id: 8, role: 1 });
  const hists = histMembers(btf, site, 'hists', CONN_HISTS);
  checkDropsMap(btf, site);
  checkScalar(btf, site, 'kt_sock_count', 'value', 8);
  const record = globalLayout(btf, site, 'kt_layouts', 'socket_record', {
    cgroup_id: 8, bytes_acked: 8, bytes_received: 8, local: 16, peer: 16, local_port: 2, peer_port: 2, state: 1, role: 1, comm: 16,
  });
  const { FAIL_KINDS: _, ...reasons } = failure;
  return {
    flowKey, flowVal, histKey, record,
    histWord: hists.word,
    histWords: hists.words,
    flowWord: wordIndex(flowVal, { ...site, map: 'flows' }),
    flowWords: flowVal.size / 8,
    /** [enum failure value, label] */
    failures: Object.entries(reasons).map(([name, v]) => [v, FAILURE_LABELS[name as keyof typeof FAILURE_LABELS]] as const),
    roleLabel: byValue(role, ROLE_LABELS),
    roleClient: role.ROLE_CLIENT!,
    roleServer: role.ROLE_SERVER!,
    dropSlot,
  };
}
export type TcpLayouts = ReturnType<typeof tcpLayouts>;

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
   * Capacity of the per-socket state table: live TCP sockets tracked at once
   * (established, closing, listening); a socket beyond it is not tracked,
   * and counted in kerntap_map_overflow_total{map="sock_table"}.
   */
  max_sockets: z.number().int().min(16).max(4_194_304).default(131_072),
  /** Capacity of the histogram map: one entry per cgroup and role (client, server). */
  max_histograms: z.number().int().min(16).max(1_048_576).default(4_096),
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


interface FlowSeen {
  total: bigint;
  changedMs: number;
}

class TcpCollector implements CollectorInstance {
  readonly objects: BpfObjectHandle[];
  readonly dropSlots;
  private readonly flowSeen = new Map<string, FlowSeen>();
  /**
   * Values of flows that were expired while an event raced the expiry and
   * the kernel had already re-created the key: added to that key's values
   * until it expires again (rare; see expireIdle).
   */
  private readonly carried = new Map<string, BigUint64Array>();
  /** sock_table's entries, from the kernel's count (kt_sock_count), as of the last poll. */
  private socketEntries: number | undefined;

  constructor(
    private readonly obj: BpfObjectHandle,
    private readonly ctx: CollectorContext,
    private readonly config: TcpConfig,
    private readonly layouts: TcpLayouts,
  ) {
    this.objects = [obj];
    this.dropSlots = [
      { slot: layouts.dropSlot.DROP_FLOWS, map: 'flows' },
      { slot: layouts.dropSlot.DROP_HISTS, map: 'hists' },
      { slot: layouts.dropSlot.DROP_SOCKS, map: 'sock_table' },
    ];
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
    const [flows, hists, sockCount] = await Promise.all([this.obj.readMap('flows'), this.obj.readMap('hists'), this.obj.readMap('kt_sock_count')]);
    // Per-CPU counts of inserts less deletes, summed modulo 2^64: signed, their sum is the table's entries.
    this.socketEntries = sockCount.count > 0 ? Number(BigInt.asIntN(64, sockCount.values[0]!)) : undefined;
    return [...(await this.flowFamilies(flows, nowMs)), ...(await this.histFamilies(hists)), ...this.socketFamilies(sockets)];
  }

  countedEntries(): ReadonlyMap<string, number> {
    return new Map(this.socketEntries === undefined ? [] : [['sock_table', this.socketEntries]]);
  }

  private async flowFamilies(batch: MapBatch, nowMs: number): Promise<RawFamily[]> {
    const { flowKey: K, flowWord: W, flowWords, failures, roleLabel } = this.layouts;
    const keySize = K.size;
    const [oId, oPeer, oPort, oRole] = [K.offset.cgroup_id, K.offset.peer, K.offset.server_port, K.offset.role];
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
      const key = batch.keys.subarray(i * keySize, (i + 1) * keySize);
      const hex = key.toString('hex');
      const kernelWords = batch.values.subarray(i * flowWords, (i + 1) * flowWords);
      const w = this.withCarried(hex, kernelWords);
      const id = key.readBigUInt64LE(oId);
      const cgroup = this.cgroupLabel(id);
      if (this.retired(id)) continue;
      const identity = id.toString();
      const role = id === OVERFLOW_ID ? OVERFLOW : roleLabel[key.readUInt8(oRole)] ?? 'unknown';
      const peer = id === OVERFLOW_ID ? OVERFLOW : formatAddress(key.subarray(oPeer, oPeer + 16));
      const port = key.readUInt16LE(oPort);
      const serverPort = id === OVERFLOW_ID ? OVERFLOW : port === 0 ? 'ephemeral' : String(port);
      const labels = [cgroup, role, peer, serverPort];
      // Not clamped: +1 and -1 come from the same socket's events, so a
      // negative value would show a lost event instead of hiding it.
      const openNow = BigInt.asIntN(64, w[W.active]!);

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
        sent.push({ labels, value: Number(w[W.sent]), identity });
        received.push({ labels, value: Number(w[W.received]), identity });
        retrans.push({ labels, value: Number(w[W.retrans]), identity });
        active.push({ labels, value: Number(openNow), identity });
        synRetrans.push({ labels, value: Number(w[W.syn_retrans]), identity });
        for (const [f, reason] of failures) {
          const n = Number(w[W.failed + f]);
          if (n > 0) failed.push({ labels: [cgroup, peer, serverPort, reason], value: n, identity });
        }
      }
      for (const [direction, word] of [['sent', W.resets_sent], ['received', W.resets_received]] as const) {
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
    if (idle.length > 0) await this.expireIdle(idle);
    await expireCgroupEntries(this.obj, 'flows', batch, this.ctx.cgroups, (i) => batch.keys.readBigUInt64LE(i * keySize + oId),
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
    const sum = new BigUint64Array(words.length);
    for (let j = 0; j < words.length; j++) sum[j] = words[j]! + carried[j]!;
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
  private async expireIdle(idle: { key: Buffer; words: BigUint64Array }[]): Promise<void> {
    const taken = await this.obj.takeElems('flows', Buffer.concat(idle.map((x) => x.key)));
    const flowWords = this.layouts.flowWords;
    idle.forEach(({ key, words }, i) => {
      const hex = key.toString('hex');
      const carried = this.carried.get(hex);
      this.carried.delete(hex);
      this.flowSeen.delete(hex);
      if (!taken.found[i]) return;
      const now = taken.values.subarray(i * flowWords, (i + 1) * flowWords);
      if (now.every((x, j) => x === words[j])) return;
      const back = Buffer.alloc(flowWords * 8);
      for (let j = 0; j < flowWords; j++) back.writeBigUInt64LE(BigInt.asUintN(64, now[j]! + (carried?.[j] ?? 0n)), j * 8);
      if (!this.obj.updateElem('flows', key, back, true)) {
        this.carried.set(hex, new BigUint64Array(back.buffer, back.byteOffset, flowWords));
      }
    });
  }

  private async histFamilies(batch: MapBatch): Promise<RawFamily[]> {
    const { histKey: K, histWord: W, histWords, roleLabel, roleClient, roleServer } = this.layouts;
    const [size, oId, oRole] = [K.size, K.offset.cgroup_id, K.offset.role];
    const connect: RawHistogramPoint[] = [];
    const handshake: RawHistogramPoint[] = [];
    const lifetime: RawHistogramPoint[] = [];
    // RTT is per cgroup: its client and server entries add up.
    const rtt = new Map<bigint, { cgroup: string; hist: HistogramValue }>();
    for (let i = 0; i < batch.count; i++) {
      const id = batch.keys.readBigUInt64LE(i * size + oId);
      const role = batch.keys.readUInt8(i * size + oRole);
      if (this.retired(id)) continue;
      const cgroup = this.cgroupLabel(id);
      const identity = id.toString();
      const at = (member: keyof typeof W) => decodeHistogram(batch.values, i * histWords + W[member]);
      const open = at('open');
      if (open.count > 0 && role === roleClient) connect.push({ labels: [cgroup], hist: open, identity });
      if (open.count > 0 && role === roleServer) handshake.push({ labels: [cgroup], hist: open, identity });
      const life = at('lifetime');
      if (life.count > 0) lifetime.push({ labels: [cgroup, roleLabel[role] ?? 'unknown'], hist: life, identity });
      const r = at('rtt');
      if (r.count === 0) continue;
      const sum = rtt.get(id);
      if (sum) addHistogram(sum.hist, r);
      else rtt.set(id, { cgroup, hist: r });
    }
    await expireCgroupEntries(this.obj, 'hists', batch, this.ctx.cgroups, (i) => batch.keys.readBigUInt64LE(i * size + oId),
      (id) => id === OVERFLOW_ID);
    return [
      histogramFamily(tcpMetrics.rtt, [...rtt].map(([id, { cgroup, hist }]) => ({ labels: [cgroup], hist, identity: id.toString() }))),
      histogramFamily(tcpMetrics.connect, connect),
      histogramFamily(tcpMetrics.handshake, handshake),
      histogramFamily(tcpMetrics.lifetime, lifetime),
    ];
  }

  private socketFamilies(records: Buffer): RawFamily[] {
    const listeners = new Map<string, RawNumberPoint>();
    // A server's connections are owned by their listener's process: by local address and port, or port alone.
    const listenerComm = new Map<string, string>();
    const connections: { labels: string[]; sent: number; received: number; listener?: [string, string] }[] = [];
    const { record: R, roleClient } = this.layouts;
    const o = R.offset;
    for (let off = 0; off + R.size <= records.length; off += R.size) {
      const r = records.subarray(off, off + R.size);
      const cgroup = this.cgroupLabel(r.readBigUInt64LE(o.cgroup_id));
      const comm = decodeCString(r.subarray(o.comm, o.comm + R.sizeOf.comm));
      const localPort = r.readUInt16LE(o.local_port);
      const localAddr = formatAddress(r.subarray(o.local, o.local + 16));
      const local = `${localAddr}:${localPort}`;
      const client = r.readUInt8(o.role) === roleClient;
      if (r.readUInt8(o.state) === TCP_LISTEN) {
        const labels = [cgroup, comm, String(localPort)];
        const k = labels.join('\u0000');
        const point = listeners.get(k);
        if (point) point.value++;
        else listeners.set(k, { labels, value: 1 });
        listenerComm.set(local, comm);
        // By port alone: a wildcard listener's, else any.
        if (localAddr === '0.0.0.0' || localAddr === '::' || !listenerComm.has(`:${localPort}`)) listenerComm.set(`:${localPort}`, comm);
        continue;
      }
      const peer = `${formatAddress(r.subarray(o.peer, o.peer + 16))}:${r.readUInt16LE(o.peer_port)}`;
      // An active open's bytes_acked counts its SYN; data only, as everywhere else.
      const acked = Number(r.readBigUInt64LE(o.bytes_acked));
      const sent = client && acked > 0 ? acked - 1 : acked;
      const listener: [string, string] | undefined = !client && comm === '' ? [local, `:${localPort}`] : undefined;
      connections.push({ labels: [cgroup, comm, local, peer], sent, received: Number(r.readBigUInt64LE(o.bytes_received)), listener });
    }
    for (const c of connections) {
      if (c.listener) c.labels[1] = listenerComm.get(c.listener[0]) ?? listenerComm.get(c.listener[1]) ?? '';
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
    const obj = new ctx.native.BpfObject(ctx.objectPath('tcp'), {
      // Room for the reserved keys: the flows' ~overflow and ~none entries, a histogram ~overflow entry per role.
      maxEntries: { flows: config.max_flows + 2, hists: config.max_histograms + 2, sock_table: config.max_sockets },
      rodata: { ephemeral_lo: u32Value(lo), ephemeral_hi: u32Value(hi), per_connection: u32Value(config.per_connection.enabled ? 1 : 0) },
    });
    let layouts: TcpLayouts;
    try {
      layouts = tcpLayouts(obj.btf(), path.basename(ctx.objectPath('tcp')));
      obj.updateElem('flows', encode(layouts.flowKey, { cgroup_id: OVERFLOW_ID }), Buffer.alloc(layouts.flowVal.size));
      for (const role of [layouts.roleClient, layouts.roleServer]) {
        obj.updateElem('hists', encode(layouts.histKey, { cgroup_id: OVERFLOW_ID, role }), Buffer.alloc(layouts.histWords * 8));
      }
      obj.attach();
    } catch (err) {
      obj.close();
      throw err;
    }
    return new TcpCollector(obj, ctx, config, layouts);
  },
};
