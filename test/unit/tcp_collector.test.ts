/**
 * The tcp collector's userspace half against fixture map contents laid out
 * as bpf/tcp.bpf.c lays them out: labels (v4-mapped peers, folded ports,
 * overflow and no-socket keys), failure reasons, histogram kinds, hostile
 * process names, per-connection top-N, flow TTL, dead cgroups, and its
 * configuration (rodata, map sizes, one-line errors), and its layouts: every
 * buffer here is laid out through src/bpf/layout.ts from the BTF of the real
 * bpf/out/tcp.bpf.o (read without loading it), and a fixture object with
 * the same structs in another member order decodes the same.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { tcp, formatAddress, tcpLayouts, type TcpLayouts } from '../../src/collectors/tcp.js';
import { encode, LayoutError, toWords, type ObjectBtf } from '../../src/bpf/layout.js';
import { loadNative } from '../../src/bpf/native.js';
import { ROOT } from '../helpers/env.js';
import { CgroupResolver } from '../../src/cgroup/resolver.js';
import { parseConfig, ConfigError } from '../../src/config.js';
import { HIST_WORDS } from '../../src/model/histogram.js';
import type { BpfObjectHandle, MapBatch, NativeBinding, OpenOptions } from '../../src/bpf/native.js';
import type { CollectorContext } from '../../src/collectors/types.js';
import type { RawFamily, RawHistogramPoint, RawNumberPoint } from '../../src/model/snapshot.js';

const OVERFLOW_ID = 0xffff_ffff_ffff_ffffn;
const objectBtf = (file: string) => loadNative().objectBtf(path.join(ROOT, 'bpf/out', file));
const REAL_BTF = objectBtf('tcp.bpf.o');

function v4(addr: string): Buffer {
  return Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...addr.split('.').map(Number)]);
}

function v6(groups: number[]): Buffer {
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(g, i * 2));
  return b;
}

interface FlowVal { sent?: number; received?: number; retrans?: number; active?: number; resetsSent?: number; resetsReceived?: number; synRetrans?: number; failed?: Partial<Record<Reason, number>> }
type Reason = 'refused' | 'timeout' | 'reset' | 'unreachable' | 'other';
const REASON_ENUM: Record<Reason, string> = { refused: 'FAIL_REFUSED', timeout: 'FAIL_TIMEOUT', reset: 'FAIL_RESET', unreachable: 'FAIL_UNREACHABLE', other: 'FAIL_OTHER' };
interface SocketRecord { cgroupId: bigint; acked?: number; received?: number; local: Buffer; peer?: Buffer; localPort: number; peerPort?: number; state: number; role?: 'client' | 'server'; comm: Buffer }

function batch(keySize: number, valueWords: number, entries: [Buffer, bigint[]][]): MapBatch {
  return {
    count: entries.length,
    keySize,
    keys: Buffer.concat(entries.map(([k]) => k)),
    valueWords,
    values: BigUint64Array.from(entries.flatMap(([, v]) => v)),
  };
}

/** Map contents and iterator records as an object with these layouts (and its enum values) holds them. */
function fixturesFor(btf: ObjectBtf) {
  const L: TcpLayouts = tcpLayouts(btf);
  const roleValue = (role: 'client' | 'server' | 'unknown') => btf.enums.role![`ROLE_${role.toUpperCase()}`]!;
  return {
    L,
    roleValue,
    flowKey: (cgroupId: bigint, peer: Buffer, port: number, role: 'client' | 'server' | 'unknown') =>
      encode(L.flowKey, { cgroup_id: cgroupId, peer, server_port: port, role: roleValue(role) }),
    /** struct flow_val, as summed over CPUs (active in two's complement). */
    flowWords: (v: FlowVal): bigint[] => {
      const failed = new Array<number>(L.flowVal.length.failed).fill(0);
      for (const [reason, n] of Object.entries(v.failed ?? {})) failed[btf.enums.failure![REASON_ENUM[reason as Reason]]!] = n;
      return toWords(encode(L.flowVal, {
        sent: v.sent ?? 0, received: v.received ?? 0, retrans: v.retrans ?? 0, active: BigInt(v.active ?? 0), resets_sent: v.resetsSent ?? 0,
        resets_received: v.resetsReceived ?? 0, syn_retrans: v.synRetrans ?? 0, failed,
      }));
    },
    flows: (entries: [Buffer, bigint[]][]) => batch(L.flowKey.size, L.flowWords, entries),
    hists: (entries: [Buffer, bigint[]][]) => batch(L.histKey.size, L.histWords, entries),
    /**
     * struct hist_key + struct conn_hists; each named histogram with `count`
     * observations of `ns` in slot `slot`.
     */
    histEntry: (cgroupId: bigint, role: 'client' | 'server' | 'unknown', hists: Partial<Record<'rtt' | 'open' | 'lifetime', [slot: number, count: number, ns: number]>>): [Buffer, bigint[]] => {
      const words = new Array<bigint>(L.histWords).fill(0n);
      for (const [member, [slot, count, ns]] of Object.entries(hists) as [keyof typeof L.histWord, [number, number, number]][]) {
        words[L.histWord[member] + slot] = BigInt(count);
        words[L.histWord[member] + HIST_WORDS - 1] = BigInt(count * ns);
      }
      return [encode(L.histKey, { cgroup_id: cgroupId, role: roleValue(role) }), words];
    },
    /** struct socket_record, as the iter/tcp program writes it. */
    socketRecord: (r: SocketRecord) => encode(L.record, {
      cgroup_id: r.cgroupId, bytes_acked: r.acked ?? 0, bytes_received: r.received ?? 0, local: r.local, peer: r.peer ?? Buffer.alloc(16),
      local_port: r.localPort, peer_port: r.peerPort ?? 0, state: r.state, role: roleValue(r.role ?? 'unknown'), comm: r.comm,
    }),
  };
}

