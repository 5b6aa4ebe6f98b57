/**
 * The native addon (native/*.cc) against the real kernel, with
 * the fixture objects from test/fixtures/bpf (built into bpf/out/test by
 * `make -C bpf`):
 *  - per-CPU values summed natively equal the same counters kept with atomics,
 *    for multi-word values; rodata and max_entries applied before load;
 *  - batched reads beyond one batch return exactly what was written (hash,
 *    per-CPU array, trie), including hash buckets larger than a batch, and
 *    maps without batch operations are read key by key;
 *  - iterators, deletes, program stats;
 *  - errors: verifier rejection, missing object, attach failure, no
 *    privileges (child process without capabilities), no kernel BTF (child
 *    process in a mount namespace that hides it);
 *  - close() during a read, the GC finalizer, and nothing left loaded.
 * Without root/BTF/the build these tests skip, except with CI=true.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { TestContext } from 'node:test';
import { ROOT, IN_CI, hasTool, requireBpf, requireTool } from '../helpers/env.js';
import { waitFor } from '../helpers/wait.js';
import { loadNative, type BpfObjectHandle, type MapBatch, type NativeBinding, type NativeError, type OpenOptions } from '../../src/bpf/native.js';
import { explainLoadFailure } from '../../src/probe.js';

const FIXTURE_DIR = path.join(ROOT, 'bpf/out/test');
const fixture = (name: string) => path.join(FIXTURE_DIR, `${name}.bpf.o`);
const FIXTURES = ['native_counters', 'native_iter', 'verifier_reject', 'missing_helper'];
/** The compiled contract module, for child processes. */
const NATIVE_JS = fileURLToPath(new URL('../../src/bpf/native.js', import.meta.url));
/** Our programs' names as the kernel shows them (at most 15 characters). */
const FIXTURE_PROGRAMS = ['ktn_count', 'ktn_bad_attach', 'ktn_tcp_iter', 'ktn_tcp_uncheck', 'out_of_bounds'];

const AF_INET = 2;
const TCP_ESTABLISHED = 1;
const TCP_LISTEN = 10;
const RECORD_MARKER = 0x6b746e31;
const RECORD_SIZE = 16;

/** The addon, or undefined when the test must skip (it fails instead in CI). */
function setup(t: TestContext): NativeBinding | undefined {
  if (!requireBpf(t)) return undefined;
  const missing = FIXTURES.filter((f) => !existsSync(fixture(f)));
  if (missing.length) {
    const why = `fixtures not built (make -C bpf): ${missing.join(', ')}`;
    if (IN_CI) throw new Error(why);
    t.skip(why);
    return undefined;
  }
  return loadNative();
}

const opened: BpfObjectHandle[] = [];
const programIds = new Set<number>();

function open(native: NativeBinding, name: string, options?: OpenOptions): BpfObjectHandle {
  const obj = new native.BpfObject(fixture(name), options);
  opened.push(obj);
  for (const p of obj.programs()) programIds.add(p.id);
  return obj;
}

after(() => {
  for (const obj of opened) obj.close();
});

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}
function u64(...words: (number | bigint)[]): Buffer {
  const b = Buffer.alloc(8 * words.length);
  words.forEach((w, i) => b.writeBigUInt64LE(BigInt(w), 8 * i));
  return b;
}

/** Word j of value i. */
function word(batch: MapBatch, i: number, j = 0): bigint {
  assert.ok(j < batch.valueWords && i < batch.count, `value ${i} word ${j} out of range`);
  const v = batch.values[i * batch.valueWords + j];
  assert.ok(v !== undefined);
  return v;
}

/** key (as a bigint of keySize bytes, little-endian) -> value words. */
function entries(batch: MapBatch): Map<bigint, bigint[]> {
  assert.equal(batch.keys.length, batch.count * batch.keySize);
  assert.equal(batch.values.length, batch.count * batch.valueWords);
  const out = new Map<bigint, bigint[]>();
  for (let i = 0; i < batch.count; i++) {
    const k = batch.keys.subarray(i * batch.keySize, (i + 1) * batch.keySize);
    const key = batch.keySize === 8 ? k.readBigUInt64LE() : BigInt(k.readUIntLE(0, Math.min(6, batch.keySize)));
    assert.ok(!out.has(key), `key ${key} returned twice`);
    out.set(key, Array.from(batch.values.subarray(i * batch.valueWords, (i + 1) * batch.valueWords)));
  }
  return out;
}

