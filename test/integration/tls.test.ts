/**
 * --web.config.file: /metrics over TLS with basic auth (bcrypt), checked by
 * real clients: curl, and a real Prometheus scraping over TLS.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import { BIN, requireBpf, requireTool } from '../helpers/env.js';
import { startExporter } from '../helpers/exporter.js';
import { havePrometheus, startPrometheus } from '../helpers/prometheus.js';
import { makeCerts } from '../helpers/certs.js';
import { parseExposition } from '../helpers/exposition.js';
import { pollsTotal, waitForPoll } from '../helpers/wait.js';

const cleanup: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

test('TLS and basic auth: curl and Prometheus scrape over TLS; wrong or missing credentials get 401', async (t) => {
  if (!requireBpf(t) || !requireTool(t, 'prometheus', havePrometheus())) return;
  const certs = makeCerts();
  const dir = certs.dir;
  const password = 'correct horse battery staple';
  const webConfig = path.join(dir, 'web.yml');
  writeFileSync(webConfig, `tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  alice: ${bcrypt.hashSync(password, 10)}\n`);
  const exporter = await startExporter(['--web.config.file', webConfig]);
  cleanup.push(() => exporter.stop());
  assert.match(exporter.url, /^https:\/\//);
  const curl = (...args: string[]) => spawnSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', path.join(dir, 'ca.crt'), ...args], { encoding: 'utf8' }).stdout;
  assert.equal(curl('-u', `alice:${password}`, `${exporter.url}/metrics`), '200');
  assert.equal(curl(`${exporter.url}/metrics`), '401', 'no credentials');
  assert.equal(curl('-u', 'alice:wrong', `${exporter.url}/metrics`), '401', 'wrong password');
  assert.equal(curl('-u', `mallory:${password}`, `${exporter.url}/metrics`), '401', 'unknown user');
  const body = spawnSync('curl', ['-s', '--cacert', path.join(dir, 'ca.crt'), '-u', `alice:${password}`, `${exporter.url}/metrics`], { encoding: 'utf8' }).stdout;
  assert.match(body, /^kerntap_build_info\{/m);
  const plain = spawnSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', exporter.url.replace('https:', 'http:') + '/metrics'], { encoding: 'utf8' }).stdout;
  assert.notEqual(plain, '200', 'no plain HTTP');

  const passwordFile = path.join(dir, 'password');
  writeFileSync(passwordFile, password);
  const prom = await startPrometheus([{
    target: new URL(exporter.url).host,
    scheme: 'https',
    extra: `    tls_config:\n      ca_file: ${path.join(dir, 'ca.crt')}\n    basic_auth:\n      username: alice\n      password_file: ${passwordFile}`,
  }]);
  cleanup.push(() => prom.stop());
  const up = await prom.waitFor('up', (r) => r.length === 1 && r[0]!.value[1] === '1');
  assert.equal(up[0]!.value[1], '1');
  const built = await prom.waitFor('kerntap_build_info', (r) => r.length === 1);
  assert.equal(built[0]!.value[1], '1');
  assert.ok(!exporter.stderr().includes(password), 'the password never reaches the log');
});

test('50 wrong-password requests in flight: an authorized scrape answers within 1 s, polls go on, the excess is refused at once', async (t) => {
  if (!requireBpf(t)) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'kt-auth-'));
  const password = 'correct horse battery staple';
  const webConfig = path.join(dir, 'web.yml');
  writeFileSync(webConfig, `basic_auth_users:\n  alice: ${bcrypt.hashSync(password, 10)}\n`);
  const exporter = await startExporter(['--web.config.file', webConfig]);
  cleanup.push(() => exporter.stop());
  const auth = (pw: string) => ({ authorization: `Basic ${Buffer.from(`alice:${pw}`).toString('base64')}` });
  // Prometheus's first scrape: the one bcrypt this credential costs.
  const before = pollsTotal(parseExposition(await exporter.scrape('/metrics', auth(password))));

  const storm = Array.from({ length: 50 }, (_, i) => fetch(`${exporter.url}/metrics`, { headers: auth(`wrong${i}`) }).then((r) => r.status));
  const t0 = performance.now();
  const scraped = await exporter.scrape('/metrics', auth(password));
  const ms = performance.now() - t0;
  assert.ok(ms < 1000, `authorized scrape answered in ${ms.toFixed(0)} ms`);
  assert.match(scraped, /^kerntap_polls_total /m);
  await waitForPoll(exporter, before + 1, { headers: auth(password), timeoutMs: 3000 });
  const statuses = await Promise.all(storm);
  assert.equal(statuses.filter((s) => s === 401 || s === 429).length, 50, `every wrong password refused: ${statuses.join(' ')}`);
  assert.ok(statuses.includes(429), 'the excess was answered at once with 429');
});

test('bad web config files fail with one line naming the key', (t) => {
  if (!requireBpf(t)) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'kt-tls-bad-'));
  const run = (yaml: string) => {
    const f = path.join(dir, `w${Math.random()}.yml`);
    writeFileSync(f, yaml);
    return spawnSync(process.execPath, [BIN, '--web.config.file', f], { encoding: 'utf8', timeout: 20_000 });
  };
  const plain = run('basic_auth_users:\n  bob: hunter2\n');
  assert.equal(plain.status, 1);
  assert.match(plain.stderr.trim(), /^kerntap: web config file .*: key basic_auth_users\.bob: must be a bcrypt hash$/);
  assert.ok(!plain.stderr.includes('hunter2'), 'the value is not echoed');
  const missing = run('tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n');
  assert.equal(missing.status, 1);
  assert.match(missing.stderr.trim(), /key tls_server_config\.cert_file: cannot read nope\.crt \(ENOENT\)$/);
  const unknown = run('tls_config: {}\n');
  assert.match(unknown.stderr.trim(), /unknown key tls_config$/);
});
