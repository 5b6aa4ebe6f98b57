import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, renameSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CgroupResolver, UNKNOWN_CGROUP_PREFIX } from '../../src/cgroup/resolver.js';

// A directory tree stands in for cgroupfs: ids are inode numbers either way.
test('resolves ids to paths, re-walks for unknown ids, and ages deleted ones out', () => {
  const root = mkdtempSync(path.join(tmpdir(), 'kt-cg-'));
  mkdirSync(path.join(root, 'system.slice/nginx.service'), { recursive: true });
  let now = 1_000;
  const r = new CgroupResolver({ root, ttlMs: 60_000, minRewalkMs: 1_000, now: () => now });
  r.walk();
  const ino = (rel: string) => statSync(path.join(root, rel), { bigint: true }).ino;
  assert.equal(r.resolve(ino('system.slice/nginx.service')), '/system.slice/nginx.service');
  assert.equal(r.resolve(ino('.')), '/');

  mkdirSync(path.join(root, 'late'));
  const late = ino('late');
  assert.equal(r.resolve(late), `${UNKNOWN_CGROUP_PREFIX}${late}`, 'no re-walk within minRewalkMs');
  now += 1_000;
  assert.equal(r.resolve(late), '/late', 'an unknown id triggers a walk once allowed');

  rmdirSync(path.join(root, 'late'));
  now += 1_000;
  r.walk();
  assert.equal(r.resolve(late), '/late', 'a deleted cgroup keeps its path during the TTL');
  assert.equal(r.expired(late), false);
  now += 61_000;
  assert.equal(r.expired(late), true, 'expired after the TTL');
  r.forget(late);
  assert.equal(r.entry(late), undefined);
});

test('refresh finds deletions and re-creations by stat, without walking', () => {
  const root = mkdtempSync(path.join(tmpdir(), 'kt-cg-'));
  mkdirSync(path.join(root, 'a'));
  mkdirSync(path.join(root, 'b'));
  let now = 1_000;
  const r = new CgroupResolver({ root, ttlMs: 60_000, now: () => now });
  r.walk();
  const ino = (rel: string) => statSync(path.join(root, rel), { bigint: true }).ino;
  const [a, oldB] = [ino('a'), ino('b')];
  assert.equal(r.resolve(a), '/a');
  assert.equal(r.resolve(oldB), '/b');

  // The new b is made while the old ones exist: plain file systems reuse
  // inode numbers (cgroupfs ids are never reused).
  renameSync(path.join(root, 'b'), path.join(root, 'old-b'));
  mkdirSync(path.join(root, 'b'));
  const newB = ino('b');
  rmdirSync(path.join(root, 'old-b'));
  rmdirSync(path.join(root, 'a'));
  r.refresh(30_000);
  assert.equal(r.expired(a), false, 'not checked before maxAgeMs');
  now += 30_000;
  r.refresh(30_000);
  assert.equal(r.walks, 1, 'no walk');
  assert.equal(r.resolve(a), '/a', 'a deleted cgroup keeps its path during the TTL');
  assert.equal(r.expired(a), false);
  assert.equal(r.expired(oldB), true, 'the cgroup a new one replaced ends at once');
  assert.equal(r.resolve(newB), '/b', 'the new cgroup under the old path is known without a walk');
  assert.equal(r.walks, 1);
  now += 61_000;
  assert.equal(r.expired(a), true, 'expired after the TTL');
  now += 121_000;
  r.refresh(30_000);
  assert.equal(r.entry(a), undefined, 'forgotten after twice the TTL when no collector did it');
});

test('a walk finds every level of a tree whose leaves it does not list (nlink 2), and parents with files next to their children', () => {
  const root = mkdtempSync(path.join(tmpdir(), 'kt-cg-'));
  const dirs = ['a', 'a/b', 'a/b/c', 'a/d', 'e', 'f/g/h/i'];
  for (const d of dirs) mkdirSync(path.join(root, d), { recursive: true });
  writeFileSync(path.join(root, 'a/cgroup.procs'), ''); // interface files are not cgroups
  const r = new CgroupResolver({ root, ttlMs: 60_000 });
  r.walk();
  for (const d of [...dirs, 'f', 'f/g', 'f/g/h']) {
    assert.equal(r.resolve(statSync(path.join(root, d), { bigint: true }).ino), `/${d}`);
  }
  assert.equal(r.size, dirs.length + 3 + 1, 'every directory and the root, no file');
});