function parseCpuList(list: string): number[] {
  const cpus: number[] = [];
  for (const part of list.trim().split(',')) {
    const [a, b] = part.split('-').map(Number);
    for (let c = a!; c <= (b ?? a!); c++) cpus.push(c);
  }
  return cpus;
}

/** Runs something on every online CPU so each one switches tasks. */
function stirAllCpus(): void {
  const online = parseCpuList(readFileSync('/sys/devices/system/cpu/online', 'utf8'));
  const script = online.map((c) => (hasTool('taskset') ? `taskset -c ${c} sleep 0.01 &` : 'sleep 0.01 &')).join(' ') + ' wait';
  for (let i = 0; i < 5; i++) spawnSync('sh', ['-c', script], { stdio: 'ignore' });
}

function progExists(id: number): boolean {
  return spawnSync('bpftool', ['prog', 'show', 'id', String(id)], { stdio: 'ignore' }).status === 0;
}

async function waitGone(ids: number[], step?: () => void): Promise<number[]> {
  let left = ids.filter(progExists);
  await waitFor('the programs to be freed', () => {
    step?.();
    left = left.filter(progExists);
    return left.length === 0;
  }, 5000).catch(() => undefined);
  return left;
}

/**
 * Waits until a map stops changing: runs of a program that started before
 * it was detached or disabled may still be adding to it.
 */
async function quiesced(obj: BpfObjectHandle, map: string): Promise<void> {
  let last = '';
  await waitFor(`${map} to stop changing`, async () => {
    const now = String((await obj.readMap(map)).values);
    const same = now === last;
    last = now;
    return same;
  }, 5000, 20);
}

/** Counts sched_switch events (rodata and max_entries as given), then stops counting. */
async function countSwitches(native: NativeBinding, options: OpenOptions) {
  const obj = open(native, 'native_counters', { skipPrograms: ['ktn_bad_attach'], ...options });
  obj.updateElem('percpu_counts', u32(0), u64(0, 0, 0));
  obj.attach();
  obj.updateElem('enabled', u32(0), u64(1));
  stirAllCpus();
  obj.updateElem('enabled', u32(0), u64(0));
  await quiesced(obj, 'percpu_counts');
  return obj;
}

test('module functions: possible CPUs, libbpf version, kernel BTF lookups', (t) => {
  const native = setup(t);
  if (!native) return;
  const possible = parseCpuList(readFileSync('/sys/devices/system/cpu/possible', 'utf8'));
  assert.equal(native.numPossibleCpus(), Math.max(...possible) + 1);

  assert.match(native.libbpfVersion(), /^\d+\.\d+$/);
  const pc = spawnSync('pkg-config', ['--modversion', 'libbpf'], { encoding: 'utf8' });
  if (pc.status === 0) assert.equal(native.libbpfVersion(), pc.stdout.trim().split('.').slice(0, 2).join('.'));

  assert.equal(native.btfHasType('btf_trace_sched_switch', 'typedef'), true);
  assert.equal(native.btfHasType('bpf_iter_tcp', 'func'), true);
  assert.equal(native.btfHasType('task_struct', 'struct'), true);
  assert.equal(native.btfHasType('bpf_map_type', 'enum'), true);
  assert.equal(native.btfHasType('task_struct', 'typedef'), false);
  assert.equal(native.btfHasType('kerntap_no_such_type', 'struct'), false);
  assert.throws(() => native.btfHasType('task_struct', 'union' as 'struct'), (e: NativeError) => e.code === 'EINVAL');
});