const { L, flowKey, flowWords, flows, hists, histEntry, socketRecord } = fixturesFor(REAL_BTF);

/** kt_sock_count as readMap serves it: one entry, the CPUs' counts summed modulo 2^64. */
function sockCount(sum: bigint): MapBatch {
  return { count: 1, keySize: 4, keys: Buffer.alloc(4), valueWords: 1, values: BigUint64Array.of(BigInt.asUintN(64, sum)) };
}

/** A BPF object that serves fixtures and records what the collector did. */
class FakeObject implements BpfObjectHandle {
  static last: FakeObject;
  readonly calls: string[] = [];
  readonly inserted = new Map<string, Buffer[]>();
  readonly deleted = new Map<string, Buffer[]>();
  /** What readMap returns, by map name. */
  contents: Record<string, MapBatch> = { flows: flows([]), hists: hists([]), kt_sock_count: sockCount(0n) };
  /** The BTF the object describes itself with. */
  static btfOf: ObjectBtf = REAL_BTF;
  /** What the tcp_sockets iterator writes. */
  sockets = Buffer.alloc(0);

  constructor(readonly objectPath: string, readonly options: OpenOptions = {}) {
    FakeObject.last = this;
  }
  attach(): void { this.calls.push('attach'); }
  programs() { return []; }
  maps() { return []; }
  async readMap(name: string): Promise<MapBatch> {
    this.calls.push(`readMap ${name}`);
    return this.contents[name]!;
  }
  async runIter(name: string): Promise<Buffer> {
    this.calls.push(`runIter ${name}`);
    return name === 'tcp_sockets' ? this.sockets : Buffer.alloc(0);
  }
  async drainRing(): Promise<Buffer> {
    return Buffer.alloc(0);
  }
  /** What takeElems finds, by key hex (default: the values readMap served). */
  takeOverride = new Map<string, bigint[]>();
  /** Keys for which updateElem(…, onlyIfAbsent) finds the key re-created. */
  recreated = new Set<string>();
  readonly written = new Map<string, Buffer>();
  updateElem(map: string, key: Buffer, value: Buffer, onlyIfAbsent?: boolean): boolean {
    this.calls.push(`updateElem ${map}`);
    if (onlyIfAbsent && this.recreated.has(key.toString('hex'))) return false;
    this.inserted.set(map, [...(this.inserted.get(map) ?? []), key]);
    this.written.set(key.toString('hex'), Buffer.from(value));
    return true;
  }
  async takeElems(map: string, keys: Buffer): Promise<{ found: Uint8Array; values: BigUint64Array }> {
    const b = this.contents[map]!;
    const words: bigint[] = [];
    const found: number[] = [];
    for (let off = 0; off < keys.length; off += b.keySize) {
      const key = keys.subarray(off, off + b.keySize);
      const i = [...Array(b.count).keys()].find((j) => b.keys.subarray(j * b.keySize, (j + 1) * b.keySize).equals(key));
      const v = this.takeOverride.get(key.toString('hex')) ?? (i === undefined ? undefined : [...b.values.subarray(i * b.valueWords, (i + 1) * b.valueWords)]);
      found.push(v ? 1 : 0);
      words.push(...(v ?? new Array<bigint>(b.valueWords).fill(0n)));
    }
    await this.deleteKeys(map, keys);
    return { found: Uint8Array.from(found), values: BigUint64Array.from(words) };
  }
  async deleteKeys(map: string, keys: Buffer): Promise<number> {
    const size = this.contents[map]!.keySize;
    const list: Buffer[] = [];
    for (let off = 0; off < keys.length; off += size) list.push(Buffer.from(keys.subarray(off, off + size)));
    this.deleted.set(map, [...(this.deleted.get(map) ?? []), ...list]);
    return list.length;
  }
  btf(): ObjectBtf { return FakeObject.btfOf; }
  close(): void {}
}

