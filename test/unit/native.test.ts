/**
 * The native addon against the real kernel: clear errors (verifier
 * rejection with its log tail, missing object), batched reads of a per-CPU
 * hash beyond one batch, rodata/max_entries overrides, key deletion.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ROOT, requireBpf } from '../helpers/env.js';
import { loadNative, type NativeError } from '../../src/bpf/native.js';

const fixture = (name: string) => path.join(ROOT, 'bpf/out/test', `${name}.bpf.o`);

test('a verifier rejection names the program and carries the log tail', (t) => {
  if (!requireBpf(t)) return;
  const native = loadNative();
  assert.throws(() => new native.BpfObject(fixture('verifier_reject')), (err: NativeError) => {
    assert.equal(err.code, 'EVERIFIER');
    assert.equal(err.program, 'out_of_bounds');
    assert.match(err.message, /^loading verifier_reject\.bpf\.o: the verifier rejected program out_of_bounds: .*(invalid access|value_size|off=)/);
    assert.ok(!err.message.includes('\n'), 'one line');
    assert.ok((err.verifierLog ?? '').length > 20, 'full log tail attached');
    return true;
  });
});

test('a missing object is ENOENT naming the path', (t) => {
  if (!requireBpf(t)) return;
  assert.throws(() => new (loadNative().BpfObject)('/nonexistent/x.bpf.o'), (err: NativeError) => err.code === 'ENOENT' && err.message.includes('/nonexistent/x.bpf.o'));
});

test('batched per-CPU reads return every entry with per-CPU copies summed; max_entries and deletes apply', async (t) => {
  if (!requireBpf(t)) return;
  const native = loadNative();
  const obj = new native.BpfObject(fixture('bench_map'), { maxEntries: { bench_hash: 20000 } });
  try {
    assert.equal(obj.maps().find((m) => m.name === 'bench_hash')?.maxEntries, 20000);
    const n = 10_000; // more than one 4096-entry batch
    const key = Buffer.alloc(8);
    const val = Buffer.alloc(8);
    for (let i = 0; i < n; i++) {
      key.writeBigUInt64LE(BigInt(i));
      val.writeBigUInt64LE(BigInt(i * 3));
      obj.updateElem('bench_hash', key, val); // the same value on every CPU
    }
    const batch = await obj.readMap('bench_hash');
    assert.equal(batch.count, n);
    const cpus = BigInt(native.numPossibleCpus());
    for (let i = 0; i < batch.count; i++) {
      const k = batch.keys.readBigUInt64LE(i * 8);
      assert.equal(batch.values[i], k * 3n * cpus, 'summed over CPUs');
    }
    const del = Buffer.alloc(16);
    del.writeBigUInt64LE(5n, 0);
    del.writeBigUInt64LE(999_999n, 8);
    assert.equal(obj.deleteKeys('bench_hash', del), 1, 'deletes what exists');
    assert.equal((await obj.readMap('bench_hash')).count, n - 1);
  } finally {
    obj.close();
  }
  assert.throws(() => obj.maps(), /closed/);
});