test('per-CPU multi-word values summed natively equal the same counters kept with atomics; rodata and max_entries apply', async (t) => {
  const native = setup(t);
  if (!native) return;
  const ncpu = native.numPossibleCpus();
  const magic = 0x1122334455667788n;
  const stats = native.enableStats();
  let obj: BpfObjectHandle;
  try {
    obj = await countSwitches(native, {
      rodata: { magic: u64(magic), step: u32(3) },
      maxEntries: { percpu_counts: 128, big_hash: 20000 },
    });
    const progs = obj.programs();
    assert.deepEqual(progs.map((p) => [p.name, p.section]), [['ktn_count', 'tp_btf/sched_switch']], 'skipped program not loaded');
    assert.ok(progs[0]!.id > 0);
    assert.ok(progs[0]!.runCount > 0n, 'runCount counted while stats are enabled');
    assert.ok(progs[0]!.runTimeNs > 0n, 'runTimeNs counted while stats are enabled');
    assert.equal(typeof progs[0]!.recursionMisses, 'bigint');
  } finally {
    native.closeFd(stats);
  }

  const maps = new Map(obj.maps().map((m) => [m.name, m]));
  assert.deepEqual(maps.get('percpu_counts'), { ...maps.get('percpu_counts')!, type: 5, keySize: 4, valueSize: 24, maxEntries: 128 });
  assert.equal(maps.get('big_hash')?.maxEntries, 20000);
  assert.equal(maps.get('cpu_seen')?.maxEntries, 1024, 'others keep their size');
  // The globals' map is listed too (its memory counts), flagged internal.
  assert.deepEqual([...maps.values()].filter((m) => m.internal).map((m) => m.name), [...maps.keys()].filter((n) => n.endsWith('.rodata')));
  assert.ok([...maps.keys()].some((n) => n.endsWith('.rodata')), `the .rodata map is listed: ${[...maps.keys()].join(', ')}`);
  assert.equal(maps.get('percpu_counts')!.internal, false);

  const percpu = await obj.readMap('percpu_counts');
  const atomic = await obj.readMap('atomic_counts');
  assert.equal(percpu.count, 1);
  assert.equal(percpu.keySize, 4);
  assert.equal(percpu.valueWords, 3);
  assert.equal(percpu.keys.readUInt32LE(0), 0);
  assert.equal(atomic.count, 1);
  const events = word(percpu, 0, 0);
  assert.ok(events > 0n, 'sched_switch counted');
  assert.deepEqual(Array.from(percpu.values), Array.from(atomic.values), 'per-CPU sums equal the atomic counters');
  assert.equal(word(percpu, 0, 1), 3n * events, 'rodata step=3 applied');

  // Per CPU, as counted with atomics: the sums must agree with them too.
  const seen = entries(await obj.readMap('cpu_seen'));
  let total = 0n;
  let weight = 0n;
  for (const [cpu, [n]] of seen) {
    assert.ok(cpu < BigInt(ncpu), `cpu ${cpu} < ${ncpu}`);
    total += n!;
    weight += (cpu + 1n) * n!;
  }
  assert.equal(total, events);
  assert.equal(word(percpu, 0, 2), weight, 'cpu-weighted sum');
  const online = parseCpuList(readFileSync('/sys/devices/system/cpu/online', 'utf8')).length;
  if (hasTool('taskset')) assert.ok(seen.size >= Math.min(2, online), `events on ${seen.size} CPUs`);

  const m = await obj.readMap('magic_out');
  assert.equal(word(m, 0), magic, 'rodata magic applied');

  // A stack trace map has no batch operations (ENOTSUPP): read key by key.
  const stacks = await obj.readMap('stacks');
  const ids = entries(await obj.readMap('stack_ids'));
  assert.ok(stacks.count > 0);
  assert.equal(stacks.valueWords, 16);
  assert.deepEqual(new Set(entries(stacks).keys()), new Set(ids.keys()), 'the stacks the program recorded');
  for (let i = 0; i < stacks.count; i++) assert.ok(word(stacks, i, 0) >= 0xffff800000000000n, 'kernel text address');
  // ...and has no batch delete either: one key at a time.
  const present = stacks.keys.readUInt32LE(0);
  let absent = 0;
  while (ids.has(BigInt(absent))) absent++;
  assert.equal(await obj.deleteKeys('stacks', Buffer.concat([u32(present), u32(absent)])), 1);
  assert.equal((await obj.readMap('stacks')).count, stacks.count - 1);
  obj.close();
});