/** A real resolver over a directory tree standing in for the cgroup2 mount (ids are inode numbers). */
function cgroupTree(names: string[]) {
  const root = mkdtempSync(path.join(tmpdir(), 'kt-tcp-cg-'));
  const ids: Record<string, bigint> = {};
  for (const n of names) {
    mkdirSync(path.join(root, n));
    ids[n] = statSync(path.join(root, n), { bigint: true }).ino;
  }
  let now = 1_000_000;
  const resolver = new CgroupResolver({ root, ttlMs: 60_000, minRewalkMs: 0, now: () => now });
  resolver.walk();
  return { root, ids, resolver, advance: (ms: number) => (now += ms), now: () => now };
}

async function start(configYaml: Record<string, unknown>, resolver: CgroupResolver) {
  const ctx = {
    native: { BpfObject: FakeObject } as unknown as NativeBinding,
    cgroups: resolver,
    log: undefined as never,
    objectPath: (name: string) => `/fake/${name}.bpf.o`,
    pollIntervalMs: 1000,
  } satisfies CollectorContext;
  const instance = await tcp.start(ctx, tcp.configSchema.parse(configYaml));
  return { instance, obj: FakeObject.last };
}

function family(families: RawFamily[], name: string): RawFamily {
  const f = families.find((x) => x.def.name === name);
  assert.ok(f, `family ${name}`);
  return f;
}

function points(families: RawFamily[], name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const p of family(families, name).points as RawNumberPoint[]) out.set(p.labels.join('|'), p.value);
  return out;
}

test('formatAddress: v4-mapped IPv6 as IPv4, IPv6 in RFC 5952 form', () => {
  assert.equal(formatAddress(v4('10.1.2.3')), '10.1.2.3');
  assert.equal(formatAddress(v6([0, 0, 0, 0, 0, 0, 0, 1])), '::1');
  assert.equal(formatAddress(v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x42])), '2001:db8::42');
  assert.equal(formatAddress(v6([0xfe80, 0, 0, 0, 0x1, 0, 0, 0])), 'fe80::1:0:0:0');
  assert.equal(formatAddress(Buffer.alloc(16)), '::', 'no peer (resets for no socket)');
});

test('start: config reaches the kernel as rodata and map sizes; overflow keys exist before attach', async () => {
  const { resolver } = cgroupTree([]);
  const { obj } = await start({ ephemeral_ports: '1024-65535', max_flows: 100, max_histograms: 50, per_connection: { enabled: true } }, resolver);
  assert.equal(obj.objectPath, '/fake/tcp.bpf.o');
  assert.equal(obj.options.rodata!.ephemeral_lo!.readUInt32LE(), 1024);
  assert.equal(obj.options.rodata!.ephemeral_hi!.readUInt32LE(), 65535);
  assert.equal(obj.options.rodata!.per_connection!.readUInt32LE(), 1);
  assert.deepEqual(Object.keys(obj.options.rodata!).sort(), ['ephemeral_hi', 'ephemeral_lo', 'per_connection']);
  assert.deepEqual(obj.options.maxEntries, { flows: 102, hists: 52, sock_table: 131_072 }, 'room for the reserved keys; the socket table at its default');
  assert.deepEqual(obj.calls, ['updateElem flows', 'updateElem hists', 'updateElem hists', 'attach']);
  assert.equal(obj.inserted.get('flows')![0]!.readBigUInt64LE(L.flowKey.offset.cgroup_id), OVERFLOW_ID);
  const histKeys = obj.inserted.get('hists')!;
  assert.deepEqual(histKeys.map((k) => k.readBigUInt64LE(L.histKey.offset.cgroup_id)), [OVERFLOW_ID, OVERFLOW_ID], 'an overflow entry per role');
  assert.deepEqual(histKeys.map((k) => k.readUInt8(L.histKey.offset.role)).sort(), [L.roleClient, L.roleServer].sort());
});

