/**
 * Poll decode cost of the tcp and cgroup_cpu collectors, without the kernel:
 * `node dist/bench/decode.js [--flows N] [--rounds N]`. Each collector's
 * collect() runs against map contents of the real objects' layouts (from
 * bpf/out/*.bpf.o's BTF, read without loading), served at once by a stand-in
 * BPF object, so what is timed is decoding, labelling and bookkeeping.
 * Prints the median CPU ms per poll (user + system: on a busy machine, wall
 * time mostly measures the neighbours), as JSON.
 */
import { mkdirSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { encode, mapLayout, globalLayout, toWords, type ObjectBtf } from '../src/bpf/layout.js';
import { loadNative, type BpfObjectHandle, type MapBatch, type NativeBinding } from '../src/bpf/native.js';
import { CgroupResolver } from '../src/cgroup/resolver.js';
import { cgroupCpu } from '../src/collectors/cgroup_cpu.js';
import { tcp } from '../src/collectors/tcp.js';
import type { CollectorContext, CollectorDefinition } from '../src/collectors/types.js';
import { HIST_WORDS } from '../src/model/histogram.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { values: ARGS } = parseArgs({ options: { flows: { type: 'string' }, rounds: { type: 'string' } } });
const FLOWS = Number(ARGS.flows ?? 10_000);
const ROUNDS = Number(ARGS.rounds ?? 50);
const CGROUPS = 100;
const SITE = { collector: 'bench', object: 'tcp.bpf.o' };

function batch(keys: Buffer[], values: bigint[][]): MapBatch {
  return { count: keys.length, keySize: keys[0]?.length ?? 0, keys: Buffer.concat(keys), valueWords: values[0]?.length ?? 0, values: BigUint64Array.from(values.flat()) };
}

class Served implements BpfObjectHandle {
  constructor(private readonly btfOf: ObjectBtf, private readonly contents: Record<string, MapBatch>, private readonly iter: Buffer) {}
  attach(): void {}
  programs() { return []; }
  maps() { return []; }
  async readMap(name: string): Promise<MapBatch> { return this.contents[name]!; }
  async runIter(): Promise<Buffer> { return this.iter; }
  async drainRing(): Promise<Buffer> { return Buffer.alloc(0); }
  updateElem(): boolean { return true; }
  async takeElems(): Promise<{ found: Uint8Array; values: BigUint64Array }> { return { found: new Uint8Array(), values: new BigUint64Array() }; }
  async deleteKeys(): Promise<number> { return 0; }
  btf(): ObjectBtf { return this.btfOf; }
  close(): void {}
}

function tcpContents(btf: ObjectBtf, ids: bigint[]) {
  const key = mapLayout(btf, SITE, 'flows', 'key', { cgroup_id: 8, peer: 16, server_port: 2, role: 1 });
  const val = mapLayout(btf, SITE, 'flows', 'value', { sent: 8, received: 8, active: 8, failed: { elem: 8 } });
  const hkey = mapLayout(btf, SITE, 'hists', 'key', { cgroup_id: 8, kind: 4 });
  const rec = globalLayout(btf, SITE, 'kt_layouts', 'socket_record', { cgroup_id: 8, local: 16, local_port: 2, state: 1, comm: 16 });
  const peer = (i: number) => Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, (i >> 16) & 255, (i >> 8) & 255, i & 255]);
  const flowKeys: Buffer[] = [];
  const flowVals: bigint[][] = [];
  for (let i = 0; i < FLOWS; i++) {
    flowKeys.push(encode(key, { cgroup_id: ids[i % ids.length]!, peer: peer(i), server_port: 443, role: 1 + (i % 2) }));
    flowVals.push(toWords(encode(val, { sent: 1000 + i, received: 2000 + i, active: 1, failed: [i % 3, 0, 1] })));
  }
  const histKeys: Buffer[] = [];
  const histVals: bigint[][] = [];
  ids.forEach((id) => {
    for (let kind = 0; kind < 5; kind++) {
      histKeys.push(encode(hkey, { cgroup_id: id, kind }));
      const words = new Array<bigint>(HIST_WORDS).fill(0n);
      words[10 + kind] = 5n;
      words[HIST_WORDS - 1] = 5_000_000n;
      histVals.push(words);
    }
  });
  const records = Buffer.concat(ids.map((id, i) => encode(rec, { cgroup_id: id, local_port: 8000 + i, state: 10, comm: Buffer.from('nginx\0') })));
  return { maps: { flows: batch(flowKeys, flowVals), hists: batch(histKeys, histVals) }, iter: records };
}

function cgroupCpuContents(ids: bigint[], ncpu: number) {
  const u64 = (v: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(v); return b; };
  const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };
  return {
    maps: {
      cpu_ns: batch(ids.map(u64), ids.map((_, i) => [BigInt(1e9 + i)])),
      running: batch(Array.from({ length: ncpu }, (_, c) => u32(c)), Array.from({ length: ncpu }, () => [0n, 0n])),
    },
    iter: Buffer.alloc(0),
  };
}

async function measure(def: CollectorDefinition, config: unknown, served: Served, resolver: CgroupResolver, native: NativeBinding): Promise<number> {
  const ctx = {
    native: { ...native, BpfObject: function () { return served; } } as unknown as NativeBinding,
    cgroups: resolver,
    log: undefined as never,
    objectPath: (name: string) => path.join(ROOT, 'bpf/out', `${name}.bpf.o`),
    pollIntervalMs: 1000,
  } satisfies CollectorContext;
  const instance = await def.start(ctx, def.configSchema.parse(config));
  const times: number[] = [];
  for (let r = 0; r < ROUNDS + 10; r++) {
    const t0 = process.cpuUsage();
    await instance.collect(r);
    const d = process.cpuUsage(t0);
    if (r >= 10) times.push((d.user + d.system) / 1000); // after warm-up (JIT, first sight of every flow)
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

const native = loadNative();
const root = mkdtempSync(path.join(tmpdir(), 'kt-bench-cg-'));
const ids: bigint[] = [];
for (let i = 0; i < CGROUPS; i++) {
  mkdirSync(path.join(root, `cg${i}`));
  ids.push(statSync(path.join(root, `cg${i}`), { bigint: true }).ino);
}
const resolver = new CgroupResolver({ root, ttlMs: 60_000 });
resolver.walk();

const tcpBtf = native.objectBtf(path.join(ROOT, 'bpf/out/tcp.bpf.o'));
const t = tcpContents(tcpBtf, ids);
const tcpMs = await measure(tcp, {}, new Served(tcpBtf, t.maps, t.iter), resolver, native);
const cpuBtf = native.objectBtf(path.join(ROOT, 'bpf/out/cgroup_cpu.bpf.o'));
const c = cgroupCpuContents(ids, native.numPossibleCpus());
const cpuMs = await measure(cgroupCpu, {}, new Served(cpuBtf, c.maps, c.iter), resolver, native);
process.stdout.write(`${JSON.stringify({ flows: FLOWS, cgroups: CGROUPS, rounds: ROUNDS, tcpMsPerPoll: +tcpMs.toFixed(3), cgroupCpuMsPerPoll: +cpuMs.toFixed(3) })}\n`);