test('rodata left alone keeps the compiled-in values', async (t) => {
  const native = setup(t);
  if (!native) return;
  const obj = await countSwitches(native, {});
  const percpu = await obj.readMap('percpu_counts');
  assert.ok(word(percpu, 0, 0) > 0n);
  assert.equal(word(percpu, 0, 1), word(percpu, 0, 0), 'step=1');
  assert.equal(word(await obj.readMap('magic_out'), 0), 0n);
  obj.close();
});

test('bad options name what is wrong', (t) => {
  const native = setup(t);
  if (!native) return;
  const f = fixture('native_counters');
  assert.throws(() => new native.BpfObject(f, { rodata: { no_such_var: u32(1) } }), (e: NativeError) => {
    assert.equal(e.code, 'ENOENT');
    assert.match(e.message, /no_such_var/);
    return true;
  });
  assert.throws(() => new native.BpfObject(f, { rodata: { magic: u32(1) } }), (e: NativeError) => {
    assert.equal(e.code, 'EINVAL');
    assert.match(e.message, /magic is 8 bytes, got 4/);
    return true;
  });
  assert.throws(() => new native.BpfObject(f, { maxEntries: { no_such_map: 8 } }), (e: NativeError) => e.code === 'ENOENT' && e.message.includes('no_such_map'));
  assert.throws(() => new native.BpfObject(f, { skipPrograms: ['no_such_prog'] }), (e: NativeError) => e.code === 'ENOENT' && e.message.includes('no_such_prog'));
  // A map the kernel refuses to create is named, with the memory it asked for.
  assert.throws(() => new native.BpfObject(f, { maxEntries: { percpu_counts: 200_000_000 } }), (e: NativeError & { map?: string }) => {
    assert.equal(e.map, 'percpu_counts');
    assert.match(e.message, /cannot create map percpu_counts: .*wanted about \d+\.\d MiB \(200000000 entries of 4 \+ 24 bytes x \d+ possible CPUs\)/);
    return true;
  });
});

test('batched reads return exactly what was written, beyond one batch and with buckets larger than a batch', async (t) => {
  const native = setup(t);
  if (!native) return;
  const ncpu = BigInt(native.numPossibleCpus());
  const obj = open(native, 'native_counters', { skipPrograms: ['ktn_bad_attach'] });

  // A hash with 10000 two-word values: more than two 4096-entry batches.
  const written = new Map<bigint, bigint[]>();
  for (let i = 0; i < 10_000; i++) {
    const key = (BigInt(i) * 0x9e3779b97f4a7c15n + 17n) & 0xffffffffffffffffn;
    const value = [BigInt(i), key ^ 0xa5a5a5a5a5a5a5a5n];
    obj.updateElem('big_hash', u64(key), u64(...value));
    written.set(key, value);
  }
  const batch = await obj.readMap('big_hash');
  assert.equal(batch.count, 10_000);
  assert.equal(batch.keySize, 8);
  assert.equal(batch.valueWords, 2);
  assert.deepEqual(entries(batch), written);

  // One entry per batch call: every bucket holding two or more keys is
  // larger than the batch (ENOSPC), and the read must grow it.
  const hooks = native as unknown as { _setBatchSize(n: number): number };
  const previous = hooks._setBatchSize(1);
  try {
    assert.deepEqual(entries(await obj.readMap('big_hash')), written);
  } finally {
    hooks._setBatchSize(previous);
  }

  // A per-CPU array (generic batch ops): every index, summed over CPUs.
  for (const i of [0, 1, 4095, 4096, 4999]) obj.updateElem('pc_array', u32(i), u64(i + 1));
  const arr = entries(await obj.readMap('pc_array'));
  assert.equal(arr.size, 5000);
  for (let i = 0; i < 5000; i++) {
    const expect = [0, 1, 4095, 4096, 4999].includes(i) ? BigInt(i + 1) * ncpu : 0n;
    assert.deepEqual(arr.get(BigInt(i)), [expect], `pc_array[${i}]`);
  }

  // updateElem on a per-CPU hash writes the value to every CPU.
  obj.updateElem('percpu_counts', u32(7), u64(1, 2, 3));
  assert.deepEqual(entries(await obj.readMap('percpu_counts')).get(7n), [ncpu, 2n * ncpu, 3n * ncpu]);

  // A trie.
  const trieKey = (addr: number) => {
    const k = Buffer.alloc(8);
    k.writeUInt32LE(32, 0);
    k.writeUInt32BE(addr, 4);
    return k;
  };
  for (let i = 0; i < 5; i++) obj.updateElem('trie', trieKey(0x0a000000 + i), u64(100 + i));
  const trie = await obj.readMap('trie');
  assert.equal(trie.count, 5);
  assert.deepEqual(Array.from(trie.values).sort(), [100n, 101n, 102n, 103n, 104n]);

  const empty = await obj.readMap('cpu_seen');
  assert.equal(empty.count, 0);
  assert.equal(empty.keys.length, 0);
  assert.equal(empty.values.length, 0);
  obj.close();
});

