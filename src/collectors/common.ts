/** Small helpers shared by collectors: keys, overflow counters, cgroup expiry. */
import { checkScalar, LayoutError, layoutOf, mapLayout, type Layout, type LayoutSite, type ObjectBtf } from '../bpf/layout.js';
import type { BpfObjectHandle, MapBatch, NativeError } from '../bpf/native.js';
import type { CgroupResolver } from '../cgroup/resolver.js';
import { HIST_SLOTS, HIST_WORDS } from '../model/histogram.js';

/**
 * The helper a verifier refused for the program's type, from a load error:
 * older kernels say "unknown func bpf_x#N", newer ones "program of this type
 * cannot use helper bpf_x#N".
 */
export function missingHelper(err: unknown): string | undefined {
  const log = (err as NativeError | undefined)?.verifierLog ?? '';
  return /(?:unknown func|cannot use helper) (\w+)#\d+/.exec(log)?.[1];
}

export function lacksHelper(err: unknown, helper: string): boolean {
  return (err as NativeError | undefined)?.code === 'EVERIFIER' && missingHelper(err) === helper;
}

/** A u32 as BPF globals (rodata) and keys hold it. */
export function u32Value(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}

export function u64Key(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

/** kt_drops (bpf/include/kt_maps.h) as readDropCounts reads it: u32 slot -> u64 count. */
export function checkDropsMap(btf: ObjectBtf, site: LayoutSite): void {
  checkScalar(btf, site, 'kt_drops', 'key', 4);
  checkScalar(btf, site, 'kt_drops', 'value', 8);
}

const HIST_MEMBERS = { slots: { elem: 8, length: HIST_SLOTS }, sum_ns: 8 } as const;

/** A struct kt_hist (bpf/include/kt_hist.h) is what decodeHistogram reads: the slots, then the sum. */
function checkHistLayout(h: Layout<keyof typeof HIST_MEMBERS>, where: string): void {
  if (h.offset.slots !== 0 || h.offset.sum_ns !== HIST_SLOTS * 8 || h.size !== HIST_WORDS * 8) {
    throw new LayoutError(`${where} (${h.type}): expected the slots, then sum_ns, in ${HIST_WORDS} u64 words`);
  }
}

/** A map whose value is a struct kt_hist, laid out as decodeHistogram reads it. */
export function checkHistValue(btf: ObjectBtf, site: LayoutSite, map: string): void {
  checkHistLayout(mapLayout(btf, site, map, 'value', HIST_MEMBERS), `collector ${site.collector}: map ${map} value in ${site.object}`);
}

/**
 * A map whose value is a struct of struct kt_hist members, and nothing else:
 * the u64 word at which each member starts (for decodeHistogram), and the
 * value's size in words.
 */
export function histMembers<M extends string>(btf: ObjectBtf, site: LayoutSite, map: string, names: readonly M[]): { word: Record<M, number>; words: number } {
  const v = mapLayout(btf, site, map, 'value', Object.fromEntries(names.map((n) => [n, HIST_WORDS * 8])) as Record<M, number>);
  const where = `collector ${site.collector}: map ${map} value in ${site.object}`;
  if (v.size !== names.length * HIST_WORDS * 8) throw new LayoutError(`${where} (${v.type}): expected ${names.length} histograms and nothing else`);
  const members = btf.maps[map]!.value!.members!;
  for (const n of names) {
    const member = `${where}, member ${n}`;
    checkHistLayout(layoutOf(member, members.find((m) => m.name === n)!.type, HIST_MEMBERS), member);
  }
  return { word: Object.fromEntries(names.map((n) => [n, v.offset[n] / 8])) as Record<M, number>, words: v.size / 8 };
}

/** Drops per slot of the object's kt_drops map (see bpf/include/kt_maps.h). */
export async function readDropCounts(obj: BpfObjectHandle): Promise<number[]> {
  const batch = await obj.readMap('kt_drops');
  const out: number[] = [];
  for (let i = 0; i < batch.count; i++) {
    out[batch.keys.readUInt32LE(i * batch.keySize)] = Number(batch.values[i]!);
  }
  return out;
}

/**
 * Frees the kernel entries of cgroups deleted more than the TTL ago, so a
 * map keyed by cgroup stays bounded by the live cgroups, not by history.
 * `cgroupIdOf(i)` extracts the cgroup id of entry i of the batch. The id is
 * not forgotten here: other maps and collectors keyed by it must see it
 * expired too (else it would come back as unknown_cgroup_id:<id> for another
 * TTL); the resolver drops it itself later.
 */
export async function expireCgroupEntries(
  obj: BpfObjectHandle,
  mapName: string,
  batch: MapBatch,
  cgroups: CgroupResolver,
  cgroupIdOf: (i: number) => bigint,
  keep: (id: bigint) => boolean = () => false,
): Promise<number> {
  const expired: Buffer[] = [];
  for (let i = 0; i < batch.count; i++) {
    const id = cgroupIdOf(i);
    if (keep(id) || !cgroups.expired(id)) continue;
    expired.push(batch.keys.subarray(i * batch.keySize, (i + 1) * batch.keySize));
  }
  if (expired.length === 0) return 0;
  return obj.deleteKeys(mapName, Buffer.concat(expired));
}