test('collect: iter/tcp runs before the maps are read, so quiet connections are current', async () => {
  const { resolver } = cgroupTree([]);
  const { instance, obj } = await start({}, resolver);
  obj.calls.length = 0;
  await instance.collect(0);
  assert.deepEqual(obj.calls[0], 'runIter tcp_sockets');
  assert.deepEqual(obj.calls.slice(1).sort(), ['readMap flows', 'readMap hists', 'readMap kt_sock_count']);
});

test('countedEntries: sock_table\'s entries are the CPUs\' inserts less deletes, read as a signed sum', async () => {
  const { resolver } = cgroupTree([]);
  const { instance, obj } = await start({}, resolver);
  assert.deepEqual([...instance.countedEntries!()], [], 'nothing before the first poll');
  // CPU 0 inserted 12, CPU 1 deleted 5 of them: 12 + (2^64 - 5) wraps to 7.
  obj.contents.kt_sock_count = sockCount(12n + BigInt.asUintN(64, -5n));
  await instance.collect(0);
  assert.deepEqual([...instance.countedEntries!()], [['sock_table', 7]]);
});

test('collect: flows become cgroup × role × peer × port series; failures by reason; resets per cgroup and direction', async () => {
  const { ids, resolver } = cgroupTree(['web', 'db']);
  const { instance, obj } = await start({}, resolver);
  obj.contents.flows = flows([
    [flowKey(ids.web!, v4('10.0.0.7'), 5432, 'client'), flowWords({ sent: 1000, received: 2000, retrans: 3, active: 2, resetsReceived: 1, failed: { refused: 4, timeout: 1, unreachable: 2 } })],
    [flowKey(ids.web!, v4('10.0.0.9'), 0, 'server'), flowWords({ sent: 7, received: 8, active: -1, resetsSent: 2 })],
    [flowKey(ids.db!, v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]), 443, 'client'), flowWords({ sent: 5, resetsSent: 1 })],
    [flowKey(0n, Buffer.alloc(16), 0, 'unknown'), flowWords({ resetsSent: 6 })],
    [flowKey(OVERFLOW_ID, Buffer.alloc(16), 0, 'unknown'), flowWords({ sent: 11, received: 12 })],
  ]);
  const f = await instance.collect(0);

  const sent = points(f, 'kerntap.tcp.sent');
  assert.equal(sent.get('/web|client|10.0.0.7|5432'), 1000);
  assert.equal(sent.get('/web|server|10.0.0.9|ephemeral'), 7, 'port 0 in the key: folded ephemeral port');
  assert.equal(sent.get('/db|client|2001:db8::1|443'), 5);
  assert.equal(sent.get('~overflow|~overflow|~overflow|~overflow'), 11, 'a full map keeps its totals in ~overflow');
  assert.equal(sent.size, 4, 'no traffic series for resets without a socket');
  assert.equal(points(f, 'kerntap.tcp.received').get('/web|client|10.0.0.7|5432'), 2000);
  assert.equal(points(f, 'kerntap.tcp.retransmits').get('/web|client|10.0.0.7|5432'), 3);

  const active = points(f, 'kerntap.tcp.connections.active');
  assert.equal(active.get('/web|client|10.0.0.7|5432'), 2);
  assert.equal(active.get('/web|server|10.0.0.9|ephemeral'), -1, 'a lost open shows instead of being hidden (shared values: +1 always lands before its -1)');

  assert.deepEqual([...points(f, 'kerntap.tcp.connects.failed')].sort(), [
    ['/web|10.0.0.7|5432|refused', 4],
    ['/web|10.0.0.7|5432|timeout', 1],
    ['/web|10.0.0.7|5432|unreachable', 2],
  ]);
  assert.deepEqual([...points(f, 'kerntap.tcp.resets')].sort(), [
    ['/db|sent', 1],
    ['/web|received', 1],
    ['/web|sent', 2],
    ['~none|sent', 6],
  ]);
});