test('readMap and updateElem refuse what they cannot do, as rejections and errors with a code', async (t) => {
  const native = setup(t);
  if (!native) return;
  const obj = open(native, 'native_counters', { skipPrograms: ['ktn_bad_attach'] });
  await assert.rejects(obj.readMap('odd_values'), (e: NativeError) => e.code === 'EINVAL' && /multiple of 8/.test(e.message));
  await assert.rejects(obj.readMap('no_such_map'), (e: NativeError) => e.code === 'ENOENT' && e.message.includes('no_such_map'));
  assert.throws(() => obj.updateElem('big_hash', u32(1), u64(1, 2)), (e: NativeError) => e.code === 'EINVAL');
  assert.throws(() => obj.updateElem('no_such_map', u32(1), u64(1)), (e: NativeError) => e.code === 'ENOENT');
  obj.close();
});

test('btf() of a loaded object is what objectBtf() reads from the file without loading it', async (t) => {
  const native = setup(t);
  if (!native) return;
  const obj = open(native, 'native_counters', { skipPrograms: ['ktn_bad_attach'] });
  const btf = obj.btf();
  assert.deepEqual(btf, native.objectBtf(fixture('native_counters')));
  assert.deepEqual(btf.maps.big_hash, { key: { kind: 'int', name: 'unsigned long long', size: 8 }, value: btf.maps.big_hash!.value });
  assert.equal(btf.maps.big_hash!.value!.size, 16);
  obj.close();
  assert.throws(() => obj.btf(), (e: NativeError) => e.code === 'EBADF');
  assert.throws(() => native.objectBtf('/nonexistent.bpf.o'), (e: NativeError) => e.code === 'ENOENT' && e.message.includes('/nonexistent.bpf.o'));
});

test('deleteKeys deletes what exists and says how many', async (t) => {
  const native = setup(t);
  if (!native) return;
  const obj = open(native, 'native_counters', { skipPrograms: ['ktn_bad_attach'] });
  for (let i = 0; i < 6000; i++) obj.updateElem('big_hash', u64(i), u64(i, i));
  // 100 present keys with 10 absent ones in between (the kernel's batch
  // delete stops at each absent key).
  const keys: number[] = [];
  for (let i = 0; i < 100; i++) {
    keys.push(i * 50);
    if (i % 10 === 5) keys.push(1_000_000 + i);
  }
  const buf = u64(...keys);
  assert.equal(await obj.deleteKeys('big_hash', buf), 100);
  const left = entries(await obj.readMap('big_hash'));
  assert.equal(left.size, 5900);
  for (let i = 0; i < 100; i++) assert.ok(!left.has(BigInt(i * 50)), `key ${i * 50} deleted`);
  assert.deepEqual(left.get(1n), [1n, 1n], 'others kept');
  assert.equal(await obj.deleteKeys('big_hash', buf), 0, 'nothing left to delete');
  assert.equal(await obj.deleteKeys('big_hash', Buffer.alloc(0)), 0);
  await assert.rejects(obj.deleteKeys('big_hash', Buffer.alloc(12)), (e: NativeError) => e.code === 'EINVAL');
  await assert.rejects(obj.deleteKeys('pc_array', u32(1)), (e: NativeError) => e.code === 'EINVAL', 'arrays cannot delete');
  obj.close();
});

