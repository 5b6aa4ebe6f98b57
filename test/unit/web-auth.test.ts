/**
 * Basic auth: an unknown user takes as long to refuse as a known one with a
 * wrong password; bcrypt never blocks the event loop; pending checks are
 * bounded and the excess is answered at once; a good credential costs one
 * bcrypt, not one per request.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import bcrypt from 'bcryptjs';
import { BasicAuth, MAX_PENDING_CHECKS } from '../../src/webconfig.js';

const PASSWORD = 'correct horse battery staple';
const auth = new BasicAuth(new Map([['alice', bcrypt.hashSync(PASSWORD, 10)]]));
after(() => auth.close());
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

async function timed(header: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  assert.equal(await auth.check(header), 'denied');
  return Number(process.hrtime.bigint() - t0) / 1e6;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

test('an unknown user is refused in the time a known user with a wrong password is', async () => {
  await timed(basic('alice', 'warm-up'));
  const known: number[] = [];
  const unknown: number[] = [];
  for (let i = 0; i < 7; i++) {
    known.push(await timed(basic('alice', `wrong${i}`)));
    unknown.push(await timed(basic(`mallory${i}`, `wrong${i}`)));
  }
  const [k, u] = [median(known), median(unknown)];
  assert.ok(k > 10, `a cost-10 bcrypt takes time (${k.toFixed(1)} ms)`);
  assert.ok(u > k * 0.5 && u < k * 2, `unknown ${u.toFixed(1)} ms vs known ${k.toFixed(1)} ms`);
});

test('checks run off the event loop; more than MAX_PENDING_CHECKS at once are answered busy at once', async () => {
  // Event-loop utilization, not a delay in ms: scale-free, so a loaded
  // machine does not fail it. On the loop, the checks' bcrypt would keep it
  // active for about as long as they all took.
  const elu0 = performance.eventLoopUtilization();
  const t0 = performance.now();
  const results = Array.from({ length: 20 }, () => auth.check(basic('alice', 'wrong')).then((r) => ({ r, ms: performance.now() - t0 })));
  const done = await Promise.all(results);
  const elu = performance.eventLoopUtilization(elu0);
  const busy = done.filter((d) => d.r === 'busy');
  assert.equal(done.filter((d) => d.r === 'denied').length, MAX_PENDING_CHECKS, 'the bounded ones were checked');
  assert.equal(busy.length, 20 - MAX_PENDING_CHECKS);
  // "At once": before any check finished, whatever the machine's load.
  const firstDenied = Math.min(...done.filter((d) => d.r === 'denied').map((d) => d.ms));
  assert.ok(busy.every((d) => d.ms < firstDenied), `busy answers before any check ends (slowest ${Math.max(...busy.map((d) => d.ms)).toFixed(1)} ms, first check ${firstDenied.toFixed(1)} ms)`);
  const wallMs = Math.max(...done.map((d) => d.ms));
  assert.ok(elu.active < wallMs / 2, `bcrypt ran off the event loop (loop active ${elu.active.toFixed(1)} ms of ${wallMs.toFixed(1)} ms)`);
});

test('a good credential costs one bcrypt: later checks are answered from the cache, even while others are pending', async () => {
  assert.equal(await auth.check(basic('alice', PASSWORD)), 'ok');
  const flood = Array.from({ length: MAX_PENDING_CHECKS }, () => auth.check(basic('alice', 'wrong')));
  const t0 = performance.now();
  assert.equal(await auth.check(basic('alice', PASSWORD)), 'ok');
  assert.ok(performance.now() - t0 < 5, 'cached');
  assert.equal(await auth.check(basic('alice', `${PASSWORD}!`)), 'busy', 'a different password is not the cached credential');
  assert.deepEqual(await Promise.all(flood), Array(MAX_PENDING_CHECKS).fill('denied'));
  assert.equal(await auth.check(basic('bob', PASSWORD)), 'denied', 'nor is another user with that password');
});