test('collect: a cgroup\'s client and server histograms become the four families; RTT adds both roles, lifetime carries the role', async () => {
  const { ids, resolver } = cgroupTree(['web']);
  const { instance, obj } = await start({}, resolver);
  obj.contents.hists = hists([
    histEntry(ids.web!, 'client', { rtt: [10, 5, 500_000], open: [12, 2, 2_000_000], lifetime: [30, 1, 3e9] }),
    histEntry(ids.web!, 'server', { rtt: [10, 1, 300_000], open: [11, 3, 900_000], lifetime: [31, 4, 5e9] }),
    histEntry(OVERFLOW_ID, 'client', {}), // an empty overflow entry: no series
  ]);
  const f = await instance.collect(0);
  const hist = (name: string) => (family(f, name).points as RawHistogramPoint[]).map((p) => [p.labels.join('|'), p.hist.count, p.hist.sum]);
  assert.deepEqual(hist('kerntap.tcp.rtt'), [['/web', 6, 0.0028]]);
  const rtt = family(f, 'kerntap.tcp.rtt').points[0] as RawHistogramPoint;
  assert.equal(rtt.hist.slots[10], 6, 'the roles\' slots add up');
  assert.deepEqual(hist('kerntap.tcp.connect.duration'), [['/web', 2, 0.004]]);
  assert.deepEqual(hist('kerntap.tcp.handshake.duration'), [['/web', 3, 0.0027]]);
  assert.deepEqual(hist('kerntap.tcp.connection.duration'), [['/web|client', 1, 3], ['/web|server', 4, 20]]);
});

test('collect: listeners by cgroup, comm and port, with hostile process names decoded safely', async () => {
  const { ids, resolver } = cgroupTree(['web']);
  const { instance, obj } = await start({}, resolver);
  const listen = (comm: Buffer, port: number) => socketRecord({ cgroupId: ids.web!, local: v4('0.0.0.0'), localPort: port, state: 10, comm });
  obj.sockets = Buffer.concat([
    listen(Buffer.from('nginx\0'), 80),
    listen(Buffer.from('nginx\0'), 80), // SO_REUSEPORT: two sockets, one series
    listen(Buffer.from('q"uo\\te\0'), 81),
    listen(Buffer.from('new\nline\0'), 82),
    listen(Buffer.from([0x62, 0x61, 0x64, 0xff, 0xfe, 0]), 83),
    listen(Buffer.from('exactly16bytes!!'), 84), // no NUL in comm[16]
  ]);
  const f = await instance.collect(0);
  assert.deepEqual([...points(f, 'kerntap.tcp.listeners')].sort(), [
    ['/web|bad\uFFFD\uFFFD|83', 1],
    ['/web|exactly16bytes!!|84', 1],
    ['/web|new\nline|82', 1],
    ['/web|nginx|80', 2],
    ['/web|q"uo\\te|81', 1],
  ]);
  assert.ok(!f.some((x) => x.def.name === 'kerntap.tcp.connection.sent'), 'per-connection mode is off by default');
});

test('per-connection mode: top-N live connections by bytes, the rest summed in one overflow series', async () => {
  const { ids, resolver } = cgroupTree(['web']);
  const { instance, obj } = await start({ per_connection: { enabled: true, top_n: 2 } }, resolver);
  const conn = (port: number, acked: number, received: number, role: 'client' | 'server') => socketRecord({
    cgroupId: ids.web!, acked, received, local: v4('10.0.0.1'), localPort: port, peer: v4('10.0.0.2'), peerPort: 443, state: 1, role, comm: Buffer.from('curl\0'),
  });
  obj.sockets = Buffer.concat([
    conn(40001, 101, 1, 'client'), // an active open's bytes_acked counts the SYN
    conn(40002, 5001, 5000, 'client'),
    conn(40003, 30, 40, 'server'),
    conn(40004, 1000, 0, 'server'),
  ]);
  const f = await instance.collect(0);
  assert.deepEqual([...points(f, 'kerntap.tcp.connection.sent')], [
    ['/web|curl|10.0.0.1:40002|10.0.0.2:443', 5000],
    ['/web|curl|10.0.0.1:40004|10.0.0.2:443', 1000],
    ['~overflow|~overflow|~overflow|~overflow', 100 + 30],
  ]);
  assert.deepEqual([...points(f, 'kerntap.tcp.connection.received')], [
    ['/web|curl|10.0.0.1:40002|10.0.0.2:443', 5000],
    ['/web|curl|10.0.0.1:40004|10.0.0.2:443', 0],
    ['~overflow|~overflow|~overflow|~overflow', 1 + 40],
  ]);
});

