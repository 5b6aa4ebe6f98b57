/**
 * The compiled BPF objects update shared map values only with atomic
 * instructions (see test/helpers/bpf_stores.ts for the pattern rejected:
 * any plain store into such a value, such as the load-add-store of a `++`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT, requireTool } from '../helpers/env.js';
import { mapsOf, plainStores } from '../helpers/bpf_stores.js';

const OUT = path.join(ROOT, 'bpf/out');

/** Maps whose values one writer at a time owns, so plain stores are right there. */
const OWNED = new Map([
  ['sock_table', 'tcp: a socket\'s own state, keyed by the socket, written under its socket lock'],
  ['running', 'one slot per CPU, written only by sched_switch on that CPU, under its run-queue lock'],
  ['owners', 'kerntap top: one socket\'s owner record, written at its state changes (under the socket lock) and once by the accept() that returns it; plain field stores, no counter'],
  ['.data.walk', 'tcp: the iter/tcp walk\'s start times, written only by the walk, which kerntap runs one at a time'],
  ['conns', 'one HTTP connection\'s parser state, keyed by {tgid, fd}: written by the syscalls on that fd (its counters go to shared maps with atomics)'],
]);

function haveObjdump(): boolean {
  try {
    execFileSync('llvm-objdump-19', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test('BPF objects: every write into a shared map value is atomic', (t) => {
  if (!requireTool(t, 'llvm-objdump-19', haveObjdump())) return;
  const objects = existsSync(OUT) ? readdirSync(OUT).filter((f) => f.endsWith('.bpf.o')).sort() : [];
  if (!requireTool(t, 'built BPF objects (make -C bpf)', objects.length > 0)) return;
  const maps = new Set<string>();
  const plain: string[] = [];
  for (const f of objects) {
    const obj = path.join(OUT, f);
    for (const m of mapsOf(obj)) maps.add(m);
    for (const s of plainStores(obj, new Set())) {
      maps.add(s.map); // global sections (.data.*) are found only by their stores
      if (!OWNED.has(s.map)) plain.push(`${f} ${s.program} insn ${s.index}: "${s.insn}" writes into a value of ${s.map}`);
    }
  }
  assert.deepEqual(plain, [], 'plain stores into shared map values (use __sync_fetch_and_add)');
  for (const owned of OWNED.keys()) assert.ok(maps.has(owned), `exempted map ${owned} exists (else drop it from OWNED)`);
  assert.ok(maps.has('flows') && maps.has('hists') && maps.has('kt_drops') && maps.has('cpu_ns'), `the aggregation maps are found: ${[...maps].join(', ')}`);
});

test('the check rejects plain read-modify-writes of map values and globals, and accepts atomics and stack copies', (t) => {
  if (!requireTool(t, 'llvm-objdump-19', haveObjdump())) return;
  const fixture = path.join(OUT, 'test/racy_adds.bpf.o');
  if (!requireTool(t, 'built BPF fixtures (make -C bpf)', existsSync(fixture))) return;
  const found = plainStores(fixture, new Set()).map((s) => `${s.program} ${s.map}`).sort();
  assert.deepEqual(found, ['racy_global .bss', 'racy_increment shared', 'racy_sum shared']);
  assert.deepEqual(plainStores(fixture, new Set(['shared', '.bss'])), [], 'an exempted map is not reported');
});

test('the check follows the real objects\' value pointers: it sees the plain stores into the owned maps', (t) => {
  if (!requireTool(t, 'llvm-objdump-19', haveObjdump())) return;
  const tcp = path.join(OUT, 'tcp.bpf.o');
  if (!requireTool(t, 'built BPF objects (make -C bpf)', existsSync(tcp))) return;
  const maps = new Set(plainStores(tcp, new Set()).map((s) => s.map));
  assert.ok(maps.has('sock_table'), `per-socket state is written in place (found: ${[...maps].join(', ')})`);
});
