/** Map memory: the kernel's figure where it counts usage (6.4+), else the same sum from the entries kerntap knows. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BPF_F_NO_PREALLOC as NO_PREALLOC, BPF_MAP_TYPE_HASH as HASH, BPF_MAP_TYPE_PERCPU_HASH as PERCPU_HASH, hashMapUsage, mapMemoryBytes } from '../../src/bpf/map_memory.js';
import type { MapInfo } from '../../src/bpf/native.js';

const ARRAY = 2;

const map = (m: Partial<MapInfo>): MapInfo => ({ name: 'm', id: 1, type: HASH, keySize: 8, valueSize: 8, maxEntries: 16, flags: NO_PREALLOC, memlock: 0, internal: false, ...m });

test('hashMapUsage: the kernel\'s own figures (fdinfo memlock, Linux 6.18, 2 possible CPUs) for kerntap\'s hash maps', () => {
  // Read on this machine from a running kerntap: map, key/value bytes, capacity, entries -> memlock.
  const seen: [string, number, number, number, number, number][] = [
    ['sock_table', 8, 104, 131_072, 1, 2_098_216],
    ['flows', 32, 96, 16_386, 10, 527_024],
    ['hists', 16, 1176, 4_098, 8, 141_952],
    ['cpu_ns', 8, 8, 16_385, 4, 525_472],
  ];
  for (const [name, keySize, valueSize, maxEntries, entries, memlock] of seen) {
    assert.equal(hashMapUsage({ type: HASH, keySize, valueSize, maxEntries }, entries, 2), memlock, name);
  }
});

test('hashMapUsage: buckets are fixed at load, entries cost their element each; a per-CPU hash pays its values per possible CPU', () => {
  const base = hashMapUsage({ type: HASH, keySize: 8, valueSize: 100, maxEntries: 1000 }, 0, 4);
  assert.equal(base, 832 + 16 * 1024 + 32 * 4, 'no entries: the struct, 1024 buckets, lock counters');
  assert.equal(hashMapUsage({ type: HASH, keySize: 8, valueSize: 100, maxEntries: 1000 }, 10, 4) - base, 10 * (48 + 8 + 104 + 8), 'value rounded up to 8 bytes');
  const percpu = (n: number, cpus: number) => hashMapUsage({ type: PERCPU_HASH, keySize: 8, valueSize: 8, maxEntries: 1000 }, n, cpus);
  assert.equal(percpu(1, 192) - percpu(0, 192), 48 + 8 + 8 + 8 + 8 + 8 + 8 * 192, 'element, pointer, node, and 192 values');
});

test('mapMemoryBytes: the kernel\'s figure on 6.4+, for arrays, for preallocated hashes and where entries are unknown', () => {
  const before64 = { reportsUsage: false, possibleCpus: 2 };
  const hash = map({ maxEntries: 131_072, keySize: 8, valueSize: 104, memlock: 14_680_064 });
  assert.equal(mapMemoryBytes(hash, 1, { reportsUsage: true, possibleCpus: 2 }), 14_680_064, '6.4+: fdinfo is usage');
  assert.equal(mapMemoryBytes(hash, 1, before64), 2_098_216, 'before 6.4: computed from the entries');
  assert.equal(mapMemoryBytes(hash, undefined, before64), 14_680_064, 'entries unknown: the kernel\'s estimate');
  assert.equal(mapMemoryBytes(map({ flags: 0, memlock: 777 }), 1, before64), 777, 'preallocated: capacity is what it holds');
  assert.equal(mapMemoryBytes(map({ type: ARRAY, flags: 0, memlock: 504 }), 8, before64), 504, 'an array is preallocated');
});