test('an iterator returns one record per TCP socket, including a listener and a connection opened here', async (t) => {
  const native = setup(t);
  if (!native) return;
  const server = net.createServer((s) => s.on('error', () => {}));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const client = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve) => client.once('connect', resolve));
  try {
    const obj = open(native, 'native_iter', { skipPrograms: ['ktn_tcp_unchecked'] });
    assert.deepEqual(obj.programs().map((p) => [p.name, p.section]), [['ktn_tcp_iter', 'iter/tcp']]);
    await assert.rejects(obj.runIter('ktn_tcp_iter'), (e: NativeError) => e.code === 'ENOENT' && /not attached/.test(e.message));
    obj.attach();
    obj.attach(); // idempotent
    for (let round = 0; round < 2; round++) {
      const buf = await obj.runIter('ktn_tcp_iter');
      assert.ok(Buffer.isBuffer(buf));
      assert.ok(buf.length >= 3 * RECORD_SIZE, `records: ${buf.length} bytes`);
      assert.equal(buf.length % RECORD_SIZE, 0);
      const records = [];
      for (let off = 0; off < buf.length; off += RECORD_SIZE) {
        assert.equal(buf.readUInt32LE(off), RECORD_MARKER);
        records.push({ family: buf.readUInt16LE(off + 4), port: buf.readUInt16LE(off + 6), state: buf.readUInt8(off + 8) });
      }
      assert.ok(records.some((r) => r.port === port && r.family === AF_INET && r.state === TCP_LISTEN), `listener on ${port}`);
      assert.ok(records.some((r) => r.port === port && r.family === AF_INET && r.state === TCP_ESTABLISHED), `accepted connection on ${port}`);
    }
    await assert.rejects(obj.runIter('ktn_tcp_unchecked'), (e: NativeError) => e.code === 'ENOENT' && /not loaded/.test(e.message));
    await assert.rejects(obj.runIter('no_such_prog'), (e: NativeError) => e.code === 'ENOENT');
    obj.close();
  } finally {
    client.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
});

test('a program calling a helper the kernel lacks for it: the collector\'s reason names the helper', (t) => {
  const native = setup(t);
  if (!native) return;
  let reason = '';
  assert.throws(() => new native.BpfObject(fixture('missing_helper')), (err: NativeError) => {
    assert.equal(err.code, 'EVERIFIER');
    reason = explainLoadFailure(err);
    return true;
  });
  assert.equal(reason, 'kernel lacks helper bpf_skb_store_bytes for this program type (program calls_store_helper)');
  // As Linux 5.10 words it, for socket storage in a tracing program.
  const v510 = Object.assign(new Error('loading tcp.bpf.o: the verifier rejected program tcp_state'), { program: 'tcp_state', verifierLog: '; st = bpf_sk_storage_get(&sock_states, sk, 0, 0);\n12: (85) call bpf_sk_storage_get#107\nunknown func bpf_sk_storage_get#107\n' });
  assert.equal(explainLoadFailure(v510), 'kernel lacks helper bpf_sk_storage_get for this program type (program tcp_state)');
});

test('a verifier rejection is EVERIFIER naming the program, with the log tail', (t) => {
  const native = setup(t);
  if (!native) return;
  assert.throws(() => new native.BpfObject(fixture('verifier_reject')), (err: NativeError) => {
    assert.equal(err.code, 'EVERIFIER');
    assert.equal(err.program, 'out_of_bounds');
    assert.match(err.message, /^loading verifier_reject\.bpf\.o: the verifier rejected program out_of_bounds: .*(invalid access|value_size|off=)/);
    assert.ok(!err.message.includes('\n'), 'one line');
    assert.ok((err.verifierLog ?? '').length > 20, 'log tail attached');
    assert.ok(err.verifierLog!.length <= 4096);
    assert.match(err.verifierLog!, /invalid access to map value/);
    return true;
  });
  // A small log buffer still has the end of the log (kernels since 6.4 keep
  // the tail of a log that does not fit).
  assert.throws(() => new native.BpfObject(fixture('verifier_reject'), { logSize: 1024 }), (err: NativeError) => {
    assert.equal(err.code, 'EVERIFIER');
    assert.equal(err.program, 'out_of_bounds');
    assert.ok(err.verifierLog!.length < 1024);
    assert.match(err.verifierLog!, /invalid access to map value/);
    return true;
  });
  // Without skipPrograms, the iterator fixture's unchecked program is rejected.
  assert.throws(() => new native.BpfObject(fixture('native_iter')), (err: NativeError) => {
    assert.equal(err.code, 'EVERIFIER');
    assert.equal(err.program, 'ktn_tcp_unchecked');
    assert.match(err.message, /invalid mem access/);
    assert.match(err.verifierLog ?? '', /invalid mem access/);
    return true;
  });
});