test('per-connection mode: a server\'s connections show their listener\'s process, by local address and port, else by port', async () => {
  const { ids, resolver } = cgroupTree(['web']);
  const { instance, obj } = await start({ per_connection: { enabled: true } }, resolver);
  const listener = (addr: Buffer, port: number, comm: string) => socketRecord({ cgroupId: ids.web!, local: addr, localPort: port, state: 10, comm: Buffer.from(`${comm}\0`) });
  const conn = (local: Buffer, port: number, peerPort: number, role: 'client' | 'server', comm = '') => socketRecord({
    cgroupId: ids.web!, acked: peerPort, local, localPort: port, peer: v4('10.0.0.2'), peerPort, state: 1, role, comm: Buffer.from(`${comm}\0`),
  });
  obj.sockets = Buffer.concat([
    conn(v4('10.0.0.1'), 443, 50001, 'server'), // before its listener in the walk
    listener(v4('0.0.0.0'), 443, 'envoy'),
    listener(v4('0.0.0.0'), 8080, 'app'),
    listener(v4('127.0.0.1'), 8080, 'admin'),
    conn(v4('127.0.0.1'), 8080, 50002, 'server'),
    conn(v4('10.0.0.1'), 8080, 50003, 'server'),
    conn(v4('10.0.0.1'), 9999, 50004, 'server'), // no listener: no process
    conn(v4('10.0.0.1'), 40000, 443, 'client', 'curl'), // a client keeps its own
  ]);
  const f = await instance.collect(0);
  assert.deepEqual([...points(f, 'kerntap.tcp.connection.sent').keys()].sort(), [
    '/web|admin|127.0.0.1:8080|10.0.0.2:50002',
    '/web|app|10.0.0.1:8080|10.0.0.2:50003',
    '/web|curl|10.0.0.1:40000|10.0.0.2:443',
    '/web|envoy|10.0.0.1:443|10.0.0.2:50001',
    '/web||10.0.0.1:9999|10.0.0.2:50004',
  ]);
});

test('flow TTL: closed flows idle past the TTL are freed in the kernel; flows with open connections stay', async () => {
  const { ids, resolver } = cgroupTree(['web']);
  const { instance, obj } = await start({ flow_ttl: '30s' }, resolver);
  const closed = flowKey(ids.web!, v4('10.0.0.7'), 80, 'client');
  const open = flowKey(ids.web!, v4('10.0.0.8'), 80, 'client');
  obj.contents.flows = flows([[closed, flowWords({ sent: 10 })], [open, flowWords({ sent: 20, active: 1 })]]);
  const sentAt = async (ms: number) => [...points(await instance.collect(ms), 'kerntap.tcp.sent').keys()];
  assert.equal((await sentAt(0)).length, 2);
  assert.equal((await sentAt(29_000)).length, 2, 'within the TTL');
  assert.equal(obj.deleted.get('flows'), undefined);
  assert.deepEqual(await sentAt(31_000), ['/web|client|10.0.0.8|80'], 'the idle closed flow ends');
  assert.deepEqual(obj.deleted.get('flows'), [closed], 'and its kernel entry is freed');
});

/** A closed flow polled once, then past its TTL while a connection opened and sent 5 bytes between the poll's read and the take. */
async function racedExpiry(recreated: boolean) {
  const { ids, resolver } = cgroupTree(['web']);
  const { instance, obj } = await start({ flow_ttl: '30s' }, resolver);
  const key = flowKey(ids.web!, v4('10.0.0.7'), 80, 'client');
  obj.contents.flows = flows([[key, flowWords({ sent: 10 })]]);
  await instance.collect(0);
  obj.takeOverride.set(key.toString('hex'), flowWords({ sent: 15, active: 1 }));
  if (recreated) obj.recreated.add(key.toString('hex'));
  await instance.collect(31_000);
  return { instance, obj, key };
}

test('flow TTL: an event that races the expiry is not lost (the flow goes back in)', async () => {
  const { obj, key } = await racedExpiry(false);
  const back = obj.written.get(key.toString('hex'));
  assert.ok(back, 'the flow is written back');
  assert.equal(back.readBigUInt64LE(L.flowVal.offset.sent), 15n, 'with the raced bytes');
  assert.equal(back.readBigUInt64LE(L.flowVal.offset.active), 1n, 'and the raced +1 active');
});

test('flow TTL: when the kernel re-created the raced key, the taken values are carried in userspace', async () => {
  const { instance, obj, key } = await racedExpiry(true);
  // The kernel's new entry has what came after the take: 7 bytes, the connection closed.
  obj.contents.flows = flows([[key, flowWords({ sent: 7, active: -1 })]]);
  const f = await instance.collect(32_000);
  assert.deepEqual([...points(f, 'kerntap.tcp.sent')], [['/web|client|10.0.0.7|80', 22]]);
  assert.deepEqual([...points(f, 'kerntap.tcp.connections.active')], [['/web|client|10.0.0.7|80', 0]]);
});

