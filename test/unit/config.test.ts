import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig, ConfigError } from '../../src/config.js';
import { parseDuration } from '../../src/duration.js';
import { cgroup2MountsFromMountinfo } from '../../src/cgroup/mount.js';
import { negotiateFormat } from '../../src/exporters/scrape-format.js';
import { parseListenAddress } from '../../src/server.js';

test('defaults', () => {
  const c = parseConfig('');
  assert.equal(c.poll.interval, 5000);
  assert.equal(c.web.listen_address, ':10435');
  assert.equal(c.web.telemetry_path, '/metrics');
  assert.equal((c.collectors as Record<string, { enabled: boolean }>)['cgroup_cpu']?.enabled, true);
});

test('config errors name the key, in one line', () => {
  const cases: [string, RegExp][] = [
    ['poll:\n  interval: soon\n', /key poll\.interval: .*invalid duration "soon"/],
    ['poll:\n  intervall: 5s\n', /unknown key poll\.intervall/],
    ['bogus: 1\n', /unknown key bogus/],
    ['limits:\n  max_series_per_metric: 0\n', /key limits\.max_series_per_metric/],
    ['collectors:\n  cgroup_cpu:\n    enabled: "yes"\n', /key collectors\.cgroup_cpu\.enabled/],
    ['poll: [1, 2\n', /invalid YAML at line/],
    ['- a\n- b\n', /mapping at the top level/],
  ];
  for (const [yaml, re] of cases) {
    assert.throws(() => parseConfig(yaml, 'config file x.yml'), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /^config file x\.yml: /);
      assert.match(err.message, re);
      assert.ok(!err.message.includes('\n'), 'one line');
      return true;
    });
  }
});

test('durations', () => {
  assert.equal(parseDuration('1m30s'), 90_000);
  assert.equal(parseDuration('500ms'), 500);
  assert.throws(() => parseDuration('5'), /invalid duration/);
});

test('cgroup2 mount detection from mountinfo (hybrid and unified hosts)', () => {
  const hybrid = [
    '30 23 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755',
    '31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate',
    '32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu',
  ].join('\n');
  assert.deepEqual(cgroup2MountsFromMountinfo(hybrid), ['/sys/fs/cgroup/unified']);
  const unified = '29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot';
  assert.deepEqual(cgroup2MountsFromMountinfo(unified), ['/sys/fs/cgroup']);
  assert.deepEqual(cgroup2MountsFromMountinfo('1 0 0:1 / /mnt/with\\040space rw - cgroup2 none rw'), ['/mnt/with space']);
});

test('Accept negotiation picks OpenMetrics only when asked', () => {
  assert.equal(negotiateFormat(undefined), 'text');
  assert.equal(negotiateFormat('text/plain;version=0.0.4'), 'text');
  assert.equal(
    negotiateFormat('application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'),
    'openmetrics',
  );
  assert.equal(negotiateFormat('application/openmetrics-text;version=1.0.0;q=0'), 'text');
});

test('listen addresses', () => {
  assert.deepEqual(parseListenAddress(':10435'), { host: '::', port: 10435 });
  assert.deepEqual(parseListenAddress('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
  assert.deepEqual(parseListenAddress('[::1]:9000'), { host: '::1', port: 9000 });
  assert.throws(() => parseListenAddress('localhost'), /expected \[host\]:port/);
  assert.throws(() => parseListenAddress(':99999'), /out of range/);
});