test('a missing object is ENOENT naming the path', (t) => {
  const native = setup(t);
  if (!native) return;
  assert.throws(() => new native.BpfObject('/nonexistent/x.bpf.o'), (err: NativeError) => {
    assert.equal(err.code, 'ENOENT');
    assert.match(err.message, /\/nonexistent\/x\.bpf\.o/);
    return true;
  });
});

test('an attach failure is EATTACH naming the program, and leaves nothing attached', async (t) => {
  const native = setup(t);
  if (!native) return;
  const obj = open(native, 'native_counters');
  obj.updateElem('percpu_counts', u32(0), u64(0, 0, 0));
  obj.updateElem('enabled', u32(0), u64(1));
  assert.throws(() => obj.attach(), (err: NativeError) => {
    assert.equal(err.code, 'EATTACH');
    assert.equal(err.program, 'ktn_bad_attach');
    assert.match(err.message, /ktn_bad_attach/);
    return true;
  });
  // ktn_count, attached first, may have run until the failure detached it again.
  await quiesced(obj, 'atomic_counts');
  const before = word(await obj.readMap('atomic_counts'), 0, 0);
  stirAllCpus();
  assert.equal(word(await obj.readMap('atomic_counts'), 0, 0), before, 'ktn_count was detached again');
  obj.close();
});