test('dead cgroups: their entries are no longer reported and are freed after cgroup.ttl', async () => {
  const tree = cgroupTree(['live', 'dead']);
  const { instance, obj } = await start({}, tree.resolver);
  const deadFlow = flowKey(tree.ids.dead!, v4('10.0.0.7'), 80, 'client');
  obj.contents.flows = flows([
    [flowKey(tree.ids.live!, v4('10.0.0.7'), 80, 'client'), flowWords({ sent: 1 })],
    [deadFlow, flowWords({ sent: 2 })],
  ]);
  const deadHist = histEntry(tree.ids.dead!, 'client', { rtt: [10, 1, 1000] });
  obj.contents.hists = hists([deadHist]);
  rmdirSync(path.join(tree.root, 'dead'));
  tree.resolver.walk();
  let f = await instance.collect(tree.now());
  assert.equal(points(f, 'kerntap.tcp.sent').get('/dead|client|10.0.0.7|80'), 2, 'still served within the TTL');

  tree.advance(61_000);
  f = await instance.collect(tree.now());
  assert.deepEqual([...points(f, 'kerntap.tcp.sent').keys()], ['/live|client|10.0.0.7|80']);
  assert.equal(family(f, 'kerntap.tcp.rtt').points.length, 0);
  assert.deepEqual(obj.deleted.get('flows'), [deadFlow]);
  assert.deepEqual(obj.deleted.get('hists'), [deadHist[0]]);
});

/** One poll over every kind of entry, through the layouts of `btf`: what the collector reports, without identities (cgroup ids differ per run). */
async function pollThrough(btf: ObjectBtf) {
  const fx = fixturesFor(btf);
  FakeObject.btfOf = btf;
  try {
    const { ids, resolver } = cgroupTree(['web']);
    const { instance, obj } = await start({ per_connection: { enabled: true } }, resolver);
    obj.contents.flows = fx.flows([
      [fx.flowKey(ids.web!, v4('10.0.0.7'), 5432, 'client'), fx.flowWords({
        sent: 1000, received: 2000, retrans: 3, active: 2, resetsSent: 1, resetsReceived: 4, synRetrans: 5,
        failed: { refused: 4, timeout: 1, reset: 6, unreachable: 2, other: 7 },
      })],
      [fx.flowKey(ids.web!, v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]), 0, 'server'), fx.flowWords({ sent: 7, active: -1 })],
    ]);
    obj.contents.hists = fx.hists([
      fx.histEntry(ids.web!, 'client', { rtt: [10, 1, 1000], open: [11, 2, 2000], lifetime: [12, 3, 3000] }),
      fx.histEntry(ids.web!, 'server', { rtt: [13, 4, 4000], open: [14, 5, 5000], lifetime: [15, 6, 6000] }),
    ]);
    obj.sockets = Buffer.concat([
      fx.socketRecord({ cgroupId: ids.web!, local: v4('0.0.0.0'), localPort: 80, state: 10, comm: Buffer.from('nginx\0') }),
      fx.socketRecord({ cgroupId: ids.web!, acked: 101, received: 50, local: v4('10.0.0.1'), localPort: 40001, peer: v4('10.0.0.2'), peerPort: 443, state: 1, role: 'client', comm: Buffer.from('curl\0') }),
    ]);
    const families = (await instance.collect(0)).map((f) => ({
      name: f.def.name,
      points: (f.points as (RawNumberPoint | RawHistogramPoint)[]).map((p) => ({ labels: p.labels, value: 'hist' in p ? [p.hist.count, p.hist.sum] : p.value })),
    }));
    return { families, dropSlots: instance.dropSlots, layouts: fx.L };
  } finally {
    FakeObject.btfOf = REAL_BTF;
  }
}

test('layouts: the same structs and enums in another order decode the same (offsets and values from BTF)', async () => {
  const real = await pollThrough(REAL_BTF);
  const reordered = await pollThrough(objectBtf('test/layout_reordered.bpf.o'));
  assert.notEqual(reordered.layouts.flowKey.offset.cgroup_id, real.layouts.flowKey.offset.cgroup_id, 'the fixture really is reordered');
  assert.notEqual(reordered.layouts.record.offset.comm, real.layouts.record.offset.comm);
  assert.deepEqual(reordered.families, real.families);
  const sent = real.families.find((f) => f.name === 'kerntap.tcp.sent')!.points;
  assert.deepEqual(sent, [{ labels: ['/web', 'client', '10.0.0.7', '5432'], value: 1000 }, { labels: ['/web', 'server', '2001:db8::1', 'ephemeral'], value: 7 }]);
  assert.equal(real.families.find((f) => f.name === 'kerntap.tcp.connects.failed')!.points.length, 5, 'every reason');
  assert.deepEqual(real.families.find((f) => f.name === 'kerntap.tcp.connection.sent')!.points[0]!.value, 100, 'the client role from the record');
  assert.deepEqual(reordered.dropSlots, [{ slot: 1, map: 'flows' }, { slot: 2, map: 'hists' }, { slot: 0, map: 'sock_table' }], 'drop slots from enum drop_slot');
});

