/**
 * Kernel memory of a BPF map, for kerntap_bpf_map_memory_bytes.
 *
 * From Linux 6.4 the kernel counts what each map uses (map_mem_usage) and
 * reports it as fdinfo's "memlock". Before 6.4 that figure is an estimate
 * from the map's capacity, as if every entry were in use. A hash map
 * allocated as used (BPF_F_NO_PREALLOC) follows its entries, so where
 * kerntap knows them the same sum the kernel makes from 6.4 on
 * (htab_map_mem_usage) is made here from them instead.
 */
import type { MapInfo } from './native.js';

export const BPF_MAP_TYPE_HASH = 1;
export const BPF_MAP_TYPE_PERCPU_HASH = 5;
export const BPF_F_NO_PREALLOC = 1;

/** sizeof(struct bpf_htab) on x86-64 (6.4+; its size varies a little by kernel). */
const HTAB_STRUCT = 832;
/** sizeof(struct bucket): a list head and a raw spinlock. */
const BUCKET = 16;
/** sizeof(struct htab_elem) before its key. */
const HTAB_ELEM = 48;
/** The allocator's list node before every element (bpf_mem_alloc). */
const LLIST_NODE = 8;
/** Per-CPU lock-nesting counters: HASHTAB_MAP_LOCK_COUNT ints per possible CPU. */
const MAP_LOCKED_PER_CPU = 8 * 4;

const round8 = (n: number) => Math.ceil(n / 8) * 8;
const pow2AtLeast = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/** What htab_map_mem_usage() returns for a hash map allocated as used, holding `entries`. */
export function hashMapUsage(m: Pick<MapInfo, 'type' | 'keySize' | 'valueSize' | 'maxEntries'>, entries: number, possibleCpus: number): number {
  const percpu = m.type === BPF_MAP_TYPE_PERCPU_HASH;
  // A per-CPU element holds a pointer to its per-CPU values instead of a value.
  const elem = HTAB_ELEM + round8(m.keySize) + (percpu ? 8 : round8(m.valueSize));
  let usage = HTAB_STRUCT + BUCKET * pow2AtLeast(m.maxEntries) + MAP_LOCKED_PER_CPU * possibleCpus + (elem + LLIST_NODE) * entries;
  if (percpu) usage += (LLIST_NODE + 8 + round8(m.valueSize) * possibleCpus) * entries;
  return usage;
}

export interface MapMemoryEnv {
  /** The kernel reports usage in fdinfo (6.4+), not a capacity estimate. */
  reportsUsage: boolean;
  possibleCpus: number;
}

/** The map's memory: the kernel's figure where it is usage, else computed from known entries where the map follows them. */
export function mapMemoryBytes(m: MapInfo, entries: number | undefined, env: MapMemoryEnv): number {
  const followsEntries = (m.type === BPF_MAP_TYPE_HASH || m.type === BPF_MAP_TYPE_PERCPU_HASH) && (m.flags & BPF_F_NO_PREALLOC) !== 0;
  if (env.reportsUsage || !followsEntries || entries === undefined) return m.memlock;
  return hashMapUsage(m, entries, env.possibleCpus);
}