/** Runs `code` (an ES module body with `native` in scope) in a child process; returns its JSON output. */
function child(prefix: string[], shellPrefix: string, code: string): { status: number | null; out: unknown; stderr: string } {
  const body = `import { loadNative } from ${JSON.stringify(NATIVE_JS)};
const native = loadNative();
const result = {};
${code}
console.log(JSON.stringify(result));`;
  const quoted = body.replace(/'/g, `'\\''`);
  const r = spawnSync(prefix[0]!, [...prefix.slice(1), 'sh', '-c', `${shellPrefix}${process.execPath} --input-type=module -e '${quoted}'`], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', KERNTAP_NATIVE: process.env.KERNTAP_NATIVE ?? '' },
  });
  let out: unknown;
  try {
    out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
  } catch {
    out = undefined;
  }
  return { status: r.status, out, stderr: r.stderr };
}

const catchInto = (key: string, expr: string) =>
  `try { ${expr}; result.${key} = 'no error'; } catch (e) { result.${key} = { code: e.code, capability: e.capability, message: e.message }; }`;

test('without privileges, loading is EPERM naming CAP_BPF (child process with no capabilities)', (t) => {
  const native = setup(t);
  if (!native) return;
  if (!requireTool(t, 'setpriv', hasTool('setpriv'))) return;
  const r = child(
    ['setpriv', '--inh-caps=-all', '--bounding-set=-all', '--ambient-caps=-all', '--reuid=65534', '--regid=65534', '--clear-groups'],
    '',
    catchInto('load', `new native.BpfObject(${JSON.stringify(fixture('native_counters'))})`) + '\n' + catchInto('stats', 'native.enableStats()'),
  );
  assert.ok(r.out, `child output (status ${r.status}): ${r.stderr}`);
  const out = r.out as { load: { code: string; capability: string; message: string }; stats: { code: string; capability: string } };
  assert.equal(out.load.code, 'EPERM');
  assert.equal(out.load.capability, 'CAP_BPF');
  assert.match(out.load.message, /^loading native_counters\.bpf\.o: permission denied: needs CAP_BPF and CAP_PERFMON \(or root\)$/);
  assert.equal(out.stats.code, 'EPERM');
  assert.equal(out.stats.capability, 'CAP_SYS_ADMIN');
});

test('without kernel BTF, loading is ENOBTF naming /sys/kernel/btf/vmlinux (child process in a mount namespace hiding it)', (t) => {
  const native = setup(t);
  if (!native) return;
  if (!requireTool(t, 'unshare', hasTool('unshare'))) return;
  const probe = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs none /sys/kernel/btf && test ! -e /sys/kernel/btf/vmlinux'], { stdio: 'ignore' });
  if (!requireTool(t, 'a mount namespace (unshare --mount)', probe.status === 0)) return;
  const r = child(
    ['unshare', '--mount', '--propagation', 'private'],
    'mount -t tmpfs none /sys/kernel/btf && exec ',
    catchInto('load', `new native.BpfObject(${JSON.stringify(fixture('native_counters'))})`),
  );
  assert.ok(r.out, `child output (status ${r.status}): ${r.stderr}`);
  const out = r.out as { load: { code: string; message: string } };
  assert.equal(out.load.code, 'ENOBTF');
  assert.match(out.load.message, /\/sys\/kernel\/btf\/vmlinux/);
});

test('close() during a read lets the read finish, then releases everything; close() is idempotent', async (t) => {
  const native = setup(t);
  if (!native) return;
  if (!requireTool(t, 'bpftool', hasTool('bpftool'))) return;
  const obj = open(native, 'native_counters', { skipPrograms: ['ktn_bad_attach'] });
  obj.attach();
  const ids = obj.programs().map((p) => p.id);
  assert.ok(ids.every(progExists));
  for (let i = 0; i < 10_000; i++) obj.updateElem('big_hash', u64(i), u64(i, 2 * i));
  const reads = [obj.readMap('big_hash'), obj.readMap('big_hash')];
  obj.close();
  obj.close();
  for (const read of reads) {
    const batch = await read;
    assert.equal(batch.count, 10_000);
    assert.equal(entries(batch).get(4242n)?.[1], 8484n);
  }
  assert.throws(() => obj.maps(), (e: NativeError) => e.code === 'EBADF' && /closed/.test(e.message));
  assert.throws(() => obj.programs(), /closed/);
  assert.throws(() => obj.attach(), /closed/);
  await assert.rejects(obj.readMap('big_hash'), /closed/);
  assert.deepEqual(await waitGone(ids), [], 'programs unloaded');

  // The same for an iterator run.
  const it = open(native, 'native_iter', { skipPrograms: ['ktn_tcp_unchecked'] });
  it.attach();
  const iterIds = it.programs().map((p) => p.id);
  const run = it.runIter('ktn_tcp_iter');
  it.close();
  const records = await run;
  assert.ok(records.length > 0 && records.length % RECORD_SIZE === 0);
  assert.deepEqual(await waitGone(iterIds), [], 'iterator unloaded');
});

test('an object dropped without close() is released by the GC finalizer', async (t) => {
  const native = setup(t);
  if (!native) return;
  if (!requireTool(t, 'bpftool', hasTool('bpftool'))) return;
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const ids = (() => {
    const obj = new native.BpfObject(fixture('native_counters'), { skipPrograms: ['ktn_bad_attach'] });
    obj.attach();
    return obj.programs().map((p) => p.id);
  })();
  ids.forEach((id) => programIds.add(id));
  assert.ok(ids.length === 1 && progExists(ids[0]!));
  assert.deepEqual(await waitGone(ids, gc), [], 'finalizer closed the object');
});

test('nothing the tests loaded stays loaded', async (t) => {
  const native = setup(t);
  if (!native) return;
  if (!requireTool(t, 'bpftool', hasTool('bpftool'))) return;
  for (const obj of opened) obj.close();
  assert.deepEqual(await waitGone([...programIds]), [], 'every program id seen is gone');
  const r = spawnSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const progs = JSON.parse(r.stdout) as { id: number; name?: string }[];
  assert.deepEqual(progs.filter((p) => p.name && FIXTURE_PROGRAMS.includes(p.name)), []);
});