test('layouts: a member the collector reads that the object lacks fails the start with one line naming it', async () => {
  const { resolver } = cgroupTree([]);
  FakeObject.btfOf = objectBtf('test/layout_missing.bpf.o');
  try {
    await assert.rejects(start({}, resolver), (err: unknown) => {
      assert.ok(err instanceof LayoutError);
      assert.equal(err.message, 'collector tcp: map flows key in tcp.bpf.o (struct flow_key): no member role');
      return true;
    });
    assert.ok(!FakeObject.last.calls.includes('attach'), 'nothing attached');
  } finally {
    FakeObject.btfOf = REAL_BTF;
  }
});

test('layouts: a member of another size, and enumerators missing or unknown, are errors too', () => {
  const changed = (edit: (btf: ObjectBtf) => void) => {
    const btf = structuredClone(REAL_BTF);
    edit(btf);
    return () => tcpLayouts(btf);
  };
  assert.throws(changed((b) => { b.maps.flows!.key!.members!.find((m) => m.name === 'server_port')!.type.size = 4; }),
    { message: 'collector tcp: map flows key in tcp.bpf.o (struct flow_key): member server_port is 4 bytes, expected 2' });
  assert.throws(changed((b) => { b.maps.flows!.value!.members!.find((m) => m.name === 'failed')!.type.length = 4; }),
    { message: 'collector tcp: map flows value in tcp.bpf.o (struct flow_val): member failed has 4 elements, expected 5' });
  assert.throws(changed((b) => { delete b.enums.failure!.FAIL_RESET; }), { message: 'collector tcp: enum failure in tcp.bpf.o: no enumerator FAIL_RESET' });
  assert.throws(changed((b) => { b.enums.role!.ROLE_NEW = 5; }), { message: 'collector tcp: enum role in tcp.bpf.o: enumerator ROLE_NEW unknown to the collector' });
  assert.throws(changed((b) => { b.maps.hists!.value!.members!.find((m) => m.name === 'open')!.type.members!.find((m) => m.name === 'sum_ns')!.offset = 0; }),
    { message: 'collector tcp: map hists value in tcp.bpf.o, member open (struct kt_hist): expected the slots, then sum_ns, in 49 u64 words' });
  assert.throws(changed((b) => { delete b.globals.kt_layouts; }), { message: 'collector tcp: kt_layouts.socket_record in tcp.bpf.o: no such global variable' });
});

test('config errors name collectors.tcp.<key>, in one line', () => {
  const cases: [string, RegExp][] = [
    ['ephemeral_ports: 60999-32768', /key collectors\.tcp\.ephemeral_ports: must be a range of ports/],
    ['ephemeral_ports: 32768-70000', /key collectors\.tcp\.ephemeral_ports: must be a range of ports/],
    ['ephemeral_ports: "32768"', /key collectors\.tcp\.ephemeral_ports: must look like "32768-60999"/],
    ['max_flows: 8', /key collectors\.tcp\.max_flows/],
    ['flow_ttl: soon', /key collectors\.tcp\.flow_ttl: .*invalid duration/],
    ['per_connection:\n      top_n: 0', /key collectors\.tcp\.per_connection\.top_n/],
    ['per_conection: {}', /unknown key collectors\.tcp\.per_conection/],
  ];
  for (const [yaml, re] of cases) {
    assert.throws(() => parseConfig(`collectors:\n  tcp:\n    ${yaml}\n`, 'config file k.yml'), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /^config file k\.yml: /);
      assert.match(err.message, re);
      assert.ok(!err.message.includes('\n'));
      return true;
    });
  }
  const c = parseConfig('collectors:\n  tcp:\n    ephemeral_ports: "49152-65535"\n').collectors as Record<string, { ephemeral_ports: number[] }>;
  assert.deepEqual(c.tcp!.ephemeral_ports, [49152, 65535]);
});
